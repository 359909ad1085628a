"""Celery's Redis result backend layout (reference celery-wire.md §7.1-7.4), shared with real
Celery workers and clients on the same database.

* ``celery-task-meta-<id>``: the task meta, in Celery's key order (``status, result,
  traceback, children, date_done, [group_id], [parent_id], [name, args, kwargs, worker,
  retries, queue], task_id``), serialized as ``result_serializer`` (kombu JSON with its
  ``__type__`` markers, or msgpack), ``SETEX`` ``result_expires`` (86400 s; None: ``SET``),
  and ``PUBLISH``\\ed on the key's name for waiting clients. Celery GETs first and skips the
  write when the stored status is SUCCESS, then runs MULTI SETEX PUBLISH EXEC; here one Lua
  call does all of it for a whole batch (:meth:`CeleryRedisBackend.store_many`), so the
  check and the write cannot interleave with another writer.
* ``celery-taskset-meta-<gid>``: ``{"result": [[gid, null], [[[tid, null], null], ...]]}``.
* ``celery-taskset-meta-<gid>.j`` / ``.t`` / ``.s``: the native chord join (a ZSET of
  ``[1, tid, state, result]`` by group_index, the added-task counter, the chord size).

``global_keyprefix`` is prepended to every key as Celery does (with ``_`` unless it already
ends in one of ``:_-.``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis
from kombu.serialization import loads as kombu_deserialize
from kombu.utils.json import dumps as kombu_json

from bridge.config import RedisConfig, redact_url
from bridge.errors import BridgeError, clip
from bridge.protocol.celery import serialize
from bridge.redisconn import RedisClient, connect
from bridge.redislane import Lane, mget

__all__ = [
    "EXCEPTION_STATES",
    "PROPAGATE_STATES",
    "READY_STATES",
    "CeleryRedisBackend",
    "ChordPartFailed",
    "Extended",
    "ResultTimeout",
    "TaskMeta",
    "encode_exception",
    "go_error",
    "store_script",
]

log = logging.getLogger(__name__)

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
EXCEPTION_STATES = frozenset({"RETRY", "FAILURE", "REVOKED"})
PROPAGATE_STATES = frozenset({"FAILURE", "REVOKED"})
DEFAULT_EXPIRES = 86400

# KEYS: meta keys; ARGV: ttl seconds (0: no expiry), serializer, then one value per key.
# Skips a key whose stored meta has status SUCCESS, and a key that is not a string (another
# application's: never written over); else SET(EX) + PUBLISH. Returns 1/0/-1 (foreign) each.
STORE = """
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 2]
  local kind = redis.call('TYPE', key).ok
  local current = kind == 'string' and redis.call('GET', key)
  local done = false
  if kind ~= 'none' and kind ~= 'string' then
    out[i] = -1
  elseif current then
    local ok, meta
    if ARGV[2] == 'msgpack' then
      ok, meta = pcall(cmsgpack.unpack, current)
    else
      ok, meta = pcall(cjson.decode, current)
    end
    done = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
  end
  if out[i] then
    -- foreign: left alone
  elseif done then
    out[i] = 0
  else
    if ttl > 0 then redis.call('SETEX', key, ttl, value) else redis.call('SET', key, value) end
    redis.call('PUBLISH', key, value)
    out[i] = 1
  end
