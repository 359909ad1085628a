"""kombu's virtual-transport envelope (Redis list items, the inner JSON of SQS bodies).

What ``kombu.transport.virtual.Channel`` writes for ``Producer.publish`` (reference
celery-wire.md §3.1): one JSON object, keys in kombu's order::

    {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
     "headers": {...},
     "properties": {<AMQP properties as given>, "delivery_info": {"exchange": "",
                    "routing_key": "<rk>"}, "priority": 0, "body_encoding": "base64",
                    "delivery_tag": "<uuid4>"}}

kombu's JSON (``kombu.utils.json``: Python's default separators, ASCII escapes, the
``__type__`` markers) writes it and reads it, as on the transport. Pure: no I/O, no logging.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.encoder
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from kombu.utils.json import JSONEncoder as KombuJSONEncoder
from kombu.utils.json import loads as kombu_loads
from kombu.utils.json import object_hook as kombu_object_hook

from bridge.errors import DecodeError
from bridge.protocol.celery_message import CeleryMessage

__all__ = [
    "BOOKKEEPING",
    "DEFAULT_MAX_SIZE",
    "MAY_HOLD_MARKERS",
    "WRITE_MESSAGE_JSON",
    "Envelope",
    "decode_envelope",
    "depth_over",
    "from_envelope",
    "kombu_json_plain",
    "load_kombu_json",
    "mark_redelivered",
    "new_delivery_tag",
    "to_envelope",
    "write_plain_json",
]

DEFAULT_MAX_SIZE = 16 * 2**20
"""Largest envelope accepted by default (bytes)."""

MAX_HEADER_DEPTH = 64
"""Deepest nesting of headers and properties accepted (Celery's own are two levels deep)."""

BOOKKEEPING = frozenset({"delivery_info", "body_encoding", "delivery_tag"})
"""Transport properties kombu adds on publish; never part of ``CeleryMessage.properties``."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope: the message plus the transport's bookkeeping."""

    message: CeleryMessage
    delivery_tag: str
    delivery_info: dict[str, Any] = field(default_factory=dict)
    body_encoding: str | None = "base64"
    redelivered: bool = False

    @property
    def exchange(self) -> str:
        """``delivery_info.exchange`` ("" for the default exchange)."""
        value = self.delivery_info.get("exchange")
        return value if isinstance(value, str) else ""

    @property
    def routing_key(self) -> str | None:
        """``delivery_info.routing_key``, None when missing."""
        value = self.delivery_info.get("routing_key")
        return value if isinstance(value, str) else None


KOMBU_JSON_ENCODE: Callable[[Any], str] = KombuJSONEncoder().encode
"""kombu's ``json.dumps(value, cls=JSONEncoder)``, without a new encoder per call."""


def _message_writer() -> Callable[[Any], str]:
    """kombu's JSON for messages (envelopes, task bodies): the same bytes as
    :data:`KOMBU_JSON_ENCODE`, by the C encoder made once and without the check for
    circular references (a cycle still fails: RecursionError). Where Python has no C
    encoder, KOMBU_JSON_ENCODE itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    kept = KombuJSONEncoder()
    try:  # the arguments JSONEncoder.iterencode gives it, circular check off
        chunks = make(None, kept.default, json.encoder.encode_basestring_ascii, kept.indent,
                      kept.key_separator, kept.item_separator, kept.sort_keys,
                      kept.skipkeys, kept.allow_nan)  # type: ignore[misc]

        def write(value: Any) -> str:
            if type(value) is str:
                return KOMBU_JSON_ENCODE(value)
            return "".join(chunks(value, 0))

        sample = {"a": [1, 2.5, None, True, "é<"], "b": {"c": ""}}
        if write(sample) == KOMBU_JSON_ENCODE(sample):
            return write
    except TypeError:  # no C encoder, or one that takes other arguments
        pass
    return KOMBU_JSON_ENCODE


WRITE_MESSAGE_JSON: Callable[[Any], str] = _message_writer()
"""kombu's JSON of a message part (see :func:`_message_writer`)."""

_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


_TAGS: list[str] = []
"""Delivery tags made ahead from one draw of the system's randomness (a system call a tag
costs a VM a few microseconds); forgotten by a forked child, which must not reuse them."""
_TAGS_A_DRAW = 256
if hasattr(os, "register_at_fork"):  # where processes fork (not on Windows)
    os.register_at_fork(after_in_child=_TAGS.clear)


def new_delivery_tag() -> str:
    """A random (version 4) UUID's text, as kombu's ``uuid()`` gives a delivery tag (the
    same 122 random bits from ``os.urandom``, drawn for many tags at once)."""
    while True:
        try:
            return _TAGS.pop()  # atomic: threads never share a tag
        except IndexError:
            _TAGS.extend(_fresh_tags(_TAGS_A_DRAW))


def _fresh_tags(count: int) -> list[str]:
    h = os.urandom(16 * count).hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
            f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, 32 * count, 32)]


