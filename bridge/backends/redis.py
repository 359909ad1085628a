"""machinery's Redis result backend (``backends/redis/redis.go`` and ``goredis.go``).

Layout, shared with Go workers on the same database:

* task state: key = task UUID, value = ``TaskState`` JSON (Go's bytes), ``SET … EX ttl``;
* group meta: key = group UUID, value = ``GroupMeta`` JSON, ``SET … EX ttl``;
* chord lock: redsync mutex on the one global key ``TriggerChordMutex``.

Every write resets the TTL (``results_expire_in``, 0 → 3600 s).

**Merging.** Go writes PENDING fresh; every other state first GETs the stored state and copies
its TaskName and CreatedAt into the new one (``mergeNewTaskState``; nothing stored or
undecodable → nothing copied). Here the write is a compare-and-set script instead: "SET EX if
the stored bytes still hash to what the merge was computed from, else return what is stored",
and a mismatch recomputes the merge from the returned bytes and tries again. So the stored bytes
are always what Go's GET-then-SET writes, even when the key expired or another worker wrote it
meanwhile, and the GET can be skipped when this process knows the stored bytes from its own
earlier read or write: RECEIVED → STARTED → SUCCESS costs 1 round trip per write, not 2.

**Chord trigger.** Go serialises ``TriggerChord`` with a redsync mutex on ``TriggerChordMutex``
(``SET key <random> NX PX 8000``, 32 tries 50-249 ms apart, released by a compare-and-delete
script). Taking that very lock, with the same commands, puts Python and Go callers in one queue:
only the holder reads and rewrites the group meta, so exactly one caller sees
``ChordTriggered == false``. Our release never deletes a lock another holder took (the random
value must match), and our rewrite is itself a compare-and-set on the meta's bytes, so even a
lock that expired mid-way (> 8 s stall) cannot make two Python callers both return True.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import redis
import redis.cluster
from redis.commands.core import Script

from bridge.backends.base import Backend, now_utc
from bridge.brokers.redis_layout import Lane, run_script
from bridge.config import Config, redact_url
from bridge.errors import BridgeError, DecodeError
from bridge.protocol.machinery import PENDING, GroupMeta, TaskState
from bridge.redisconn import RedisClient, connect

__all__ = [
    "CHORD_MUTEX_KEY",
    "ChordLockError",
    "GroupMetaNotFoundError",
    "MutexPolicy",
    "RedisBackend",
    "RedsyncMutex",
    "StateConflictError",
    "TaskStateNotFoundError",
]

log = logging.getLogger(__name__)

CHORD_MUTEX_KEY = "TriggerChordMutex"
"""The key machinery's ``TriggerChord`` locks, for every group alike."""

_MERGE_CACHE_SIZE = 10_000
_MAX_CAS_ATTEMPTS = 16

# Compare-and-set: ARGV[1] = sha1 hex of the bytes the caller expects stored ("" = no key),
# ARGV[2] = new value, ARGV[3] = TTL seconds. Returns 1 when written, else what is stored
# (0 when nothing is).
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local expected = ARGV[1]
if (current == false and expected == '') or (current and redis.sha1hex(current) == expected) then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
if current == false then
  return 0
