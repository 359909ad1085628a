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

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import redis
import redis.cluster
from redis.commands.core import Script

from bridge.backends.base import Backend, now_utc
from bridge.backends.common import in_waves
from bridge.backends.redsync import ChordLockError, MutexPolicy, RedsyncMutex
from bridge.config import Config, redact_url
from bridge.errors import BridgeError, DecodeError, ForeignKeyError, StatesRefused, clip
from bridge.protocol.machinery import PENDING, GroupMeta, TaskState
from bridge.protocol.state_bytes import completed_state
from bridge.redisconn import RedisClient, connect
from bridge.redislane import Lane, mget, run_script

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
# = TTL. Returns per key 1 (written), {-1, type} for a key of another type than a string
# (never written over), or what is stored when it is not in that simple shape with this
# task's TaskUUID (escapes in the name, another writer's layout, not a task state at all):
# the caller decides that the careful way.
_SPLICE_LOOP = """
local ttl = ARGV[1]
local out = {}
local find, match = string.find, string.match
for i = 1, nkeys do
  local key = KEYS[i]
  local at = 4 * i - 2
  local fresh = ARGV[at + 1]
  -- the usual PENDING, where there was no key, is written by one call
  local written = ARGV[at] == 'P' and redis.call('SET', key, fresh, 'EX', ttl, 'NX')
  local current = written or redis.pcall('GET', key)  -- false: no key; an error: no string
  if written then
    out[i] = 1
  elseif type(current) == 'table' then
    out[i] = {-1, redis.call('TYPE', key).ok}
  elseif ARGV[at] == 'P' then
    local prefix = string.sub(fresh, 1, (find(fresh, ',"TaskName":', 1, true) or 0) + 11)
    if current and find(current, prefix, 1, true) ~= 1 then
      out[i] = current
    else
      redis.call('SET', key, fresh, 'EX', ttl)
      out[i] = 1
    end
  else
    local name, created = '""', '"0001-01-01T00:00:00Z"'
    if current then
      -- the head (ARGV[at + 1]) is the stored state's prefix up to the TaskName value
      name = nil
      if find(current, fresh, 1, true) == 1 then
        name = match(current, '^("[^"\\\\]*"),"State":', #fresh + 1)
      end
      -- the leftmost match of the CreatedAt pattern (as an unanchored match), found by trying
      -- the plain occurrences of its literal start in order (a scan from every byte is slow)
      created = nil
      local from = find(current, ',"CreatedAt":"', 1, true)
      while from and not created do
        created = match(current, '^,"CreatedAt":("[^"\\\\]*"),"TTL":%-?%d+}$', from)
        from = find(current, ',"CreatedAt":"', from + 1, true)
      end
    end
    if current and (name == nil or created == nil) then
      out[i] = current
    else
      redis.call('SET', key, fresh .. name .. ARGV[at + 2] .. created .. ARGV[at + 3],
                 'EX', ttl)
      out[i] = 1
    end
  end
end
"""
_SPLICE_MANY_SCRIPT = "local nkeys = #KEYS" + _SPLICE_LOOP + "return out\n"
SPLICE_LOOP = _SPLICE_LOOP
"""For scripts that write states as ``set_states`` does and then more (after ``nkeys``)."""

# The PENDING states of KEYS[1..n] as above (ARGV[1..4n+1]), then RPUSH onto KEYS[n+1] the
# messages ARGV[4n+1+i] of the states written, in order: machinery's SendTask (one task or a
# batch) in one round trip when the broker's list and the states live in one Redis
# (SetStatePending strictly before Publish, as in Go).
PENDING_THEN_PUSH_SCRIPT = ("local nkeys = #KEYS - 1" + _SPLICE_LOOP + """
local queue, batch = KEYS[#KEYS], {}
for i = 1, nkeys do
  if out[i] == 1 then
    batch[#batch + 1] = ARGV[4 * nkeys + 1 + i]
    if #batch == 1000 then
      redis.call('RPUSH', queue, unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then redis.call('RPUSH', queue, unpack(batch)) end
return out
""")


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


def _stored(raw: bytes | None, key: str | None = None) -> _Stored:
    """Go's view of stored bytes: a failed GET or decode leaves nothing to merge. With
    ``key``, bytes that are not the task state of ``key`` raise :class:`ForeignKeyError`
    (a state is never written over them)."""
    if raw is None:
        return _ABSENT
    try:
        state = TaskState.from_json(raw)
    except DecodeError:
        if key is not None:
            raise _foreign(key, "a value that is not a task state") from None
        return _Stored(_sha1(raw), None)
    if key is not None and state.task_uuid != key:
        raise _foreign(key, f"the state of another task ({clip(state.task_uuid, 80)!r})")
    return _Stored(_sha1(raw), (state.task_name, state.created_at))


