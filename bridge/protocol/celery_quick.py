"""The quick translations of the commonest messages between Celery and machinery.

Celery → machinery: a kombu Redis envelope holding a plain protocol-2 JSON call (ints,
strings, flags and floats as args or kwargs; no ETA, canvas, schema entry or machinery
header; nothing a Go encoder escapes) is read by msgspec into typed structs and written as
one msgspec struct in Go's field order, in a third of the exact path's time (decode_envelope
→ decode_task → to_signature → Signature.to_json).

machinery → Celery: a Signature that carries such a call (the ``celery`` header of
to_signature, no ETA, callbacks or machinery-only fields) gives back its Celery message
without the CeleryTask in between (from_signature → encode_task).

Anything else gives None and goes the exact way. tests/unit/test_quick_translate.py proves
both give what the exact path gives, for Celery's own captured messages, their mutations
and generated ones.
"""

from __future__ import annotations

import binascii
from typing import Any, NamedTuple

import msgspec

from bridge.protocol import gojson
from bridge.protocol.celery import (
    DEFAULT_MAX_BODY,
    EMBED_KEYS,
    FIELD_KEYS,
    accepts_kombu_json,
    in_default_order,
    serialize,
)
from bridge.protocol.celery_canvas import custom_headers, int_priority, python_value, value_of
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.gostruct import INT64_MAX, INT64_MIN
from bridge.protocol.kombu_envelope import BOOKKEEPING, DEFAULT_MAX_SIZE, MAX_HEADER_DEPTH
from bridge.protocol.machinery import Arg, Signature
from bridge.protocol.typed_decode import read_wire_signature_noting_floats
from bridge.schema import TaskSchema


class _Envelope(msgspec.Struct):
    properties: dict[str, Any]
    body: str | None = None
    content_type: str | None = msgspec.field(default=None, name="content-type")
    content_encoding: str | None = msgspec.field(default=None, name="content-encoding")
    headers: dict[str, Any] | None = None


class _Arg(msgspec.Struct):
    Name: str
    Type: str
    Value: Any


class _Signature(msgspec.Struct, kw_only=True):
    """machinery's tasks.Signature as Go writes one with no ETA, group count, callbacks or
    flags: its 19 fields in Go's order."""

    UUID: str
    Name: str
    RoutingKey: str
    ETA: None = None
    GroupUUID: str
    GroupTaskCount: int = 0
    Args: list[_Arg]
    Headers: dict[str, Any]
    Priority: int
    Immutable: bool = False
    RetryCount: int = 0
    RetryTimeout: int = 0
    OnSuccess: None = None
    OnError: None = None
    ChordCallback: None = None
    BrokerMessageGroupId: str = ""
    SQSReceiptHandle: str = ""
    StopTaskDeletionOnError: bool = False
    IgnoreWhenTaskNotRegistered: bool = False


class _NotPlain(Exception):
    """A float in the envelope: its Go digits are the exact writer's business."""


def _no_floats(literal: str) -> Any:
    raise _NotPlain(literal)


_read_envelope = msgspec.json.Decoder(_Envelope, float_hook=_no_floats).decode
_read_body = msgspec.json.Decoder().decode
_write = msgspec.json.Encoder(order="deterministic").encode
_EMBED = list(EMBED_KEYS)
_NO_EMBED = dict.fromkeys(EMBED_KEYS)
"""Celery's embed of a call with no canvas (in this key order)."""
_MAX_BRACKETS = MAX_HEADER_DEPTH
_FLAT = frozenset({int, str, bool, type(None)})
"""A call's values the body's JSON writes by msgspec when all are of these types."""


class EncodedSignature(Signature):
    """A Signature whose Go JSON was written as it was read: ``to_json`` gives those bytes.
    Not to be changed once made (a broker that rewrites a field before encoding, as the AMQP
    one does with RoutingKey, must not be given one)."""

    __slots__ = ("encoded",)
    encoded: bytes

    def to_json(self) -> bytes:
        return self.encoded


