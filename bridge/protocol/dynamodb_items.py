"""machinery's DynamoDB items: TaskState and GroupMeta as attribute values, as Go writes them.

Pure, no I/O; values in botocore's low-level form (``{"S": "..."}``, ``{"N": "3"}``...).
Attribute names are the Go field names. What machinery v2.0.16 sends
(``v2/backends/dynamodb/dynamodb.go``, aws-sdk-go-v2 ``attributevalue``):

* PENDING: ``PutItem`` of the whole struct: TaskUUID, TaskName, State S; Results NULL; Error
  S ``""``; CreatedAt S (RFC 3339, nanoseconds); TTL N ``0``;
* RECEIVED, STARTED, RETRY: ``UpdateItem SET State`` (every other attribute stays);
* SUCCESS: ``SET State, TTL, Results`` (Results only when there are some), TTL = Unix seconds
  now + results_expire_in; FAILURE: ``SET State, Error, TTL``;
* a result is ``M {Type: S, Value: S}`` where Value is Go's ``fmt.Sprintf("%v", value)``:
  ``5`` → ``"5"``, ``[]string{"a", "b"}`` → ``"[a b]"``, ``[]byte{1, 2}`` → ``"[1 2]"``;
* GroupMeta: ``PutItem`` of the struct, TaskUUIDs an L of S, TTL = now + results_expire_in.

machinery v1 (aws-sdk-go v1 ``dynamodbattribute``) differs in one encoding: an empty string is
NULL (PENDING's ``Error``). Both readers accept both; we write v2's and read either.

Reading, a result Value is turned back into the wire value its Type names where the text
allows one reading only (numbers, bools, slices of them, ``[]uint8`` as base64); a ``[]string``
(``"[a b]"`` may be ``["a b"]``) and any other type keep Go's text.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bridge.errors import DecodeError
from bridge.protocol.gojson import (
    JSONNumber,
    Struct,
    _float32_digits,
    _layout,
    clean_str,
    to_float32,
)
from bridge.protocol.gojson import _digits as _float64_digits
from bridge.protocol.gotime import GO_ZERO_TIME, format_rfc3339, parse_rfc3339
from bridge.protocol.machinery import FAILURE, SUCCESS, GroupMeta, TaskResult, TaskState

__all__ = [
    "GROUP_KEY",
    "TASK_KEY",
    "Update",
    "go_text",
    "group_meta_from_item",
    "group_meta_item",
    "read_text",
    "task_state_from_item",
    "task_state_item",
    "task_state_update",
]

Item = dict[str, Any]
"""An item or attribute value in botocore's low-level form."""

TASK_KEY = "TaskUUID"
"""Hash key (S) of machinery's task_states table."""
GROUP_KEY = "GroupUUID"
"""Hash key (S) of machinery's group_metas table."""

_INT_BITS = {"int": 64, "int8": 8, "int16": 16, "int32": 32, "int64": 64}
_UINT_BITS = {"uint": 64, "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}
_BYTES = frozenset({"[]uint8", "[]byte"})
_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_FLOAT_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:e[+-][0-9]{2,})?\Z")
_ONE_DIGIT_EXPONENT = re.compile(r"e([+-])([0-9])$")


class Update(NamedTuple):
    """An ``UpdateItem``'s expression, attribute names and values."""

    expression: str
    names: dict[str, str]
    values: dict[str, Item]


# --------------------------------------------------------------------------- Go's %v


def _go_float(value: float, f32: bool) -> str:
    """``fmt.Sprint`` of a float64 (or float32): %g with the shortest digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if f32:
        value = to_float32(value)
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _float32_digits(abs(value)) if f32 else _float64_digits(value)
    exp = point - 1  # strconv 'g' with the shortest precision: %e below 1e-04, from 1e+06 on
    text = _layout(value < 0, digits, point, exp < -4 or exp >= 6)
    return _ONE_DIGIT_EXPONENT.sub(r"e\g<1>0\2", text)  # %e: two exponent digits at least


def _bytes_of(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return None
    return None


def _sprint_any(value: Any, f32: bool = False) -> str:
    """``fmt.Sprint`` of a value as Go holds it after decoding JSON into ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JSONNumber):
        return value.literal
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, f32)
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, Struct):
        return "{" + " ".join(_sprint_any(item, f32) for _, item in value) + "}"
    if isinstance(value, Mapping):
        pairs = sorted((clean_str(str(k)), _sprint_any(v, f32)) for k, v in value.items())
        return "map[" + " ".join(f"{k}:{v}" for k, v in pairs) + "]"
    if isinstance(value, bytes | bytearray | memoryview):
        return "[" + " ".join(map(str, bytes(value))) + "]"
    if isinstance(value, Sequence):
        return "[" + " ".join(_sprint_any(item, f32) for item in value) + "]"
    if isinstance(value, datetime):
        return format_rfc3339(value)
    return clean_str(str(value))