end
return current
"""

# Merge without a read round trip, many keys per call: stored states are Go's bytes, so
# TaskName and CreatedAt are plain tokens at known places; copy them into the new bytes
# (head .. name .. mid .. created .. tail) and SET EX. KEYS[i] has ARGV[4i-2..4i+1] = mode
# ('P': PENDING, written fresh from the first part; 'M': merged), head, mid, tail; ARGV[1]
# = TTL. Returns per key 1 (written) or what is stored when it is not in that simple shape
# (escapes in the name, another writer's layout): the caller merges that the careful way.
_SPLICE_MANY_SCRIPT = """
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local at = 4 * i - 2
  if ARGV[at] == 'P' then
    redis.call('SET', key, ARGV[at + 1], 'EX', ttl)
    out[i] = 1
  else
    local current = redis.call('GET', key)
    local name, created = '""', '"0001-01-01T00:00:00Z"'
    if current then
      name = string.match(current, '^{"TaskUUID":"[^"\\\\]*","TaskName":("[^"\\\\]*"),"State":')
      -- the leftmost match of the CreatedAt pattern (as an unanchored match), found by trying
      -- the plain occurrences of its literal start in order (a scan from every byte is slow)
      created = nil
      local from = string.find(current, ',"CreatedAt":"', 1, true)
      while from and not created do
        created = string.match(current, '^,"CreatedAt":("[^"\\\\]*"),"TTL":%-?%d+}$', from)
        from = string.find(current, ',"CreatedAt":"', from + 1, true)
      end
    end
    if current and (name == nil or created == nil) then
      out[i] = current
    else
      redis.call('SET', key, ARGV[at + 1] .. name .. ARGV[at + 2] .. created .. ARGV[at + 3],
                 'EX', ttl)
      out[i] = 1
    end
  end
end
return out
"""

# redsync's deleteScript: delete the lock only if it still holds our value.
_UNLOCK_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
else
  return 0
end
"""


class GroupMetaNotFoundError(BridgeError, LookupError):
    """No group meta under a group UUID (Go: ``redigo: nil returned``, issue #352)."""

    def __init__(self, group_uuid: str) -> None:
        super().__init__(
            f"group meta {group_uuid!r} not found in the Redis result backend: never "
            f"initialised, purged, or expired (results_expire_in); Go reports "
            f"'redigo: nil returned'"
        )
        self.group_uuid = group_uuid


class TaskStateNotFoundError(BridgeError, LookupError):
    """A group member has no stored state."""

    def __init__(self, task_uuid: str, group_uuid: str) -> None:
        super().__init__(
            f"no state for task {task_uuid!r} of group {group_uuid!r} in the Redis result "
            f"backend (never written or expired)"
        )
        self.task_uuid = task_uuid
        self.group_uuid = group_uuid


class ChordLockError(BridgeError):
    """The chord mutex could not be taken within redsync's tries."""


class StateConflictError(BridgeError):
    """A key kept changing under a compare-and-set write."""


# --------------------------------------------------------------------------- merge helpers


@dataclass(frozen=True, slots=True)
class _Stored:
    """What a merge needs to know about a stored task state."""

    token: str  # sha1 hex of the stored bytes; "" when there is no key
    fields: tuple[str, datetime] | None  # TaskName, CreatedAt; None when nothing to copy


_ABSENT = _Stored("", None)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _stored(raw: bytes | None) -> _Stored:
    """Go's view of stored bytes: a failed GET or decode leaves nothing to merge."""
    if raw is None:
        return _ABSENT
    try:
        state = TaskState.from_json(raw)
    except DecodeError:
        return _Stored(_sha1(raw), None)
    return _Stored(_sha1(raw), (state.task_name, state.created_at))


def _written(state: TaskState, data: bytes) -> _Stored:
    """What is stored after writing ``data`` (= ``state.to_json()``)."""
    return _Stored(_sha1(data), (state.task_name, state.created_at))


def _merge(state: TaskState, stored: _Stored) -> TaskState:
    """``mergeNewTaskState``: TaskName and CreatedAt from the stored state, if any."""
    if stored.fields is None:
        return state
    task_name, created_at = stored.fields
    return replace(state, task_name=task_name, created_at=created_at)


class _MergeCache:
    """Bounded, thread-safe LRU of what this process knows is stored per task UUID."""

    def __init__(self, size: int = _MERGE_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uuid: str) -> _Stored | None:
        with self._lock:
            return self._items.get(uuid)

    def put(self, uuid: str, stored: _Stored) -> None:
        with self._lock:
            self._items[uuid] = stored
            self._items.move_to_end(uuid)
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, uuid: str) -> None:
        if uuid not in self._items:  # the common case, without the lock
            return
        with self._lock:
            self._items.pop(uuid, None)

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- redsync mutex


