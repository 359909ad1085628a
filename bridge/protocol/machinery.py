"""machinery's messages: Signature, Arg, TaskState, TaskResult, GroupMeta.

Pure codecs, no I/O. ``to_json`` writes exactly what Go's ``json.Marshal``
writes for the same struct (v1 and v2 share these structs, byte for byte);
``from_json`` reads like machinery's consumers (``Decoder.UseNumber``):
case-insensitive keys, unknown keys ignored, integer fields strict, an ETA
must carry an offset. Arg and result values stay in their wire form (what Go
decoded into ``interface{}``); ``bridge.types`` turns them into typed Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from bridge.errors import DecodeError, EncodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import Pairs, quote
from bridge.protocol.gotime import GO_ZERO_TIME, format_rfc3339, parse_rfc3339

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
STATES = (PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SIMPLE_MIDDLES: dict[str, bytes] = {}  # TaskState middles with no results/error, by state
_FLOAT32_TYPES = frozenset({"float32", "[]float32"})


def new_uuid(prefix: str = "task_") -> str:
    """A machinery UUID: ``task_``/``group_``/``chord_`` + a lowercase uuid4."""
    return prefix + str(uuid.uuid4())


# --------------------------------------------------------------------------- field readers
# Each reader turns one decoded JSON value into the field's Python value, or raises
# DecodeError with Go's wording. JSON null leaves a non-pointer Go field at its zero value,
# so readers are only called for non-null values of non-pointer fields.

Reader = Callable[[Any, str], Any]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number " + (value.literal if isinstance(value, gojson.JSONNumber) else str(value))
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and not isinstance(value, Pairs):
        return "array"
    return "object"


def _mismatch(value: Any, where: str, go_type: str) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {_kind(value)} into Go struct field {where} of type {go_type}"
    )


def _read_str(value: Any, where: str) -> str:
    if type(value) is str:
        return value if value.isascii() else gojson.clean_str(value)
    if value is None:  # a null element of a []string is Go's zero value
        return ""
    raise _mismatch(value, where, "string")


def _read_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _mismatch(value, where, "bool")
    return value


def _int_reader(go_type: str, low: int, high: int) -> Reader:
    def read(value: Any, where: str) -> int:
        if type(value) is not int or not low <= value <= high:
            if type(value) is gojson.JSONNumber and value.literal == "-0":
                return 0
            raise _mismatch(value, where, go_type)
        return value

    return read


_read_int = _int_reader("int", _INT64_MIN, _INT64_MAX)
_read_int64 = _int_reader("int64", _INT64_MIN, _INT64_MAX)
_read_uint8 = _int_reader("uint8", 0, 255)


def _read_time(value: Any, where: str) -> datetime:
    if type(value) is not str:
        raise _mismatch(value, where, "time.Time")
    return parse_rfc3339(value)


def _read_any(value: Any, where: str) -> Any:
    return gojson.plain(value)


def _read_map(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not Pairs:
        raise _mismatch(value, where, "map[string]interface {}")
    return gojson.plain(value)  # type: ignore[no-any-return]


def _list_reader(go_type: str, element: Callable[[Any, str], Any]) -> Reader:
    def read(value: Any, where: str) -> list[Any]:
        if type(value) is not list:
            raise _mismatch(value, where, go_type)
        return [element(item, where) for item in value]

    return read


def _struct_reader(cls: type[_S], pointer: bool) -> Reader:
    def read(value: Any, where: str) -> Any:
        if value is None:
            return None if pointer else cls()
        if type(value) is not Pairs:
            raise _mismatch(value, where, ("*tasks." if pointer else "tasks.") + cls.__name__)
        return cls._from_pairs(value)

    return read


_S = TypeVar("_S", bound="_GoStruct")


class _GoStruct:
    """Shared decode/encode plumbing for the machinery structs."""

    __slots__ = ()

    # (Go field name, attribute, reader, nullable pointer/slice/map?)
    _FIELDS: ClassVar[tuple[tuple[str, str, Reader, bool], ...]]
    # Go field name (exact, and lower-cased) → (attribute, reader, nullable, "Struct.Field")
    _EXACT: ClassVar[dict[str, tuple[str, Reader, bool, str]]]
    _FOLDED: ClassVar[dict[str, tuple[str, Reader, bool, str]]]

    @classmethod
    def _setup(cls) -> None:
        cls._EXACT = {
            go: (attr, read, nullable, f"{cls.__name__}.{go}")
            for go, attr, read, nullable in cls._FIELDS
        }
        cls._FOLDED = {go.lower(): spec for go, spec in cls._EXACT.items()}

    @classmethod
    def _from_pairs(cls: type[_S], pairs: Pairs) -> _S:
        # Go: exact field name first, else case-insensitive; later keys win; unknown ignored;
        # null leaves a value field as it was and sets a pointer/slice/map to nil.
        exact, folded = cls._EXACT, cls._FOLDED
        values: dict[str, Any] = {}
        for key, raw in pairs:
            spec = exact.get(key) or folded.get(gojson.fold_key(key))
            if spec is None:
                continue
            if raw is None:
                if spec[2]:
                    values[spec[0]] = None
                continue
            if type(raw) is str and spec[1] is _read_str and raw.isascii():
                values[spec[0]] = raw  # the common case, without a call
            else:
                values[spec[0]] = spec[1](raw, spec[3])
        return cls(**values)

    @classmethod
    def from_json(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """Decode as machinery's consumers do (``json.Decoder`` with ``UseNumber``)."""
        raw = gojson.loads_raw(data)
        if raw is None:
            return cls()  # Go: decoding null into a struct leaves it at its zero value
        if type(raw) is not Pairs:
            raise DecodeError(
                f"json: cannot unmarshal {_kind(raw)} into Go value of type tasks.{cls.__name__}"
            )
        return cls._from_pairs(raw)

    def _write(self, out: list[str]) -> None:
        raise NotImplementedError

    def to_json(self) -> bytes:
        """Exactly the bytes Go's ``json.Marshal`` writes for this struct."""
        out: list[str] = []
        self._write(out)
        return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- writers


