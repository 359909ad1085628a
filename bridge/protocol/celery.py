"""Celery's task message protocol (1, 2 and the hybrid form) ⇄ :class:`CeleryTask`.

Pure: no I/O, no logging. Bodies go through kombu's own serializers (json with
its ``__type__`` markers, msgpack) so what we write is what Celery 5.6.2 and
kombu 5.6.2 write, byte for byte. ``CeleryTask.layout`` remembers the few wire
details (key orders, odd embeds) a foreign producer may choose differently,
so ``encode_task(decode_task(m))`` gives ``m`` back.

Translation to machinery's Signature lives in ``bridge.protocol.celery_canvas``, which
imports this module (never the other way round).
"""

from __future__ import annotations

import bz2
import lzma
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from kombu import compression as kombu_compression
from kombu import serialization
from kombu.utils.json import dumps as kombu_json_dumps
from kombu.utils.json import loads as kombu_json_loads

from bridge.errors import DecodeError, EncodeError
from bridge.protocol.celery_message import CeleryMessage, group_of, parent_of
from bridge.protocol.kombu_envelope import (
    MAX_HEADER_DEPTH,
    MAY_HOLD_MARKERS,
    WRITE_MESSAGE_JSON,
    depth_over,
    kombu_json_plain,
    write_plain_json,
)

PROTOCOL_2_HEADERS: tuple[str, ...] = (
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
)
"""Every header Celery 5.6.2's ``as_task_v2`` writes, in its order."""
PROTOCOL_1_BODY: tuple[str, ...] = (
    "task", "id", "args", "kwargs", "group", "group_index", "retries", "eta", "expires", "utc",
    "callbacks", "errbacks", "timelimit", "taskset", "chord",
)
"""The keys of a protocol-1 body dict (``as_task_v1``), in Celery's order."""
EMBED_KEYS: tuple[str, ...] = ("callbacks", "errbacks", "chain", "chord")
FIELD_KEYS = frozenset({"task", "id", "args", "kwargs", *EMBED_KEYS})
"""Keys that are CeleryTask fields, not headers (protocol 1 keeps them in the body)."""
COMPRESSIONS: dict[str, str] = {
    "application/x-gzip": "zlib", "application/x-bz2": "bz2", "application/x-lzma": "lzma",
}
"""Compression header values we read (kombu's content types) → kombu encoder name."""
DEFAULT_MAX_BODY = 64 * 1024 * 1024
REPR_MAXSIZE = 1024


