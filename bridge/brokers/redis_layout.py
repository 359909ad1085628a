"""machinery's Redis layout plus our reliable-fetch bookkeeping: keys, Lua scripts, operations.

machinery's own keys, byte-compatible with Go producers and workers on the same Redis:

* ``<queue>``: a LIST of raw Signature JSON per routing key; producers RPUSH, consumers take
  from the head (Go: BLPOP).
* ``<delayed_tasks_key>`` (default ``delayed_tasks``): one ZSET of Signature JSON scored by the
  ETA in Unix nanoseconds, shared by every queue and worker.

Ours, all under ``bridge:`` (Go workers never read them). ``<tq>`` is the queue name wrapped in a
Cluster hash tag, ``{<queue>}``, unless it already carries one, so every key of a queue lives in
the queue's own slot:

* ``bridge:processing:<tq>:<worker>``: LIST of the messages a worker holds (fetched, not yet
  acked); a message is moved there atomically from the queue head (LMOVE / script).
* ``bridge:heartbeat:<tq>:<worker>``: a string with a TTL, refreshed while the worker lives.
* ``bridge:workers:<tq>``: SET of the worker ids that may hold messages of the queue.
* ``bridge:dead:<tq>``: LIST of dead-letter envelopes, JSON ``{"queue", "reason", "time",
  "body" | "body_b64"}``. Undecodable delayed tasks go to ``bridge:dead:<tagged delayed key>``.

Needs Redis >= 6.2 (BLMOVE) for consuming; publishing works with any version.

Every script below touches only keys of one slot, except MOVE_DUE (the delayed ZSET and the
target queues) and a delayed requeue (processing list and ZSET); on Cluster those two fall back
to a pop-then-push from the client (see :class:`RedisLayout`).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis.cluster
from redis.commands.core import Script
from redis.crc import key_slot

from bridge.protocol.gotime import format_rfc3339
from bridge.redisconn import RedisClient

log = logging.getLogger(__name__)

PREFIX = "bridge:"
MOVE_BATCH = 500
"""Delayed tasks moved per script call (a call blocks Redis while it runs)."""
MOVE_ROUNDS = 8
"""Script calls per ``move_due``: at most MOVE_BATCH * MOVE_ROUNDS tasks per call."""
REPLAY_BATCH = 500

# ------------------------------------------------------------------------------ Lua scripts

TAKE = """
-- Reliable batch fetch: first forget the held messages ARGV[2..] (acks, LREM from the
-- processing list KEYS[2]), then move up to ARGV[1] messages from the head of the queue
-- KEYS[1] to the tail of KEYS[2], in order; return them.
for i = 2, #ARGV do
  redis.call('LREM', KEYS[2], 1, ARGV[i])
end
local n = tonumber(ARGV[1])
if n < 1 then return {} end
local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], #items, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
return items
"""

ACK = """
-- Forget held messages: LREM each ARGV from the processing list KEYS[1] (a batch in one call).
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
return n
"""

MOVE_OUT = """
-- Take one held message ARGV[1] out of the processing list KEYS[1] and store ARGV[3] (the
-- message again, or its dead-letter envelope) at KEYS[2] by ARGV[2]: 'lpush', 'rpush', or
-- 'zadd' with score ARGV[4]. Returns 0, storing nothing, when the message was not held
-- (already acked, or recovered after a missed heartbeat). A failed store (wrong key type)
-- leaves the message held and returns the error.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local res
if ARGV[2] == 'zadd' then
  res = redis.pcall('ZADD', KEYS[2], ARGV[4], ARGV[3])
elseif ARGV[2] == 'lpush' then
  res = redis.pcall('LPUSH', KEYS[2], ARGV[3])
else
  res = redis.pcall('RPUSH', KEYS[2], ARGV[3])
end
if type(res) == 'table' and res.err then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  return res
end
return 1
"""

RECOVER = """
-- Give back what worker ARGV[1] holds (processing list KEYS[1]) to the head of its queue
-- KEYS[3], keeping the order, when its heartbeat KEYS[2] is gone or ARGV[2] == '1' (forced);
-- then drop the worker from the queue's registry KEYS[4]. Returns the count, -1 if alive.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = redis.call('LLEN', KEYS[1])
for _ = 1, n do
  redis.call('RPOPLPUSH', KEYS[1], KEYS[3])