def _str(out: list[str], value: object, where: str) -> None:
    if type(value) is not str:
        raise EncodeError(f"{where} must be a str, not {type(value).__name__}")
    out.append(quote(value))


def _int(out: list[str], value: object, where: str, low: int = _INT64_MIN,
         high: int = _INT64_MAX) -> None:
    if type(value) is not int or not low <= value <= high:
        raise EncodeError(f"{where} must be an int in {low}..{high}, not {value!r}")
    out.append(str(value))


def _bool(out: list[str], value: object, where: str) -> None:
    if type(value) is not bool:
        raise EncodeError(f"{where} must be a bool, not {type(value).__name__}")
    out.append("true" if value else "false")


def _time(out: list[str], value: datetime | None) -> None:
    out.append("null" if value is None else '"' + format_rfc3339(value) + '"')


def _structs(out: list[str], items: list[Any] | None) -> None:
    if items is None:
        out.append("null")
        return
    out.append("[")
    for index, item in enumerate(items):
        if index:
            out.append(",")
        if item is None:
            out.append("null")
        else:
            item._write(out)
    out.append("]")


# --------------------------------------------------------------------------- the structs


@dataclass(slots=True, eq=True)
class Arg(_GoStruct):
    """One positional task argument: ``{"Name", "Type", "Value"}``.

    ``value`` is the wire form (what Go's decoder puts in ``interface{}``);
    use ``bridge.types.to_python`` / ``to_arg`` for typed values.
    """

    name: str = ""
    type: str = ""
    value: Any = None

    def _write(self, out: list[str]) -> None:
        out.append('{"Name":')
        _str(out, self.name, "Arg.Name")
        out.append(',"Type":')
        _str(out, self.type, "Arg.Type")
        out.append(',"Value":')
        gojson.write(self.value, out, f32=self.type in _FLOAT32_TYPES)
        out.append("}")