def go_text(go_type: str, value: Any) -> str:
    """What a Go worker stores for a result of ``go_type`` whose wire value is ``value``:
    ``fmt.Sprintf("%v", v)`` of the Go value ``v`` (a ``[]uint8`` prints its bytes)."""
    f32 = go_type in ("float32", "[]float32")
    if go_type in _BYTES:
        raw = _bytes_of(value) if value is not None else b""
        if raw is not None:
            return "[" + " ".join(map(str, raw)) + "]"
    elif go_type.startswith("[]") and value is None:
        return "[]"  # a nil slice
    elif go_type in ("float32", "float64") and isinstance(value, int | float) \
            and not isinstance(value, bool):
        return _go_float(float(value), f32)
    return _sprint_any(value, f32)


# --------------------------------------------------------------------------- reading back


def _read_scalar(go_type: str, text: str) -> Any:
    """The wire value of one scalar's text, or None when the text is not that type's."""
    if go_type == "string":
        return text
    if go_type == "bool":
        return {"true": True, "false": False}.get(text)
    bits = _INT_BITS.get(go_type)
    if bits is not None:
        if not _INT_TEXT.match(text):
            return None
        number = int(text)
        return number if -(1 << (bits - 1)) <= number < 1 << (bits - 1) else None
    bits = _UINT_BITS.get(go_type)
    if bits is not None:
        if not _INT_TEXT.match(text) or text.startswith("-"):
            return None
        number = int(text)
        return number if number < 1 << bits else None
    if go_type in ("float32", "float64"):
        if not _FLOAT_TEXT.match(text):
            return None  # NaN and ±Inf too: no JSON value carries them
        real = float(text)
        if math.isinf(real):
            return None
        return to_float32(real) if go_type == "float32" else real
    return None


def read_text(go_type: str, text: str) -> Any:
    """The wire value (as in Go's JSON) of Go's ``%v`` text of a ``go_type`` value, where
    the text has one reading; otherwise the text itself."""
    if not go_type.startswith("[]"):
        value = _read_scalar(go_type, text)
        return text if value is None else value
    if go_type == "[]string" or not (text.startswith("[") and text.endswith("]")):
        return text
    inner = text[1:-1]
    parts = inner.split(" ") if inner else []
    element = "uint8" if go_type == "[]byte" else go_type[2:]
    values = [_read_scalar(element, part) for part in parts]
    if any(value is None for value in values):
        return text
    if go_type in _BYTES:
        return base64.b64encode(bytes(values)).decode("ascii")
    return values


# --------------------------------------------------------------------------- task states


def _s(text: str) -> Item:
    return {"S": clean_str(text)}


def _n(number: int) -> Item:
    return {"N": str(number)}


def _results(results: Sequence[TaskResult | None]) -> Item:
    return {"L": [
        {"M": {"Type": _s(r.type), "Value": _s(go_text(r.type, r.value))}}
        if r is not None else {"NULL": True}
        for r in results
    ]}


def task_state_item(state: TaskState) -> Item:
    """The item Go's ``PutItem(MarshalMap(TaskState))`` stores (machinery's SetStatePending)."""
    return {
        "TaskUUID": _s(state.task_uuid),
        "TaskName": _s(state.task_name),
        "State": _s(state.state),
        "Results": {"NULL": True} if state.results is None else _results(state.results),
        "Error": _s(state.error),
        "CreatedAt": _s(format_rfc3339(state.created_at)),
        "TTL": _n(state.ttl),
    }


def task_state_update(state: TaskState, expires_at: int) -> Update:
    """The ``UpdateItem`` Go sends for a state other than PENDING (``setTaskState``;
    FAILURE: ``updateToFailureStateWithError``); SUCCESS and FAILURE get ``expires_at`` as TTL.

    A state that carries a TaskName or CreatedAt (copied from elsewhere, never one a worker
    builds) has them set too; CreatedAt as RFC 3339, which Go can read back.
    """
    names = {"#S": "State"}
    values: dict[str, Item] = {":s": _s(state.state)}
    sets = ["#S = :s"]

    def put(name: str, attr: str, value: Item) -> None:
        names[name] = attr
        values[":" + name[1:].lower()] = value
        sets.append(f"{name} = :{name[1:].lower()}")

    if state.state == FAILURE:
        put("#E", "Error", _s(state.error))
    if state.task_name:
        put("#N", "TaskName", _s(state.task_name))
    if state.created_at != GO_ZERO_TIME:
        put("#C", "CreatedAt", _s(format_rfc3339(state.created_at)))
    ttl = expires_at if state.state in (SUCCESS, FAILURE) else state.ttl
    if ttl > 0:
        put("#T", "TTL", _n(ttl))
    if state.state != FAILURE and state.results:
        put("#R", "Results", _results(state.results))
    return Update("SET " + ", ".join(sets), names, values)