@dataclass(slots=True)
class CeleryTask:
    """A Celery task request, independent of the protocol version it came in.

    ``headers`` holds every header but ``task`` and ``id`` in wire order (custom
    headers and ``compression`` included); for protocol 1 it holds the body's
    metadata keys (``group``, ``utc``, ``taskset``...) then the message headers.
    ``callbacks``/``errbacks``/``chain``/``chord`` are raw Celery signature dicts,
    ``chain`` in Celery's reversed order (next task last).
    """

    name: str
    id: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: dict[str, Any] | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    protocol: int = 2
    serializer: str = "json"
    layout: dict[str, Any] = field(default_factory=dict)
    """Wire details for an exact re-encode; empty for what Celery itself writes."""

    @property
    def eta(self) -> datetime | None:
        """The ETA as an aware datetime (naive on the wire = UTC)."""
        return parse_iso(self.headers.get("eta"), "eta")

    @property
    def expires(self) -> datetime | None:
        return parse_iso(self.headers.get("expires"), "expires")

    @property
    def retries(self) -> int:
        value = self.headers.get("retries", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def group(self) -> str | None:
        return group_of(self.headers)

    @property
    def group_index(self) -> int | None:
        value = self.headers.get("group_index")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def root_id(self) -> str | None:
        value = self.headers.get("root_id")
        return value if isinstance(value, str) else None

    @property
    def parent_id(self) -> str | None:
        return parent_of(self.headers)

    @property
    def timelimit(self) -> tuple[float | None, float | None]:
        """``(hard, soft)`` seconds, as Celery orders them."""
        value = self.headers.get("timelimit")
        if isinstance(value, list | tuple) and len(value) == 2:
            return _number(value[0]), _number(value[1])
        return None, None

    @property
    def priority(self) -> int:
        value = self.properties.get("priority")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_iso(value: Any, what: str = "time") -> datetime | None:
    """An ISO-8601 time as an aware datetime: any offset, ``Z`` ok, naive = UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"{what} {value!r} is not an ISO-8601 time") from None
    else:
        raise DecodeError(f"{what} must be an ISO-8601 string, not {type(value).__name__}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- decode


def _accepted(accept: Sequence[str]) -> frozenset[str]:
    try:
        return _accepted_content(tuple(accept))
    except Exception as exc:
        raise DecodeError(f"accept names an unknown serializer: {exc}") from None


@lru_cache(maxsize=64)
def _accepted_content(accept: tuple[str, ...]) -> frozenset[str]:
    return frozenset(serialization.prepare_accept_content(list(accept)))


def _kombu_reads_json() -> bool:
    """Whether JSON bodies are still read by kombu's own decoder (an app may register its
    own ``json`` serializer; then kombu's registry decides, as in Celery)."""
    return serialization.registry._decoders.get("application/json") is kombu_json_loads


def accepts_kombu_json(accept: Sequence[str]) -> bool:
    """Whether JSON bodies are accepted and read by kombu's own decoder (what the quick
    translation of a Celery message assumes)."""
    try:
        return "application/json" in _accepted(accept) and _kombu_reads_json()
    except DecodeError:
        return False


def _decompress(body: bytes, method: Any, max_body: int) -> bytes:
    if method not in COMPRESSIONS:
        raise DecodeError(f"unsupported compression {method!r} "
                          f"(supported: {', '.join(COMPRESSIONS)})")
    decompressor: Any
    if method == "application/x-gzip":
        decompressor = zlib.decompressobj()
    elif method == "application/x-bz2":
        decompressor = bz2.BZ2Decompressor()
    else:
        decompressor = lzma.LZMADecompressor()
    try:
        out = decompressor.decompress(body, max_body + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        raise DecodeError(f"body is not valid {method} data: {exc}") from None
    if len(out) > max_body:
        raise DecodeError(f"decompressed body is larger than {max_body} bytes")
    return bytes(out)


def _loads(msg: CeleryMessage, accept: Sequence[str], max_body: int) -> tuple[Any, str]:
    if not isinstance(msg.body, bytes | bytearray | memoryview):
        raise DecodeError(f"body must be bytes, not {type(msg.body).__name__}")
    body = bytes(msg.body)
    if len(body) > max_body:
        raise DecodeError(f"body is larger than {max_body} bytes")
    if "compression" in msg.headers:
        body = _decompress(body, msg.headers["compression"], max_body)
    content_type = msg.content_type
    if not isinstance(content_type, str) or not content_type:
        raise DecodeError("message has no content type: cannot tell how the body is serialized")
    name = serialization.registry.type_to_name.get(content_type)
    if name is None or content_type not in _accepted(accept):
        what = f"{content_type} ({name})" if name else repr(content_type)
        raise DecodeError(f"content type {what} refused: accepted are "
                          f"{', '.join(sorted(_accepted(accept)))}")
    if content_type == "application/json" and body and _kombu_reads_json():
        try:  # kombu's json decoder reads UTF-8 whatever the content encoding says
            payload = kombu_json_plain(body.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"cannot deserialize {name} body: {exc}") from None
        if payload is not MAY_HOLD_MARKERS:
            return payload, name
    try:
        payload = serialization.loads(body, content_type, msg.content_encoding,
                                      accept=[content_type])
    except Exception as exc:  # kombu wraps most, but markers raise ValueError etc.
        raise DecodeError(f"cannot deserialize {name} body: {exc}") from None
    return payload, name


def _str_field(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DecodeError(f"{what} must be a non-empty string, not {value!r}"[:200])
    return value


def _check_embed(task: CeleryTask) -> None:
    for key in ("callbacks", "errbacks", "chain"):
        value = getattr(task, key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
            raise DecodeError(f"{key} must be a list of signature dicts or null")
    if task.chord is not None and not isinstance(task.chord, dict):
        raise DecodeError("chord must be a signature dict or null")


def _check_call(args: Any, kwargs: Any) -> None:
    if not isinstance(args, list | tuple):
        raise DecodeError(f"task args must be a list, not {type(args).__name__}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise DecodeError("task kwargs must be a mapping with string keys")


def _default_header_order(keys: list[str]) -> list[str]:
    if keys and keys[0] == "lang":
        return ["lang", "task", "id", *keys[1:]]
    return ["task", "id", *keys]


def in_default_order(keys: list[str]) -> bool:
    """Whether ``keys`` are in the order ``_default_header_order`` gives their other keys."""
    if keys[:2] == ["task", "id"]:
        return len(keys) == 2 or keys[2] != "lang"
    return keys[:3] == ["lang", "task", "id"]


def _decode_v2(headers: Mapping[str, Any], payload: Any, serializer: str,
               layout: dict[str, Any]) -> CeleryTask:
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        size = f"{len(payload)} elements" if isinstance(payload, list | tuple) else "not a list"
        raise DecodeError(f"a protocol-2 body must be [args, kwargs, embed], got {size}")
    args, kwargs, embed = payload
    _check_call(args, kwargs)
    if "id" not in headers:
        raise DecodeError("protocol-2 message has no id header")
    rest = dict(headers)
    del rest["task"], rest["id"]
    if not in_default_order(list(headers)):
        layout["headers"] = list(headers)
    task = CeleryTask(name=_str_field(headers["task"], "task header"),
                      id=_str_field(headers["id"], "id header"),
                      args=list(args), kwargs=dict(kwargs), headers=rest)
    if embed is None:
        layout["embed"] = None
    elif not isinstance(embed, dict):
        raise DecodeError(f"embed must be a dict or null, not {type(embed).__name__}")
    else:
        if list(embed) != list(EMBED_KEYS):
            layout["embed"] = list(embed)
        extra = {k: v for k, v in embed.items() if k not in EMBED_KEYS}
        if extra:
            layout["embed_extra"] = extra
        task.callbacks, task.errbacks = embed.get("callbacks"), embed.get("errbacks")
        task.chain, task.chord = embed.get("chain"), embed.get("chord")
    _check_embed(task)
    return task


def _decode_v1(headers: Mapping[str, Any], body: dict[str, Any], layout: dict[str, Any]
               ) -> CeleryTask:
    """Protocol 1, or the hybrid form (``task`` header + a v1-style dict body)."""
    name = headers["task"] if "task" in headers else body.get("task")
    task_id = headers["id"] if "id" in headers else body.get("id")
    if task_id is None:
        raise DecodeError("protocol-1 message has no id")
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    _check_call(args, kwargs)
    task = CeleryTask(name=_str_field(name, "task"), id=_str_field(task_id, "id"),
                      args=list(args), kwargs=dict(kwargs), protocol=1,
                      callbacks=body.get("callbacks"), errbacks=body.get("errbacks"),
                      chain=body.get("chain"), chord=body.get("chord"))
    merged = {k: v for k, v in body.items() if k not in FIELD_KEYS}
    overridden = {k: merged[k] for k in headers if k in merged and merged[k] != headers[k]}
    for key in ("task", "id"):
        if key in headers and key in body and body[key] != headers[key]:
            overridden[key] = body[key]
    merged.update((k, v) for k, v in headers.items() if k not in ("task", "id"))
    task.headers = merged
    if list(body) != list(PROTOCOL_1_BODY):
        layout["body"] = list(body)
    if list(headers) != _default_v1_headers(merged):
        layout["headers"] = list(headers)
    if overridden:
        layout["body_values"] = overridden
    _check_embed(task)
    return task


def decode_task(msg: CeleryMessage, *, accept: Sequence[str] = ("json", "msgpack"),
                max_body: int = DEFAULT_MAX_BODY) -> CeleryTask:
    """Read a Celery task message (protocol 2, 1 or hybrid) as a Celery 5.6.2 worker does.

    Raises DecodeError (and only that) for anything a Celery worker would refuse.
    """
    try:
        return _decode(msg, accept, max_body)
    except DecodeError:
        raise
    except Exception as exc:  # a bug or a shape we did not foresee: still "bad message"
        raise DecodeError(f"undecodable Celery message: {type(exc).__name__}: {exc}") from None


def _decode(msg: CeleryMessage, accept: Sequence[str], max_body: int) -> CeleryTask:
    headers = msg.headers
    if not isinstance(headers, dict) or not (
            msg.json_checked or all(isinstance(k, str) for k in headers)):
        raise DecodeError("message headers must be a mapping with string keys")
    if not isinstance(msg.properties, dict):
        raise DecodeError("message properties must be a mapping")
    if not msg.json_checked and depth_over(headers, MAX_HEADER_DEPTH):
        raise DecodeError(f"message headers nested deeper than {MAX_HEADER_DEPTH} levels")
    payload, serializer = _loads(msg, accept, max_body)
    layout: dict[str, Any] = {}
    if "task" in headers and not (isinstance(payload, dict) and "args" in payload):
        task = _decode_v2(headers, payload, serializer, layout)
    elif isinstance(payload, dict) and ("task" in payload or "task" in headers):
        if not all(isinstance(k, str) for k in payload):
            raise DecodeError("protocol-1 body keys must be strings")
        task = _decode_v1(headers, payload, layout)
    else:
        raise DecodeError("not a Celery task message: no task header and no protocol-1 "
                          "body dict with a task key")
    task.serializer = serializer
    default_encoding = serialization.registry._encoders[serializer][1]
    if msg.content_encoding != default_encoding:
        layout["content_encoding"] = msg.content_encoding
    task.properties = dict(msg.properties)
    task.layout = layout
    return task


# --------------------------------------------------------------------------- encode


def _value(task: CeleryTask, key: str) -> Any:
    if key not in FIELD_KEYS:
        return task.headers[key]
    return task.name if key == "task" else getattr(task, key)


_V1_ONLY = frozenset({"utc", "taskset"})


def _default_v1_headers(headers: Mapping[str, Any]) -> list[str]:
    """Message headers of a protocol-1 message: what is neither v1 body nor v2 header."""
    known = set(PROTOCOL_1_BODY) | set(PROTOCOL_2_HEADERS)
    return [k for k in headers if k not in known]


def _v1_defaults(task: CeleryTask) -> dict[str, Any]:
    group = task.headers.get("group")
    return {"group": group, "group_index": None, "retries": 0, "eta": None, "expires": None,
            "utc": True, "timelimit": [None, None], "taskset": group}


def _encode_v1(task: CeleryTask) -> tuple[dict[str, Any], dict[str, Any]]:
    layout = task.layout
    defaults = _v1_defaults(task)
    overridden = layout.get("body_values", {})
    body = {}
    for key in layout.get("body", PROTOCOL_1_BODY):
        if key in overridden:
            body[key] = overridden[key]
        elif key in task.headers or key in FIELD_KEYS:
            body[key] = _value(task, key)
        else:
            body[key] = defaults.get(key)
    body["args"], body["kwargs"] = list(task.args), dict(task.kwargs)  # keep order of keys
    if "body" in layout:  # args/kwargs only where the producer put them
        body = {k: body[k] for k in layout["body"]}
    keys = layout.get("headers", _default_v1_headers(task.headers))
    return body, {k: _value(task, k) for k in keys}


def _encode_v2(task: CeleryTask) -> tuple[list[Any], dict[str, Any]]:
    keys = task.layout.get("headers") or _default_header_order(list(task.headers))
    headers = {k: _value(task, k) for k in keys}
    if "embed" in task.layout and task.layout["embed"] is None:
        embed: dict[str, Any] | None = None
    else:
        extra = task.layout.get("embed_extra", {})
        embed = {k: extra[k] if k in extra else getattr(task, k)
                 for k in task.layout.get("embed", EMBED_KEYS)}
    return [list(task.args), dict(task.kwargs), embed], headers


def _as_v2(task: CeleryTask) -> CeleryTask:
    """A protocol-1 task with the headers Celery's as_task_v2 would have written."""
    source = task.headers
    headers: dict[str, Any] = {}
    for key in PROTOCOL_2_HEADERS:
        if key not in ("task", "id"):
            headers[key] = source.get(key, _V2_DEFAULTS.get(key))
    headers["group"] = task.group
    headers["root_id"] = source.get("root_id") or task.id
    headers["timelimit"] = list(source.get("timelimit") or [None, None])
    headers["argsrepr"] = source.get("argsrepr") or _saferepr(task.args)
    headers["kwargsrepr"] = source.get("kwargsrepr") or _saferepr(task.kwargs)
    headers["origin"] = source.get("origin") or anon_nodename()
    headers.update((k, v) for k, v in source.items()
                   if k not in headers and k not in PROTOCOL_1_BODY)
    return CeleryTask(task.name, task.id, task.args, task.kwargs, headers, task.callbacks,
                      task.errbacks, task.chain, task.chord, task.properties, 2,
                      task.serializer)


_V2_DEFAULTS: dict[str, Any] = {"lang": "py", "retries": 0, "ignore_result": False,
                                "replaced_task_nesting": 0, "stamps": {}}


def serialize(payload: Any, serializer: str, *, plain: bool = False
              ) -> tuple[str, str, str | bytes]:
    """kombu's ``serialization.dumps``; its own json (the usual case) without the registry's
    indirection and a new encoder per call, and by msgspec for a ``plain`` payload (JSON's
    plain values, no float: ``kombu_envelope.write_plain_json``)."""
    codec = serialization.registry._encoders.get(serializer)
    if serializer == "json" and codec is not None and codec[2] is kombu_json_dumps:
        quick = write_plain_json(payload) if plain else None
        return codec[0], codec[1], WRITE_MESSAGE_JSON(payload) if quick is None else quick
    return serialization.dumps(payload, serializer=serializer)  # type: ignore[no-any-return]


def encode_task(task: CeleryTask, *, protocol: int | None = None,
                serializer: str | None = None) -> CeleryMessage:
    """The message Celery 5.6.2 + kombu publish for ``task``.

    ``protocol`` defaults to the task's own (2 for ``new_task``); converting
    between versions writes what Celery would have written in the other one.
    """
    protocol = task.protocol if protocol is None else protocol
    serializer = serializer or task.serializer
    if protocol not in (1, 2):
        raise EncodeError(f"Celery task protocol must be 1 or 2, not {protocol!r}")
    if serializer not in serialization.registry._encoders:
        raise EncodeError(f"unknown serializer {serializer!r}")
    if protocol != task.protocol:
        task = _as_v2(task) if protocol == 2 else _without_layout(task)
    payload: Any
    if protocol == 2:
        payload, headers = _encode_v2(task)
    else:
        payload, headers = _encode_v1(task)
    try:
        content_type, encoding, body = serialize(payload, serializer)
    except Exception as exc:
        raise EncodeError(f"cannot serialize the task with {serializer}: {exc}") from None
    if isinstance(body, str):
        body = body.encode(encoding)
    if serializer == task.serializer and "content_encoding" in task.layout:
        encoding = task.layout["content_encoding"]
    if "compression" in headers:
        method = headers["compression"]
        if method not in COMPRESSIONS:
            raise EncodeError(f"unsupported compression {method!r}")
        body, _ = kombu_compression.compress(body, method)
    return CeleryMessage(body=body, content_type=content_type, content_encoding=encoding,
                         headers=headers, properties=dict(task.properties))


def _without_layout(task: CeleryTask) -> CeleryTask:
    return CeleryTask(task.name, task.id, task.args, task.kwargs, dict(task.headers),
                      task.callbacks, task.errbacks, None, task.chord, task.properties, 1,
                      task.serializer)


# --------------------------------------------------------------------------- new tasks


def _saferepr(value: Any) -> str:
    try:
        from celery.utils.saferepr import saferepr
    except ImportError:  # celery is optional: a plain repr, cut like Celery cuts it
        text = repr(value)
        return text if len(text) <= REPR_MAXSIZE else text[:REPR_MAXSIZE - 3] + "..."
    return str(saferepr(value, REPR_MAXSIZE))


_NODENAME: list[str] = []


def anon_nodename() -> str:
    """Celery's client origin: ``gen<pid>@<host>``."""
    if not _NODENAME or not _NODENAME[0].startswith(f"gen{os.getpid()}@"):
        _NODENAME[:] = [f"gen{os.getpid()}@{socket.gethostname()}"]
    return _NODENAME[0]


def thread_oid() -> str:
    """A reply_to like Celery's ``app.thread_oid``: stable per process and thread."""
    key = f"{uuid.getnode()}-{os.getpid()}-{threading.get_ident()}"
    return str(uuid.uuid3(uuid.NAMESPACE_OID, key))


def _utc_iso(value: datetime | str | None, what: str) -> str | None:
    if value is None or isinstance(value, str):
        if isinstance(value, str):
            parse_iso(value, what)
        return value
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(aware.timestamp(), UTC).replace(
            microsecond=aware.microsecond).isoformat()
    except (ValueError, OverflowError):  # no UTC date (year 0 or 10000): its own offset
        return aware.isoformat()


def new_task(
    name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
    task_id: str | None = None, eta: datetime | str | None = None,
    countdown: float | None = None, expires: float | datetime | str | None = None,
    retries: int = 0, group: str | None = None, group_index: int | None = None,
    root_id: str | None = None, parent_id: str | None = None,
    callbacks: list[Any] | None = None, errbacks: list[Any] | None = None,
    chain: list[Any] | None = None, chord: dict[str, Any] | None = None, priority: int = 0,
    headers: Mapping[str, Any] | None = None, shadow: str | None = None,
    time_limit: float | None = None, soft_time_limit: float | None = None,
    ignore_result: bool = False, reply_to: str | None = None, origin: str | None = None,
    stamped_headers: list[str] | None = None, stamps: Mapping[str, Any] | None = None,
    replaced_task_nesting: int = 0, delivery_mode: int = 2, serializer: str = "json",
    compression: str | None = None, now: datetime | None = None,
) -> CeleryTask:
    """A protocol-2 task with every default Celery 5.6.2's ``send_task`` fills in."""
    if not isinstance(args, list | tuple):
        raise EncodeError("task args must be a list or tuple")
    kwargs = dict(kwargs or {})
    task_id = task_id or str(uuid.uuid4())
    now = now or datetime.now(UTC)
    if countdown:
        eta = now + timedelta(seconds=countdown)
    expires_s: float | None = None
    expires_at: datetime | str | None
    if isinstance(expires, int | float):
        expires_s, expires_at = expires, now + timedelta(seconds=expires)
    else:
        expires_at = expires
        if expires is not None:
            expires_s = ((parse_iso(expires, "expires") or now) - now).total_seconds()
    header_values: dict[str, Any] = {
        "lang": "py", "shadow": shadow, "eta": _utc_iso(eta, "eta"),
        "expires": _utc_iso(expires_at, "expires"), "group": group, "group_index": group_index,
        "retries": retries, "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id, "parent_id": parent_id,
        "argsrepr": _saferepr(args), "kwargsrepr": _saferepr(kwargs),
        "origin": origin or anon_nodename(), "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting, "stamped_headers": stamped_headers,
        "stamps": dict(stamps or {}),
    }
    header_values.update(headers or {})
    if compression is not None:
        method = kombu_compression._aliases.get(compression, compression)
        if method not in COMPRESSIONS:
            raise EncodeError(f"unsupported compression {compression!r}")
        header_values["compression"] = method
    properties: dict[str, Any] = {"correlation_id": task_id,
                                  "reply_to": reply_to or thread_oid(),
                                  "delivery_mode": delivery_mode}
    if expires_s is not None:
        properties["expiration"] = str(int(max(expires_s, 0) * 1000))
    properties["priority"] = priority
    return CeleryTask(name=name, id=task_id, args=list(args), kwargs=kwargs,
                      headers=header_values, callbacks=callbacks, errbacks=errbacks,
                      chain=chain, chord=chord, properties=properties, serializer=serializer)


__all__ = [
    "COMPRESSIONS", "EMBED_KEYS", "FIELD_KEYS", "PROTOCOL_1_BODY", "PROTOCOL_2_HEADERS",
    "CeleryTask", "accepts_kombu_json", "decode_task", "encode_task", "in_default_order",
    "new_task", "parse_iso", "serialize",
]