def _foreign(key: str, what: str) -> ForeignKeyError:
    return ForeignKeyError(f"the result backend's key {clip(key, 200)!r} holds {what}: "
                           "no task state is written over it (a task UUID that names a "
                           "key of another application?)")


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
        self._reads = Lane(self._client)
        """MGETs of many states (the relay's reads of what is in flight) on a lane of their
        own: redis-py's encoding of a thousand keys costs ~1 µs each; the writes' lane may
        be busy with a batch sent and not yet read."""
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

    @property
    def lane(self) -> Lane:
        """The client's single-connection fast lane (``bridge.redislane``)."""
        return self._lane

    def ping(self) -> None:
        """One PING (credentials and TLS are checked on connecting)."""
        self._client.ping()

    def close(self) -> None:
        self._lane.close()
        self._reads.close()
        self._client.close()

    # ----------------------------------------------------------------- task states

    def set_state(self, state: TaskState) -> None:
        """PENDING is written fresh; other states merge TaskName/CreatedAt like Go. Never
        over a key that holds something else than this task's state: ForeignKeyError."""
        key = state.task_uuid
        if self._cluster:
            if state.state == PENDING:
                _stored(self._get(key), key)  # refuses a foreign value; WRONGTYPE: below
                data = state.to_json()
                self._client.set(key, data, ex=self.ttl)
                self._remember(state, data)
                return
            self._write_merged(state, self._cache.get(key))
            return
        if state.state == PENDING:
            args: tuple[Any, ...] = (self.ttl, "P", state.to_json(), b"", b"")
        else:
            args = (self.ttl, "M", *state.to_json_parts())
        (reply,) = run_script(self._lane, self._splice_many_script, (key,), args)
        if reply == 1:
            self.written_in_redis(state.task_uuid)
            return
        if isinstance(reply, list):
            raise _foreign(key, f"a Redis {reply[1].decode('utf-8', 'replace')}")
        self._write_merged(state, _stored(reply, key))  # not Go-shaped: carefully, or refuse

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Store several states with a few commands; merges happen in Redis (no read first).

        States go in waves: wave k holds the k-th state of each task, so one task's
        states are written in order, each by its own command (a reader can see each).
        """
        if self._cluster or len(states) < 2:  # cluster scripts must stay within one slot
            refused: dict[str, str] = {}
            self._set_each(states, refused)
            if refused:  # every other state is written
                raise StatesRefused(refused)
            return
        waves = in_waves(states)
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
        refused = {}
        for wave, reply in zip(waves, replies, strict=True):
            if isinstance(reply, Exception):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    self._splice_loaded = False
                redo.update(s.task_uuid for s in wave)
                continue
            for state, written in zip(wave, reply, strict=True):
                if isinstance(written, list):
                    refused[state.task_uuid] = str(_foreign(
                        state.task_uuid, f"a Redis {written[1].decode('utf-8', 'replace')}"))
                elif written != 1:
                    redo.add(state.task_uuid)
                else:
                    self.written_in_redis(state.task_uuid)
        self._set_each([s for s in states if s.task_uuid in redo], refused)  # the few
        if refused:  # every other state is written
            raise StatesRefused(refused)

    def _set_each(self, states: Sequence[TaskState], refused: dict[str, str]) -> None:
        """The careful way: each state by ``set_state``, in order; a task refused for a
        foreign key (noted in ``refused``) has none of its later states written."""
        for state in states:
            if state.task_uuid not in refused:
                try:
                    self.set_state(state)
                except ForeignKeyError as exc:
                    refused[state.task_uuid] = str(exc)

    def written_in_redis(self, task_uuid: str) -> None:
        """``task_uuid``'s state was written by a script (its bytes made in Redis): this
        process no longer knows what is stored."""
        self._cache.drop(task_uuid)

    def get_state(self, task_uuid: str) -> TaskState | None:
        raw = self._get(task_uuid)
        return None if raw is None else TaskState.from_json(raw)

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One MGET (pipelined GETs on a Cluster), in order; None for a missing key."""
        raws = self._get_many(task_uuids)
        return [None if raw is None else TaskState.from_json(raw) for raw in raws]

    def get_completed_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One MGET; states still running are not decoded."""
        return [None if raw is None else completed_state(raw)
                for raw in self._get_many(task_uuids)]

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
        states = self.get_completed_states(meta.task_uuids or [])
        return sum(1 for state in states if state is not None) == group_task_count

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
        """Compare-and-set until written; a key that turns out not to hold this task's state
        raises ForeignKeyError (PENDING is written fresh, over this task's state only)."""
        key = state.task_uuid
        if stored is None:
            try:
                stored = _stored(self._get(key), key)
            except redis.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                raise _foreign(key, "a Redis value of another type than a string") from None
        for _ in range(_MAX_CAS_ATTEMPTS):
            merged = state if state.state == PENDING else _merge(state, stored)
            data = merged.to_json()
            written, current = self._cas(key, stored.token, data)
            if written:
                self._remember(merged, data)
                return
            stored = _stored(current, key)
        raise StateConflictError(f"state of {state.task_uuid!r} kept changing while writing it")

    def _cas(self, key: str, token: str, data: bytes) -> tuple[bool, bytes | None]:
        """Compare-and-set ``key``: (written, what is stored when not written)."""
        try:
            reply = self._cas_script(keys=[key], args=[token, data, self.ttl])
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            raise _foreign(key, "a Redis value of another type than a string") from None
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
        return mget(self._reads, self._client, keys)

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
