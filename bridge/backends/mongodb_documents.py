"""machinery's MongoDB documents (``backends/mongo/mongodb.go``) ⇄ TaskState and GroupMeta.

Pure conversions, no I/O. Field names are the structs' ``bson`` tags: a task document is
``{_id, task_name, state, results, error, created_at[, ttl][, delete_at]}``, a group meta
``{_id, task_uuids, chord_triggered, lock, created_at[, ttl]}``, times BSON datetimes
(milliseconds), results ``{type, value}``.

A result value gets the BSON type Go's driver (mongo-driver v1) gives the Go value its
Type names: ``int`` int32 when it fits, else int64; ``int8``-``int32``, ``uint8``,
``uint16`` int32; ``int64``, ``uint``, ``uint32``, ``uint64`` int64 (above int64:
an error, as in Go); floats double; ``[]byte``/``[]uint8`` binary (subtype 0); other
slices arrays of the same; nil slices null. And as Go's ``decodeResults`` does, a string
result holding a JSON object (or ``null``) is stored as ``{type: "json", value: <that
object, numbers as doubles>}``. Read back, values return to their wire form (what the JSON
backends hold: ints, floats, base64 text for bytes), so results, chord callback args and
``AsyncResult.get`` behave as over Redis; a ``json`` result comes back as its object.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

from bridge.errors import ArgTranslationError, DecodeError, EncodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber, Pairs
from bridge.protocol.gotime import GO_ZERO_TIME, GoTime, unix_nano
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    SUCCESS,
    GroupMeta,
    TaskResult,
    TaskState,
)
from bridge.types import SUPPORTED_TYPES, to_python

__all__ = [
    "JSON_RESULT_TYPE",
    "bson_time",
    "group_meta_document",
    "group_meta_from_document",
    "result_document",
    "state_fields",
    "state_from_document",
]

JSON_RESULT_TYPE = "json"
"""The Type machinery's MongoDB backend gives a string result holding a JSON object."""

_INT32_TYPES = frozenset({"int8", "int16", "int32", "uint8", "uint16"})
_INT64_TYPES = frozenset({"int64", "uint", "uint32", "uint64"})
_BYTES_TYPES = frozenset({"[]byte", "[]uint8"})
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------- times