def to_envelope(msg: CeleryMessage, *, routing_key: str, exchange: str = "",
                delivery_tag: str | None = None, body_encoding: str | None = "base64") -> bytes:
    """The envelope bytes kombu writes when publishing ``msg`` (a fresh uuid4 tag by default).

    ``body_encoding`` None (or "utf-8") stores the body as JSON text, which needs a UTF-8 body.
    """
    if body_encoding == "base64":
        body: str = base64.b64encode(msg.body).decode("ascii")
    elif body_encoding is None or body_encoding.lower() == "utf-8":
        try:
            body = msg.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a binary body needs body_encoding='base64'") from None
    else:
        raise ValueError(f"unsupported body_encoding {body_encoding!r} (base64 or None)")
    properties = {k: v for k, v in msg.properties.items()
                  if k not in BOOKKEEPING and k != "priority"}
    properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    properties["priority"] = msg.priority
    properties["body_encoding"] = body_encoding
    properties["delivery_tag"] = delivery_tag or new_delivery_tag()
    envelope = {
        "body": body,
        "content-encoding": msg.content_encoding,
        "content-type": msg.content_type,
        "headers": msg.headers,
        "properties": properties,
    }
    if msg.plain_json:
        quick = write_plain_json(envelope)
        if quick is not None:
            return quick
    return WRITE_MESSAGE_JSON(envelope).encode("utf-8")


_write_compact = msgspec.json.Encoder().encode


def write_plain_json(value: Any) -> bytes | None:
    """kombu's JSON of ``value``, made of JSON's plain values (no float, no subclass),
    written by msgspec in a third of the C encoder's time and spaced as Python's default
    separators space it (``msgspec.json.format`` with ``indent=0``); None where the two
    would differ: an int beyond 64 bits, text that is not ASCII or holds DEL (Python escapes
    both)."""
    try:
        out = msgspec.json.format(_write_compact(value), indent=0)
    except (TypeError, ValueError, OverflowError, RecursionError, UnicodeEncodeError):
        return None
    return out if out.isascii() and b"\x7f" not in out else None


