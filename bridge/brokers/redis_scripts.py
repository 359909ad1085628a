"""The Lua scripts of machinery's Redis layout and our reliable-fetch bookkeeping.

Each runs atomically in Redis. Every one touches only keys of one Cluster slot, except
MOVE_DUE (the delayed ZSET and the target queues) and a delayed requeue; see
:mod:`bridge.brokers.redis_layout` for the keys and for what falls back on Cluster.
``LUA_HELPERS`` (base64, routing key, dead-letter envelope in Lua) is shared with the
Celery layout and the migration's bookkeeping; how a script parks a message without reading
it and the dead lists' cap are in :mod:`bridge.brokers.redis_dead`.
"""

from __future__ import annotations

from redis.commands.core import Script

from bridge.brokers.redis_dead import LUA_DEAD
from bridge.redisconn import RedisClient

LUA_FORGET = """
-- Forget held messages: ``bodies[from..]`` out of the processing list ``list``. Usually
-- they are its head, in order (acks of the oldest batch): one LRANGE and LTRIM; else each
-- is LREMed. Returns how many went.
local function forget(list, bodies, from)
  local n = #bodies - from + 1
  if n < 1 then return 0 end
  local head = redis.call('LRANGE', list, 0, n - 1)
  local same = #head == n
  for i = 1, n do
    if not same then break end
    same = head[i] == bodies[from + i - 1]
  end
  if same then
    redis.call('LTRIM', list, n, -1)
    return n
  end
  local gone = 0
  for i = from, #bodies do gone = gone + redis.call('LREM', list, 1, bodies[i]) end
  return gone
end
"""

ACK = LUA_FORGET + """
-- Forget held messages: each ARGV from the processing list KEYS[1] (a batch in one call).
return forget(KEYS[1], ARGV, 1)
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
-- Give back what worker ARGV[1] holds (processing list KEYS[1], its windows KEYS[6..] oldest
-- first, then what a blocked fetch moved into its wait list KEYS[5]) to the head of its
-- queue KEYS[3], keeping the order, when its heartbeat KEYS[2] is gone or ARGV[2] == '1'
-- (forced); then drop the worker from the queue's registry KEYS[4]. Returns the count, -1
-- if alive.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = 0
local lists = {KEYS[5]}
for k = #KEYS, 6, -1 do lists[#lists + 1] = KEYS[k] end
lists[#lists + 1] = KEYS[1]
for _, held in ipairs(lists) do
  while redis.call('RPOPLPUSH', held, KEYS[3]) do n = n + 1 end
end
redis.call('SREM', KEYS[4], ARGV[1])
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return n
"""

