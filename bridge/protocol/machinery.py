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
# TaskState middles with no error and no (or empty) results, by (state, results is None)
_SIMPLE_MIDDLES: dict[tuple[str, bool], bytes] = {}
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
    # The Go field names in order, and the fast builder for objects with as many pairs as
    # fields: it returns None unless the keys are those names in that order and it takes
    # the values (see the fast paths at the end of the module).
    _KEYS: ClassVar[tuple[str, ...]]
    _FAST: ClassVar[Callable[[Pairs], Any] | None] = None

    @classmethod
    def _setup(cls) -> None:
        cls._KEYS = tuple(go for go, _, _, _ in cls._FIELDS)
        cls._EXACT = {
            go: (attr, read, nullable, f"{cls.__name__}.{go}")
            for go, attr, read, nullable in cls._FIELDS
        }
        cls._FOLDED = {go.lower(): spec for go, spec in cls._EXACT.items()}

    @classmethod
    def _from_pairs(cls: type[_S], pairs: Pairs) -> _S:
        # The fast path: an object with exactly the Go field names in Go's order (what Go's
        # json.Marshal and our to_json write) and plain values is built straight from the
        # values; anything else (or a value the fast path does not take) goes the exact way.
        fast = cls._FAST
        if fast is not None and len(pairs) == len(cls._FIELDS):
            made = fast(pairs)
            if made is not None:
                return made  # type: ignore[no-any-return]
        return cls._from_pairs_exact(pairs)

    @classmethod
    def _from_pairs_exact(cls: type[_S], pairs: Pairs) -> _S:
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

    @classmethod
    def _from_json_exact(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """``from_json`` without any fast path (the reference the fast paths are tested
        against)."""
        raw = gojson.loads_raw_exact(data)
        if raw is None:
            return cls()
        if type(raw) is not Pairs:
            raise DecodeError(
                f"json: cannot unmarshal {_kind(raw)} into Go value of type tasks.{cls.__name__}"
            )
        return _exact_struct(cls, raw)

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
        task_uuid = self.task_uuid
        if type(task_uuid) is not str:
            raise EncodeError(f"TaskState.TaskUUID must be a str, not {type(task_uuid).__name__}")
        head = ('{"TaskUUID":' + quote(task_uuid) + ',"TaskName":').encode()
        results, error, state = self.results, self.error, self.state
        # RECEIVED, STARTED, SUCCESS with no results...: the same middle every time
        simple = (type(error) is str and not error and type(state) is str
                  and (results is None or (type(results) is list and not results)))
        key = (state, results is None)
        middle = _SIMPLE_MIDDLES.get(key) if simple else None
        if middle is None:
            parts: list[str] = []
            self._write_middle(parts)
            middle = "".join(parts).encode()
            if simple and len(_SIMPLE_MIDDLES) < 64:
                _SIMPLE_MIDDLES[key] = middle
        ttl = self.ttl
        if type(ttl) is int and ttl == 0:
            return head, middle, b',"TTL":0}'
        parts = []
        self._write_tail(parts)
        return head, middle, "".join(parts).encode()


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


# --------------------------------------------------------------------------- fast paths
# Builders for objects in the canonical shape (see _GoStruct._from_pairs). Each first checks
# every plain field and returns None when one is not of the plain type (so the exact path
# decides, and raises the error Go raises first); only then does it call the exact readers,
# in Go's field order, so an error they raise is the one the exact path raises first.

_clean = gojson.clean_str
_plain = gojson.plain
_read_arg = _struct_reader(Arg, pointer=False)
_read_result_ptr = _struct_reader(TaskResult, pointer=True)


def _fast_arg(pairs: Pairs) -> Arg | None:
    (k0, name), (k1, go_type), (k2, value) = pairs
    if not (k0 == "Name" and k1 == "Type" and k2 == "Value"
            and type(name) is str and type(go_type) is str):
        return None
    return Arg(name if name.isascii() else _clean(name),
               go_type if go_type.isascii() else _clean(go_type), _plain(value))


def _fast_result(pairs: Pairs) -> TaskResult | None:
    (k0, go_type), (k1, value) = pairs
    if not (k0 == "Type" and k1 == "Value" and type(go_type) is str):
        return None
    return TaskResult(go_type if go_type.isascii() else _clean(go_type), _plain(value))


def _fast_args(items: list[Any]) -> list[Arg]:
    args = []
    for item in items:
        if type(item) is Pairs and len(item) == 3:
            (k0, name), (k1, go_type), (k2, value) = item
            if (k0 == "Name" and k1 == "Type" and k2 == "Value" and type(name) is str
                    and type(go_type) is str and name.isascii() and go_type.isascii()):
                args.append(Arg(name, go_type, _plain(value)))
                continue
        args.append(_read_arg(item, "Signature.Args"))
    return args


def _signatures(items: Any, where: str) -> list[Signature | None]:
    if type(items) is not list:
        raise _mismatch(items, where, "[]*tasks.Signature")
    return [_read_signature_ptr(item, where) for item in items]


def _fast_signature(pairs: Pairs) -> Signature | None:
    ((k0, uuid), (k1, name), (k2, routing_key), (k3, eta), (k4, group_uuid),
     (k5, group_task_count), (k6, args), (k7, headers), (k8, priority), (k9, immutable),
     (k10, retry_count), (k11, retry_timeout), (k12, on_success), (k13, on_error),
     (k14, chord_callback), (k15, group_id), (k16, receipt), (k17, stop_deletion),
     (k18, ignore)) = pairs
    if not ((k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15, k16, k17,
             k18) == _SIGNATURE_KEYS
            and type(uuid) is str and type(name) is str and type(routing_key) is str
            and type(group_uuid) is str and type(group_id) is str and type(receipt) is str
            and type(group_task_count) is int and type(retry_count) is int
            and type(retry_timeout) is int and type(priority) is int
            and type(immutable) is bool and type(stop_deletion) is bool
            and type(ignore) is bool
            and _INT64_MIN <= group_task_count <= _INT64_MAX
            and _INT64_MIN <= retry_count <= _INT64_MAX
            and _INT64_MIN <= retry_timeout <= _INT64_MAX and 0 <= priority <= 255
            and (eta is None or type(eta) is str)
            and (args is None or type(args) is list)
            and (headers is None or type(headers) is Pairs)):
        return None
    if not (uuid.isascii() and name.isascii() and routing_key.isascii()
            and group_uuid.isascii() and group_id.isascii() and receipt.isascii()):
        uuid, name, routing_key = _clean(uuid), _clean(name), _clean(routing_key)
        group_uuid, group_id, receipt = _clean(group_uuid), _clean(group_id), _clean(receipt)
    # the readers that may raise run in Go's field order, after every plain field passed
    return Signature(
        uuid, name, routing_key, None if eta is None else parse_rfc3339(eta), group_uuid,
        group_task_count, None if args is None else _fast_args(args),
        None if headers is None else ({} if not headers else _plain(headers)), priority,
        immutable, retry_count, retry_timeout,
        None if on_success is None else _signatures(on_success, "Signature.OnSuccess"),
        None if on_error is None else _signatures(on_error, "Signature.OnError"),
        None if chord_callback is None
        else _read_signature_ptr(chord_callback, "Signature.ChordCallback"),
        group_id, receipt, stop_deletion, ignore,
    )


def _fast_task_state(pairs: Pairs) -> TaskState | None:
    ((k0, task_uuid), (k1, task_name), (k2, state), (k3, results), (k4, error),
     (k5, created_at), (k6, ttl)) = pairs
    if not ((k0, k1, k2, k3, k4, k5, k6) == _TASK_STATE_KEYS
            and type(task_uuid) is str and type(task_name) is str and type(state) is str
            and type(error) is str and type(created_at) is str and type(ttl) is int
            and _INT64_MIN <= ttl <= _INT64_MAX and (results is None or type(results) is list)):
        return None
    if not (task_uuid.isascii() and task_name.isascii() and state.isascii()
            and error.isascii()):
        task_uuid, task_name, state, error = (
            _clean(task_uuid), _clean(task_name), _clean(state), _clean(error))
    if results is not None:
        results = [_read_result_ptr(item, "TaskState.Results") for item in results]
    return TaskState(task_uuid, task_name, state, results, error, parse_rfc3339(created_at), ttl)


def _exact_struct(cls: type[_S], pairs: Pairs) -> _S:
    """``cls._from_pairs`` with no fast path at any depth (nested structs included).

    For the differential tests only: while it runs, the fast builders are off for the whole
    process (every decode is then exact, just slower)."""
    saved = {kind: kind.__dict__.get("_FAST") for kind in _FAST_BUILDERS}
    for kind in _FAST_BUILDERS:
        kind._FAST = None
    try:
        return cls._from_pairs_exact(pairs)
    finally:
        for kind, fast in saved.items():
            kind._FAST = fast


_SIGNATURE_KEYS = Signature._KEYS
_TASK_STATE_KEYS = TaskState._KEYS
Arg._FAST = _fast_arg
TaskResult._FAST = _fast_result
Signature._FAST = _fast_signature
TaskState._FAST = _fast_task_state
_FAST_BUILDERS: tuple[type[_GoStruct], ...] = (Arg, TaskResult, Signature, TaskState)
