"""kombu's Redis layout (as Celery uses it) plus our bookkeeping: keys and Lua scripts.

kombu's keys (reference celery-wire.md §3.2), each behind ``global_keyprefix``:

* ``<queue>`` and ``<queue>\\x06\\x16<p>``: LISTs of envelopes per priority bucket ``p`` of
  ``priority_steps`` (bucket 0 is the bare name and is consumed first). Producers LPUSH,
  consumers take from the right (FIFO).
* ``_kombu.binding.<exchange>``: SET of ``routing_key\\x06\\x16pattern\\x06\\x16queue``.
* ``unacked``: HASH delivery_tag -> JSON ``[envelope, exchange, routing_key]``;
  ``unacked_index``: ZSET delivery_tag scored by the delivery time (epoch seconds);
  ``unacked_mutex``: redis-py Lock held while restoring visible (timed-out) entries.

Ours, under ``bridge:celery:`` (Celery never reads them):

* ``dead:<queue>``: LIST of dead-letter entries, the machinery broker's format
  (``{"queue", "reason", "time", "body" | "body_b64"}``).
* ``delayed:<queue>``: ZSET of envelopes requeued with a delay, scored by the due time.
* ``staging:<queue>:<worker>``: LIST a blocked fetch BLMOVEs into (one item at a time);
  ``lease:<queue>:<worker>``: a string with a TTL while the worker may have items staged;
  ``stagers:<queue>``: SET of those workers. A staged item whose lease expired goes back.

Single node and Sentinel only (kombu's Redis transport has no Cluster support either).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import Script

from bridge.brokers.redis_layout import _LUA_HELPERS
from bridge.redisconn import RedisClient

SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
OURS = "bridge:celery:"

_CHECK = _LUA_HELPERS + """
-- nil and a reason when ``item`` cannot be recorded in kombu's unacked hash, else its
-- delivery tag, exchange and routing key (``queue`` when the envelope names none).
local function check(item, max_size, unacked, queue)
  if #item > max_size then
    return nil, 'envelope of ' .. #item .. ' bytes exceeds max_message_bytes=' .. max_size
  end
  local ok, env = pcall(cjson.decode, item)
  if not ok then return nil, 'not a kombu envelope: not JSON (' .. tostring(env) .. ')' end
  if type(env) ~= 'table' then
    return nil, 'not a kombu envelope: a JSON ' .. type(env) .. ', not an object'
  end
  local props = env.properties
  if type(props) ~= 'table' then return nil, "not a kombu envelope: no 'properties' object" end
  local tag = props.delivery_tag
  if type(tag) ~= 'string' or tag == '' then
    return nil, 'not a kombu envelope: properties.delivery_tag is missing, null or empty'
  end
  if not is_utf8(tag) then return nil, 'not a kombu envelope: delivery_tag is not UTF-8' end
  if redis.call('HEXISTS', unacked, tag) == 1 then
    return nil, 'duplicate delivery_tag ' .. tag .. ': a message with this tag is unacked'
  end
  local ex, rk = '', queue
  local info = props.delivery_info
  if type(info) == 'table' then
    if type(info.exchange) == 'string' then ex = info.exchange end
    if type(info.routing_key) == 'string' then rk = info.routing_key end
  end
  return tag, ex, rk
end
"""

TAKE = _CHECK + """
-- Reliable batch fetch. KEYS: unacked, unacked_index, dead list, staging list, then the
-- queue's priority lists in consumption order. ARGV: count, now, max_size, queue, time,
-- then delivery tags to ack first.
-- Acks (HDEL + ZREM), then takes what is staged plus up to ``count`` items from the right of
-- the lists in order, records each in unacked / unacked_index as kombu's QoS.append does,
-- and parks what cannot be recorded in the dead list. Returns {items, tags, reasons}.
local unacked, index, dead, staging = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local count, now, max_size = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local queue, time = ARGV[4], ARGV[5]
for i = 6, #ARGV do
  redis.call('HDEL', unacked, ARGV[i])
  redis.call('ZREM', index, ARGV[i])
