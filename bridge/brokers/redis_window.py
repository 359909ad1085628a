"""A backlog of machinery's Redis queue taken a window at a time, never read by Lua.

The take script (``redis_scripts.TAKE``) reads each message into Lua, pushes it onto the
worker's processing list and returns it; its ack sends every body back to be compared
before the list is trimmed. Both copy the 1 KB messages through Lua: ~12 µs of
redis-server a message taken and acked in batches of 500 (``python -m
bench.relay_levers``). For a consumer that takes a backlog in batches and acknowledges
each batch whole (the relay), ``WINDOW_TAKE`` instead copies the next batch unread into a
list of its own, a *window* (``SORT ... STORE``, in the queue's order), sizes it as the
take script's gate sizes a window and trims the queue; a plain ``LRANGE`` in the same round
trip reads it. A window acknowledged whole is one ``DEL``, sent with the next take: ~2 µs.

A window is a processing list like any other: requeue, park and the take script's ack (by
body, ``LREM``) work on it message by message, ``RECOVER`` gives it back when its worker's
heartbeat ends and ``close`` at once. A worker has ``WINDOW_SLOTS`` of them a queue; with
none free, a message in the wait list (a blocked fetch's), or a window too large to read at
once (the take script sizes and parks them one by one), the take script takes instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import redis

from bridge.brokers.base import Delivery
from bridge.brokers.redis_dead import READ_BUDGET
from bridge.brokers.redis_keys import QueueKeys
from bridge.redisconn import RedisClient
from bridge.redislane import Lane

__all__ = ["WINDOW_TAKE", "Windows"]

WINDOW_TAKE = f"""
-- KEYS: queue, this worker's wait list, the window to fill (empty), then windows acked whole
-- (deleted first). ARGV: count, gate (0: do not size). Returns how many messages the window
-- holds: 0 none waiting, -1 the wait list holds a message or the window is not empty, -2
-- the window is too large to read at once.
for k = 4, #KEYS do redis.call('DEL', KEYS[k]) end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = redis.call('SORT', KEYS[1], 'BY', 'nosort', 'LIMIT', 0, tonumber(ARGV[1]),
                     'STORE', KEYS[3])
if n == 0 then return 0 end
if tonumber(ARGV[2]) > 0 and (tonumber(redis.call('MEMORY', 'USAGE', KEYS[3], 'SAMPLES', '0'))
                               or 0) > {READ_BUDGET} then
  redis.call('DEL', KEYS[3])
  return -2
