"""Our float formatting equals Go's json.Marshal on random float32 and float64 bit patterns."""

from __future__ import annotations

import math
import random
import struct
import subprocess
from pathlib import Path

import pytest

from bridge.errors import EncodeError
from bridge.protocol.gojson import format_float32, format_float64


def _ours(width: int, bits: int) -> str:
    value = struct.unpack("<f" if width == 32 else "<d",
                          struct.pack("<I" if width == 32 else "<Q", bits))[0]
    try:
        return format_float32(value) if width == 32 else format_float64(value)
    except EncodeError:
        assert math.isnan(value) or math.isinf(value)
        return "error"


@pytest.mark.go
def test_float_formatting_matches_go(harness: dict[str, Path]) -> None:
    rng = random.Random(1123)
    cases = [(32, rng.getrandbits(32)) for _ in range(20000)]
    cases += [(32, struct.unpack("<I", struct.pack("<f", rng.uniform(-1e7, 1e7)))[0])
              for _ in range(10000)]
    cases += [(64, rng.getrandbits(64)) for _ in range(20000)]
    cases += [(64, struct.unpack("<Q", struct.pack("<d", round(rng.uniform(-1e6, 1e6), 3)))[0])
              for _ in range(10000)]
    cases += [(32, 0x80000000), (64, 1 << 63), (32, 1), (64, 1), (32, 0x7F800000)]
    lines = "".join(f"{width} {bits:x}\n" for width, bits in cases)
    run = subprocess.run([str(harness["v2"]), "floats"], input=lines, capture_output=True,
                         text=True, check=True, timeout=120)
    go = run.stdout.splitlines()
    assert len(go) == len(cases)
    wrong = [(w, f"{b:x}", _ours(w, b), g) for (w, b), g in zip(cases, go, strict=True)
             if _ours(w, b) != g]
    assert not wrong, wrong[:10]