@dataclass(slots=True, eq=True)
class Signature(_GoStruct):
    """A machinery task message (``tasks.Signature``), 19 fields in Go's order."""

    uuid: str = ""
    name: str = ""
    routing_key: str = ""
    eta: datetime | None = None
    group_uuid: str = ""
    group_task_count: int = 0
    args: list[Arg] | None = None
    headers: dict[str, Any] | None = None
    priority: int = 0
    immutable: bool = False
    retry_count: int = 0
    retry_timeout: int = 0
    on_success: list[Signature | None] | None = None
    on_error: list[Signature | None] | None = None
    chord_callback: Signature | None = None
    broker_message_group_id: str = ""
    sqs_receipt_handle: str = ""
    stop_task_deletion_on_error: bool = False
    ignore_when_task_not_registered: bool = False

    def _write(self, out: list[str]) -> None:
        out.append('{"UUID":')
        _str(out, self.uuid, "Signature.UUID")
        out.append(',"Name":')
        _str(out, self.name, "Signature.Name")
        out.append(',"RoutingKey":')
        _str(out, self.routing_key, "Signature.RoutingKey")
        out.append(',"ETA":')
        _time(out, self.eta)
        out.append(',"GroupUUID":')
        _str(out, self.group_uuid, "Signature.GroupUUID")
        out.append(',"GroupTaskCount":')
        _int(out, self.group_task_count, "Signature.GroupTaskCount")
        out.append(',"Args":')
        _structs(out, self.args)
        out.append(',"Headers":')
        gojson.write(self.headers, out)
        out.append(',"Priority":')
        _int(out, self.priority, "Signature.Priority", 0, 255)
        out.append(',"Immutable":')
        _bool(out, self.immutable, "Signature.Immutable")
        out.append(',"RetryCount":')
        _int(out, self.retry_count, "Signature.RetryCount")
        out.append(',"RetryTimeout":')
        _int(out, self.retry_timeout, "Signature.RetryTimeout")
        out.append(',"OnSuccess":')
        _structs(out, self.on_success)
        out.append(',"OnError":')
        _structs(out, self.on_error)
        out.append(',"ChordCallback":')
        if self.chord_callback is None:
            out.append("null")
        else:
            self.chord_callback._write(out)
        out.append(',"BrokerMessageGroupId":')
        _str(out, self.broker_message_group_id, "Signature.BrokerMessageGroupId")
        out.append(',"SQSReceiptHandle":')
        _str(out, self.sqs_receipt_handle, "Signature.SQSReceiptHandle")
        out.append(',"StopTaskDeletionOnError":')
        _bool(out, self.stop_task_deletion_on_error, "Signature.StopTaskDeletionOnError")
        out.append(',"IgnoreWhenTaskNotRegistered":')
        _bool(out, self.ignore_when_task_not_registered,
              "Signature.IgnoreWhenTaskNotRegistered")
        out.append("}")


@dataclass(slots=True, eq=True)
class TaskResult(_GoStruct):
    """One return value of a task: ``{"Type", "Value"}`` (Type is Go's reflect name)."""

    type: str = ""
    value: Any = None

    def _write(self, out: list[str]) -> None:
        out.append('{"Type":')
        _str(out, self.type, "TaskResult.Type")
        out.append(',"Value":')
        gojson.write(self.value, out, f32=self.type in _FLOAT32_TYPES)
        out.append("}")


@dataclass(slots=True, eq=True)
class TaskState(_GoStruct):
    """A task's state in a result backend (``tasks.TaskState``)."""

    task_uuid: str = ""
    task_name: str = ""
    state: str = ""
    results: list[TaskResult | None] | None = None
    error: str = ""
    created_at: datetime = field(default=GO_ZERO_TIME)
    ttl: int = 0

    def is_completed(self) -> bool:
        """SUCCESS or FAILURE, as Go's ``IsCompleted``."""
        return self.state in (SUCCESS, FAILURE)

    def is_success(self) -> bool:
        return self.state == SUCCESS

    def is_failure(self) -> bool:
        return self.state == FAILURE

    def _write(self, out: list[str]) -> None:
        self._write_head(out)
        _str(out, self.task_name, "TaskState.TaskName")
        self._write_middle(out)
        _time(out, self.created_at)
        self._write_tail(out)

    def _write_head(self, out: list[str]) -> None:
        out.append('{"TaskUUID":')
        _str(out, self.task_uuid, "TaskState.TaskUUID")
        out.append(',"TaskName":')

    def _write_middle(self, out: list[str]) -> None:
        out.append(',"State":')
        _str(out, self.state, "TaskState.State")
        out.append(',"Results":')
        _structs(out, self.results)
        out.append(',"Error":')
        _str(out, self.error, "TaskState.Error")
        out.append(',"CreatedAt":')

    def _write_tail(self, out: list[str]) -> None:
        out.append(',"TTL":')
        _int(out, self.ttl, "TaskState.TTL")
        out.append("}")

    def to_json_parts(self) -> tuple[bytes, bytes, bytes]:
        """Go's bytes split around the TaskName and CreatedAt values.

        ``head + name + middle + created + tail`` is the JSON of this state with another
        TaskName and CreatedAt: how a backend merges them in place (Go's mergeNewTaskState).
        """
        parts: tuple[list[str], list[str], list[str]] = ([], [], [])
        self._write_head(parts[0])
        simple = self.results is None and self.error == "" and self.ttl == 0
        middle = _SIMPLE_MIDDLES.get(self.state) if simple else None
        if middle is None:
            self._write_middle(parts[1])
            middle = "".join(parts[1]).encode()
            if simple and len(_SIMPLE_MIDDLES) < 64:  # RECEIVED, STARTED... are constants
                _SIMPLE_MIDDLES[self.state] = middle
        self._write_tail(parts[2])
        return "".join(parts[0]).encode(), middle, "".join(parts[2]).encode()