end
redis.call('LTRIM', KEYS[1], n, -1)
return n
"""

Read = Callable[[], list[bytes] | None]
"""A window take's reply: the window's messages, or None when the take script must take."""


class Windows:
    """One worker's windows: which slot holds which deliveries (see the module docstring)."""

    def __init__(self, client: RedisClient, lane: Lane, worker_id: str) -> None:
        self.client = client
        self.lane = lane
        self.worker_id = worker_id
        self.script = client.register_script(WINDOW_TAKE)
        self._loaded = False
        self._held: dict[str, dict[int, Delivery]] = {}
        """Window key → its deliveries not yet acked, parked or requeued (by id)."""
        self._drop: set[str] = set()
        """Windows acked whole whose DEL has not been confirmed (their slots stay taken)."""
        self._unknown: set[str] = set()
        """Windows whose contents this worker does not know (a take's reply lost)."""
        self._taken_at: dict[str, int] = {}
        """Window key → the count of takes before its last (its age)."""
        self._takes = 0

    # ---------------------------------------------------------------- taking

    def begin(self, queue: str, count: int, gate: int) -> tuple[str, Read] | None:
        """The window take of up to ``count`` messages, with the DELs of windows acked whole,
        sent now: the window's key and the call that reads it. None when no slot is free or
        the lane is busy (nothing sent)."""
        window = self._free_slot(queue)
        if window is None:
            return None
        if not self._loaded:
            self.client.script_load(WINDOW_TAKE)
            self._loaded = True
        keys = QueueKeys.of(queue)
        drop = sorted(self._drop)
        take = ("EVALSHA", self.script.sha, 3 + len(drop), queue, keys.wait(self.worker_id),
                window, *drop, count, gate)
        pending = self.lane.begin([take, ("LRANGE", window, 0, -1)])
        if pending is None:
            return None
        self._unknown.add(window)  # until its reply is read
        self._takes += 1
        self._taken_at[window] = self._takes

        def read() -> list[bytes] | None:
            taken, items = pending.read()
            if isinstance(taken, redis.exceptions.NoScriptError):  # nothing ran
                self._loaded = False
                self._unknown.discard(window)
                return None
            if isinstance(taken, Exception):
                raise taken
            if isinstance(items, Exception):
                raise items
            self._drop.difference_update(drop)
            if int(taken) < 0:  # the window was not filled: its contents are not this take's
                if int(taken) == -2 or not self._filled_before(window):
                    self._unknown.discard(window)
                return None
            self._unknown.discard(window)
            return list(items)
        return window, read

    def _filled_before(self, window: str) -> bool:
        """Whether ``window`` may hold messages this worker does not know (left unknown:
        :meth:`adopt` reads them)."""
        return bool(self.client.exists(window))

    def _free_slot(self, queue: str) -> str | None:
        for window in QueueKeys.of(queue).windows(self.worker_id):
            if (window not in self._held and window not in self._drop
                    and window not in self._unknown):
                return window
        return None

    def ordered(self, queue: str) -> list[str]:
        """``queue``'s windows, the oldest take first (the one to go back to the queue's
        head: RECOVER gives the last of its KEYS back first)."""
        return sorted(QueueKeys.of(queue).windows(self.worker_id),
                      key=lambda window: self._taken_at.get(window, 0))

    def hold(self, window: str, deliveries: Iterable[Delivery]) -> None:
        """``deliveries`` were read from ``window`` (its take's reply, or ``unknown_held``
        reading it whole: its contents are known again): held until acked, parked or
        requeued."""
        self._unknown.discard(window)
        held = {id(d): d for d in deliveries}
        if held:
            self._held.setdefault(window, {}).update(held)

    # ---------------------------------------------------------------- letting go

    def settle(self, acks: Sequence[Delivery]) -> tuple[list[str], list[Delivery]]:
        """Split ``acks``: the windows they acknowledge whole (to delete: every ack below
        sends them until a reply confirms it), and the deliveries to acknowledge one by one
        (held elsewhere, unknown here, or part of a window not acked whole)."""
        if not self._held:
            return sorted(self._drop), list(acks)
        rest: list[Delivery] = []
        found: dict[str, list[Delivery]] = {}
        for delivery in acks:
            held = self._held.get(delivery.tag) if type(delivery.tag) is str else None
            if held is None or held.pop(id(delivery), None) is not delivery:
                rest.append(delivery)
            else:
                found.setdefault(delivery.tag, []).append(delivery)
        for window, acked in found.items():
            if self._held[window]:
                rest += acked  # the others are still held: these go by body
            else:
                del self._held[window]
                self._drop.add(window)
        return sorted(self._drop), rest

    def dropped(self, windows: Iterable[str]) -> None:
        """``windows`` were deleted: their slots are free."""
        self._drop.difference_update(windows)

    def forget(self, delivery: Delivery) -> None:
        """``delivery`` left its window by itself (parked or requeued)."""
        held = self._held.get(delivery.tag) if type(delivery.tag) is str else None
        if held is not None and held.pop(id(delivery), None) is delivery and not held:
            del self._held[delivery.tag]  # nothing of it is left to delete

    def unconfirmed(self) -> list[str]:
        """The windows acked whole whose DEL was not confirmed yet."""
        return sorted(self._drop)
