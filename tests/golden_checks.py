"""The checks every golden machinery message must pass (committed or freshly generated)."""

from __future__ import annotations

import dataclasses

import pytest

from bridge import ArgTranslationError, Signature, TaskState
from bridge.protocol.gojson import plain
from bridge.types import SUPPORTED_TYPES, arg_to_python, result_to_python, to_arg, to_result
from tests.canon import canon
from tests.fixtures import KINDS, Golden


def check_round_trip(golden: Golden) -> None:
    """Decode + encode gives exactly the bytes Go writes when it does the same.

    That is the file itself, except where Go's own rewrite differs (struct results
    come back as maps with sorted keys; an escaped \\ufffd comes back raw), which the
    harness records.
    """
    decoded = KINDS[golden.kind].from_json(golden.path.read_bytes())
    assert decoded.to_json() == golden.go_rewrite
    assert KINDS[golden.kind].from_json(decoded.to_json()).to_json() == golden.go_rewrite


def check_values(golden: Golden) -> None:
    """Args and results translate to the values Go's ReflectValue gives (or fail where it fails)."""
    decoded = KINDS[golden.kind].from_json(golden.path.read_bytes())
    if isinstance(decoded, Signature):
        items = [(a.type, a.value, lambda a=a, i=i: arg_to_python(a, i))
                 for i, a in enumerate(decoded.args or ())]
        expected = golden.args
    elif isinstance(decoded, TaskState):
        items = [(r.type, r.value, lambda r=r: result_to_python(r))
                 for r in decoded.results or () if r is not None]
        expected = golden.results
    else:
        return
    assert len(items) == len(expected)
    for (go_type, wire, read), expect in zip(items, expected, strict=True):
        assert go_type == expect["type"]
        if "canon" in expect:
            assert canon(go_type, read()) == expect["canon"], (go_type, wire)
        elif go_type in SUPPORTED_TYPES:
            with pytest.raises(ArgTranslationError):
                read()
        else:  # structs, maps, []interface {}: Go cannot reflect them; we still read them
            assert read() == plain(wire)


def _rebuilt_signature(sig: Signature) -> Signature:
    args = None if sig.args is None else [
        arg if arg.value is None or arg.type not in SUPPORTED_TYPES
        else to_arg(arg_to_python(arg), arg.type, arg.name)
        for arg in sig.args
    ]
    return dataclasses.replace(
        sig, args=args,
        on_success=None if sig.on_success is None else [
            None if s is None else _rebuilt_signature(s) for s in sig.on_success],
        chord_callback=_rebuilt_signature(sig.chord_callback) if sig.chord_callback else None,
    )


def check_python_built(golden: Golden) -> None:
    """Typed Python values (fresh floats, bytes, ints; no kept literals) give Go's exact bytes."""
    decoded = KINDS[golden.kind].from_json(golden.path.read_bytes())
    if isinstance(decoded, Signature):
        rebuilt: object = _rebuilt_signature(decoded)
    elif isinstance(decoded, TaskState):
        rebuilt = dataclasses.replace(decoded, results=None if decoded.results is None else [
            r if r is None or r.value is None or r.type not in SUPPORTED_TYPES
            else to_result(result_to_python(r), r.type)
            for r in decoded.results
        ])
    else:
        return
    assert rebuilt.to_json() == golden.go_rewrite  # type: ignore[attr-defined]


def check_all(golden: Golden) -> None:
    check_round_trip(golden)
    check_values(golden)
    check_python_built(golden)
