"""Property tests: valid values round-trip; garbage raises only our documented errors."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import ArgTranslationError, DecodeError, GroupMeta, Signature, TaskState
from bridge.protocol import gojson
from bridge.types import SUPPORTED_TYPES, arg_to_python, result_to_python, to_arg, to_python
from tests.strategies import group_metas, json_values, signatures, task_states, typed_args

settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@given(typed_args())
def test_typed_values_round_trip_through_the_wire(pair: tuple[str, Any]) -> None:
    go_type, value = pair
    arg = to_arg(value, go_type, "a")
    decoded = Signature.from_json(Signature(args=[arg]).to_json())
    assert decoded.args is not None
    assert to_python(go_type, decoded.args[0].value) == to_python(go_type, arg.value)
    expected = list(value) if isinstance(value, list) else value
    assert to_python(go_type, decoded.args[0].value) == (
        bytes(expected) if go_type in ("[]byte", "[]uint8") else expected)


@given(signatures())
def test_signatures_round_trip(sig: Signature) -> None:
    # the wire form may change (float32 96121072 is written 96121070, as Go writes it),
    # but the bytes are a fixed point and every arg reads back as the same typed value
    data = sig.to_json()
    decoded = Signature.from_json(data)
    assert decoded.to_json() == data
    assert typed(decoded) == typed(sig)


def typed(sig: Signature | None) -> Any:
    if sig is None:
        return None
    values = [arg_to_python(arg) for arg in sig.args or ()]
    nested = [typed(s) for s in (sig.on_success or []) + (sig.on_error or [])]
    return (dataclasses.replace(sig, args=None, on_success=None, on_error=None,
                                chord_callback=None, headers=numbers_as_floats(sig.headers)),
            values, nested, typed(sig.chord_callback))


def numbers_as_floats(value: Any) -> Any:
    """Untyped numbers compare by value: Go writes float 1e16 as the literal 10000000000000000."""
    if isinstance(value, dict):
        return {k: numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


@given(task_states)
def test_task_states_round_trip(state: TaskState) -> None:
    data = state.to_json()
    decoded = TaskState.from_json(data)
    assert decoded.to_json() == data
    assert [result_to_python(r) for r in decoded.results or () if r] == [
        result_to_python(r) for r in state.results or () if r]
    assert dataclasses.replace(decoded, results=None) == dataclasses.replace(state, results=None)


@given(group_metas)
def test_group_metas_round_trip(meta: GroupMeta) -> None:
    assert GroupMeta.from_json(meta.to_json()) == meta


@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_decode_error(data: bytes) -> None:
    for cls in (Signature, TaskState, GroupMeta):
        with contextlib.suppress(DecodeError):
            cls.from_json(data)


@given(st.dictionaries(st.sampled_from(["UUID", "name", "ETA", "Args", "Headers", "Priority",
                                        "RetryCount", "OnSuccess", "ChordCallback", "Results",
                                        "CreatedAt", "TaskUUIDs", "Lock", "TTL", "x"]),
                       json_values, max_size=6))
def test_wrongly_typed_fields_raise_only_decode_error(fields: dict[str, Any]) -> None:
    data = gojson.dumps(fields)
    for cls in (Signature, TaskState, GroupMeta):
        with contextlib.suppress(DecodeError):
            cls.from_json(data)


@given(st.sampled_from(sorted(SUPPORTED_TYPES)) | st.text(max_size=8), json_values)
def test_any_wire_value_raises_only_arg_translation_error(go_type: str, value: Any) -> None:
    with contextlib.suppress(ArgTranslationError):
        to_python(go_type, gojson.loads(gojson.dumps(value)))


@given(st.sampled_from(sorted(SUPPORTED_TYPES)) | st.none(), json_values | st.binary())
def test_any_python_value_raises_only_arg_translation_error(go_type: str | None,
                                                            value: Any) -> None:
    with contextlib.suppress(ArgTranslationError):
        to_arg(value, go_type)
