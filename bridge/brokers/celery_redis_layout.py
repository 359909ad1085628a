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
  (``{"queue", "reason", "time", "body" | "body_b64" | "body_ref"}``), capped; a large body
  parked aside in ``deadbody:<queue>:<n>`` (``n`` from ``deadseq:<queue>``); see
  :mod:`bridge.brokers.redis_dead`.
* ``stage:<queue>:<worker>``: a one-item list where a script sizes a message before it
  reads it (empty between calls).
* ``delayed:<queue>``: ZSET of envelopes requeued with a delay, scored by the due time.
* ``taken:<queue>:<worker>``: the delivery tags of the worker's last take (JSON list, a
  day's TTL), so a worker that lost a take's reply finds what it took.
* ``staging:<queue>:<worker>``: LIST a blocked fetch BLMOVEs into (one item at a time);
  ``lease:<queue>:<worker>``: a string with a TTL while the worker may have items staged;
  ``stagers:<queue>``: SET of those workers. A staged item whose lease expired goes back.

Single node and Sentinel only (kombu's Redis transport has no Cluster support either).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import Script

from bridge.brokers.redis_dead import LUA_DEAD, LUA_DECODE_MAX
from bridge.brokers.redis_scripts import LUA_HELPERS
from bridge.redisconn import RedisClient

SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
OURS = "bridge:celery:"

_CHECK = LUA_HELPERS + LUA_DEAD + f"""
local DECODE_MAX = {LUA_DECODE_MAX}

-- A large envelope's delivery tag, exchange and routing key, read from its last bytes
-- (kombu writes ``properties`` last) without decoding it; nil when they are not there.
local function tail_fields(item)
  local tail = string.sub(item, -4096)
  local tag = string.match(tail, '"delivery_tag"%s*:%s*"([^"\\\\]+)"%s*[,}}]')
  if not tag then return nil end
  local ex = string.match(tail, '"exchange"%s*:%s*"([^"\\\\]*)"') or ''
  local rk = string.match(tail, '"routing_key"%s*:%s*"([^"\\\\]*)"')
  return tag, ex, rk
end
""" + """
-- kombu's Redis transport writes an envelope's properties last, ending
--   "delivery_info": {"exchange": "<ex>", "routing_key": "<rk>"}, "priority": <n>,
--   "body_encoding": "<enc>", "delivery_tag": "<tag>"}}
-- Those fields, read there by plain search and one anchored match (decoding the whole
-- envelope costs Redis ~4 us a message); nil for any other ending, or an escape in a value.
-- Python decodes the envelope anyway and parks it if its tag is not this one.
local QUICK_WINDOW = 512
local function quick_fields(item)
  local from = #item - QUICK_WINDOW
  if from < 1 then from = 1 end
  local at = string.find(item, '"delivery_info": {"exchange": "', from, true)
  if not at then return nil end
  local ex, rk, tag = string.match(item, '^"delivery_info": {"exchange": "([^"\\]*)", '
    .. '"routing_key": "([^"\\]*)"}, "priority": %d+, "body_encoding": "%w+", '
    .. '"delivery_tag": "([^"\\]+)"}}$', at)
  return tag, ex, rk
end

-- ``item``'s delivery tag, exchange and routing key (``queue`` when it names none), or nil
-- and why it is not a kombu envelope: read from its end where kombu writes them, else from a
-- large one's tail (decoded in Python, which parks it if it is not an envelope after all),
-- else decoded here (up to DECODE_MAX bytes).
local function fields(item, queue)
  local tag, ex, rk = quick_fields(item)
  if tag and is_utf8(tag) then return tag, ex, rk end
  if #item > DECODE_MAX then
    tag, ex, rk = tail_fields(item)
    if tag and is_utf8(tag) then return tag, ex, rk or queue end
  end
  local ok, env = pcall(cjson.decode, item)
  if not ok then return nil, 'not a kombu envelope: not JSON (' .. tostring(env) .. ')' end
  if type(env) ~= 'table' then
    return nil, 'not a kombu envelope: a JSON ' .. type(env) .. ', not an object'
  end
  local props = env.properties
  if type(props) ~= 'table' then return nil, "not a kombu envelope: no 'properties' object" end
  tag = props.delivery_tag
  if type(tag) ~= 'string' or tag == '' then
    return nil, 'not a kombu envelope: properties.delivery_tag is missing, null or empty'
  end
  if not is_utf8(tag) then return nil, 'not a kombu envelope: delivery_tag is not UTF-8' end
  ex, rk = '', queue
  local info = props.delivery_info
  if type(info) == 'table' then
    if type(info.exchange) == 'string' then ex = info.exchange end
    if type(info.routing_key) == 'string' then rk = info.routing_key end
  end
  return tag, ex, rk
end

-- nil and a reason when ``item`` cannot be recorded in kombu's unacked hash (too large, not
-- an envelope), else its tag, exchange and routing key (whether the tag is unacked already
-- is asked of all the items read at once: ``recorded``).
local function check(item, max_size, queue)
  if #item > max_size then
    return nil, too_big(#item, max_size)
  end
  return fields(item, queue)  -- on failure the second value is the reason
end

-- ``command key ...`` for ``args`` (a flat list) in calls of up to ``step`` of them: one
-- call for many costs Redis a fraction of one a value from Lua.
local function in_chunks(command, key, args, step)
  local replies = {}
  for i = 1, #args, step do
    local reply = redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
    if type(reply) == 'table' then
      for _, one in ipairs(reply) do replies[#replies + 1] = one end
    end
  end
  return replies
end
"""

TAKE = _CHECK + """
-- Reliable batch fetch. KEYS: unacked, unacked_index, dead list, staging list (what blocked
-- waits moved), stage (a one-item list, empty between calls), the large parked bodies'
-- counter, the record of this worker's last take, then the queue's priority lists in
-- consumption order. ARGV: count, now,
-- max_size, queue, time, gate (see redis_dead; 0: read messages before sizing them),
-- dead-list cap, large bodies' prefix, then delivery tags to ack first.
-- Acks (HDEL + ZREM), then takes what is staged plus up to ``count`` items from the right of
-- the lists in order, each sized before it is read, records each in unacked /
-- unacked_index as kombu's QoS.append does, and parks what cannot be recorded (an oversized
-- one unread). Returns {items, tags, reasons, entries the cap dropped}.
local unacked, index, staging, stage = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local count, now, max_size = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local queue, time, gate = ARGV[4], ARGV[5], tonumber(ARGV[6])
local d = {dead = KEYS[3], seq = KEYS[6], prefix = ARGV[8], cap = tonumber(ARGV[7])}
local acked = {}
for i = 9, #ARGV do acked[#acked + 1] = ARGV[i] end
if #acked > 0 then
  in_chunks('HDEL', unacked, acked, 1000)
  in_chunks('ZREM', index, acked, 1000)
end
local items, tags, reasons, dropped = {}, {}, {}, 0
local function park(reason, item, one, size)
  dropped = dropped + park_item(d, queue, reason, time, item, one, size)
  reasons[#reasons + 1] = reason
end
local read = 0  -- bytes read so far (READ_BUDGET: return before reading much more)
local checked = {}  -- {item, tag, exchange, routing key} of each envelope read
local function record(item)
  read = read + #item
  local tag, ex, rk = check(item, max_size, queue)  -- on failure ex is the reason
  if not tag then return park(ex, item, nil, #item) end
  checked[#checked + 1] = {item, tag, ex, rk}
end
-- what was read goes in unacked / unacked_index (a tag unacked already, or twice in this
-- take, is parked): one HMGET, ZADD and HSET for them all
local function recorded()
  if #checked == 0 then return end
  local asked = {}
  for i, one in ipairs(checked) do asked[i] = one[2] end
  local stored, seen, scores, records = in_chunks('HMGET', unacked, asked, 1000), {}, {}, {}
  for i, one in ipairs(checked) do
    local item, tag = one[1], one[2]
    if stored[i] or seen[tag] then
      park('duplicate delivery_tag ' .. tag .. ': a message with this tag is unacked', item,
           nil, #item)
    else
      seen[tag] = true
      scores[#scores + 1] = now
      scores[#scores + 1] = tag
      records[#records + 1] = tag
      records[#records + 1] = '[' .. item .. ', ' .. cjson.encode(one[3]) .. ', '
        .. cjson.encode(one[4]) .. ']'
      items[#items + 1] = item
      tags[#tags + 1] = tag
    end
  end
  if #tags > 0 then
    in_chunks('ZADD', index, scores, 1000)
    in_chunks('HSET', unacked, records, 1000)
  end
end
local function from_stage(one)  -- a one-item list: sized, then read, or parked unread
  if gate > 0 then
    local bytes = held_bytes(one)
    if bytes > gate then return park(too_big(bytes, max_size, true), nil, one, bytes) end
  end
  local item = redis.call('LPOP', one)
  if item then record(item) end
end
local function take_from(list, want)  -- up to ``want`` from the right (consuming) end
  if gate == 0 or small_window(list, want, true, stage, READ_BUDGET) then
    local got = redis.call('RPOP', list, want)  -- small together (or no gate): at once
    for _, item in ipairs(got or {}) do record(item) end
    return
  end
  for _ = 1, want do  -- each one sized before it is read (alone in its list: in place)
    if read >= READ_BUDGET then return end
    if redis.call('LLEN', list) == 1 then return from_stage(list) end
    if not next_into(list, true, stage) then return end
    from_stage(stage)
  end
end
local staged = redis.call('LLEN', staging)
if staged > 0 then take_from(staging, staged) end
for k = 8, #KEYS do
  local want = count - #checked
  if want < 1 or read >= READ_BUDGET then break end
  take_from(KEYS[k], want)
end
recorded()
-- the tags taken, for a worker that loses this reply (CeleryRedisBroker.unknown_held)
redis.call('SET', KEYS[7], #tags > 0 and cjson.encode(tags) or '[]', 'EX', 86400)
return {items, tags, reasons, dropped}
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

MOVE_DUE = LUA_HELPERS + LUA_DEAD + """
-- Move due envelopes (score <= ARGV[1], at most ARGV[2]) from the delayed ZSET KEYS[1] to the
-- back (LPUSH) of their priority list. KEYS[4..] are the queue's lists for the priority steps
-- ARGV[8..] (same order); unreadable members (larger than ARGV[7] bytes: never decoded) are
-- parked in the dead list KEYS[2] (ARGV[3] = queue, ARGV[4] = time, KEYS[3] and ARGV[5]: the
-- large bodies' counter and prefix, ARGV[6]: the cap). Returns {moved, dropped by the cap}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local d = {dead = KEYS[2], seq = KEYS[3], prefix = ARGV[5], cap = tonumber(ARGV[6])}
local moved, dropped = 0, 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local ok, env = false, nil
    if #member <= tonumber(ARGV[7]) then ok, env = pcall(cjson.decode, member) end
    if ok and type(env) == 'table' and type(env.properties) == 'table' then
      local p = tonumber(env.properties.priority) or 0
      p = math.max(0, math.min(9, math.floor(p)))
      local target = KEYS[4]
      for i = 8, #ARGV do
        if tonumber(ARGV[i]) <= p then target = KEYS[i - 4] end
      end
      redis.call('LPUSH', target, member)
      moved = moved + 1
    else
      dropped = dropped + park_item(d, ARGV[3], 'undecodable delayed envelope', ARGV[4],
                                    member, nil, #member)
    end
  end
end
return {moved, dropped}
"""

PARK_UNACKED = LUA_HELPERS + LUA_DEAD + """
-- Take delivery ARGV[1] out of kombu's unacked hash KEYS[1] and index KEYS[2] and park its
-- message ARGV[2] with reason ARGV[3] (time ARGV[4]) in the dead list KEYS[3] (KEYS[4] and
-- ARGV[6]: the large bodies' counter and prefix; ARGV[5]: the cap; ARGV[7]: the queue).
-- -1, parking nothing, when the delivery is no longer unacked; else how many old entries
-- the cap dropped.
if not redis.call('HGET', KEYS[1], ARGV[1]) then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local d = {dead = KEYS[3], seq = KEYS[4], prefix = ARGV[6], cap = tonumber(ARGV[5])}
return park_item(d, ARGV[7], ARGV[3], ARGV[4], ARGV[2], nil, #ARGV[2])
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
-- For each (entry, body, list key, body_ref) quadruple in ARGV: if the head of the dead list
-- KEYS[1] is still that entry, pop it and LPUSH the body (or what the one-item list
-- body_ref keeps, which then goes) onto the list (the back of the queue). Stops at the first
-- mismatch (replayed meanwhile). An empty list key drops the entry instead (delete).
-- Returns the count.
local n = 0
for i = 1, #ARGV, 4 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  local body, ref = ARGV[i + 1], ARGV[i + 3]
  if ref ~= '' then
    body = redis.call('LINDEX', ref, 0)
    redis.call('DEL', ref)
  end
  if body and ARGV[i + 2] ~= '' then redis.call('LPUSH', ARGV[i + 2], body) end
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
        self.park_unacked: Script = client.register_script(PARK_UNACKED)


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

    def taken(self, queue: str, worker: str) -> str:
        """The tags of ``worker``'s last take from ``queue`` (JSON; a day)."""
        return f"{self.prefix}{OURS}taken:{queue}:{worker}"

    def dead_seq(self, queue: str) -> str:
        """The counter naming the large bodies parked aside for ``queue``."""
        return f"{self.prefix}{OURS}deadseq:{queue}"

    def dead_body_prefix(self, queue: str) -> str:
        """Where a large parked body of ``queue`` goes: this prefix and a number."""
        return f"{self.prefix}{OURS}deadbody:{queue}:"

    def stage(self, queue: str, worker: str) -> str:
        """The one-item list where ``worker``'s scripts size a message before reading it."""
        return f"{self.prefix}{OURS}stage:{queue}:{worker}"

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
