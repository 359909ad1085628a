"""The quick translation of the commonest Celery message into machinery's bytes.

A kombu Redis envelope holding a plain protocol-2 JSON call (ints, strings, flags and
floats as args or kwargs; no ETA, canvas, schema entry or machinery header; nothing a Go
encoder escapes) is read by msgspec into typed structs and written as one msgspec struct
in Go's field order, in a fifth of the exact path's time. Anything else gives None and
goes the exact way (``Translator``: decode_envelope → decode_task → to_signature →
Signature.to_json). tests/unit/test_quick_translate.py proves the two give the same bytes
for Celery's own captured messages, their mutations and generated ones.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from bridge.protocol import gojson
from bridge.protocol.celery import (
    DEFAULT_MAX_BODY,
    EMBED_KEYS,
    accepts_kombu_json,
    in_default_order,
)
from bridge.protocol.celery_canvas import RESERVED_HEADERS
from bridge.protocol.gostruct import INT64_MAX, INT64_MIN
from bridge.protocol.kombu_envelope import BOOKKEEPING, DEFAULT_MAX_SIZE, MAX_HEADER_DEPTH


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
_MAX_BRACKETS = MAX_HEADER_DEPTH


def quick_signature(raw: bytes, queue: str, accept: tuple[str, ...]
                    ) -> tuple[str, str, bytes] | None:
    """``(task name, task id, Signature JSON)`` for a plain Celery envelope, else None."""
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
            or "compression" in headers or "machinery" in headers
            or headers.get("eta") is not None):
        return None
    try:
        body = base64.b64decode(envelope.body, validate=True)
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
            or list(embed) != _EMBED or any(v is not None for v in embed.values())):
        return None
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
                              "serializer": "json", "embed": {}, "fields": {}}
    if kwargs:
        celery["kwargs"] = list(kwargs)
    custom = {} if headers.keys() <= RESERVED_HEADERS else {
        k: v for k, v in headers.items() if k not in RESERVED_HEADERS}
    group = headers.get("group") or headers.get("taskset")
    priority = props.get("priority")
    signature = _Signature(
        UUID=task_id, Name=name, RoutingKey=queue,
        GroupUUID=group if type(group) is str and group else "",
        Args=typed,  # type: ignore[arg-type]  # no None: checked above
        Headers={**custom, "celery": celery},
        Priority=priority if type(priority) is int and 0 <= priority <= 255 else 0)
    try:
        out = _write(signature)
    except (TypeError, ValueError, OverflowError, RecursionError):  # a lone surrogate...
        return None
    return (name, task_id, out) if gojson.written_as_go(out) else None


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


__all__ = ["quick_signature"]
