"""machinery's messages: Signature, Arg, TaskState, TaskResult, GroupMeta.

Pure codecs, no I/O. ``to_json`` writes exactly what Go's ``json.Marshal``
writes for the same struct (v1 and v2 share these structs, byte for byte);
``from_json`` reads like machinery's consumers (``Decoder.UseNumber``):
case-insensitive keys, unknown keys ignored, integer fields strict, an ETA
must carry an offset. Arg and result values stay in their wire form (what Go
decoded into ``interface{}``); ``bridge.types`` turns them into typed Python. Go's struct
rules themselves (field readers, writers, the struct base) are in ``bridge.protocol.gostruct``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.errors import DecodeError, EncodeError
from bridge.protocol import gojson, typed_decode
from bridge.protocol.gojson import JSONNumber, Pairs, quote
from bridge.protocol.gostruct import (
    INT64_MAX,
    INT64_MIN,
    GoStruct,
    list_reader,
    mismatch,
    read_any,
    read_bool,
    read_int,
    read_int64,
    read_map,
    read_str,
    read_time,
    read_uint8,
    struct_reader,
    write_bool,
    write_int,
    write_str,
    write_structs,
    write_time,
)
from bridge.protocol.gotime import GO_ZERO_TIME, parse_rfc3339

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
STATES = (PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE)

# TaskState middles with no error and no (or empty) results, by (state, results is None)
_SIMPLE_MIDDLES: dict[tuple[str, bool], bytes] = {}
_FLOAT32_TYPES = frozenset({"float32", "[]float32"})


_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}  # RFC 4122: 10xx in the top bits


def new_uuid(prefix: str = "task_") -> str:
    """A machinery UUID: ``task_``/``group_``/``chord_`` + a lowercase uuid4 (what
    ``str(uuid.uuid4())`` gives, from the same 16 random bytes, in a third of its time)."""
    h = os.urandom(16).hex()
    return f"{prefix}{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# --------------------------------------------------------------------------- the structs

FAST_WRITERS = True
"""Signatures and Args in the common case written in a few appends (the differential tests
turn it off to get the field-by-field bytes they compare with)."""
_NEEDS_ESCAPE = gojson.NEEDS_ESCAPE


def _plain_strings(items: list[Any]) -> bool:
    """A non-empty list of strings that need no escaping."""
    for item in items:
        if type(item) is not str:
            return False
    return bool(items) and _NEEDS_ESCAPE("".join(items)) is None


@dataclass(slots=True, eq=True)
class Arg(GoStruct):
    """One positional task argument: ``{"Name", "Type", "Value"}``.

    ``value`` is the wire form (what Go's decoder puts in ``interface{}``);
    use ``bridge.types.to_python`` / ``to_arg`` for typed values.
    """

    name: str = ""
    type: str = ""
    value: Any = None

    def _write(self, out: list[str]) -> None:
        name, go_type = self.name, self.type
        if (FAST_WRITERS and type(name) is str and type(go_type) is str
                and _NEEDS_ESCAPE(name + go_type) is None):
            value = self.value
            kind = type(value)
            out.append(f'{{"Name":"{name}","Type":"{go_type}","Value":')
            if kind is str and _NEEDS_ESCAPE(value) is None:
                out.append(f'"{value}"}}')
            elif kind is int:
                out.append(f"{value}}}")
            elif kind is bool:
                out.append("true}" if value else "false}")
            elif kind is JSONNumber:
                out.append(value.literal + "}")
            elif kind is float and go_type not in _FLOAT32_TYPES:
                out.append(gojson.format_float64(value) + "}")
            elif kind is list and _plain_strings(value):
                out.append('["' + '","'.join(value) + '"]}')
            else:
                gojson.write(value, out, f32=go_type in _FLOAT32_TYPES)
                out.append("}")
            return
        out.append('{"Name":')
        write_str(out, self.name, "Arg.Name")
        out.append(',"Type":')
        write_str(out, self.type, "Arg.Type")
        out.append(',"Value":')
        gojson.write(self.value, out, f32=self.type in _FLOAT32_TYPES)
        out.append("}")


MAX_NESTING = 100
"""Deepest OnSuccess / OnError / ChordCallback nesting a Signature may have here: a chain
of up to 101 tasks (NewChain nests each next task in the previous one's OnSuccess). Go
decodes deeper ones; Python's recursion limit does not allow them, so they are refused
with this reason instead of failing somewhere later."""
_NESTED = frozenset({"onsuccess", "onerror", "chordcallback"})
_GO_NESTED = frozenset({"OnSuccess", "OnError", "ChordCallback"})
_GO_FLAT = frozenset({
    "UUID", "Name", "RoutingKey", "ETA", "GroupUUID", "GroupTaskCount", "Args", "Headers",
    "Priority", "Immutable", "RetryCount", "RetryTimeout", "BrokerMessageGroupId",
    "SQSReceiptHandle", "StopTaskDeletionOnError", "IgnoreWhenTaskNotRegistered"})


def nesting(raw: Pairs, limit: int = MAX_NESTING) -> int:
    """How deep Signatures nest in a decoded Signature object (counted up to ``limit + 1``,
    iteratively: a deep message cannot exhaust the stack here)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(raw, 0)]
    while stack:
        node, depth = stack.pop()
        if type(node) is not Pairs:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        for key, value in node:
            if key in _GO_FLAT or (key not in _GO_NESTED
                                   and gojson.fold_key(key) not in _NESTED):
                continue  # Go's own names need no folding; only other spellings do
            children = value if type(value) is list else [value]
            stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass(slots=True, eq=True)
class Signature(GoStruct):
    """A machinery task message (``tasks.Signature``), 19 fields in Go's order."""

    @classmethod
    def _check(cls, raw: Pairs) -> None:
        if nesting(raw) > MAX_NESTING:
            raise DecodeError(f"Signature nested more than {MAX_NESTING} levels deep "
                              "(OnSuccess / OnError / ChordCallback): a chain of more than "
                              f"{MAX_NESTING + 1} tasks is refused here")

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
        if not (FAST_WRITERS and self._write_plain(out)):
            self._write_exact(out)

    def _write_plain(self, out: list[str]) -> bool:
        """The common case in a few appends: every string needs no escaping and every
        number and flag is in range (checked first; else False, nothing written)."""
        uuid, name, routing_key, group_uuid = (
            self.uuid, self.name, self.routing_key, self.group_uuid)
        group_id, receipt = self.broker_message_group_id, self.sqs_receipt_handle
        count, priority = self.group_task_count, self.priority
        retry_count, retry_timeout = self.retry_count, self.retry_timeout
        immutable, stop, ignore = (self.immutable, self.stop_task_deletion_on_error,
                                   self.ignore_when_task_not_registered)
        if not (type(uuid) is str and type(name) is str and type(routing_key) is str
                and type(group_uuid) is str and type(group_id) is str and type(receipt) is str
                and type(count) is int and type(priority) is int and type(retry_count) is int
                and type(retry_timeout) is int and type(immutable) is bool
                and type(stop) is bool and type(ignore) is bool
                and INT64_MIN <= count <= INT64_MAX and 0 <= priority <= 255
                and INT64_MIN <= retry_count <= INT64_MAX
                and INT64_MIN <= retry_timeout <= INT64_MAX
                and _NEEDS_ESCAPE(uuid + name + routing_key + group_uuid + group_id
                                  + receipt) is None):
            return False
        out.append(f'{{"UUID":"{uuid}","Name":"{name}","RoutingKey":"{routing_key}","ETA":')
        write_time(out, self.eta)
        out.append(f',"GroupUUID":"{group_uuid}","GroupTaskCount":{count},"Args":')
        args = self.args
        if args is None:
            out.append("null")
        else:
            out.append("[")
            first = True
            for arg in args:
                if not first:
                    out.append(",")
                first = False
                if arg is None:
                    out.append("null")
                else:
                    arg._write(out)
            out.append("]")
        out.append(',"Headers":')
        headers = self.headers
        if headers is None:
            out.append("null")
        elif type(headers) is dict and not headers:
            out.append("{}")
        else:
            gojson.write(headers, out)
        out.append(f',"Priority":{priority},"Immutable":{"true" if immutable else "false"},'
                   f'"RetryCount":{retry_count},"RetryTimeout":{retry_timeout},"OnSuccess":')
        if self.on_success is None and self.on_error is None and self.chord_callback is None:
            out.append('null,"OnError":null,"ChordCallback":null')
        else:
            self._write_links(out)
        out.append(f',"BrokerMessageGroupId":"{group_id}","SQSReceiptHandle":"{receipt}",'
                   f'"StopTaskDeletionOnError":{"true" if stop else "false"},'
                   f'"IgnoreWhenTaskNotRegistered":{"true" if ignore else "false"}}}')
        return True

    def _write_links(self, out: list[str]) -> None:
        """OnSuccess, OnError and ChordCallback (after ``"OnSuccess":``)."""
        write_structs(out, self.on_success)
        out.append(',"OnError":')
        write_structs(out, self.on_error)
        out.append(',"ChordCallback":')
        if self.chord_callback is None:
            out.append("null")
        else:
            self.chord_callback._write(out)

    def _write_exact(self, out: list[str]) -> None:
        """Field by field, each checked in Go's order (the error names the first bad one)."""
        out.append('{"UUID":')
        write_str(out, self.uuid, "Signature.UUID")
        out.append(',"Name":')
        write_str(out, self.name, "Signature.Name")
        out.append(',"RoutingKey":')
        write_str(out, self.routing_key, "Signature.RoutingKey")
        out.append(',"ETA":')
        write_time(out, self.eta)
        out.append(',"GroupUUID":')
        write_str(out, self.group_uuid, "Signature.GroupUUID")
        out.append(',"GroupTaskCount":')
        write_int(out, self.group_task_count, "Signature.GroupTaskCount")
        out.append(',"Args":')
        write_structs(out, self.args)
        out.append(',"Headers":')
        gojson.write(self.headers, out)
        out.append(',"Priority":')
        write_int(out, self.priority, "Signature.Priority", 0, 255)
        out.append(',"Immutable":')
        write_bool(out, self.immutable, "Signature.Immutable")
        out.append(',"RetryCount":')
        write_int(out, self.retry_count, "Signature.RetryCount")
        out.append(',"RetryTimeout":')
        write_int(out, self.retry_timeout, "Signature.RetryTimeout")
        out.append(',"OnSuccess":')
        self._write_links(out)
        out.append(',"BrokerMessageGroupId":')
        write_str(out, self.broker_message_group_id, "Signature.BrokerMessageGroupId")
        out.append(',"SQSReceiptHandle":')
        write_str(out, self.sqs_receipt_handle, "Signature.SQSReceiptHandle")
        out.append(',"StopTaskDeletionOnError":')
        write_bool(out, self.stop_task_deletion_on_error, "Signature.StopTaskDeletionOnError")
        out.append(',"IgnoreWhenTaskNotRegistered":')
        write_bool(out, self.ignore_when_task_not_registered,
              "Signature.IgnoreWhenTaskNotRegistered")
        out.append("}")


@dataclass(slots=True, eq=True)
class TaskResult(GoStruct):
    """One return value of a task: ``{"Type", "Value"}`` (Type is Go's reflect name)."""

    type: str = ""
    value: Any = None

    def _write(self, out: list[str]) -> None:
        out.append('{"Type":')
        write_str(out, self.type, "TaskResult.Type")
        out.append(',"Value":')
        gojson.write(self.value, out, f32=self.type in _FLOAT32_TYPES)
        out.append("}")


@dataclass(slots=True, eq=True)
class TaskState(GoStruct):
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
        uuid, name, state, error, ttl = (
            self.task_uuid, self.task_name, self.state, self.error, self.ttl)
        if (FAST_WRITERS and type(uuid) is str and type(name) is str and type(state) is str
                and type(error) is str and type(ttl) is int and INT64_MIN <= ttl <= INT64_MAX
                and _NEEDS_ESCAPE(uuid + name + state + error) is None):
            # the common case (strings that need no escaping) in a few appends
            out.append(f'{{"TaskUUID":"{uuid}","TaskName":"{name}","State":"{state}",'
                       '"Results":')
            write_structs(out, self.results)
            out.append(f',"Error":"{error}","CreatedAt":')
            write_time(out, self.created_at)
            out.append(f',"TTL":{ttl}}}')
            return
        self._write_head(out)
        write_str(out, self.task_name, "TaskState.TaskName")
        self._write_middle(out)
        write_time(out, self.created_at)
        self._write_tail(out)

    def _write_head(self, out: list[str]) -> None:
        out.append('{"TaskUUID":')
        write_str(out, self.task_uuid, "TaskState.TaskUUID")
        out.append(',"TaskName":')

    def _write_middle(self, out: list[str]) -> None:
        out.append(',"State":')
        write_str(out, self.state, "TaskState.State")
        out.append(',"Results":')
        write_structs(out, self.results)
        out.append(',"Error":')
        write_str(out, self.error, "TaskState.Error")
        out.append(',"CreatedAt":')

    def _write_tail(self, out: list[str]) -> None:
        out.append(',"TTL":')
        write_int(out, self.ttl, "TaskState.TTL")
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
class GroupMeta(GoStruct):
    """A group's bookkeeping in a result backend (``tasks.GroupMeta``)."""

    group_uuid: str = ""
    task_uuids: list[str] | None = None
    chord_triggered: bool = False
    lock: bool = False
    created_at: datetime = field(default=GO_ZERO_TIME)
    ttl: int = 0

    def _write(self, out: list[str]) -> None:
        out.append('{"GroupUUID":')
        write_str(out, self.group_uuid, "GroupMeta.GroupUUID")
        out.append(',"TaskUUIDs":')
        if self.task_uuids is None:
            out.append("null")
        else:
            out.append("[")
            for index, item in enumerate(self.task_uuids):
                if index:
                    out.append(",")
                write_str(out, item, "GroupMeta.TaskUUIDs")
            out.append("]")
        out.append(',"ChordTriggered":')
        write_bool(out, self.chord_triggered, "GroupMeta.ChordTriggered")
        out.append(',"Lock":')
        write_bool(out, self.lock, "GroupMeta.Lock")
        out.append(',"CreatedAt":')
        write_time(out, self.created_at)
        out.append(',"TTL":')
        write_int(out, self.ttl, "GroupMeta.TTL")
        out.append("}")


Arg._FIELDS = (
    ("Name", "name", read_str, False),
    ("Type", "type", read_str, False),
    ("Value", "value", read_any, True),
)
TaskResult._FIELDS = (
    ("Type", "type", read_str, False),
    ("Value", "value", read_any, True),
)
_read_signature_ptr = struct_reader(Signature, pointer=True)
Signature._FIELDS = (
    ("UUID", "uuid", read_str, False),
    ("Name", "name", read_str, False),
    ("RoutingKey", "routing_key", read_str, False),
    ("ETA", "eta", read_time, True),
    ("GroupUUID", "group_uuid", read_str, False),
    ("GroupTaskCount", "group_task_count", read_int, False),
    ("Args", "args", list_reader("[]tasks.Arg", struct_reader(Arg, pointer=False)), True),
    ("Headers", "headers", read_map, True),
    ("Priority", "priority", read_uint8, False),
    ("Immutable", "immutable", read_bool, False),
    ("RetryCount", "retry_count", read_int, False),
    ("RetryTimeout", "retry_timeout", read_int, False),
    ("OnSuccess", "on_success", list_reader("[]*tasks.Signature", _read_signature_ptr), True),
    ("OnError", "on_error", list_reader("[]*tasks.Signature", _read_signature_ptr), True),
    ("ChordCallback", "chord_callback", _read_signature_ptr, True),
    ("BrokerMessageGroupId", "broker_message_group_id", read_str, False),
    ("SQSReceiptHandle", "sqs_receipt_handle", read_str, False),
    ("StopTaskDeletionOnError", "stop_task_deletion_on_error", read_bool, False),
    ("IgnoreWhenTaskNotRegistered", "ignore_when_task_not_registered", read_bool, False),
)
TaskState._FIELDS = (
    ("TaskUUID", "task_uuid", read_str, False),
    ("TaskName", "task_name", read_str, False),
    ("State", "state", read_str, False),
    ("Results", "results",
     list_reader("[]*tasks.TaskResult", struct_reader(TaskResult, pointer=True)), True),
    ("Error", "error", read_str, False),
    ("CreatedAt", "created_at", read_time, False),
    ("TTL", "ttl", read_int64, False),
)
GroupMeta._FIELDS = (
    ("GroupUUID", "group_uuid", read_str, False),
    ("TaskUUIDs", "task_uuids", list_reader("[]string", read_str), True),
    ("ChordTriggered", "chord_triggered", read_bool, False),
    ("Lock", "lock", read_bool, False),
    ("CreatedAt", "created_at", read_time, False),
    ("TTL", "ttl", read_int64, False),
)
for _cls in (Arg, TaskResult, Signature, TaskState, GroupMeta):
    _cls._setup()


# --------------------------------------------------------------------------- fast paths
# Builders for objects in the canonical shape (see GoStruct._from_pairs). Each first checks
# every plain field and returns None when one is not of the plain type (so the exact path
# decides, and raises the error Go raises first); only then does it call the exact readers,
# in Go's field order, so an error they raise is the one the exact path raises first.

_clean = gojson.clean_str
_plain = gojson.plain
_read_arg = struct_reader(Arg, pointer=False)
_read_result_ptr = struct_reader(TaskResult, pointer=True)


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
        raise mismatch(items, where, "[]*tasks.Signature")
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
            and INT64_MIN <= group_task_count <= INT64_MAX
            and INT64_MIN <= retry_count <= INT64_MAX
            and INT64_MIN <= retry_timeout <= INT64_MAX and 0 <= priority <= 255
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
            and INT64_MIN <= ttl <= INT64_MAX and (results is None or type(results) is list)):
        return None
    if not (task_uuid.isascii() and task_name.isascii() and state.isascii()
            and error.isascii()):
        task_uuid, task_name, state, error = (
            _clean(task_uuid), _clean(task_name), _clean(state), _clean(error))
    if results is not None:
        results = [_read_result_ptr(item, "TaskState.Results") for item in results]
    return TaskState(task_uuid, task_name, state, results, error, parse_rfc3339(created_at), ttl)


_SIGNATURE_KEYS = Signature._KEYS
assert frozenset(_SIGNATURE_KEYS) == _GO_FLAT | _GO_NESTED
_TASK_STATE_KEYS = TaskState._KEYS
Arg._FAST = _fast_arg
TaskResult._FAST = _fast_result
Signature._FAST = _fast_signature
TaskState._FAST = _fast_task_state
Signature._QUICK, TaskState._QUICK = typed_decode.readers(
    Signature, Arg, TaskState, TaskResult, MAX_NESTING)
