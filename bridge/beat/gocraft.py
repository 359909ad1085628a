"""gocraft/work's periodic enqueuer (``periodic_enqueuer.go``), as a Go pool runs it.

One pass walks each entry's ticks from now over the next 4 minutes and adds each as
``ZADD <ns>:scheduled <t> {"name":N,"id":"periodic:N:<spec>:<t>","t":<t>,"args":null}`` in
Go's exact bytes, then ``SET <ns>:last_periodic_enqueue <now>``. A tick is a zset member
that can exist once, so Go pools and beats adding the same tick leave one job: that is
gocraft's own deduplication, and the only one a Go pool honours.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.beat.model import Entry
from bridge.gocraft.job import GocraftJob
from bridge.gocraft.keys import GocraftKeys

__all__ = ["HORIZON", "GocraftPass", "periodic_job"]

log = logging.getLogger("bridge.beat")

HORIZON = 240.0
"""How far ahead a pass schedules (``periodicEnqueuerHorizon``, 4 minutes)."""
PASS_EVERY = 60.0
"""Seconds between our passes (a Go pool's: 2 minutes plus up to 29 s of jitter)."""


def periodic_job(name: str, spec: str, epoch: int) -> bytes:
    """The job Go's enqueuer writes for tick ``epoch`` (``job.serialize``, struct order)."""
    return GocraftJob(name=name, id=f"periodic:{name}:{spec}:{epoch}", t=epoch).encode()


class GocraftPass:
    """The enqueue pass for the gocraft entries of one Redis and namespace."""

    def __init__(self, client: Any, namespace: str, entries: Sequence[Entry]) -> None:
        self.client = client
        self.keys = GocraftKeys(namespace)
        self.entries = list(entries)

    @property
    def scheduled_key(self) -> str:
        return self.keys.scheduled

    @property
    def last_key(self) -> str:
        return self.keys.last_periodic_enqueue

    def last_enqueue(self) -> int | None:
        raw = self.client.get(self.last_key)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def report_missed(self, now: float) -> None:
        """Say, one line per entry, which ticks no enqueuer (Go or ours) scheduled while
        none ran: gocraft does not enqueue them afterwards, nor do we."""
        last = self.last_enqueue()
        if last is None:
            return
        covered = last + HORIZON
        for entry in self.entries:
            missed = entry.schedule.count(covered, now)
            if missed:
                log.warning("%s: %d tick(s) after %s were never scheduled (no gocraft "
                            "enqueuer ran); skipped, as gocraft does: scheduling from now over "
                            "the next %d minutes", entry, missed, _utc(covered),
                            int(HORIZON // 60))

    def run(self, now: float) -> int:
        """One pass at ``now``; returns how many ticks were new in the zset."""
        epoch_now = math.floor(now)
        pipe = self.client.pipeline(transaction=False)
        walked = 0
        for entry in self.entries:
            for tick in entry.schedule.ticks(epoch_now, epoch_now + HORIZON):
                epoch = int(tick)
                pipe.zadd(self.scheduled_key,
                          {periodic_job(entry.task, entry.schedule.spec, epoch): epoch})
                walked += 1
        pipe.set(self.last_key, epoch_now)
        added = sum(int(r) for r in pipe.execute()[:-1])
        log.debug("gocraft %s: %d tick(s) walked, %d new", self.scheduled_key, walked, added)
        return added


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
