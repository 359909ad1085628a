"""Dead letters on Redis, for every layout (machinery's, Celery's): how a message is parked
without Redis reading it twice, where its bytes go, and the cap on a dead list.

* **Sizes before reads.** A script never decodes or scans a message it has not sized: the next
  message of a queue is first copied, unread, into a one-item list (``SORT … LIMIT 0 1
  STORE``), sized there (``MEMORY USAGE``, no read), and a message surely larger than
  ``max_message_bytes`` is parked by renaming that list: Redis copies it once, as any
  consumer's pop would, and no script or client ever holds it. (``gate_bytes``: the size
  past which a one-item list surely holds an oversized message, allocator rounding
  included.)
* **Short calls.** A fetch script stops reading once it has read ``READ_BUDGET`` bytes; the
  rest waits for the next call.
* **No byte-by-byte Lua over large bodies.** A parked body of at most ``INLINE_MAX`` bytes is
  kept inline in its entry (``body`` as text, or ``body_b64``); a larger one lives in a
  one-item list of its own, named by the entry's ``body_ref`` (entries stay small, so
  listing and trimming a dead list stays cheap).
* **A cap and a policy.** A dead list keeps at most ``max_dead_letters`` entries (default
  100,000, or ``$BRIDGE_MAX_DEAD_LETTERS``; 0 = no cap): parking one more drops the oldest
  (and its kept body), with a warning at most every ``WARN_EVERY`` seconds per list that
  says how many were dropped. Replay or inspect them before they go.

``LUA_DEAD`` holds the Lua side (after ``redis_scripts.LUA_HELPERS``, whose ``envelope`` it
uses): ``park_item``, ``trim_dead``, ``held_bytes``, ``next_into``, ``small_window``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("bridge.brokers")

INLINE_MAX = 16 * 1024
"""Largest body kept inside its dead-letter entry (Lua checks its UTF-8 and base64-encodes
it: about a millisecond at this size); a larger one is kept aside, unread."""
TRIM_BATCH = 1000
"""Entries dropped per script call at most (a lowered cap is reached over several calls)."""
READ_BUDGET = 2**20
"""Bytes of messages a fetch script reads at most before it returns what it has (at least
one message): a batch of large messages costs several short calls, not one long one."""
SHORT_LIST = 1000
"""A list this long or shorter is sized whole before a batch is read from it (cheap: one
step per node); a longer one by a copy of the batch's window."""
WARN_EVERY = 10.0
LUA_DECODE_MAX = 64 * 1024
"""Largest message a script decodes as JSON (Celery's envelope check); larger ones are
read by a pattern over their last bytes, and checked in Python."""


def default_max_dead_letters() -> int:
    """``$BRIDGE_MAX_DEAD_LETTERS``, else 100,000 (0: no cap)."""
    value = os.environ.get("BRIDGE_MAX_DEAD_LETTERS", "").strip()
    try:
        return max(int(value), 0) if value else 100_000
    except ValueError:
        log.warning("BRIDGE_MAX_DEAD_LETTERS=%r is not a number: using 100000", value)
        return 100_000


def gate_bytes(max_message_bytes: int) -> int:
    """What ``MEMORY USAGE`` may report for a one-item list whose item is at most
    ``max_message_bytes``: the allocator rounds up by at most a quarter, plus overhead."""
    return max_message_bytes + max_message_bytes // 4 + 65536


class DropWarnings:
    """The cap's warning, at most once per ``WARN_EVERY`` s per dead list, with the total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def dropped(self, dead: str, count: int, cap: int) -> None:
        if count <= 0:
            return
        with self._lock:
            total = self._pending.get(dead, 0) + count
            now = time.monotonic()
            if now - self._last.get(dead, -WARN_EVERY) < WARN_EVERY:
                self._pending[dead] = total
                return
            self._pending[dead] = 0
            self._last[dead] = now
        log.warning("dead letters %s are at their cap of %d: dropped the %d oldest (raise "
                    "max_dead_letters or $BRIDGE_MAX_DEAD_LETTERS, or replay them with "
                    "mbridge requeue-dead)", dead, cap, total)


DROPS = DropWarnings()

LUA_DEAD = f"""
local INLINE_MAX = {INLINE_MAX}
local TRIM_BATCH = {TRIM_BATCH}
local READ_BUDGET = {READ_BUDGET}
local SHORT_LIST = {SHORT_LIST}

