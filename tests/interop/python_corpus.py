"""A corpus of Python-written machinery messages for Go to check (harness `check`)."""

from __future__ import annotations

import json
import random
import struct
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import GroupMeta, Signature, TaskState
from bridge.types import _INT_RANGES, SCALAR_TYPES, SUPPORTED_TYPES, to_arg, to_python, to_result
from tests.canon import canon

TRICKY = ["", "<a&b>", "\u2028\u2029", "é日本😀", 'q"\\', "\b\f\n\r\t\x00\x1f\x7f", "plain"]
EDGE: dict[str, list[Any]] = {
    "bool": [True, False],
    "float32": [0.0, -0.0, 0.1, 1.1, 3.4028234663852886e38, 1e-45, 1.1754943508222875e-38,
                16777216.0, 1e21, 1e-6, 9.99999e-7, -2175463.75],
    "float64": [0.0, -0.0, 3.0, 1e20, 1e21, 1e-6, 1e-7, 123456789.0, 5e-324,
                1.7976931348623157e308, 0.1, -1.5e-7],
    "string": TRICKY,
}
for _name, (_low, _high) in _INT_RANGES.items():
    EDGE[_name] = [_low, _high, 0, 1, -1 if _low else 2]


def _random_scalar(rng: random.Random, go_type: str) -> Any:
    if go_type in _INT_RANGES:
        low, high = _INT_RANGES[go_type]
        return rng.choice([rng.randint(low, high), rng.randint(-100, 100) % (high + 1)])
    if go_type == "bool":
        return rng.random() < 0.5
    if go_type == "string":
        alphabet = "ab<>&\"\\\u2028\u2029é😀\n\t\x01 "
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    while True:
        if go_type == "float32":
            value = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        else:
            value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if value == value and abs(value) != float("inf"):
            return rng.choice([value, round(value, 3) if abs(value) < 1e15 else value])


def _random_value(rng: random.Random, go_type: str) -> Any:
    if go_type in ("[]byte", "[]uint8"):
        return rng.choice([None, b"", rng.randbytes(rng.randint(1, 12))])
    if go_type.startswith("[]"):
        size = rng.choice([None, 0, 1, 3])
        return None if size is None else [_random_scalar(rng, go_type[2:]) for _ in range(size)]
    return _random_scalar(rng, go_type)


def _random_time(rng: random.Random) -> GoTime:
    tz = rng.choice([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))])
    seconds = rng.randint(0, 4_000_000_000)
    return GoTime.from_unix_nano(seconds * 10**9 + rng.randint(0, 10**9 - 1), tz)


def _random_signature(rng: random.Random, depth: int) -> Signature:
    kinds = [rng.choice(sorted(SUPPORTED_TYPES)) for _ in range(rng.randint(0, 4))]
    nested = (lambda: _random_signature(rng, depth - 1)) if depth else (lambda: None)
    return Signature(
        uuid=f"task_{rng.getrandbits(64):x}", name=_random_scalar(rng, "string"),
        routing_key=rng.choice(["", "machinery_tasks"]),
        eta=rng.choice([None, _random_time(rng)]), group_uuid=rng.choice(["", "group_g"]),
        group_task_count=rng.randint(0, 100),
        args=[to_arg(_random_value(rng, k), k, rng.choice(["", "x"])) for k in kinds]
        if kinds or rng.random() < 0.5 else None,
        headers=rng.choice([None, {}, {"b": "2", "a": rng.random() < 0.5, "é<": "x"}]),
        priority=rng.randint(0, 255), immutable=rng.random() < 0.5,
        retry_count=rng.randint(0, 10), retry_timeout=rng.randint(0, 100),
        on_success=[nested()] if depth and rng.random() < 0.4 else None,
        on_error=[nested()] if depth and rng.random() < 0.2 else None,
        chord_callback=nested() if depth and rng.random() < 0.3 else None,
        broker_message_group_id=rng.choice(["", "g1"]), sqs_receipt_handle="",
        stop_task_deletion_on_error=rng.random() < 0.5,
        ignore_when_task_not_registered=rng.random() < 0.5,
    )


def _checks(items: list[Any] | None) -> list[dict[str, Any]]:
    return [{"type": i.type, "canon": canon(i.type, to_python(i.type, i.value))}
            for i in items or ()]


def write_corpus(directory: Path, seed: int = 20261123, randoms: int = 300) -> int:
    """Write messages and a manifest (version "python") for ``harness check``; returns the count."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []

    def add(name: str, kind: str, message: Signature | TaskState | GroupMeta,
            args: list[Any] | None = None, results: list[Any] | None = None) -> None:
        (directory / name).write_bytes(message.to_json())
        entries.append({"file": name, "kind": kind, "args": _checks(args),
                        "results": _checks(results)})

    for go_type in SCALAR_TYPES:
        args = [to_arg(v, go_type) for v in EDGE[go_type]]
        add(f"signature_{go_type}.json", "signature", Signature(uuid="t", name=go_type, args=args,
                                                                 headers={}), args)
        slices = [to_arg(EDGE[go_type], f"[]{go_type}"), to_arg([], f"[]{go_type}"),
                  to_arg(None, f"[]{go_type}", "nil")]
        add(f"signature_slice_{go_type}.json", "signature",
            Signature(uuid="t", name=f"[]{go_type}", args=slices), slices)
        results = [to_result(v, go_type) for v in EDGE[go_type]]
        add(f"task_state_{go_type}.json", "task_state",
            TaskState("t", "n", "SUCCESS", results, created_at=_random_time(rng)), None, results)
    raw = [to_arg(b"\x00\x01\x02\xff", "[]byte"), to_arg(b"", "[]byte"), to_arg(None, "[]byte")]
    add("signature_bytes.json", "signature", Signature(uuid="t", args=raw), raw)
    add("group_meta.json", "group_meta",
        GroupMeta("group_g", ["task_a", "<b>"], True, False, _random_time(rng), 3600))
    add("group_meta_nil.json", "group_meta", GroupMeta("group_g"))
    for state in ("PENDING", "RECEIVED", "STARTED", "RETRY", "FAILURE"):
        add(f"task_state_{state}.json", "task_state",
            TaskState("t", "n", state, error="<é>" if state == "FAILURE" else ""))
    for index in range(randoms):
        sig = _random_signature(rng, depth=2)
        add(f"random_{index:04d}.json", "signature", sig, sig.args)
    (directory / "manifest.json").write_text(json.dumps(
        {"version": "python", "machinery": "bridge", "fixtures": entries}, indent=1))
    return len(entries)