def from_envelope(raw: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> CeleryMessage:
    """The message in an envelope; :class:`DecodeError` says why when it is not one."""
    return decode_envelope(raw, max_size=max_size).message


def _fail(reason: str) -> DecodeError:
    return DecodeError(f"not a kombu envelope: {reason}")


class _MarkerError(Exception):
    """A ``__type__`` marker kombu's hook could not turn into a value."""


def _checked_hook(obj: dict[str, Any]) -> Any:
    try:
        return kombu_object_hook(obj)
    except Exception as exc:
        marker = obj.get("__type__")
        value = repr(obj.get("__value__"))
        value = value if len(value) <= 80 else value[:80] + "..."
        raise _MarkerError(f"bad kombu {marker!r} marker (value {value}): "
                           f"{type(exc).__name__}: {exc}") from None


def kombu_json_plain(text: str) -> Any:
    """``kombu.utils.json.loads`` of a text that cannot hold a ``__type__`` marker (no such
    key, no ``\\u`` escape that could spell one): the C decoder alone reads it the same,
    with no Python call per object. Anything else: :data:`MAY_HOLD_MARKERS`."""
    if "__type__" in text or ("\\" in text and "\\u" in text):  # one backslash: memchr
        return MAY_HOLD_MARKERS
    try:  # msgspec, in half the time, where it reads the text at all
        return _quick_loads(text)
    except Exception:  # what it refuses (NaN, 1e400, trailing bytes...): json's answer
        return _plain_loads(text)


MAY_HOLD_MARKERS: Any = object()
"""What :func:`kombu_json_plain` returns for a text kombu's marker hook must read."""
_plain_loads = json.JSONDecoder().decode
_quick_loads = msgspec.json.Decoder().decode


def load_kombu_json(raw: bytes | str) -> Any:
    """JSON as kombu reads it (its ``__type__`` markers for bytes, datetime, uuid...), every
    failure a :class:`DecodeError` saying why: not JSON, not UTF-8, a bad marker, nested
    too deeply for the decoder."""
    try:
        if isinstance(raw, bytes | str):
            value = kombu_json_plain(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            if value is not MAY_HOLD_MARKERS:
                return value
        return kombu_loads(raw, object_hook=_checked_hook)
    except _MarkerError as exc:
        raise DecodeError(str(exc)) from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply to decode") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not JSON ({exc})") from None


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Skipped by a set lookup, half the time of the isinstance that containers need."""


def depth_over(value: Any, limit: int) -> bool:
    """Whether dicts and lists in ``value`` nest deeper than ``limit`` (iterative)."""
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]  # containers only: scalars, most of a message, are never pushed
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if type(child) not in _SCALARS and isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _optional_str(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(f"{key!r} is {type(value).__name__}, not a string")
    return value


def _body(envelope: dict[str, Any], encoding: str | None) -> bytes:
    body = envelope.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise _fail(f"body is {type(body).__name__}, not a string")
    if encoding == "base64":
        try:
            return base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _fail(f"body is not valid base64 ({exc})") from None
    if encoding is None or encoding.lower() == "utf-8":
        return body.encode("utf-8", "surrogatepass")
    raise _fail(f"unsupported properties.body_encoding {encoding!r}")


def decode_envelope(raw: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """Read an envelope as kombu does, stricter: :class:`DecodeError` names what is wrong.

    Refused: larger than ``max_size``, not JSON (or a kombu ``__type__`` marker that is
    unknown or bad), nested too deeply (headers and properties: ``MAX_HEADER_DEPTH``), not
    an object, no ``properties`` object, a missing / null / empty ``delivery_tag``, a
    non-object ``headers`` or ``delivery_info``, a body that is not valid base64, an unknown
    ``body_encoding``.
    """
    if len(raw) > max_size:
        raise _fail(f"{len(raw)} bytes exceed max_size={max_size}")
    try:
        envelope = load_kombu_json(raw)
    except DecodeError as exc:
        raise _fail(str(exc)) from None
    if not isinstance(envelope, dict):
        raise _fail(f"a JSON {type(envelope).__name__}, not an object")
    props = envelope.get("properties")
    if not isinstance(props, dict):
        raise _fail("no 'properties' object")
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise _fail(f"properties.delivery_tag is {'null' if tag is None else repr(tag)}, "
                    "not a non-empty string")
    info = props.get("delivery_info")
    if info is None:
        info = {}
    elif not isinstance(info, dict):
        raise _fail("properties.delivery_info is not an object")
    headers = envelope.get("headers")
    if headers is None:
        headers = {}
    elif not isinstance(headers, dict):
        raise _fail("headers is not an object")
    # no value nests deeper than the brackets the text opens: most envelopes need no walk
    shallow = raw.count(b"{") + raw.count(b"[") <= MAX_HEADER_DEPTH
    if not shallow and (depth_over(headers, MAX_HEADER_DEPTH)
                        or depth_over(props, MAX_HEADER_DEPTH)):
        raise _fail(f"headers or properties nested deeper than {MAX_HEADER_DEPTH} levels")
    encoding = props.get("body_encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise _fail("properties.body_encoding is not a string")
    message = CeleryMessage(
        body=_body(envelope, encoding),
        content_type=_optional_str(envelope, "content-type"),
        content_encoding=_optional_str(envelope, "content-encoding"),
        headers=headers,
        properties={k: v for k, v in props.items() if k not in BOOKKEEPING},
        json_checked=True,
    )
    redelivered = bool(envelope.get("redelivered") or info.get("redelivered"))
    return Envelope(message, tag, info, encoding, redelivered)


def mark_redelivered(raw: bytes) -> bytes:
    """The envelope as kombu's Redis restore writes it back: ``headers.redelivered`` and
    ``properties.delivery_info.redelivered`` set to true, key order kept."""
    envelope = json.loads(raw)
    headers = envelope.get("headers")
    if isinstance(headers, dict):
        headers["redelivered"] = True
    info = envelope.get("properties", {}).get("delivery_info")
    if isinstance(info, dict):
        info["redelivered"] = True
    return json.dumps(envelope).encode("utf-8")