@dataclass(frozen=True, slots=True)
class MutexPolicy:
    """redsync v4.8.1 ``NewMutex`` defaults (what machinery's ``TriggerChord`` uses)."""

    expiry_ms: int = 8000  # SET … NX PX 8000
    tries: int = 32
    min_delay_ms: int = 50  # delay before each retry: rand.Intn(250-50)+50 ms
    max_delay_ms: int = 250  # exclusive
    drift_factor: float = 0.01  # the lock counts only if taken within expiry*(1-drift)


class RedsyncMutex:
    """A single-node redsync mutex: the same commands and retry policy as Go's."""

    def __init__(self, client: RedisClient, name: str, policy: MutexPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or MutexPolicy()
        self._client = client
        self._unlock: Script = client.register_script(_UNLOCK_SCRIPT)

    def acquire(self) -> str:
        """Take the lock; the random value that holds it. Raises ChordLockError."""
        policy = self.policy
        value = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        valid_ms = policy.expiry_ms - policy.expiry_ms * policy.drift_factor
        error: redis.RedisError | None = None
        for attempt in range(policy.tries):
            if attempt:
                time.sleep(random.randrange(policy.min_delay_ms, policy.max_delay_ms) / 1000)
            start = time.monotonic()
            try:
                taken = bool(self._client.set(self.name, value, nx=True, px=policy.expiry_ms))
            except redis.RedisError as exc:
                taken, error = False, exc
            if taken and (time.monotonic() - start) * 1000 < valid_ms:
                return value
            self.release(value)  # redsync releases after every failed try
        raise ChordLockError(
            f"could not take the {self.name!r} lock after {policy.tries} tries"
            + (f" (last error: {error})" if error else " (held by another worker)")
        ) from error

    def release(self, value: str) -> bool:
        """Delete the lock if it still holds ``value``; errors are logged, not raised."""
        try:
            return bool(self._unlock(keys=[self.name], args=[value]))
        except redis.RedisError as exc:
            log.warning("could not release the %r lock: %s", self.name, exc)
            return False

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block (released even when the block raises)."""
        value = self.acquire()
        try:
            yield
        finally:
            self.release(value)


# --------------------------------------------------------------------------- the backend


class RedisBackend(Backend):
    """machinery's Redis result backend, byte-compatible with Go workers sharing it."""

    def __init__(self, url: str, config: Config | None = None, *,
                 client: RedisClient | None = None,
                 chord_lock_policy: MutexPolicy | None = None) -> None:
        cfg = config or Config()
        self._url = url  # may hold a password: only ever shown redacted
        self.ttl = cfg.results_expire_seconds
        self._client: RedisClient = client if client is not None else connect(url, cfg.redis)
        self._cluster = isinstance(self._client, redis.cluster.RedisCluster)
        self._cas_script: Script = self._client.register_script(_CAS_SCRIPT)
        self._splice_many_script: Script = self._client.register_script(_SPLICE_MANY_SCRIPT)
        self._splice_loaded = False
        self._cas_loaded = False
        self._lane = Lane(self._client)
        self._cache = _MergeCache()
        self.chord_mutex = RedsyncMutex(self._client, CHORD_MUTEX_KEY, chord_lock_policy)

    @classmethod
    def from_config(cls, cfg: Config) -> RedisBackend:
        """The backend at ``cfg.result_backend``."""
        return cls(cfg.result_backend, cfg)

    def __repr__(self) -> str:
        return f"RedisBackend({redact_url(self._url)!r}, ttl={self.ttl})"

    @property
    def client(self) -> RedisClient:
        """The underlying redis-py client."""
        return self._client

    def close(self) -> None:
        self._lane.close()
        self._client.close()

    # ----------------------------------------------------------------- task states

    def set_state(self, state: TaskState) -> None:
        """PENDING is written fresh; other states merge TaskName/CreatedAt like Go."""
        if state.state == PENDING:
            data = state.to_json()
            self._client.set(state.task_uuid, data, ex=self.ttl)
            self._remember(state, data)
            return
        if not self._cluster:
            (reply,) = run_script(self._lane, self._splice_many_script, (state.task_uuid,),
                                  (self.ttl, "M", *state.to_json_parts()))
            if reply == 1:
                self._after_splice(state)
                return
            self._write_merged(state, _stored(reply))  # not Go-shaped: merge carefully
            return
        self._write_merged(state, self._cache.get(state.task_uuid))

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Store several states with a few commands; merges happen in Redis (no read first).

        States go in waves: wave k holds the k-th state of each task, so one task's
        states are written in order, each by its own command (a reader can see each).
        """
        if self._cluster or len(states) < 2:  # cluster scripts must stay within one slot
            super().set_states(states)
            return
        waves: list[list[TaskState]] = []
        depth: dict[str, int] = {}
        for state in states:
            level = depth.get(state.task_uuid, 0)
            depth[state.task_uuid] = level + 1
            if level == len(waves):
                waves.append([])
            waves[level].append(state)
        if not self._splice_loaded:
            self._client.script_load(_SPLICE_MANY_SCRIPT)
            self._splice_loaded = True
        sha = self._splice_many_script.sha
        commands: list[tuple[Any, ...]] = []
        for wave in waves:
            args: list[Any] = [self.ttl]
            for state in wave:
                if state.state == PENDING:
                    args += ("P", state.to_json(), "", "")
                else:
                    args += ("M", *state.to_json_parts())
            commands.append(("EVALSHA", sha, len(wave), *(s.task_uuid for s in wave), *args))
        replies = self._lane.run(commands)
        if replies is None:  # another thread has the lane: a pipeline, the same commands
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.evalsha(*command[1:])
            replies = pipe.execute(raise_on_error=False)
        redo: set[str] = set()
        for wave, reply in zip(waves, replies, strict=True):
            if isinstance(reply, Exception):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    self._splice_loaded = False
                redo.update(s.task_uuid for s in wave)
                continue
            for state, written in zip(wave, reply, strict=True):
                if written != 1:
                    redo.add(state.task_uuid)
                else:
                    self._after_splice(state)
        for state in states:  # the careful way, in order, for the few that need it
            if state.task_uuid in redo:
                self.set_state(state)

    def _after_splice(self, state: TaskState) -> None:
        """The merged bytes were made in Redis: this process no longer knows them."""
        self._cache.drop(state.task_uuid)

    def get_state(self, task_uuid: str) -> TaskState | None:
        raw = self._get(task_uuid)
        return None if raw is None else TaskState.from_json(raw)

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One MGET (pipelined GETs on a Cluster), in order; None for a missing key."""
        raws = self._get_many(task_uuids)
        return [None if raw is None else TaskState.from_json(raw) for raw in raws]

    def purge_state(self, task_uuid: str) -> None:
        self._cache.drop(task_uuid)
        self._client.delete(task_uuid)

    # ----------------------------------------------------------------- groups and chords

    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        meta = GroupMeta(group_uuid, list(task_uuids), created_at=now_utc())
        self._client.set(group_uuid, meta.to_json(), ex=self.ttl)

    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """Members in SUCCESS or FAILURE == count; a missing member is not completed."""
        meta = self._group_meta(group_uuid)
        states = self.get_states(meta.task_uuids or [])
        done = sum(1 for state in states if state is not None and state.is_completed())
        return done == group_task_count

    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """Member states in TaskUUIDs order; a missing one raises TaskStateNotFoundError."""
        uuids = self._group_meta(group_uuid).task_uuids or []
        states = self.get_states(uuids)
        for uuid, state in zip(uuids, states, strict=True):
            if state is None:
                raise TaskStateNotFoundError(uuid, group_uuid)
        return [state for state in states if state is not None]

    def trigger_chord(self, group_uuid: str) -> bool:
        """True for exactly one caller per group, Go's TriggerChord callers included."""
        with self.chord_mutex.held():
            return self._mark_chord_triggered(group_uuid)

    def purge_group_meta(self, group_uuid: str) -> None:
        self._client.delete(group_uuid)

    # ----------------------------------------------------------------- internals

    def _remember(self, state: TaskState, data: bytes) -> None:
        if state.is_completed():
            self._cache.drop(state.task_uuid)  # no more writes expected for this task
        else:
            self._cache.put(state.task_uuid, _written(state, data))

    def _write_merged(self, state: TaskState, stored: _Stored | None) -> None:
        if stored is None:
            stored = _stored(self._get(state.task_uuid))
        for _ in range(_MAX_CAS_ATTEMPTS):
            merged = _merge(state, stored)
            data = merged.to_json()
            written, current = self._cas(state.task_uuid, stored.token, data)
            if written:
                self._remember(merged, data)
                return
            stored = _stored(current)
        raise StateConflictError(f"state of {state.task_uuid!r} kept changing while writing it")

    def _cas(self, key: str, token: str, data: bytes) -> tuple[bool, bytes | None]:
        """Compare-and-set ``key``: (written, what is stored when not written)."""
        reply = self._cas_script(keys=[key], args=[token, data, self.ttl])
        self._cas_loaded = True
        return _cas_reply(reply)

    def _ensure_cas_loaded(self) -> None:
        if not self._cas_loaded:
            self._client.script_load(_CAS_SCRIPT)
            self._cas_loaded = True

    def _known_before(self, states: Sequence[TaskState]) -> dict[str, _Stored]:
        """What is stored now for every UUID a merge in ``states`` needs (one MGET)."""
        known: dict[str, _Stored] = {}
        missing: list[str] = []
        seen: set[str] = set()
        for state in states:
            uuid = state.task_uuid
            if uuid in seen:
                continue
            seen.add(uuid)
            cached = self._cache.get(uuid)
            if cached is not None:
                known[uuid] = cached
            elif state.state != PENDING:
                missing.append(uuid)
        for uuid, raw in zip(missing, self._get_many(missing), strict=True):
            known[uuid] = _stored(raw)
        return known

    def _finish_batch(self, planned: list[tuple[TaskState, TaskState, bytes]],
                      replies: list[Any]) -> None:
        """Remember what was written; redo, one by one, every UUID whose write lost a race."""
        failed: set[str] = set()
        redo: list[TaskState] = []
        for (state, final, data), reply in zip(planned, replies, strict=True):
            uuid = state.task_uuid
            ok = not isinstance(reply, Exception) and (state.state == PENDING or reply == 1)
            if uuid in failed or not ok:
                if uuid not in failed:
                    failed.add(uuid)
                    self._cache.drop(uuid)
                    if isinstance(reply, redis.exceptions.NoScriptError):
                        self._cas_loaded = False
                redo.append(state)
            else:
                self._remember(final, data)
        for state in redo:
            self.set_state(state)

    def _get(self, key: str) -> bytes | None:
        return cast("bytes | None", self._client.get(key))

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """GET several keys in one round trip (MGET; pipelined GETs on a Cluster)."""
        if not keys:
            return []
        if self._cluster:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return cast("list[bytes | None]", pipe.execute())
        return cast("list[bytes | None]", self._client.mget(keys))

    def _group_meta(self, group_uuid: str) -> GroupMeta:
        raw = self._get(group_uuid)
        if raw is None:
            raise GroupMetaNotFoundError(group_uuid)
        return GroupMeta.from_json(raw)

    def _mark_chord_triggered(self, group_uuid: str) -> bool:
        """Under the chord mutex: flip ChordTriggered unless set (CAS on the meta's bytes)."""
        raw = self._get(group_uuid)
        for _ in range(_MAX_CAS_ATTEMPTS):
            if raw is None:
                raise GroupMetaNotFoundError(group_uuid)
            meta = GroupMeta.from_json(raw)
            if meta.chord_triggered:
                return False
            meta.chord_triggered = True
            written, raw = self._cas(group_uuid, _sha1(raw), meta.to_json())
            if written:
                return True
        raise StateConflictError(f"group meta {group_uuid!r} kept changing while triggering")


def _cas_reply(reply: Any) -> tuple[bool, bytes | None]:
    """The CAS script's reply: 1 = written, 0 = nothing stored, bytes = what is stored."""
    if isinstance(reply, bytes):
        return False, reply
    return reply == 1, None