@dataclass(slots=True, eq=True)
class GroupMeta(_GoStruct):
    """A group's bookkeeping in a result backend (``tasks.GroupMeta``)."""

    group_uuid: str = ""
    task_uuids: list[str] | None = None
    chord_triggered: bool = False
    lock: bool = False
    created_at: datetime = field(default=GO_ZERO_TIME)
    ttl: int = 0

    def _write(self, out: list[str]) -> None:
        out.append('{"GroupUUID":')
        _str(out, self.group_uuid, "GroupMeta.GroupUUID")
        out.append(',"TaskUUIDs":')
        if self.task_uuids is None:
            out.append("null")
        else:
            out.append("[")
            for index, item in enumerate(self.task_uuids):
                if index:
                    out.append(",")
                _str(out, item, "GroupMeta.TaskUUIDs")
            out.append("]")
        out.append(',"ChordTriggered":')
        _bool(out, self.chord_triggered, "GroupMeta.ChordTriggered")
        out.append(',"Lock":')
        _bool(out, self.lock, "GroupMeta.Lock")
        out.append(',"CreatedAt":')
        _time(out, self.created_at)
        out.append(',"TTL":')
        _int(out, self.ttl, "GroupMeta.TTL")
        out.append("}")


Arg._FIELDS = (
    ("Name", "name", _read_str, False),
    ("Type", "type", _read_str, False),
    ("Value", "value", _read_any, True),
)
TaskResult._FIELDS = (
    ("Type", "type", _read_str, False),
    ("Value", "value", _read_any, True),
)
_read_signature_ptr = _struct_reader(Signature, pointer=True)
Signature._FIELDS = (
    ("UUID", "uuid", _read_str, False),
    ("Name", "name", _read_str, False),
    ("RoutingKey", "routing_key", _read_str, False),
    ("ETA", "eta", _read_time, True),
    ("GroupUUID", "group_uuid", _read_str, False),
    ("GroupTaskCount", "group_task_count", _read_int, False),
    ("Args", "args", _list_reader("[]tasks.Arg", _struct_reader(Arg, pointer=False)), True),
    ("Headers", "headers", _read_map, True),
    ("Priority", "priority", _read_uint8, False),
    ("Immutable", "immutable", _read_bool, False),
    ("RetryCount", "retry_count", _read_int, False),
    ("RetryTimeout", "retry_timeout", _read_int, False),
    ("OnSuccess", "on_success", _list_reader("[]*tasks.Signature", _read_signature_ptr), True),
    ("OnError", "on_error", _list_reader("[]*tasks.Signature", _read_signature_ptr), True),
    ("ChordCallback", "chord_callback", _read_signature_ptr, True),
    ("BrokerMessageGroupId", "broker_message_group_id", _read_str, False),
    ("SQSReceiptHandle", "sqs_receipt_handle", _read_str, False),
    ("StopTaskDeletionOnError", "stop_task_deletion_on_error", _read_bool, False),
    ("IgnoreWhenTaskNotRegistered", "ignore_when_task_not_registered", _read_bool, False),
)
TaskState._FIELDS = (
    ("TaskUUID", "task_uuid", _read_str, False),
    ("TaskName", "task_name", _read_str, False),
    ("State", "state", _read_str, False),
    ("Results", "results",
     _list_reader("[]*tasks.TaskResult", _struct_reader(TaskResult, pointer=True)), True),
    ("Error", "error", _read_str, False),
    ("CreatedAt", "created_at", _read_time, False),
    ("TTL", "ttl", _read_int64, False),
)
GroupMeta._FIELDS = (
    ("GroupUUID", "group_uuid", _read_str, False),
    ("TaskUUIDs", "task_uuids", _list_reader("[]string", _read_str), True),
    ("ChordTriggered", "chord_triggered", _read_bool, False),
    ("Lock", "lock", _read_bool, False),
    ("CreatedAt", "created_at", _read_time, False),
    ("TTL", "ttl", _read_int64, False),
)
for _cls in (Arg, TaskResult, Signature, TaskState, GroupMeta):
    _cls._setup()
