"""gocraft/work's dead-pool reaper (``dead_pool_reaper.go``), as Go's finds pools dead:
a pool in ``worker_pools`` whose heartbeat hash is gone (names unknown: only its lock
shares are dropped) or older than 10 s (its in-progress jobs go back to their lists,
bytes unchanged, lock shares given back; then its heartbeat is deleted). Then every dead
pool leaves ``worker_pools`` and its stale lock shares are dropped.

Go reaps 10 s after start, then every 10 min (+ up to 30 s): jobs of a crashed pool may
wait that long. Ours reaps 10 s after start, then every minute (+ up to 30 s), and when it
saw a pool's beat late, again at the second that pool would count as dead: a crashed
pool's jobs come back about 11 s after its last beat. The effects are Go's, so Go's
reapers and ours never disagree.
"""

from __future__ import annotations

import logging
import random
import time
from typing import cast

from bridge.gocraft.job import now_epoch
from bridge.gocraft.keys import GocraftKeys
from bridge.gocraft.scripts import REAP_LOCKS, REENQUEUE_DEAD_POOL
from bridge.redisconn import RedisClient

log = logging.getLogger("bridge.gocraft")

DEAD_AFTER = 10
"""Seconds without a heartbeat after which a pool is dead (two missed beats, as Go)."""
LATE = 6
"""Seconds after which a heartbeat (every 5 s) is late: the reaper looks again when that
pool would count as dead."""
FIRST_REAP = 10.0
REAP_EVERY = 60.0


class Reaper:
    """Finds and reaps dead pools of one namespace, on behalf of pool ``pool_id``."""

    def __init__(self, client: RedisClient, keys: GocraftKeys, pool_id: str,
                 names: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.pool_id = pool_id
        self.names = names
        self._requeue = client.register_script(REENQUEUE_DEAD_POOL)
        self._locks = client.register_script(REAP_LOCKS)
        self._next = time.monotonic() + FIRST_REAP
        self._suspect_at = 0
        """Epoch second at which a pool whose beat is late would count as dead (0: none)."""

    def maybe_reap(self) -> int:
        """Reap when due, or when a pool seen late would be dead by now; how many jobs
        went back to their lists."""
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + REAP_EVERY + random.uniform(0, 30)
        moved = self.reap()
        if self._suspect_at:  # look again when it would be dead, not a minute later
            self._next = min(self._next, now + max(1.0, self._suspect_at - now_epoch()))
        return moved

    def dead_pools(self) -> dict[str, list[str] | None]:
        """Dead pool id → its job names (None: its heartbeat is gone, names unknown)."""
        members = cast("set[bytes]", self.client.smembers(self.keys.worker_pools))
        pools = sorted(m.decode() for m in members if m.decode() != self.pool_id)
        if not pools:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for pool in pools:
            pipe.hmget(self.keys.heartbeat(pool), ["heartbeat_at", "job_names"])
        beats = cast("list[list[bytes | None]]", pipe.execute())
        now = now_epoch()
        dead: dict[str, list[str] | None] = {}
        self._suspect_at = 0
        for pool, (beat_at, names) in zip(pools, beats, strict=True):
            if beat_at is None:
                dead[pool] = None
            elif _int(beat_at) + DEAD_AFTER < now:
                dead[pool] = [n for n in (names or b"").decode().split(",") if n]
            elif _int(beat_at) + LATE < now:  # a beat missed: dead soon, or only slow
                due = _int(beat_at) + DEAD_AFTER + 1
                self._suspect_at = min(self._suspect_at or due, due)
        return dead

    def reap(self) -> int:
        moved = 0
        for pool, names in self.dead_pools().items():
            if names is not None:
                keys: list[str] = []
                for name in names:
                    keys += [self.keys.in_progress(name, pool), self.keys.jobs(name),
                             self.keys.lock(name), self.keys.lock_info(name)]
                count = int(cast(int, self._requeue(keys=keys, args=[pool])))
                moved += count
                self.client.delete(self.keys.heartbeat(pool))
                if count:
                    log.warning("gocraft/work pool %s is dead: %d in-progress job(s) back "
                                "to their queues", pool, count)
            self.client.srem(self.keys.worker_pools, pool)
            lock_keys: list[str] = []
            for name in sorted(set(names or []) | set(self.names)):
                lock_keys += [self.keys.lock(name), self.keys.lock_info(name)]
            self._locks(keys=lock_keys, args=[pool])
        return moved


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0