def _plain(value: Mapping[str, Any]) -> Any:
    """An attribute value as the wire value Go's JSON would carry."""
    if "S" in value:
        return value["S"]
    if "N" in value:
        text = value["N"]
        return int(text) if _INT_TEXT.match(text) else JSONNumber(text)
    if "BOOL" in value:
        return bool(value["BOOL"])
    if "L" in value:
        return [_plain(v) for v in value["L"]]
    if "M" in value:
        return {k: _plain(v) for k, v in value["M"].items()}
    if "B" in value:
        return base64.b64encode(bytes(value["B"])).decode("ascii")
    if "SS" in value or "NS" in value:
        return [_plain({"S" if "SS" in value else "N": v}) for v in next(iter(value.values()))]
    return None  # NULL


def _text(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if value is None or "NULL" in value:
        return ""
    if "S" not in value:
        raise DecodeError(f"{where}: attribute {name} is {_kind(value)}, not a string (S)")
    return str(value["S"])


def _int(item: Mapping[str, Any], name: str, where: str) -> int:
    value = item.get(name)
    if value is None or "NULL" in value:
        return 0
    if "N" not in value or not _INT_TEXT.match(value["N"]):
        raise DecodeError(f"{where}: attribute {name} is {value!r}, not an integer (N)")
    return int(value["N"])


def _bool(item: Mapping[str, Any], name: str, where: str) -> bool:
    value = item.get(name)
    if value is None or "NULL" in value:
        return False
    if "BOOL" not in value:
        raise DecodeError(f"{where}: attribute {name} is {_kind(value)}, not a BOOL")
    return bool(value["BOOL"])


def _time(item: Mapping[str, Any], name: str, where: str) -> datetime:
    text = _text(item, name, where)
    if not text:
        return GO_ZERO_TIME
    try:
        return parse_rfc3339(text)
    except DecodeError as exc:
        raise DecodeError(f"{where}: attribute {name}: {exc}") from None


def _kind(value: Mapping[str, Any]) -> str:
    return next(iter(value), "empty")


def _result(value: Mapping[str, Any]) -> TaskResult | None:
    if "M" not in value:
        return None
    fields = value["M"]
    go_type = str(fields.get("Type", {}).get("S", ""))
    raw = fields.get("Value")
    if raw is None:
        return TaskResult(go_type, None)
    if "S" in raw:
        return TaskResult(go_type, read_text(go_type, str(raw["S"])))
    return TaskResult(go_type, _plain(raw))


def task_state_from_item(item: Mapping[str, Any]) -> TaskState:
    """The TaskState a Go reader decodes from a task_states item (missing attributes: zero)."""
    uuid = _text(item, "TaskUUID", "task_states item")
    where = f"task_states item {uuid!r}"
    results_value = item.get("Results")
    results: list[TaskResult | None] | None = None
    if results_value is not None and "L" in results_value:
        results = [_result(v) for v in results_value["L"]]
    elif results_value is not None and "NULL" not in results_value:
        raise DecodeError(f"{where}: attribute Results is {_kind(results_value)}, not a list")
    return TaskState(
        task_uuid=uuid,
        task_name=_text(item, "TaskName", where),
        state=_text(item, "State", where),
        results=results,
        error=_text(item, "Error", where),
        created_at=_time(item, "CreatedAt", where),
        ttl=_int(item, "TTL", where),
    )


# --------------------------------------------------------------------------- group metas


def group_meta_item(meta: GroupMeta) -> Item:
    """The item Go's ``InitGroup`` stores (``PutItem(MarshalMap(GroupMeta))``)."""
    uuids = meta.task_uuids
    return {
        "GroupUUID": _s(meta.group_uuid),
        "TaskUUIDs": {"NULL": True} if uuids is None else {"L": [_s(u) for u in uuids]},
        "ChordTriggered": {"BOOL": meta.chord_triggered},
        "Lock": {"BOOL": meta.lock},
        "CreatedAt": _s(format_rfc3339(meta.created_at)),
        "TTL": _n(meta.ttl),
    }


def group_meta_from_item(item: Mapping[str, Any]) -> GroupMeta:
    """The GroupMeta a Go reader decodes from a group_metas item (a NULL Lock reads false)."""
    uuid = _text(item, "GroupUUID", "group_metas item")
    where = f"group_metas item {uuid!r}"
    value = item.get("TaskUUIDs")
    uuids: list[str] | None = None
    if value is not None and "NULL" not in value:
        listed = _plain(value)
        if not isinstance(listed, list) or not all(isinstance(u, str) for u in listed):
            raise DecodeError(f"{where}: attribute TaskUUIDs is not a list of strings")
        uuids = listed
    return GroupMeta(
        group_uuid=uuid,
        task_uuids=uuids,
        chord_triggered=_bool(item, "ChordTriggered", where),
        lock=_bool(item, "Lock", where),
        created_at=_time(item, "CreatedAt", where),
        ttl=_int(item, "TTL", where),
    )