end
redis.call('SREM', KEYS[4], ARGV[1])
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return n
"""

_LUA_HELPERS = """
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64}
    local chunk = ''
    for j = 1, 4 do chunk = chunk .. B64:sub(q[j] + 1, q[j] + 1) end
    if not b then
      chunk = chunk:sub(1, 2) .. '=='
    elseif not c then
      chunk = chunk:sub(1, 3) .. '='
    end
    out[#out + 1] = chunk
  end
  return table.concat(out)
end

local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, lo, hi = 0, 0x80, 0xBF
    if c < 0x80 then len = 0
    elseif c >= 0xC2 and c <= 0xDF then len = 1
    elseif c >= 0xE0 and c <= 0xEF then
      len = 2
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 3
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else return false end
    for j = 1, len do
      local d = s:byte(i + j)
      if not d or d < lo or d > hi then return false end
      lo, hi = 0x80, 0xBF
    end
    i = i + len + 1
  end
  return true
end

-- The dead-letter envelope, as the Python side writes it.
local function envelope(queue, reason, time, body)
  local entry = {queue = queue, reason = reason, time = time}
  if is_utf8(body) then entry.body = body else entry.body_b64 = b64(body) end
  return cjson.encode(entry)
end

-- The queue a task goes to: its RoutingKey (matched case-insensitively as Go's decoder does),
-- the default queue when empty or null; nil and a reason when it cannot be read.
local function routing_key(member, default)
  local ok, msg = pcall(cjson.decode, member)
  if not ok or type(msg) ~= 'table' or rawget(msg, 1) ~= nil then
    return nil, 'undecodable delayed task: not a JSON object'
  end
  local rk = msg.RoutingKey
  if rk == nil then
    for k, v in pairs(msg) do
      if type(k) == 'string' and k:lower() == 'routingkey' then rk = v end
    end
  end
  if rk == nil or rk == cjson.null or rk == '' then return default end
  if type(rk) ~= 'string' then
    return nil, 'undecodable delayed task: RoutingKey is not a string'
  end
  return rk
end
"""

MOVE_DUE = _LUA_HELPERS + """
-- Move due tasks (score <= ARGV[1]) of the delayed ZSET KEYS[1] to the tail of their queue,
-- at most ARGV[2], earliest first. The ZREM result decides who moves a task, so Go workers
-- popping the same ZSET (WATCH, ZRANGEBYSCORE, MULTI ZREM EXEC) never move it twice.
-- Unreadable or unpushable members go to the dead list KEYS[2] (ARGV[4] = time).
-- Returns {moved, dead}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, dead = 0, 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local queue, reason = routing_key(member, ARGV[3])
    if queue then
      local res = redis.pcall('RPUSH', queue, member)
      if type(res) == 'table' and res.err then
        queue, reason = nil, 'cannot push to ' .. queue .. ': ' .. res.err
      end
    end
    if queue then
      moved = moved + 1
    else
      redis.call('RPUSH', KEYS[2], envelope(KEYS[1], reason, ARGV[4], member))
      dead = dead + 1
    end
  end
end
return {moved, dead}
"""

POP_DUE = """
-- Cluster variant of MOVE_DUE's first half: remove and return up to ARGV[2] due members.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""

REPLAY = """
-- For each (envelope, body) pair in ARGV[3..]: if the head of the dead list KEYS[1] is still
-- that envelope, pop it and store the raw body at KEYS[2] (RPUSH, or ZADD with score ARGV[2]
-- when ARGV[1] == 'zadd'). Stops at the first mismatch (replayed meanwhile). Returns the count.
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  if ARGV[1] == 'zadd' then
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i + 1])
  else
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
"""


class Lane:
    """One pooled connection kept for a hot path, driven without redis-py's per-command
    machinery (pool checkout and its readiness poll, metrics, locks): ~50 µs less client CPU
    per round trip.

    The bytes on the wire are the ones a client or a pipeline sends for the same commands,
    the retry policy is the connection's own (``redisconn``'s), and replies are read as a
    non-transactional pipeline reads them. One caller at a time: :meth:`run` returns None
    when the lane is busy (another thread) or unavailable (Cluster), and the caller uses
    its client as usual.
    """

    def __init__(self, client: RedisClient) -> None:
        self._pool: redis.ConnectionPool | None = (
            client.connection_pool if isinstance(client, redis.Redis) else None)
        self._conn: Any = None
        self._lock = threading.Lock()

    def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """Every command's reply (a ResponseError in place of a failed command's), in one
        round trip; None when the caller must use its client instead."""
        if self._pool is None or not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._pool.get_connection()
            return cast("list[Any]", conn.retry.call_with_retry(
                lambda: self._round_trip(conn, commands), lambda _error: conn.disconnect()))
        finally:
            self._lock.release()

    @staticmethod
    def _round_trip(conn: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def close(self) -> None:
        """Give the connection back to the pool."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pool is not None:
                self._pool.release(conn)


def run_script(lane: Lane, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script(keys, args)``, through ``lane`` when it is free; a script Redis does not know
    yet (NOSCRIPT: nothing ran) goes the client's way, which loads it."""
    replies = lane.run([("EVALSHA", script.sha, len(keys), *keys, *args)])
    if replies is not None:
        reply = replies[0]
        if not isinstance(reply, redis.ResponseError):
            return reply
        if not isinstance(reply, redis.exceptions.NoScriptError):
            raise reply
    return script(keys=keys, args=args)


class Scripts:
    """The scripts registered once on a client (EVALSHA, loaded again after NOSCRIPT)."""

    def __init__(self, client: RedisClient) -> None:
        self.take: Script = client.register_script(TAKE)
        self.ack: Script = client.register_script(ACK)
        self.move_out: Script = client.register_script(MOVE_OUT)
        self.recover: Script = client.register_script(RECOVER)
        self.move_due: Script = client.register_script(MOVE_DUE)
        self.pop_due: Script = client.register_script(POP_DUE)
        self.replay: Script = client.register_script(REPLAY)


# ------------------------------------------------------------------------------ keys


def slot_tagged(name: str) -> str:
    """A key prefix in the same Cluster slot as the key ``name``.

    ``name`` itself when it has a hash tag; else ``{name}``; a name with a ``}`` but no valid
    tag (``a}b``) cannot be wrapped, so it gets a short tag of its slot in front.
    """
    start = name.find("{")
    if start != -1 and name.find("}", start + 1) > start + 1:
        return name
    if "}" not in name:
        return "{" + name + "}"
    return "{" + _tag_for_slot(key_slot(name.encode())) + "}" + name


@functools.lru_cache(maxsize=1024)
def _tag_for_slot(slot: int) -> str:
    """A short string that hashes to ``slot`` (a hash tag pinning keys to that slot)."""
    for number in itertools.count():
        tag = f"s{number}"
        if key_slot(tag.encode()) == slot:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Our bookkeeping keys for one queue (all in the queue's slot)."""

    queue: str
    tagged: str

    @classmethod
    def of(cls, queue: str) -> QueueKeys:
        """The keys of ``queue``."""
        return cls(queue, slot_tagged(queue))

    def processing(self, worker_id: str) -> str:
        """The LIST of messages ``worker_id`` holds."""
        return f"{PREFIX}processing:{self.tagged}:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        """The heartbeat key of ``worker_id`` for this queue."""
        return f"{PREFIX}heartbeat:{self.tagged}:{worker_id}"

    @property
    def workers(self) -> str:
        """The SET of workers that may hold messages of this queue."""
        return f"{PREFIX}workers:{self.tagged}"

    @property
    def dead(self) -> str:
        """The dead-letter LIST of this queue."""
        return f"{PREFIX}dead:{self.tagged}"


def default_worker_id() -> str:
    """``host:pid:random``, unique among live workers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# ------------------------------------------------------------------------------ envelopes


def now_rfc3339() -> str:
    """The current UTC time as Go writes it."""
    return format_rfc3339(datetime.now(UTC))


def make_envelope(queue: str, reason: str, body: bytes) -> bytes:
    """A dead-letter entry: JSON with the raw body as text, or base64 when not UTF-8."""
    entry = {"queue": queue, "reason": reason, "time": now_rfc3339()}
    try:
        entry["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        entry["body_b64"] = base64.b64encode(body).decode("ascii")
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parse_envelope(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def read_envelope(raw: bytes) -> dict[str, Any]:
    """A dead-letter entry as a dict; an unreadable one keeps its raw text under ``body``."""
    entry = _parse_envelope(raw)
    if entry is None:
        return {"reason": "unreadable dead-letter entry", "body": raw.decode("utf-8", "replace")}
    return entry


def envelope_body(raw: bytes) -> bytes:
    """The raw message bytes a dead-letter entry carries, byte for byte."""
    entry = _parse_envelope(raw)
    if entry is None:
        return raw
    if isinstance(entry.get("body_b64"), str):
        return base64.b64decode(entry["body_b64"])
    if isinstance(entry.get("body"), str):
        return cast(str, entry["body"]).encode("utf-8")
    return raw


def routing_key_of(member: bytes, default: str) -> str | None:
    """Python twin of the Lua ``routing_key``: the target queue, None if unreadable."""
    try:
        msg = json.loads(member)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    rk = msg.get("RoutingKey")
    if rk is None:
        rk = next((v for k, v in msg.items() if k.lower() == "routingkey"), None)
    if rk is None or rk == "":
        return default
    return rk if isinstance(rk, str) else None


# ------------------------------------------------------------------------------ operations


class RedisLayout:
    """Every Redis operation of the broker, in machinery's layout plus our bookkeeping.

    Atomic on a single node, Sentinel, and (per slot) Cluster: fetch, ack, requeue to the
    queue, dead-letter, recovery, replay. On Cluster the delayed mover pops due tasks in one
    script and pushes them from the client (a crash in between loses that batch), and a delayed
    requeue adds to the ZSET before removing from the processing list (a crash in between
    duplicates the message).
    """

    def __init__(self, client: RedisClient, *, default_queue: str, delayed_key: str,
                 worker_id: str, heartbeat_ttl: float, delayed_poll: float,
                 max_block: float | None) -> None:
        self.client = client
        self.scripts = Scripts(client)
        self.lane = Lane(client)
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        self.default_queue = default_queue
        self.delayed_key = delayed_key
        self.delayed_dead = QueueKeys.of(delayed_key).dead
        self.worker_id = worker_id
        self.heartbeat_ttl = heartbeat_ttl
        self.delayed_poll = delayed_poll
        self.max_block = max_block
        self._lock = threading.Lock()
        self._consumed: dict[str, QueueKeys] = {}
        self._processing: dict[str, str] = {}
        self._next = {"heartbeat": 0.0, "recover": 0.0, "move": 0.0}

    # -------------------------------------------------------------- producing

    def push(self, lists: Mapping[str, Sequence[bytes]],
             delayed: Sequence[tuple[int, bytes]] = ()) -> None:
        """RPUSH bodies to their lists and ZADD delayed ones, in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for queue, bodies in lists.items():
            for start in range(0, len(bodies), 10_000):
                pipe.rpush(queue, *bodies[start:start + 10_000])
        if delayed:
            pipe.zadd(self.delayed_key, {body: score for score, body in delayed})
        pipe.execute()

    # -------------------------------------------------------------- consuming

    def processing_key(self, queue: str) -> str:
        """This worker's processing list for ``queue``."""
        key = self._processing.get(queue)
        if key is None:
            key = self._processing[queue] = QueueKeys.of(queue).processing(self.worker_id)
        return key

    def take(self, queue: str, count: int, timeout: float,
             acks: Sequence[bytes] = ()) -> list[bytes]:
        """Move up to ``count`` messages to this worker's processing list, waiting for the first.

        ``acks`` (bodies held from this queue) are forgotten first, in the same call. One
        round trip when messages are waiting; else BLMOVE (blocking up to ``timeout``) and
        one more script call for the rest.
        """
        self.consume(queue)
        processing = self.processing_key(queue)
        if count < 1:
            if acks:
                self.ack((processing, body) for body in acks)
            return []
        items = self._take_now(queue, processing, count, acks)
        if items or timeout <= 0:
            return items
        first = self._block(queue, processing, timeout)
        if first is None:
            return []
        return [first, *self._take_now(queue, processing, count - 1)]

    def _take_now(self, queue: str, processing: str, count: int,
                  acks: Sequence[bytes] = ()) -> list[bytes]:
        if count < 1:
            return []
        return cast("list[bytes]", run_script(self.lane, self.scripts.take, (queue, processing),
                                              (count, *acks)))

    def _block(self, queue: str, processing: str, timeout: float) -> bytes | None:
        """BLMOVE in slices shorter than the socket timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(left, self.max_block) if self.max_block else left
            item = self.client.blmove(  # fractional seconds are fine
                queue, processing, max(wait, 0.01), "LEFT", "RIGHT")  # type: ignore[arg-type]
            if item is not None:
                return cast(bytes, item)

    def ack(self, held: Iterable[tuple[str, bytes]]) -> None:
        """Forget messages: LREM each ``(processing_key, body)``; one command per list."""
        by_list: dict[str, list[bytes]] = {}
        for processing, body in held:
            by_list.setdefault(processing, []).append(body)
        if len(by_list) == 1 and not self.cluster:
            ((processing, bodies),) = by_list.items()
            run_script(self.lane, self.scripts.ack, (processing,), bodies)
            return
        pipe = self.client.pipeline(transaction=False)
        for processing, bodies in by_list.items():
            for body in bodies:
                pipe.lrem(processing, 1, body)  # type: ignore[arg-type]
        pipe.execute()

    def put_back(self, processing: str, queue: str, body: bytes, *, head: bool) -> bool:
        """Atomically from the processing list back to the queue (head or tail)."""
        how = "lpush" if head else "rpush"
        return self._move_out(processing, queue, body, how, body)

    def delay(self, processing: str, body: bytes, eta_ns: int) -> bool:
        """Atomically from the processing list into the delayed ZSET at ``eta_ns``."""
        if self.cluster:  # different slots: add first, so a crash duplicates, never loses
            self.client.zadd(self.delayed_key, {body: eta_ns})
            return bool(self.client.lrem(processing, 1, body))  # type: ignore[arg-type]
        return self._move_out(processing, self.delayed_key, body, "zadd", body, eta_ns)

    def park(self, processing: str, queue: str, body: bytes, reason: str) -> bool:
        """Atomically from the processing list to the queue's dead-letter list."""
        envelope = make_envelope(queue, reason, body)
        return self._move_out(processing, QueueKeys.of(queue).dead, body, "rpush", envelope)

    def _move_out(self, processing: str, dest: str, body: bytes, how: str, value: bytes,
                  score: int = 0) -> bool:
        done = self.scripts.move_out(keys=[processing, dest], args=[body, how, value, score])
        if not done:
            log.debug("message no longer held in %s (acked or recovered)", processing)
        return bool(done)

    # -------------------------------------------------------------- workers

    def consume(self, queue: str) -> QueueKeys:
        """Register this worker on ``queue`` (first time: recover leftovers and dead workers)."""
        keys = self._consumed.get(queue)
        if keys is not None:
            return keys
        with self._lock:
            keys = self._consumed.get(queue)
            if keys is None:
                keys = QueueKeys.of(queue)
                self._recover_worker(keys, self.worker_id, force=True)  # a previous run's
                self._beat([keys])
                self._consumed[queue] = keys
        self.recover(queue)
        return keys

    def heartbeat(self) -> None:
        """Refresh this worker's heartbeat (and registry entry) on every consumed queue."""
        self._beat(list(self._consumed.values()))

    def _beat(self, queues: Sequence[QueueKeys]) -> None:
        if not queues:
            return
        ttl_ms = max(int(self.heartbeat_ttl * 1000), 1)
        pipe = self.client.pipeline(transaction=False)
        for keys in queues:
            pipe.sadd(keys.workers, self.worker_id)
            pipe.set(keys.heartbeat(self.worker_id), str(int(time.time())), px=ttl_ms)
        pipe.execute()

    def recover(self, queue: str) -> int:
        """Return the messages of workers whose heartbeat expired to the head of ``queue``."""
        keys = QueueKeys.of(queue)
        members = cast("set[bytes]", self.client.smembers(keys.workers))
        others = [m.decode("utf-8", "replace") for m in members]
        others = [w for w in others if w != self.worker_id]
        if not others:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for worker in others:
            pipe.exists(keys.heartbeat(worker))
        alive = pipe.execute()
        moved = 0
        for worker, is_alive in zip(others, alive, strict=True):
            if not is_alive:
                moved += max(self._recover_worker(keys, worker, force=False), 0)
        if moved:
            log.warning("recovered %d message(s) of dead workers to %s", moved, queue)
        return moved

    def _recover_worker(self, keys: QueueKeys, worker: str, *, force: bool) -> int:
        return cast(int, self.scripts.recover(
            keys=[keys.processing(worker), keys.heartbeat(worker), keys.queue, keys.workers],
            args=[worker, "1" if force else "0"]))

    def release(self) -> int:
        """Give back everything this worker holds (to the queue heads) and leave the registries."""
        with self._lock:
            consumed, self._consumed = list(self._consumed.values()), {}
        return sum(self._recover_worker(keys, self.worker_id, force=True) for keys in consumed)

    def processing(self, queue: str) -> dict[str, int]:
        """Messages held per registered worker of ``queue``."""
        keys = QueueKeys.of(queue)
        workers = sorted(m.decode("utf-8", "replace") for m in
                         cast("set[bytes]", self.client.smembers(keys.workers)))
        pipe = self.client.pipeline(transaction=False)
        for worker in workers:
            pipe.llen(keys.processing(worker))
        return dict(zip(workers, cast("list[int]", pipe.execute()), strict=True))

    # -------------------------------------------------------------- delayed tasks

    def move_due(self, now_ns: int | None = None) -> int:
        """Move due delayed tasks to their queues (bounded); returns how many were moved."""
        now = time.time_ns() if now_ns is None else now_ns
        total = 0
        for _ in range(MOVE_ROUNDS):
            moved, seen = self._move_cluster(now) if self.cluster else self._move_script(now)
            total += moved
            if seen < MOVE_BATCH:
                break
        return total

    def _move_script(self, now: int) -> tuple[int, int]:
        moved, dead = cast("list[int]", self.scripts.move_due(
            keys=[self.delayed_key, self.delayed_dead],
            args=[now, MOVE_BATCH, self.default_queue, now_rfc3339()]))
        if dead:
            log.warning("parked %d undecodable delayed task(s) in %s", dead, self.delayed_dead)
        return moved, moved + dead

    def _move_cluster(self, now: int) -> tuple[int, int]:
        due = cast("list[bytes]", self.scripts.pop_due(keys=[self.delayed_key],
                                                       args=[now, MOVE_BATCH]))
        lists: dict[str, list[bytes]] = {}
        dead: list[bytes] = []
        for member in due:
            queue = routing_key_of(member, self.default_queue)
            if queue is None:
                dead.append(make_envelope(self.delayed_key, "undecodable delayed task", member))
            else:
                lists.setdefault(queue, []).append(member)
        if dead:
            lists[self.delayed_dead] = dead
        self.push(lists)
        return len(due) - len(dead), len(due)

    # -------------------------------------------------------------- upkeep

    def maintain(self) -> None:
        """Heartbeat, delayed mover and recovery, each when due (call as often as you like)."""
        now = time.monotonic()
        if self._due("heartbeat", now, self.heartbeat_ttl / 3):
            self.heartbeat()
        if self._due("move", now, self.delayed_poll):
            self.move_due()
        if self._due("recover", now, max(self.heartbeat_ttl / 2, 0.2)):
            for queue in list(self._consumed):
                self.recover(queue)

    def _due(self, what: str, now: float, period: float) -> bool:
        if now < self._next[what]:
            return False
        self._next[what] = now + period
        return True

    # -------------------------------------------------------------- inspection, dead letters

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries of ``queue`` (LRANGE semantics for start/stop)."""
        raw = cast("list[bytes]", self.client.lrange(QueueKeys.of(queue).dead, start, stop))
        return [read_envelope(entry) for entry in raw]

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move up to ``count`` (0: all) dead letters back to ``queue``'s tail, raw bytes.

        The delayed key's dead list goes back into the ZSET, due now.
        """
        dead = QueueKeys.of(queue).dead
        how = "zadd" if queue == self.delayed_key else "rpush"
        total = 0
        if count <= 0:  # what is parked now: a live worker may park a replayed one again
            count = int(self.client.llen(dead))
        while total < count:
            size = min(REPLAY_BATCH, count - total)
            entries = cast("list[bytes]", self.client.lrange(dead, 0, size - 1))
            if not entries:
                break
            args: list[bytes | str | int] = [how, time.time_ns()]
            for entry in entries:
                args += [entry, envelope_body(entry)]
            moved = cast(int, self.scripts.replay(keys=[dead, queue], args=args))
            total += moved
            if moved == 0:
                break
        return total

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        return self.client.llen(queue)

    def delayed_count(self) -> int:
        """Tasks waiting in the delayed ZSET."""
        return self.client.zcard(self.delayed_key)

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The first ``count`` waiting messages of ``queue``, left in place."""
        if count < 1:
            return []
        return cast("list[bytes]", self.client.lrange(queue, 0, count - 1))