-- Drop the oldest entries of the dead list beyond ``cap`` (0: none), at most TRIM_BATCH,
-- with the bodies kept aside for them. Returns how many were dropped.
local function trim_dead(dead, cap)
  if cap <= 0 then return 0 end
  local dropped = 0
  local over = redis.call('LLEN', dead) - cap
  while over > 0 and dropped < TRIM_BATCH do
    local entry = redis.call('LPOP', dead)
    if not entry then break end
    if string.sub(entry, 1, 12) == '{{"body_ref":' then
      local ok, e = pcall(cjson.decode, entry)
      if ok and type(e) == 'table' and type(e.body_ref) == 'string' then
        redis.call('DEL', e.body_ref)
      end
    end
    dropped = dropped + 1
    over = over - 1
  end
  return dropped
end

-- Park one message in the dead list d.dead (d.prefix, d.seq: where large bodies go; d.cap):
-- ``item`` (a string), or the one-item list ``stage`` (renamed, never read) of ``size``
-- bytes. Returns how many old entries the cap dropped.
local function park_item(d, queue, reason, time, item, stage, size)
  local entry
  if item and #item <= INLINE_MAX then
    entry = envelope(queue, reason, time, item)
  else
    local key = d.prefix .. redis.call('INCR', d.seq)
    if item then redis.call('RPUSH', key, item) else redis.call('RENAME', stage, key) end
    entry = '{{"body_ref":' .. cjson.encode(key) .. ',"size":' .. string.format('%.0f', size)
      .. ',"queue":' .. cjson.encode(queue) .. ',"reason":' .. cjson.encode(reason)
      .. ',"time":' .. cjson.encode(time) .. '}}'
  end
  redis.call('RPUSH', d.dead, entry)
  return trim_dead(d.dead, d.cap)
end

-- Bytes a key takes, without reading it (a one-item list: at least its item's size).
local function held_bytes(key)
  return tonumber(redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) or 0
end

-- Copy the next message of ``list`` (its head, or its tail when ``tail``) unread into the
-- one-item list ``stage`` and take it off ``list``; false when ``list`` is empty.
local function next_into(list, tail, stage)
  local n
  if tail then
    n = redis.call('SORT', list, 'BY', 'nosort', 'DESC', 'LIMIT', 0, 1, 'STORE', stage)
  else
    n = redis.call('SORT', list, 'BY', 'nosort', 'LIMIT', 0, 1, 'STORE', stage)
  end
  if n == 0 then return false end
  if tail then redis.call('LTRIM', list, 0, -2) else redis.call('LTRIM', list, 1, -1) end
  return true
end

-- Whether the next ``n`` messages of ``list`` (its head, or its tail when ``tail``) are
-- surely no larger than ``max`` bytes together, so they may be read at once: a short list
-- is sized whole (MEMORY USAGE walks its nodes, not its bytes); a long one by copying the
-- window unread into ``stage`` (emptied again). False: size them one by one.
local function small_window(list, n, tail, stage, max)
  local len = redis.call('LLEN', list)
  if len <= SHORT_LIST then return held_bytes(list) <= max end
  local stored
  if tail then
    stored = redis.call('SORT', list, 'BY', 'nosort', 'DESC', 'LIMIT', 0, n, 'STORE', stage)
  else
    stored = redis.call('SORT', list, 'BY', 'nosort', 'LIMIT', 0, n, 'STORE', stage)
  end
  local small = stored > 0 and held_bytes(stage) <= max
  redis.call('DEL', stage)
  return small
end

-- ``message of N bytes exceeds max_message_bytes=M`` (``about``: N is an estimate).
local function too_big(size, max, about)
  return 'message of ' .. (about and 'about ' or '') .. string.format('%.0f', size)
    .. ' bytes exceeds max_message_bytes=' .. max
end
"""

__all__ = ["DROPS", "INLINE_MAX", "LUA_DEAD", "LUA_DECODE_MAX", "DropWarnings",
           "default_max_dead_letters", "gate_bytes"]
