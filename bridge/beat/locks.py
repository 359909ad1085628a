"""Once per tick across processes: the Redis locks ``mbridge beat`` takes before a send.

machinery entries take machinery's own periodic-task lock (``locks/redis/redis.go``), so a
Go server's ``RegisterPeriodicTask`` on the same name and spec and any number of beats
interlock: key ``machinery_lock_<program><name><spec>``, value the next run in Unix
nanoseconds minus one, ``SET NX`` expiring at that next run; a holder whose stored time has
passed is taken over (Go's ``GET``/``GETSET``). Here the same steps run as one script.

Celery entries take a lock of our own per (entry, tick), and leave the last tick sent for a
beat that starts later (Celery beat's "overdue at start runs once"):

    mbridge_beat:{celery:<name>}:tick:<tick, Unix seconds>   SET NX PX, value = holder id
    mbridge_beat:{celery:<name>}:last                        the last tick sent (Unix seconds)

machinery entries leave the same ``last`` record (``{machinery:<name>}``), only to say at
start how many ticks went by unsent.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bridge.beat.model import Entry

__all__ = ["CeleryTickLock", "MachineryLock", "last_key", "read_last", "record_last"]

_MACHINERY = """
local key, value, px, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('SET', key, value, 'PX', px, 'NX') then return 1 end
local held = redis.call('GET', key)
if not held or not string.match(held, '^%d+$') or tonumber(held) == 0 then return 0 end
-- now > held, compared as decimals: nanoseconds do not fit a Lua number exactly
if #now > #held or (#now == #held and now > held) then
  redis.call('SET', key, value, 'PX', px)
  return 1
end
return 0
"""

_TICK = """
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""

MIN_TICK_TTL = 60.0
MAX_TICK_TTL = 86_400.0


def last_key(entry: Entry) -> str:
    """Where the last tick sent for ``entry`` is kept."""
    return f"mbridge_beat:{{{entry.system}:{entry.name}}}:last"


def read_last(client: Any, entry: Entry) -> float | None:
    raw = client.get(last_key(entry))
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def record_last(client: Any, entry: Entry, tick: float) -> None:
    client.set(last_key(entry), _seconds(tick))


def _seconds(t: float) -> str:
    return f"{t:.3f}".rstrip("0").rstrip(".")


class MachineryLock:
    """machinery's periodic-task lock for one entry, on the Redis ``client``."""

    def __init__(self, client: Any, entry: Entry) -> None:
        self.key = entry.machinery_lock_key
        self._script = client.register_script(_MACHINERY)
        self._client = client
        self._held: str | None = None

    def acquire(self, next_run: float, now_ns: int | None = None) -> bool:
        """Take the lock until ``next_run`` (Unix seconds) as Go's ``LockWithRetries(key,
        next.UnixNano()-1)`` does; True when this process may send."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        value = str(round(next_run * 1e9) - 1)
        if self._held == value and self._client.get(self.key) == value.encode():
            return True  # ours already: a retry of the same tick after an outage
        ms = max(1, (int(value) + 1 - now_ns) // 1_000_000)  # go-redis formatMs
        if self._script(keys=[self.key], args=[value, ms, str(now_ns)]) == 1:
            self._held = value
            return True
        return False


class CeleryTickLock:
    """Our per-(entry, tick) lock for Celery entries."""

    def __init__(self, client: Any, entry: Entry) -> None:
        self._prefix = f"mbridge_beat:{{celery:{entry.name}}}:tick:"
        self._script = client.register_script(_TICK)
        self.holder = f"{uuid.uuid4().hex}"

    def key(self, tick: float) -> str:
        return self._prefix + _seconds(tick)

    def acquire(self, tick: float, next_tick: float) -> bool:
        """Take ``tick`` (kept for twice the period, 1 minute to 1 day); True when this
        process may send it (also when it already holds it: a retry after an outage)."""
        ttl = min(MAX_TICK_TTL, max(MIN_TICK_TTL, 2 * (next_tick - tick)))
        return bool(self._script(keys=[self.key(tick)],
                                 args=[self.holder, int(ttl * 1000)]) == 1)
