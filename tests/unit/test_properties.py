"""Property tests: valid values round-trip; garbage raises only our documented errors."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import ArgTranslationError, DecodeError, GroupMeta, Signature, TaskState
from bridge.errors import EncodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber
from bridge.protocol.machinery import STATES, Arg, TaskResult
from bridge.types import (
    SUPPORTED_TYPES,
    arg_to_python,
    exact_to_python,
    result_to_python,
    to_arg,
    to_python,
)
from tests.strategies import (
    group_metas,
    json_values,
    signatures,
    task_states,
    times,
    typed_args,
)
from tests.unit.test_fast_paths import identical

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


_WIRE_NUMBERS = (st.floats(allow_nan=False, allow_infinity=False).map(
    lambda f: gojson.loads(gojson.dumps(f)))
    | st.sampled_from(["1e400", "-1e400", "-0.0", "1.50", "3.4028236e38"]).map(JSONNumber))


@given(st.sampled_from(sorted(SUPPORTED_TYPES)) | st.text(max_size=8),
       json_values | st.integers() | st.floats() | _WIRE_NUMBERS
       | st.lists(st.text(max_size=3) | st.integers(), max_size=3))
def test_the_shortcuts_of_to_python_are_the_exact_path(go_type: str, value: Any) -> None:
    """to_python's shortcuts (common scalars, []string) give exact_to_python's value, of the
    same type, or the same error."""
    outcomes = []
    for translate in (to_python, exact_to_python):
        try:
            outcomes.append(("value", translate(go_type, value, position=2, name="n")))
        except ArgTranslationError as exc:
            outcomes.append(("error", str(exc)))
    (kind, quick), (exact_kind, exact) = outcomes
    assert kind == exact_kind and (identical(quick, exact) if kind == "value" else quick == exact)


@given(st.sampled_from(sorted(SUPPORTED_TYPES)) | st.none(), json_values | st.binary())
def test_any_python_value_raises_only_arg_translation_error(go_type: str | None,
                                                            value: Any) -> None:
    with contextlib.suppress(ArgTranslationError):
        to_arg(value, go_type)


_PLAIN = st.text(alphabet="abcXYZ019-_.:@ ", max_size=12)
_PLAIN_SIGNATURES = st.builds(
    Signature, uuid=_PLAIN, name=_PLAIN, routing_key=_PLAIN, group_uuid=_PLAIN,
    group_task_count=st.integers(-(2**63), 2**63 - 1), priority=st.integers(0, 255),
    args=st.none() | st.lists(st.builds(Arg, name=_PLAIN, type=_PLAIN, value=json_values),
                              max_size=3),
    headers=st.none() | st.just({}) | st.dictionaries(_PLAIN, json_values, max_size=3),
    retry_count=st.integers(-(2**63), 2**63 - 1), retry_timeout=st.integers(0, 10),
    on_success=st.none() | st.lists(signatures(0), max_size=2),
    broker_message_group_id=_PLAIN, sqs_receipt_handle=_PLAIN,
    immutable=st.booleans(), stop_task_deletion_on_error=st.booleans(),
    ignore_when_task_not_registered=st.booleans(),
)


def _exact_bytes(struct: Signature | TaskState) -> bytes:
    from bridge.protocol import machinery

    machinery.FAST_WRITERS = False
    try:
        return struct.to_json()
    finally:
        machinery.FAST_WRITERS = True


@given(_PLAIN_SIGNATURES | signatures())
def test_the_fast_writer_writes_the_field_by_field_bytes(sig: Signature) -> None:
    assert sig.to_json() == _exact_bytes(sig)


_PLAIN_STATES = st.builds(
    TaskState, task_uuid=_PLAIN, task_name=_PLAIN, state=st.sampled_from(STATES) | _PLAIN,
    results=st.none() | st.lists(st.none() | st.builds(
        TaskResult, type=st.sampled_from(["int64", "string", "float32"]),
        value=st.integers(-5, 5) | _PLAIN | st.floats(allow_nan=False, allow_infinity=False))),
    error=_PLAIN, created_at=times, ttl=st.integers(-(2**63), 2**63 - 1))


@given(_PLAIN_STATES | task_states)
def test_the_fast_state_writer_writes_the_field_by_field_bytes(state: TaskState) -> None:
    fast, exact = _both_ways(state)  # the same bytes, or the same error (a float32 too big)
    assert fast == exact


def _both_ways(struct: Signature | TaskState) -> list[str]:
    """What the fast writer and the field-by-field one make of ``struct``: bytes or error."""
    from bridge.protocol import machinery

    outcomes = []
    for fast in (True, False):
        machinery.FAST_WRITERS = fast
        try:
            outcomes.append(repr(struct.to_json()))
        except EncodeError as exc:
            outcomes.append(str(exc))
        finally:
            machinery.FAST_WRITERS = True
    return outcomes


@given(st.sampled_from(["task_uuid", "task_name", "state", "error", "ttl"]),
       st.sampled_from([None, 2**63, -(2**63) - 1, 1, 1.5, "a\"<>&\u2028", b"x"]))
def test_a_bad_state_field_raises_the_same_error_either_way(field: str, value: Any) -> None:
    fast, exact = _both_ways(dataclasses.replace(TaskState("u", "n", "PENDING"),
                                                 **{field: value}))
    assert fast == exact


@given(st.sampled_from(["uuid", "priority", "retry_count", "immutable", "group_task_count",
                        "sqs_receipt_handle"]),
       st.sampled_from([None, 256, -1, 2**63, "1", 1.5, True]))
def test_a_bad_field_raises_the_same_error_either_way(field: str, value: Any) -> None:
    fast, exact = _both_ways(dataclasses.replace(Signature(uuid="u", name="n"),
                                                 **{field: value}))
    assert fast == exact