class QuickCall(msgspec.Struct, frozen=True):
    """A plain Celery call read the quick way, and its machinery Signature's JSON (a
    msgspec struct: made for every message, a tenth of a frozen dataclass's time). It is
    sent as it is where its JSON is all a sender reads (``uuid``, ``name``,
    ``routing_key``, ``eta``, ``to_json``: :class:`bridge.redis_send.Sendable`)."""

    name: str
    id: str
    headers: dict[str, Any]
    """The Celery headers (``task`` and ``id`` included)."""
    body: bytes
    """The Signature's JSON, as ``to_signature(...).to_json()`` writes it."""
    wire: _Signature
    values: list[Any]
    """The call's values (args, then kwargs), as the Signature's Args hold them."""
    tag: str
    """The envelope's ``properties.delivery_tag``."""

    @property
    def uuid(self) -> str:
        return self.id

    @property
    def routing_key(self) -> str:
        return self.wire.RoutingKey

    @property
    def eta(self) -> None:
        return None

    def to_json(self) -> bytes:
        """The Signature's JSON (what :meth:`signature` gives would write)."""
        return self.body

    def signature(self, *, encoded: bool = True) -> Signature:
        """The Signature itself, ``to_signature``'s: an :class:`EncodedSignature` whose
        ``to_json`` gives :attr:`body` (``encoded``), else a plain one."""
        wire = self.wire
        sig = (EncodedSignature if encoded else Signature)(
            uuid=wire.UUID, name=wire.Name, routing_key=wire.RoutingKey,
            group_uuid=wire.GroupUUID, priority=wire.Priority, headers=wire.Headers,
            args=[Arg(a.Name, a.Type, value) for a, value in zip(wire.Args, self.values,
                                                                 strict=True)])
        if isinstance(sig, EncodedSignature):
            sig.encoded = self.body
        return sig


