"""Redis bookkeeping of ``mbridge migrate``: claimed batches, set-aside messages, the run lock.

All keys live under ``bridge:migrate:<run>:`` (``<run>`` hashes the two endpoints), so Go and
Celery workers never read them:

* on the source Redis: ``batches`` (SET of the batch ids in flight), ``hold:<batch>:<n>``
  (LIST: what batch ``<batch>`` took from the source list ``n``, in consumption order),
  ``hold:<batch>:z`` (ZSET: what it took from the delayed set, scores kept),
  ``aside:<n>`` / ``aside:z`` (messages that stay in the source: filtered out or
  untranslatable; they go back to the consuming end of their list, in order, at the end of
  the run), ``lock`` (one migrator per pair of endpoints);
* on the destination Redis: ``done`` (SET of batch ids whose messages were published, written
  in the same MULTI as the messages themselves).

A batch moves atomically from the source into its hold keys (one Lua call), is published with
its id in ``done`` (one MULTI), then its hold keys are deleted, and then its id leaves
``done``. A migrator killed anywhere in between finds the batch on the next run and either
publishes it (not in ``done``) or only deletes it (in ``done``): every message once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bridge.brokers.redis_scripts import LUA_HELPERS
from bridge.errors import BridgeError
from bridge.redisconn import RedisClient

PREFIX = "bridge:migrate:"
LOCK_TTL = 60
"""Seconds the run lock lives without a refresh (it is refreshed every batch)."""
DONE_TTL = 7 * 86400
DELAYED = -1
"""``origin`` of an item taken from a delayed ZSET."""

CLAIM_LISTS = """
-- Move up to ARGV[2] items from the source lists KEYS[2..n+1] (in that order) to the hold lists
-- KEYS[n+2..2n+1], popping at the consuming end ARGV[3] ('L': head, 'R': tail), and record the
-- batch ARGV[1] in the SET KEYS[1]. Returns {origin index, item, origin index, item, ...}.
local n = (#KEYS - 1) / 2
local want = tonumber(ARGV[2])
local out = {}
for k = 1, n do
  if want < 1 then break end
  local got
  if ARGV[3] == 'L' then
    got = redis.call('LPOP', KEYS[1 + k], want)
  else
    got = redis.call('RPOP', KEYS[1 + k], want)
  end
  if got then
    for i = 1, #got, 1000 do
      redis.call('RPUSH', KEYS[1 + n + k], unpack(got, i, math.min(i + 999, #got)))
    end
    for _, item in ipairs(got) do
      out[#out + 1] = k - 1
      out[#out + 1] = item
    end
    want = want - #got
  end
end
if #out > 0 then redis.call('SADD', KEYS[1], ARGV[1]) end
return out
"""

CLAIM_DELAYED = LUA_HELPERS + """
-- Look at ARGV[3] members of the delayed ZSET KEYS[2] from rank ARGV[2]; move those of queue
-- ARGV[4] (every member when ARGV[4] is '') into the hold ZSET KEYS[3] with their scores, and
-- record the batch ARGV[1] in KEYS[1]. ARGV[5]: the default queue (empty RoutingKey).
-- ARGV[6] 'name': ARGV[4] is a gocraft/work job name, matched against the job's "name".
-- Returns {members looked at, member, score, member, score, ...}.
local start = tonumber(ARGV[2])
local members = redis.call('ZRANGE', KEYS[2], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
local out = {#members / 2}
for i = 1, #members, 2 do
  local member, score = members[i], members[i + 1]
  local take = ARGV[4] == ''
  if not take and ARGV[6] == 'name' then
    local ok, job = pcall(cjson.decode, member)
    take = ok and type(job) == 'table' and job['name'] == ARGV[4]
  elseif not take then
    take = routing_key(member, ARGV[5]) == ARGV[4]
  end
  if take then
    redis.call('ZREM', KEYS[2], member)
    redis.call('ZADD', KEYS[3], score, member)
    out[#out + 1] = member
    out[#out + 1] = score
  end
end
if #out > 1 then redis.call('SADD', KEYS[1], ARGV[1]) end
return out
"""

RESTORE_LIST = """
-- Give back up to 1000 set-aside items (LIST KEYS[1], consumption order) to the consuming end
-- ARGV[1] ('LEFT' or 'RIGHT') of their list KEYS[2], so they are consumed next, in order.
local n = 0
while n < 1000 do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', ARGV[1]) then break end
  n = n + 1
end
return n
"""

RESTORE_ZSET = """
-- Give back up to 1000 set-aside delayed members (ZSET KEYS[1]) to the delayed ZSET KEYS[2].
local items = redis.call('ZRANGE', KEYS[1], 0, 999, 'WITHSCORES')
for i = 1, #items, 2 do
  redis.call('ZADD', KEYS[2], items[i + 1], items[i])
  redis.call('ZREM', KEYS[1], items[i])
end
return #items / 2
"""


class MigrationBusy(BridgeError):
    """Another migrator works on the same pair of endpoints."""


def run_id(src_spec: str, dst_spec: str) -> str:
    """A stable id for migrating ``src_spec`` to ``dst_spec`` (names the bookkeeping keys)."""
    return hashlib.sha1(f"{src_spec}\n{dst_spec}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Held:
    """One message taken from the source into a hold key."""

    raw: bytes
    origin: int
    """Index of its source list, or :data:`DELAYED`."""
    score: float = 0.0
    """Delayed members: the ZSET score (machinery: ETA in Unix ns; our Celery set: due time, s)."""
    delivery: Any = field(default=None, compare=False)
    """AMQP sources: the broker's Delivery (acked once published)."""


class RunKeys:
    """Key names of one run."""

    def __init__(self, run: str) -> None:
        self.base = f"{PREFIX}{run}:"

    @property
    def batches(self) -> str:
        return self.base + "batches"

    @property
    def lock(self) -> str:
        return self.base + "lock"

    @property
    def done(self) -> str:
        return self.base + "done"

    def hold(self, batch: str, origin: int) -> str:
        return f"{self.base}hold:{batch}:{'z' if origin == DELAYED else origin}"

    def aside(self, origin: int) -> str:
        return f"{self.base}aside:{'z' if origin == DELAYED else origin}"


class SourceStore:
    """The source side: claim batches, finish them, set messages aside and give them back."""

    def __init__(self, client: RedisClient, run: str, lists: Sequence[str], pop: str,
                 delayed_key: str) -> None:
        self.client = client
        self.keys = RunKeys(run)
        self.lists = list(lists)
        self.pop = pop
        """'L' when consumers take the head of the lists (machinery), 'R' the tail (kombu)."""
        self.delayed_key = delayed_key
        self._claim_lists = client.register_script(CLAIM_LISTS)
        self._claim_delayed = client.register_script(CLAIM_DELAYED)
        self._restore_list = client.register_script(RESTORE_LIST)
        self._restore_zset = client.register_script(RESTORE_ZSET)
        self._token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    # ------------------------------------------------------------ lock

    def lock(self) -> None:
        """Take the run lock; a lock of a dead process on this host is taken over."""
        if self.client.set(self.keys.lock, self._token, nx=True, ex=LOCK_TTL):
            return
        holder = cast("bytes | None", self.client.get(self.keys.lock))
        text = holder.decode("utf-8", "replace") if holder else ""
        host, _, rest = text.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and (
                int(pid) == os.getpid() or not _alive(int(pid))):  # ours from a failed try
            self.client.set(self.keys.lock, self._token, ex=LOCK_TTL)
            return
        raise MigrationBusy(f"another migration between these endpoints is running ({text}); "
                            f"if it is gone, wait {LOCK_TTL}s or delete {self.keys.lock}")

    def refresh(self) -> None:
        self.client.expire(self.keys.lock, LOCK_TTL)

    def unlock(self) -> None:
        with contextlib.suppress(Exception):
            if self.client.get(self.keys.lock) == self._token.encode():
                self.client.delete(self.keys.lock)

    # ------------------------------------------------------------ claiming

    def new_batch(self) -> str:
        return secrets.token_hex(8)

    def claim_lists(self, batch: str, count: int) -> list[Held]:
        """Move up to ``count`` messages from the lists into the batch's hold lists."""
        keys = [self.keys.batches, *self.lists,
                *(self.keys.hold(batch, n) for n in range(len(self.lists)))]
        flat = cast("list[Any]", self._claim_lists(keys=keys, args=[batch, count, self.pop]))
        return [Held(flat[i + 1], int(flat[i])) for i in range(0, len(flat), 2)]

    def claim_delayed(self, batch: str, start: int, count: int, queue: str,
                      default_queue: str, *, by_name: bool = False) -> tuple[int, list[Held]]:
        """Look at ``count`` delayed members from rank ``start``; take those of ``queue``
        ('' = all; ``by_name``: gocraft jobs named ``queue``). Returns how many were looked
        at and what was taken."""
        keys = [self.keys.batches, self.delayed_key, self.keys.hold(batch, DELAYED)]
        flat = cast("list[Any]", self._claim_delayed(
            keys=keys, args=[batch, start, count, queue, default_queue,
                             "name" if by_name else "routing_key"]))
        taken = [Held(flat[i], DELAYED, float(flat[i + 1])) for i in range(1, len(flat), 2)]
        return int(flat[0]), taken

    def in_flight(self) -> list[tuple[str, list[Held]]]:
        """Batches a previous run took and did not finish, with their messages."""
        batches = sorted(b.decode() for b in
                         cast("set[bytes]", self.client.smembers(self.keys.batches)))
        out = []
        for batch in batches:
            pipe = self.client.pipeline(transaction=False)
            for n in range(len(self.lists)):
                pipe.lrange(self.keys.hold(batch, n), 0, -1)
            pipe.zrange(self.keys.hold(batch, DELAYED), 0, -1, withscores=True)
            *lists, delayed = pipe.execute()
            held = [Held(raw, n) for n, items in enumerate(lists) for raw in items]
            held += [Held(raw, DELAYED, float(score)) for raw, score in delayed]
            out.append((batch, held))
        return out

    # ------------------------------------------------------------ finishing

    def finish(self, batch: str, aside: Sequence[Held], dead: Sequence[tuple[str, bytes]],
               dead_set: Sequence[tuple[str, bytes, float]] = ()) -> None:
        """One MULTI: set ``aside`` apart, push ``dead`` entries ``(dead list, entry)``, add
        ``dead_set`` members ``(zset, member, score)`` (gocraft's dead set), forget the
        batch's hold keys."""
        pipe = self.client.pipeline(transaction=True)
        for key, member, score in dead_set:
            pipe.zadd(key, {member: score})
        for held in aside:
            if held.origin == DELAYED:
                pipe.zadd(self.keys.aside(DELAYED), {held.raw: held.score})
            else:
                pipe.rpush(self.keys.aside(held.origin), held.raw)
        for key, entry in dead:
            pipe.rpush(key, entry)
        for n in [*range(len(self.lists)), DELAYED]:
            pipe.delete(self.keys.hold(batch, n))
        pipe.srem(self.keys.batches, batch)
        pipe.execute()

    def aside_count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for n in range(len(self.lists)):
            pipe.llen(self.keys.aside(n))
        pipe.zcard(self.keys.aside(DELAYED))
        return sum(cast("list[int]", pipe.execute()))

    def restore_aside(self) -> int:
        """Give every set-aside message back to where it was taken from, in order."""
        end = "LEFT" if self.pop == "L" else "RIGHT"
        total = 0
        for n, key in enumerate(self.lists):
            while moved := int(cast(int, self._restore_list(
                    keys=[self.keys.aside(n), key], args=[end]))):
                total += moved
        while moved := int(cast(int, self._restore_zset(
                keys=[self.keys.aside(DELAYED), self.delayed_key]))):
            total += moved
        return total


class DoneSet:
    """The destination's record of published batches (Redis destinations only)."""

    def __init__(self, client: RedisClient, run: str) -> None:
        self.client = client
        self.key = RunKeys(run).done

    def mark(self, pipe: Any, batch: str) -> None:
        """Add ``batch`` inside the destination's publishing MULTI."""
        pipe.sadd(self.key, batch)
        pipe.expire(self.key, DONE_TTL)

    def contains(self, batch: str) -> bool:
        return bool(self.client.sismember(self.key, batch))

    def forget(self, batch: str) -> None:
        self.client.srem(self.key, batch)

    def clear(self) -> None:
        self.client.delete(self.key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