def bson_time(moment: datetime) -> DatetimeMS:
    """Go's ``primitive.NewDateTimeFromTime``: whole milliseconds since the epoch."""
    return DatetimeMS(unix_nano(moment) // 1_000_000)


def _go_time(value: Any) -> datetime:
    """A BSON datetime as Go decodes it (UTC, millisecond precision); absent → zero time."""
    if value is None:
        return GO_ZERO_TIME
    if isinstance(value, DatetimeMS):
        return GoTime.from_unix_nano(int(value) * 1_000_000)
    if isinstance(value, datetime):
        return GoTime.from_datetime(value)
    raise DecodeError(f"created_at is a {type(value).__name__}, not a BSON datetime")


# --------------------------------------------------------------------------- task states


def state_fields(state: TaskState, expires_at_ns: int | None) -> dict[str, Any]:
    """The ``$set`` fields of Go's ``SetState*`` for ``state``.

    PENDING: state, task_name, created_at; SUCCESS: state, results; FAILURE: state, error;
    the others: state. ``expires_at_ns`` (v2.0.14+) adds ``delete_at`` to SUCCESS and
    FAILURE. A TaskName or CreatedAt that Go's constructors never carry for the other
    states (a migrated or relayed state) is kept rather than dropped.
    """
    fields: dict[str, Any] = {"state": state.state}
    if state.state == PENDING or state.task_name:
        fields["task_name"] = state.task_name
    if state.state == PENDING or state.created_at != GO_ZERO_TIME:
        fields["created_at"] = bson_time(state.created_at)
    if state.state == SUCCESS:
        fields["results"] = [None if r is None else result_document(r, index)
                             for index, r in enumerate(state.results or ())]
    elif state.state == FAILURE:
        fields["error"] = state.error
    if state.ttl:
        fields["ttl"] = Int64(state.ttl)
    if expires_at_ns is not None and state.is_completed():
        fields["delete_at"] = DatetimeMS(expires_at_ns // 1_000_000)
    return fields


def state_from_document(doc: Mapping[str, Any]) -> TaskState:
    """What Go's driver decodes into ``tasks.TaskState`` (absent fields: zero values)."""
    results = doc.get("results")
    return TaskState(
        task_uuid=_text(doc.get("_id"), "_id"),
        task_name=_text(doc.get("task_name"), "task_name"),
        state=_text(doc.get("state"), "state"),
        results=None if results is None else [
            None if item is None else _result_from_document(item) for item in results],
        error=_text(doc.get("error"), "error"),
        created_at=_go_time(doc.get("created_at")),
        ttl=int(doc.get("ttl") or 0),
    )


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{field} is a {type(value).__name__}, not a string")
    return value


# --------------------------------------------------------------------------- results


def result_document(result: TaskResult, index: int = 0) -> dict[str, Any]:
    """``{type, value}`` as Go's SetStateSuccess stores the Go value (module doc)."""
    kind, value = result.type, result.value
    if isinstance(value, str) and not kind.startswith(("[]", "*", "map[")):
        found, document = _json_object(value)
        if found:
            return {"type": JSON_RESULT_TYPE, "value": document}
    return {"type": kind, "value": _typed_bson(kind, value, index)}


def _json_object(text: str) -> tuple[bool, Any]:
    """Go's ``json.NewDecoder(text).Decode(&bson.M)``: (succeeded, the map or None)."""
    try:
        value = gojson.loads_raw(text)
    except DecodeError:
        return False, None
    if value is None:
        return True, None  # "null" decodes into the nil map without an error
    if type(value) is not Pairs:
        return False, None
    try:
        return True, _json_to_bson(value)
    except OverflowError:  # a number float64 cannot hold: Go's decode fails
        return False, None


def _json_to_bson(value: Any) -> Any:
    """An ``interface{}`` decoded by encoding/json, as BSON: every number a double."""
    kind = type(value)
    if kind is Pairs:
        return {gojson.clean_str(key): _json_to_bson(item) for key, item in value}
    if kind is list:
        return [_json_to_bson(item) for item in value]
    if kind is str:
        return gojson.clean_str(value)
    if kind is int or kind is JSONNumber:
        number = float(value)
        if math.isinf(number):
            raise OverflowError(value)
        return number
    return value  # bool, None


def _typed_bson(kind: str, value: Any, index: int) -> Any:
    if kind not in SUPPORTED_TYPES or value is None:
        return _untyped_bson(value)
    try:
        typed = to_python(kind, value)
    except ArgTranslationError:
        return _untyped_bson(value)  # not what its Type says: stored as it is
    if kind in _BYTES_TYPES:
        return Binary(typed, 0)
    if kind.startswith("[]"):
        return [_scalar_bson(kind[2:], item, f"result {index} ({kind}) element {at}")
                for at, item in enumerate(typed)]
    return _scalar_bson(kind, typed, f"result {index} ({kind})")


def _scalar_bson(kind: str, value: Any, where: str) -> Any:
    if kind in _INT32_TYPES:
        return int(value)
    if kind == "int":
        return int(value) if _INT32_MIN <= value <= _INT32_MAX else Int64(value)
    if kind in _INT64_TYPES:
        if value > _INT64_MAX:
            raise EncodeError(f"{where}: {value} overflows int64, which is all BSON holds "
                              "(Go's driver refuses it too)")
        return Int64(value)
    return value  # bool, float, str


def _untyped_bson(value: Any) -> Any:
    """A wire value of a type Go cannot reflect (a struct, a map) as plain BSON."""
    kind = type(value)
    if kind is Pairs:
        return {gojson.clean_str(key): _untyped_bson(item) for key, item in value}
    if isinstance(value, Mapping):
        return {str(key): _untyped_bson(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_untyped_bson(item) for item in value]
    if kind is JSONNumber:
        literal = value.literal
        return int(literal) if literal.lstrip("-").isdigit() else float(value)
    if isinstance(value, bytes | bytearray):
        return Binary(bytes(value), 0)
    return value


def _result_from_document(item: Mapping[str, Any]) -> TaskResult:
    kind = _text(item.get("type"), "results.type")
    return TaskResult(type=kind, value=_wire(item.get("value")))


def _wire(value: Any) -> Any:
    """A BSON value in the wire form the JSON backends hold (ints, floats, base64 text)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return int(value)  # Int64 → int
    if isinstance(value, bytes):  # Binary subtype 0 decodes to bytes, the others are bytes too
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _wire(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [_wire(item) for item in value]
    if isinstance(value, DatetimeMS | datetime):
        return _go_time(value)
    return str(value)  # ObjectId, Decimal128...: their text


# --------------------------------------------------------------------------- group metas


def group_meta_document(meta: GroupMeta) -> dict[str, Any]:
    """What Go's ``InsertOne(GroupMeta)`` stores (``ttl`` omitted when 0)."""
    doc: dict[str, Any] = {
        "_id": meta.group_uuid,
        "task_uuids": None if meta.task_uuids is None else list(meta.task_uuids),
        "chord_triggered": meta.chord_triggered,
        "lock": meta.lock,
        "created_at": bson_time(meta.created_at),
    }
    if meta.ttl:
        doc["ttl"] = Int64(meta.ttl)
    return doc


def group_meta_from_document(doc: Mapping[str, Any]) -> GroupMeta:
    uuids = doc.get("task_uuids")
    return GroupMeta(
        group_uuid=_text(doc.get("_id"), "_id"),
        task_uuids=None if uuids is None else [_text(u, "task_uuids") for u in uuids],
        chord_triggered=bool(doc.get("chord_triggered", False)),
        lock=bool(doc.get("lock", False)),
        created_at=_go_time(doc.get("created_at")),
        ttl=int(doc.get("ttl") or 0),
    )
