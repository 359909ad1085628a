"""Hypothesis strategies for typed machinery values and whole messages."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from bridge.protocol.gojson import to_float32
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import GroupMeta, Signature, TaskState
from bridge.types import _INT_RANGES, SUPPORTED_TYPES, to_arg, to_result

text = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False).map(to_float32)


def scalar(go_type: str) -> st.SearchStrategy[Any]:
    """Python values that fit Go type ``go_type``."""
    if go_type in _INT_RANGES:
        low, high = _INT_RANGES[go_type]
        return st.integers(low, high)
    return {"bool": st.booleans(), "float32": float32s, "float64": finite,
            "string": text}[go_type]


def typed_value(go_type: str) -> st.SearchStrategy[Any]:
    if go_type in ("[]byte", "[]uint8"):
        return st.binary(max_size=16)
    if go_type.startswith("[]"):
        return st.lists(scalar(go_type[2:]), max_size=5)
    return scalar(go_type)


go_types = st.sampled_from(sorted(SUPPORTED_TYPES))


@st.composite
def typed_args(draw: st.DrawFn) -> tuple[str, Any]:
    go_type = draw(go_types)
    return go_type, draw(typed_value(go_type))


args = typed_args().map(lambda pair: to_arg(pair[1], pair[0]))
results = typed_args().map(lambda pair: to_result(pair[1], pair[0]))

offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5,
                                                                                 minutes=-30))])
times = st.builds(
    lambda dt, ns, tz: GoTime.from_datetime(dt.replace(tzinfo=tz), ns),
    st.datetimes(), st.integers(0, 999), offsets,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
int64s = st.integers(-(2**63), 2**63 - 1)


def signatures(depth: int = 2) -> st.SearchStrategy[Signature]:
    nested = signatures(depth - 1) if depth else st.none()
    return st.builds(
        Signature,
        uuid=text, name=text, routing_key=text, eta=st.none() | times, group_uuid=text,
        group_task_count=int64s, args=st.none() | st.lists(args, max_size=4),
        headers=st.none() | st.dictionaries(text, json_values, max_size=3),
        priority=st.integers(0, 255), immutable=st.booleans(), retry_count=int64s,
        retry_timeout=int64s,
        on_success=st.none() | st.lists(nested, max_size=2),
        on_error=st.none() | st.lists(nested, max_size=1),
        chord_callback=nested, broker_message_group_id=text, sqs_receipt_handle=text,
        stop_task_deletion_on_error=st.booleans(), ignore_when_task_not_registered=st.booleans(),
    )


task_states = st.builds(
    TaskState, task_uuid=text, task_name=text, state=text,
    results=st.none() | st.lists(results, max_size=3), error=text, created_at=times, ttl=int64s,
)
group_metas = st.builds(
    GroupMeta, group_uuid=text, task_uuids=st.none() | st.lists(text, max_size=4),
    chord_triggered=st.booleans(), lock=st.booleans(), created_at=times, ttl=int64s,
)