end
return out
"""


_SCRIPTS: dict[int, tuple[Any, Any]] = {}


def store_script(client: Any) -> Any:
    """The STORE script registered on ``client`` (a Celery backend's own Redis client, say),
    made once per client."""
    known = _SCRIPTS.get(id(client))
    if known is None or known[0] is not client:
        known = _SCRIPTS[id(client)] = (client, client.register_script(STORE))
    return known[1]


class ResultTimeout(BridgeError, TimeoutError):
    """A result did not become ready in time."""


class ChordPartFailed(BridgeError):
    """The chord completed but a header task failed (Celery raises ChordError here)."""

    def __init__(self, group_id: str, task_id: str, state: str, result: Any) -> None:
        self.group_id, self.task_id, self.state, self.result = group_id, task_id, state, result
        super().__init__(f"chord {group_id}: dependency {task_id} ended {state}: {result!r}")


def _safe_args(args: Sequence[Any]) -> list[Any]:
    """Exception args as Celery's ``ensure_serializable`` keeps them (repr when not JSON)."""
    out = []
    for arg in args:
        try:
            kombu_json(arg)
            out.append(arg)
        except (TypeError, ValueError):
            out.append(repr(arg))
    return out


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Celery's ``prepare_exception`` for non-pickle serializers."""
    kind = type(exc)
    return {"exc_type": kind.__qualname__, "exc_message": _safe_args(exc.args),
            "exc_module": kind.__module__}


def go_error(message: str, exc_type: str = "GoError",
             exc_module: str = "machinery") -> dict[str, Any]:
    """A Go error string as a Celery exception dict; Celery clients rebuild it as an
    ``Exception`` subclass named ``exc_type`` carrying ``message``."""
    return {"exc_type": exc_type, "exc_message": [message], "exc_module": exc_module}


@dataclass(frozen=True, slots=True)
class Extended:
    """The fields ``result_extended=True`` adds."""

    name: str | None
    args: Sequence[Any] | None = None
    kwargs: dict[str, Any] | None = None
    worker: str | None = None
    retries: int | None = 0
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class TaskMeta:
    """One task meta to store (``result`` an exception for RETRY/FAILURE/REVOKED is encoded)."""

    task_id: str
    state: str
    result: Any = None
    traceback: str | None = None
    children: list[Any] = field(default_factory=list)
    group_id: str | None = None
    parent_id: str | None = None
    extended: Extended | None = None
    date_done: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The meta in Celery's key order."""
        date_done = self.date_done
        if date_done is None and self.state in READY_STATES:
            date_done = datetime.now(UTC).isoformat()
        meta: dict[str, Any] = {
            "status": self.state, "result": encode_result(self.result, self.state),
            "traceback": self.traceback, "children": list(self.children),
            "date_done": date_done,
        }
        if self.group_id:
            meta["group_id"] = self.group_id
        if self.parent_id:
            meta["parent_id"] = self.parent_id
        if self.extended is not None:
            ext = self.extended
            meta.update(name=ext.name, args=None if ext.args is None else list(ext.args),
                        kwargs=ext.kwargs, worker=ext.worker, retries=ext.retries,
                        queue=ext.queue)
        meta["task_id"] = self.task_id
        return meta


def encode_result(result: Any, state: str) -> Any:
    """Celery's ``encode_result``: exceptions of exception states become exception dicts."""
    if state in EXCEPTION_STATES and isinstance(result, BaseException):
        return encode_exception(result)
    return result


class CeleryRedisBackend:
    """Celery's Redis result backend (see the module docstring)."""

    task_keyprefix = "celery-task-meta-"
    group_keyprefix = "celery-taskset-meta-"

    def __init__(self, client: RedisClient, *, url: str = "",
                 expires: float | None = DEFAULT_EXPIRES, serializer: str = "json",
                 global_keyprefix: str = "",
                 accept: Sequence[str] = ("application/json", "application/x-msgpack")) -> None:
        if serializer not in ("json", "msgpack"):
            raise ValueError(f"result serializer {serializer!r}: json or msgpack")
        self.client: redis.Redis = cast(redis.Redis, client)
        self.url = url
        self.expires = int(expires) if expires else 0
        self.serializer = serializer
        self.accept = set(accept)
        if global_keyprefix and global_keyprefix[-1] not in ":_-.":
            global_keyprefix += "_"
        self.prefix = global_keyprefix
        self._store = client.register_script(STORE)
        self._reads = Lane(self.client)
        """MGETs of many metas (the relay's and migrate's reads of results)."""

    @classmethod
    def from_url(cls, url: str, redis_config: RedisConfig | None = None,
                 **options: Any) -> CeleryRedisBackend:
        """A backend on any URL :mod:`bridge.redisconn` accepts; ``options`` as for the class."""
        return cls(connect(url, redis_config), url=url, **options)

    def __repr__(self) -> str:
        return f"CeleryRedisBackend({redact_url(self.url)!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------ keys and codec

    def task_key(self, task_id: str) -> str:
        """``celery-task-meta-<id>`` (behind the global prefix)."""
        if not task_id:
            raise ValueError("task_id must not be empty")
        return f"{self.prefix}{self.task_keyprefix}{task_id}"

    def group_key(self, group_id: str, suffix: str = "") -> str:
        """``celery-taskset-meta-<gid>`` plus ``.j`` / ``.t`` / ``.s`` for chords."""
        if not group_id:
            raise ValueError("group_id must not be empty")
        return f"{self.prefix}{self.group_keyprefix}{group_id}{suffix}"

    def encode(self, data: Any) -> bytes:
        """``data`` as Celery's backend encodes it (kombu's serializer registry)."""
        _, _, payload = serialize(data, self.serializer)
        return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)

    def decode(self, payload: bytes) -> Any:
        """Stored bytes back to Python, kombu markers unwrapped."""
        if self.serializer == "msgpack":
            return kombu_deserialize(payload, "application/x-msgpack", "binary",
                                     accept=self.accept)
        return kombu_deserialize(payload, "application/json", "utf-8", accept=self.accept)

    # ------------------------------------------------------------ task results

    def store_result(self, task_id: str, state: str, result: Any = None, **meta: Any) -> bool:
        """Store one meta (``meta``: the other :class:`TaskMeta` fields); False when skipped
        because SUCCESS was already stored."""
        return self.store_many([TaskMeta(task_id, state, result, **meta)])[0]

    def store_many(self, metas: Sequence[TaskMeta],
                   refused: dict[str, str] | None = None) -> list[bool]:
        """Store many metas in one round trip (dedupe, SETEX and PUBLISH each, atomically).
        A meta key that holds another type than a string is never written over: logged,
        and noted in ``refused`` (task id: why) when given."""
        if not metas:
            return []
        keys = [self.task_key(m.task_id) for m in metas]
        values = [self.encode(m.as_dict()) for m in metas]
        done = cast("list[int]", self._store(keys=keys, args=[self.expires, self.serializer,
                                                              *values]))
        for meta, key, written in zip(metas, keys, done, strict=True):
            if written == -1:
                why = (f"the result backend's key {clip(key, 200)!r} holds another type than "
                       "a string: no meta is written over it")
                log.warning("task %s: %s", meta.task_id, why)
                if refused is not None:
                    refused[meta.task_id] = why
        return [d == 1 for d in done]

    def get_raw_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of each task's meta (None: none stored), in one MGET."""
        return mget(self._reads, self.client, [self.task_key(task_id) for task_id in task_ids])

    def get_meta(self, task_id: str) -> dict[str, Any]:
        """The stored meta, decoded; ``{"status": "PENDING", "result": None}`` when none."""
        raw = cast("bytes | None", self.client.get(self.task_key(task_id)))
        if not raw:
            return {"status": "PENDING", "result": None}
        return cast("dict[str, Any]", self.decode(raw))

    def ping(self) -> None:
        """One PING (credentials and TLS are checked on connecting)."""
        self.client.ping()

    def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        """The meta once ready (SUCCESS, FAILURE, REVOKED): subscribes, then GETs, then
        waits for the PUBLISH (re-reading each second). :class:`ResultTimeout` after
        ``timeout`` s."""
        key = self.task_key(task_id)
        pubsub = self.client.pubsub(  # type: ignore[no-untyped-call, unused-ignore]
            ignore_subscribe_messages=True)
        pubsub.subscribe(key)
        try:
            deadline = time.monotonic() + timeout
            meta = self.get_meta(task_id)
            while meta.get("status") not in READY_STATES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout}s "
                                        f"(state {meta.get('status')})")
                message = pubsub.get_message(timeout=min(left, 1.0))
                if message is not None and message.get("type") == "message":
                    meta = cast("dict[str, Any]", self.decode(message["data"]))
                else:
                    meta = self.get_meta(task_id)
            return meta
        finally:
            pubsub.close()

    def forget(self, task_id: str) -> None:
        """Delete a task's meta."""
        self.client.delete(self.task_key(task_id))

    # ------------------------------------------------------------ groups and chords

    def _set(self, key: str, value: bytes | str) -> None:
        """Celery's ``_set``: MULTI SETEX (or SET) + PUBLISH EXEC."""
        pipe = self.client.pipeline(transaction=True)
        if self.expires:
            pipe.execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                "SETEX", key, self.expires, value)
        else:
            pipe.set(key, value)
        pipe.publish(key, value)
        pipe.execute()

    def save_group(self, group_id: str, task_ids: Sequence[str]) -> None:
        """``GroupResult.save()``: the group's member ids."""
        children = [[[tid, None], None] for tid in task_ids]
        self._set(self.group_key(group_id), self.encode({"result": [[group_id, None],
                                                                     children]}))

    def restore_group(self, group_id: str) -> list[str] | None:
        """The member ids a saved group holds, None when not saved."""
        raw = cast("bytes | None", self.client.get(self.group_key(group_id)))
        if not raw:
            return None
        _, children = self.decode(raw)["result"]
        return [str(child[0][0]) for child in children]

    def delete_group(self, group_id: str) -> None:
        """Forget a saved group."""
        self.client.delete(self.group_key(group_id))

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Celery's ``set_chord_size``: ``.s`` = size (publish the last header task after)."""
        self._set(self.group_key(group_id, ".s"), str(int(size)))

    def on_chord_part_return(self, group_id: str, group_index: int | None, task_id: str,
                             state: str, result: Any) -> list[Any] | None:
        """Record a header task's end as Celery's Redis backend does; the results in
        group_index order for the one caller (ours or a Celery worker's) that completes the
        chord, else None. That caller applies the body, then calls :meth:`chord_cleanup`.

        Raises :class:`ChordPartFailed` instead when a part ended FAILURE or REVOKED.
        """
        jkey, tkey, skey = (self.group_key(group_id, s) for s in (".j", ".t", ".s"))
        member = self.encode([1, task_id, state, encode_result(result, state)])
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(jkey, {member: "+inf" if group_index is None else group_index})
        pipe.zcount(jkey, "-inf", "+inf")
        pipe.get(tkey)
        pipe.get(skey)
        if self.expires:
            for key in (jkey, tkey, skey):
                pipe.expire(key, self.expires)
        _, ready, added, size = pipe.execute()[:4]
        if not size or int(ready) != int(size) + int(added or 0):
            return None
        results = []
        for raw in cast("list[bytes]", self.client.zrange(jkey, 0, -1)):
            _, tid, part_state, value = self.decode(raw)
            if part_state in PROPAGATE_STATES:
                raise ChordPartFailed(group_id, tid, part_state, value)
            results.append(value)
        return results

    def chord_cleanup(self, group_id: str) -> None:
        """DEL the chord's ``.j``, ``.t`` and ``.s`` (after the body was applied)."""
        self.client.delete(*(self.group_key(group_id, s) for s in (".j", ".t", ".s")))

    def close(self) -> None:
        """Close the connection pool."""
        self._reads.close()
        self.client.close()