LUA_HELPERS = """
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
  if not string.find(s, '[\\128-\\255]') then return true end  -- ASCII: one C scan
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

MOVE_DUE = LUA_HELPERS + LUA_DEAD + """
-- Move due tasks (score <= ARGV[1]) of the delayed ZSET KEYS[1] to the tail of their queue,
-- at most ARGV[2], earliest first. The ZREM result decides who moves a task, so Go workers
-- popping the same ZSET (WATCH, ZRANGEBYSCORE, MULTI ZREM EXEC) never move it twice.
-- Unreadable, oversized (over ARGV[7] bytes: never decoded) or unpushable members are
-- parked in the dead list KEYS[2] (ARGV[4] = time; KEYS[3], ARGV[5]: the large bodies'
-- counter and prefix; ARGV[6]: the cap). Returns {moved, dead, dropped by the cap}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local d = {dead = KEYS[2], seq = KEYS[3], prefix = ARGV[5], cap = tonumber(ARGV[6])}
local max = tonumber(ARGV[7])
local moved, dead, dropped = 0, 0, 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local queue, reason
    if #member > max then
      reason = 'delayed task: ' .. too_big(#member, ARGV[7])
    else
      queue, reason = routing_key(member, ARGV[3])
    end
    if queue then
      local res = redis.pcall('RPUSH', queue, member)
      if type(res) == 'table' and res.err then
        queue, reason = nil, 'cannot push to ' .. queue .. ': ' .. res.err
      end
    end
    if queue then
      moved = moved + 1
    else
      dropped = dropped + park_item(d, KEYS[1], reason, ARGV[4], member, nil, #member)
      dead = dead + 1
    end
  end
end
return {moved, dead, dropped}
"""

TAKE = LUA_HELPERS + LUA_DEAD + LUA_FORGET + """
-- Reliable batch fetch. KEYS: queue, processing list, dead list, stage (a one-item list,
-- empty between calls), wait list (what a blocked fetch moved, unread), the large parked
-- bodies' counter. ARGV: count, max_message_bytes, gate (see redis_dead; 0: read messages
-- without sizing them first), time, dead-list cap, large bodies' prefix, then bodies held
-- from this queue to forget first (acks: LUA_FORGET).
-- Moves up to ``count`` messages from the wait list, then the head of the queue, to the
-- tail of the processing list, in order; an oversized one is parked instead (unread when
-- the gate is on). Returns {messages, reasons of the parked ones, entries the cap dropped}.
local queue, processing, stage = KEYS[1], KEYS[2], KEYS[4]
forget(processing, ARGV, 7)
local want, max, gate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local d = {dead = KEYS[3], seq = KEYS[6], prefix = ARGV[6], cap = tonumber(ARGV[5])}
local items, reasons, dropped = {}, {}, 0
local pushed = 0  -- items already on the processing list (RPUSH in order, a thousand a call)
local function flush()
  while pushed < #items do
    local last = math.min(pushed + 1000, #items)
    redis.call('RPUSH', processing, unpack(items, pushed + 1, last))
    pushed = last
  end
end
local function park(reason, item, staged, size)
  flush()  -- what was taken is held before a park that could fail
  dropped = dropped + park_item(d, queue, reason, ARGV[4], item, staged, size)
  reasons[#reasons + 1] = reason
end
local read = 0  -- bytes read so far (READ_BUDGET: return before reading much more)
local function accept(item)  -- held: pushed onto the processing list by flush()
  read = read + #item
  if #item > max then return park(too_big(#item, ARGV[2]), item, nil, #item) end
  items[#items + 1] = item
end
local function hold()
  flush()
  return {items, reasons, dropped}
end
local function from_stage(one)  -- a one-item list: sized, then read or parked unread
  if gate > 0 then
    local bytes = held_bytes(one)
    if bytes > gate then return park(too_big(bytes, ARGV[2], true), nil, one, bytes) end
  end
  local item = redis.call('LPOP', one)
  if item then accept(item) end
end
local waited = redis.call('LLEN', KEYS[5])  -- one message, unless a call was lost
while waited > 1 do
  if gate > 0 then
    next_into(KEYS[5], false, stage)
    from_stage(stage)
  else
    accept(redis.call('LPOP', KEYS[5]))
  end
  waited = waited - 1
end
if waited == 1 then from_stage(KEYS[5]) end
local n = want - #items
if n < 1 then return hold() end
if gate > 0 and not small_window(queue, n, false, stage, READ_BUDGET) then
  for _ = 1, n do  -- each one sized before it is read (alone in the queue: in place)
    if read >= READ_BUDGET then break end
    if redis.call('LLEN', queue) == 1 then
      from_stage(queue)
      break
    end
    if not next_into(queue, false, stage) then break end
    from_stage(stage)
  end
else  -- small together (or no gate): read at once
  local batch = redis.call('LRANGE', queue, 0, n - 1)
  if #batch > 0 then
    redis.call('LTRIM', queue, #batch, -1)
    for _, item in ipairs(batch) do accept(item) end
  end
end
return hold()
"""

PARK = LUA_HELPERS + LUA_DEAD + """
-- Park one message ARGV[1] with reason ARGV[2] (time ARGV[3]) in the dead list KEYS[2]
-- (KEYS[3], ARGV[5]: the large bodies' counter and prefix; ARGV[4]: the cap; ARGV[6]: the
-- queue it came from). When ARGV[7] == '1' it is held in the processing list KEYS[1] and
-- taken out first: -1, parking nothing, when it is no longer there (acked, or recovered).
-- Returns how many old entries the cap dropped.
if ARGV[7] == '1' and redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
local d = {dead = KEYS[2], seq = KEYS[3], prefix = ARGV[5], cap = tonumber(ARGV[4])}
return park_item(d, ARGV[6], ARGV[2], ARGV[3], ARGV[1], nil, #ARGV[1])
"""

POP_DUE = """
-- Cluster variant of MOVE_DUE's first half: remove and return up to ARGV[2] due members.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""

REPLAY = """
-- For each (envelope, body, body_ref) triple in ARGV[3..]: if the head of the dead list
-- KEYS[1] is still that envelope, pop it and store the raw body (or what the one-item list
-- body_ref keeps, which then goes) at KEYS[2] (RPUSH, or ZADD with score ARGV[2] when
-- ARGV[1] == 'zadd'; ARGV[1] == 'drop' deletes it instead). Stops at the first mismatch
-- (replayed meanwhile). Returns the count.
local n = 0
for i = 3, #ARGV, 3 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  local body, ref = ARGV[i + 1], ARGV[i + 2]
  if ref ~= '' then
    body = redis.call('LINDEX', ref, 0)
    redis.call('DEL', ref)
  end
  if body and ARGV[1] ~= 'drop' then
    if ARGV[1] == 'zadd' then
      redis.call('ZADD', KEYS[2], ARGV[2], body)
    else
      redis.call('RPUSH', KEYS[2], body)
    end
  end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
"""


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
        self.park: Script = client.register_script(PARK)