def quick_signature(raw: bytes, queue: str, accept: tuple[str, ...],
                    schema: TaskSchema | None = None) -> QuickCall | None:
    """The machinery Signature (RoutingKey ``queue``) of a plain Celery envelope, else None
    (also for a task ``schema`` types: the exact path types its args)."""
    if (len(raw) > DEFAULT_MAX_SIZE or b"\\" in raw or b"__type__" in raw
            or raw.count(b"{") + raw.count(b"[") > _MAX_BRACKETS):
        return None
    try:
        envelope = _read_envelope(raw)
    except (msgspec.DecodeError, _NotPlain):
        return None
    props, headers = envelope.properties, envelope.headers
    tag, info = props.get("delivery_tag"), props.get("delivery_info")
    if (type(tag) is not str or not tag or (info is not None and type(info) is not dict)
            or props.get("body_encoding") != "base64" or type(envelope.body) is not str
            or type(headers) is not dict or envelope.content_type != "application/json"
            or envelope.content_encoding != "utf-8" or not accepts_kombu_json(accept)):
        return None
    if not in_default_order(list(headers)):
        return None
    name, task_id = headers["task"], headers["id"]
    if (type(name) is not str or not name or type(task_id) is not str or not task_id
            or (schema is not None and name in schema.tasks)
            or "compression" in headers or "machinery" in headers
            or headers.get("eta") is not None):
        return None
    try:  # b64decode(validate=True)'s bytes where both take it (this one in C alone)
        body = binascii.a2b_base64(envelope.body, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(body) > DEFAULT_MAX_BODY or b"\\" in body or b"__type__" in body:
        return None
    try:
        payload = _read_body(body)
    except msgspec.DecodeError:
        return None
    if type(payload) is not list or len(payload) != 3:
        return None
    args, kwargs, embed = payload
    if (type(args) is not list or type(kwargs) is not dict or type(embed) is not dict
            or embed != _NO_EMBED or list(embed) != _EMBED):
        return None
    values = [*args, *kwargs.values()]
    typed = [_typed("", value) for value in args]
    typed += [_typed(key, value) for key, value in kwargs.items()]
    if None in typed:
        return None
    rest = headers.copy()
    del rest["task"], rest["id"]
    properties = props.copy()
    for key in BOOKKEEPING:
        properties.pop(key, None)
    celery: dict[str, Any] = {"headers": rest, "properties": properties, "protocol": 2,
                              "serializer": "json"}
    if kwargs:  # to_signature's order (the JSON's is sorted; the Signature's is this)
        celery["kwargs"] = list(kwargs)
    celery["embed"], celery["fields"] = {}, {}
    group = headers.get("group") or headers.get("taskset")  # CeleryTask.group's reading
    signature = _Signature(
        UUID=task_id, Name=name, RoutingKey=queue,
        GroupUUID=group if type(group) is str and group else "",
        Args=typed,  # type: ignore[arg-type]  # no None: checked above
        Headers={**custom_headers(headers), "celery": celery},
        Priority=int_priority(props.get("priority")) or 0)
    try:
        out = _write(signature)
    except (TypeError, ValueError, OverflowError, RecursionError):  # a lone surrogate...
        return None
    if not gojson.written_as_go(out):
        return None
    return QuickCall(name, task_id, headers, out, signature, values, tag)


def _typed(name: str, value: Any) -> _Arg | None:
    """The Arg inference gives a value that reads back as itself, or None."""
    kind = type(value)
    if kind is int:
        return _Arg(name, "int64", value) if INT64_MIN <= value <= INT64_MAX else None
    if kind is str:
        return _Arg(name, "string", value)
    if kind is bool:
        return _Arg(name, "bool", value)
    if kind is float:
        try:
            return _Arg(name, "float64", msgspec.Raw(gojson.format_float64(value).encode()))
        except ValueError:  # NaN or Inf: Go cannot write them; the exact path says so
            return None
    return None


def quick_message(sig: Signature) -> CeleryMessage | None:
    """The Celery message of a Signature made from a plain Celery call, as
    ``encode_task(from_signature(sig))`` writes it; None for any other Signature."""
    carried = sig.headers.get("celery") if type(sig.headers) is dict else None
    if (type(carried) is not dict or sig.eta is not None or sig.on_success is not None
            or sig.on_error is not None or sig.chord_callback is not None
            or sig.group_task_count != 0 or sig.immutable or sig.retry_count != 0
            or sig.retry_timeout != 0 or sig.broker_message_group_id
            or sig.sqs_receipt_handle or sig.stop_task_deletion_on_error
            or sig.ignore_when_task_not_registered):
        return None
    items = sig.args or []
    if None in items:
        return None  # a null Arg: the exact path names its error
    try:
        pairs = [(arg.name, python_value(arg)) for arg in items]
    except Exception:  # a value the exact path refuses: it says why
        return None
    return _message_of(sig.name, sig.uuid, sig.priority, carried, pairs)


class QuickBack(NamedTuple):
    """A machinery message read the quick way back: its task and its Celery message."""

    uuid: str
    name: str
    message: CeleryMessage


def quick_back(body: bytes) -> QuickBack | None:
    """``quick_message(Signature.from_json(body))`` without the Signature in between, for
    a Signature made from a plain Celery call (read by msgspec as Go reads it); else None
    (Go's own Signatures, with no ``celery`` header, are not read twice)."""
    if b'"celery":{' not in body:
        return None
    wire, plain = read_wire_signature_noting_floats(body)
    if (wire is None or wire.ETA is not None or wire.OnSuccess is not None
            or wire.OnError is not None or wire.ChordCallback is not None
            or wire.GroupTaskCount != 0 or wire.Immutable or wire.RetryCount != 0
            or wire.RetryTimeout != 0 or wire.BrokerMessageGroupId or wire.SQSReceiptHandle
            or wire.StopTaskDeletionOnError or wire.IgnoreWhenTaskNotRegistered):
        return None
    headers = wire.Headers
    carried = headers.get("celery") if type(headers) is dict else None
    if type(carried) is not dict:
        return None
    try:
        pairs = [(arg.Name, value_of(arg.Type, arg.Value)) for arg in wire.Args or ()]
        message = _message_of(wire.Name, wire.UUID, wire.Priority, carried, pairs, plain)
    except Exception:  # a value the exact path refuses: it says why
        return None
    return None if message is None else QuickBack(wire.UUID, wire.Name, message)


def _message_of(name: str, task_id: str, priority: int, carried: dict[str, Any],
                pairs: list[tuple[str, Any]], plain: bool = False) -> CeleryMessage | None:
    """The Celery message of a plain call carried by a Signature: its ``celery`` header and
    its Args as (name, Python value); ``plain``: the header was read without a float."""
    celery_headers, names = carried.get("headers"), carried.get("kwargs") or []
    properties = carried.get("properties") or {}
    protocol, serializer = carried.get("protocol", 2), carried.get("serializer", "json")
    if (type(celery_headers) is not dict or type(protocol) is not int or protocol != 2
            or serializer != "json" or carried.get("layout") or carried.get("embed")
            or carried.get("raw") or carried.get("fields", {}) != {} or type(names) is not list
            or type(properties) is not dict
            or celery_headers.get("eta") is not None or "compression" in celery_headers
            or not celery_headers.keys().isdisjoint(FIELD_KEYS)):
        return None
    split = len(pairs) - len(names)
    if split < 0 or not all(type(key) is str for key in names):
        return None
    args = [value for _, value in pairs[:split]]
    by_name = dict(pairs[split:])
    kwargs = {key: by_name[key] for key in names if key in by_name}
    if next(iter(celery_headers), None) == "lang":
        headers = {"lang": celery_headers["lang"], "task": name, "id": task_id}
    else:
        headers = {"task": name, "id": task_id}
    headers.update(celery_headers)
    properties = properties.copy()
    if priority != (int_priority(properties.get("priority")) or 0):
        properties["priority"] = priority
    flat = all(type(value) in _FLAT for _, value in pairs)  # then JSON's plain values
    try:
        content_type, encoding, body = serialize([args, kwargs, _NO_EMBED.copy()], "json",
                                                 plain=flat)
    except Exception:  # what the encoder refuses: the exact path says why
        return None
    return CeleryMessage.made(body.encode(encoding) if isinstance(body, str) else body,
                              content_type, encoding, headers, properties, plain_json=plain)


__all__ = ["EncodedSignature", "QuickBack", "QuickCall", "quick_back", "quick_message",
           "quick_signature"]