end
local raw = {}
while true do
  local item = redis.call('RPOP', staging)
  if not item then break end
  raw[#raw + 1] = item
end
for k = 5, #KEYS do
  local want = count - #raw
  if want < 1 then break end
  local got = redis.call('RPOP', KEYS[k], want)
  if got then
    for _, item in ipairs(got) do raw[#raw + 1] = item end
  end
end
local items, tags, reasons = {}, {}, {}
for _, item in ipairs(raw) do
  local tag, ex, rk = check(item, max_size, unacked, queue)  -- on failure ex is the reason
  if tag then
    redis.call('ZADD', index, now, tag)
    redis.call('HSET', unacked, tag,
               '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    items[#items + 1] = item
    tags[#tags + 1] = tag
  else
    redis.call('RPUSH', dead, envelope(queue, ex, time, item))
    reasons[#reasons + 1] = ex
  end
end
return {items, tags, reasons}
"""

MOVE_UNACKED = """
-- Take delivery ARGV[1] out of kombu's unacked hash KEYS[1] and index KEYS[2] and store
-- ARGV[4] at KEYS[3] by ARGV[3] ('lpush', 'rpush', 'zadd' with score ARGV[5]); extra KEYS
-- get the same value the same way (several bound queues). When ARGV[2] is not empty the
-- stored record must still equal it (compare-and-move). Returns 0, moving nothing, when the
-- delivery is no longer unacked (acked, or restored by someone else).
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record or (ARGV[2] ~= '' and record ~= ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for k = 3, #KEYS do
  if ARGV[3] == 'zadd' then
    redis.call('ZADD', KEYS[k], ARGV[5], ARGV[4])
  elseif ARGV[3] == 'lpush' then
    redis.call('LPUSH', KEYS[k], ARGV[4])
  else
    redis.call('RPUSH', KEYS[k], ARGV[4])
  end
end
return 1
"""

MOVE_DUE = _LUA_HELPERS + """
-- Move due envelopes (score <= ARGV[1], at most ARGV[2]) from the delayed ZSET KEYS[1] to the
-- back (LPUSH) of their priority list. KEYS[3..] are the queue's lists for the priority steps
-- ARGV[5..] (same order); unreadable members go to the dead list KEYS[2] (ARGV[3] = queue,
-- ARGV[4] = time). Returns the number moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local ok, env = pcall(cjson.decode, member)
    if ok and type(env) == 'table' and type(env.properties) == 'table' then
      local p = tonumber(env.properties.priority) or 0
      p = math.max(0, math.min(9, math.floor(p)))
      local target = KEYS[3]
      for i = 5, #ARGV do
        if tonumber(ARGV[i]) <= p then target = KEYS[i - 2] end
      end
      redis.call('LPUSH', target, member)
      moved = moved + 1
    else
      redis.call('RPUSH', KEYS[2], envelope(ARGV[3], 'undecodable delayed envelope', ARGV[4],
                                             member))
    end
  end
end
return moved
"""

RECOVER_STAGED = """
-- Give back what worker ARGV[1] has staged (KEYS[1]) to the consuming end of the queue's
-- bucket-0 list KEYS[4], oldest consumed first, when its lease KEYS[2] is gone or ARGV[2] is
-- '1'; then drop it from the stagers SET KEYS[3]. Returns the count, -1 while leased.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[4], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return n
"""

REPLAY = """
-- For each (entry, body, list key) triple in ARGV: if the head of the dead list KEYS[1] is
-- still that entry, pop it and LPUSH the body onto the list (the back of the queue). Stops at
-- the first mismatch (replayed meanwhile). Returns the count.
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPUSH', ARGV[i + 2], ARGV[i + 1])
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
"""


class Scripts:
    """The scripts registered on one client (EVALSHA, reloaded after NOSCRIPT)."""

    def __init__(self, client: RedisClient) -> None:
        self.take: Script = client.register_script(TAKE)
        self.move_unacked: Script = client.register_script(MOVE_UNACKED)
        self.move_due: Script = client.register_script(MOVE_DUE)
        self.recover_staged: Script = client.register_script(RECOVER_STAGED)
        self.replay: Script = client.register_script(REPLAY)


def bucket(priority: object, steps: tuple[int, ...] = PRIORITY_STEPS) -> int:
    """kombu's priority bucket: the value clamped to 0..9, then the largest step <= it."""
    try:
        value = max(min(int(priority), 9), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        value = 0
    chosen = steps[0]
    for step in steps:
        if step <= value:
            chosen = step
    return chosen


@dataclass(frozen=True, slots=True)
class CeleryKeys:
    """Every key name, ``global_keyprefix`` included."""

    prefix: str = ""
    sep: str = SEP
    steps: tuple[int, ...] = PRIORITY_STEPS
    unacked: str = "unacked"
    unacked_index: str = "unacked_index"
    unacked_mutex: str = "unacked_mutex"

    def key(self, name: str) -> str:
        """``name`` behind the global prefix."""
        return self.prefix + name

    def list_for(self, queue: str, priority: object = 0) -> str:
        """The list a message of ``priority`` goes to (kombu's ``_q_for_pri``)."""
        step = bucket(priority, self.steps)
        return self.prefix + (f"{queue}{self.sep}{step}" if step else queue)

    def lists(self, queue: str) -> list[str]:
        """The queue's lists in consumption order (bucket 0 first)."""
        return [self.prefix + (f"{queue}{self.sep}{s}" if s else queue) for s in self.steps]

    def binding(self, exchange: str) -> str:
        """kombu's binding table of ``exchange``."""
        return f"{self.prefix}_kombu.binding.{exchange}"

    def binding_member(self, routing_key: str, queue: str, pattern: str = "") -> str:
        """One binding as kombu's ``_queue_bind`` writes it."""
        return self.sep.join([routing_key, pattern, queue])

    def dead(self, queue: str) -> str:
        """Dead-letter list of ``queue``."""
        return f"{self.prefix}{OURS}dead:{queue}"

    def delayed(self, queue: str) -> str:
        """Delayed-requeue ZSET of ``queue``."""
        return f"{self.prefix}{OURS}delayed:{queue}"

    def staging(self, queue: str, worker: str) -> str:
        """Where a blocked fetch of ``worker`` BLMOVEs into."""
        return f"{self.prefix}{OURS}staging:{queue}:{worker}"

    def lease(self, queue: str, worker: str) -> str:
        """Present while ``worker`` may have items staged for ``queue``."""
        return f"{self.prefix}{OURS}lease:{queue}:{worker}"

    def stagers(self, queue: str) -> str:
        """SET of workers that may have items staged for ``queue``."""
        return f"{self.prefix}{OURS}stagers:{queue}"
