"""The Lua a gocraft/work peer runs: the same effects on the same keys as gocraft's own
scripts (reference §4.3, §5, §8), written for batches.

* ``FETCH``: for each slot of the batch, walk the job types in that slot's sampled order
  and take from the first that has jobs, is not paused and is under its cap: ``INCR`` its
  lock, ``HINCRBY`` this pool's share in lock_info, ``RPOPLPUSH`` into this pool's
  in-progress list (gocraft's fetch, once per slot).
* ``REQUEUE``: due members of the retry or scheduled set whose job list is among KEYS go
  to the head side of their list (``LPUSH``) with ``t`` = now, re-encoded by cjson as
  gocraft's requeuer does. Unlike gocraft, a member whose name this pool does not serve
  stays in the set for a pool that does (gocraft moves it to dead: its issues #86, #117).
* ``COMPLETE``: gocraft's completion, once per job whatever is sent again (below).
* ``REENQUEUE_DEAD_POOL`` / ``REAP_LOCKS``: a dead pool's in-progress jobs back to their
  lists with its lock shares given back, bytes unchanged; its stale lock shares dropped.
"""

from __future__ import annotations

FETCH = """
local groups = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local taken = {}
for slot = 0, slots - 1 do
  local found = false
  for position = 1, groups do
    local g = tonumber(ARGV[3 + slot * groups + position])
    local base = g * 6
    local jobs = KEYS[base + 1]
    if redis.call('LLEN', jobs) > 0 and not redis.call('GET', KEYS[base + 3]) then
      local cap = tonumber(redis.call('GET', KEYS[base + 6]))
      local running = tonumber(redis.call('GET', KEYS[base + 4]))
      if not cap or cap <= 0 or not running or running < cap then
        redis.call('INCR', KEYS[base + 4])
        redis.call('HINCRBY', KEYS[base + 5], ARGV[1], 1)
        taken[#taken + 1] = redis.call('RPOPLPUSH', jobs, KEYS[base + 2])
        taken[#taken + 1] = g
        found = true
        break
      end
    end
  end
  if not found then break end
end
return taken
"""

COMPLETE = """
local pool = ARGV[1]
local done = 0
for i = 0, #KEYS / 4 - 1 do
  local k, a = i * 4, 1 + i * 4
  if redis.call('LREM', KEYS[k + 1], 1, ARGV[a + 1]) == 1 then
    redis.call('DECR', KEYS[k + 2])
    redis.call('HINCRBY', KEYS[k + 3], pool, -1)
    local how = ARGV[a + 2]
    if how == 'zadd' then
      redis.call('ZADD', KEYS[k + 4], ARGV[a + 3], ARGV[a + 4])
    elseif how == 'rpush' then
      redis.call('RPUSH', KEYS[k + 4], ARGV[a + 4])
    elseif how == 'lpush' then
      redis.call('LPUSH', KEYS[k + 4], ARGV[a + 4])
    end
    done = done + 1
  end
end
return done
"""
"""Completions: KEYS in fours (in-progress list, lock, lock_info, where the job goes next),
ARGV the pool id then fours (popped bytes, ``''``/``zadd``/``rpush``/``lpush``, score,
value). gocraft's completion ``MULTI`` (``LREM``, ``DECR``, ``HINCRBY -1``, the fate),
applied only when the ``LREM`` removed the job: sent again after a lost reply, it changes
nothing (Go's would count the lock down twice)."""

REQUEUE = """
local zset = KEYS[1]
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local served = {}
for i = 2, #KEYS do served[KEYS[i]] = true end
local offset, moved, unreadable = 0, 0, 0
while budget > 0 do
  local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', offset, 100)
  if #due == 0 then break end
  for _, member in ipairs(due) do
    budget = budget - 1
    local ok, job = pcall(cjson.decode, member)
    local list = ok and type(job) == 'table' and type(job['name']) == 'string'
                 and prefix .. job['name']
    if list and served[list] then
      job['t'] = now
      redis.call('ZREM', zset, member)
      redis.call('LPUSH', list, cjson.encode(job))
      moved = moved + 1
    else
      if not list then unreadable = unreadable + 1 end
      offset = offset + 1
    end
  end
end
return {moved, unreadable}
"""

REENQUEUE_DEAD_POOL = """
local pool = ARGV[1]
local moved = 0
for base = 0, #KEYS - 1, 4 do
  while redis.call('RPOPLPUSH', KEYS[base + 1], KEYS[base + 2]) do
    redis.call('DECR', KEYS[base + 3])
    redis.call('HINCRBY', KEYS[base + 4], pool, -1)
    moved = moved + 1
  end
end
return moved
"""

REAP_LOCKS = """
local pool = ARGV[1]
for base = 0, #KEYS - 1, 2 do
  local share = tonumber(redis.call('HGET', KEYS[base + 2], pool))
  if share then
    local left = redis.call('DECRBY', KEYS[base + 1], share)
    redis.call('HDEL', KEYS[base + 2], pool)
    if left < 0 then redis.call('SET', KEYS[base + 1], 0) end
  end
end
return 0
"""

ENQUEUE_UNIQUE = """
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', 86400) then
  if ARGV[3] then
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  else
    redis.call('LPUSH', KEYS[1], ARGV[1])
  end
  return 'ok'
end
if ARGV[2] ~= '1' then redis.call('SET', KEYS[2], ARGV[2], 'EX', 86400) end
return 'dup'
"""
"""KEYS: the job list (or the scheduled set when ARGV[3], the run-at, is given) and the
unique key; ARGV: the job JSON and the unique key's value (``1``, or the job JSON for the
by-key variant): gocraft's unique enqueue. A duplicate leaves an args key alone (v0.5.1,
the latest tag) and gives a by-key key the newer job (HEAD's by-key variant)."""
