"""The tick loop of ``mbridge beat``: wait for the next due entry, send it behind its lock,
survive outages, stop on SIGTERM/SIGINT.

Missed ticks follow each reference system:

* machinery (robfig/cron): ticks missed while no beat ran are skipped; a beat that wakes
  late (an outage, a pause) sends once, not once per missed tick.
* Celery (beat): a task overdue at start is sent once (its latest tick), then on schedule.
* gocraft (periodic enqueuer): each pass schedules from now over the next 4 minutes;
  ticks before that are never enqueued.

Each says so in one line. An entry whose broker or lock cannot be reached waits with
back-off ("unreachable" once, "reconnected" once); the others go on.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bridge.beat.cron import MAX_TICKS
from bridge.beat.gocraft import PASS_EVERY, GocraftPass
from bridge.beat.model import Entry
from bridge.beat.senders import CelerySender, Connections, MachinerySender, Sender
from bridge.config import Config, redact_url
from bridge.errors import Unreachable
from bridge.outage import Outage, probe
from bridge.stop_signals import StopSignals

__all__ = ["Beat", "GocraftPassJob", "Job", "TickJob", "open_beat"]

log = logging.getLogger("bridge.beat")
MAX_WAIT = 1.0
"""Longest single sleep: a wall-clock change or a stop is noticed within it."""


class Job(ABC):
    """Something the loop runs when due: one entry's ticks, or a gocraft pass."""

    def __init__(self, what: str, outage: Outage) -> None:
        self.what = what
        self.outage = outage
        self.due = 0.0
        self.started = False
        self.retry_at = 0.0

    @abstractmethod
    def start(self, now: float) -> float:
        """Report ticks missed while no beat ran; return when to run first."""

    @abstractmethod
    def run(self, due: float, now: float) -> float:
        """Do what was due at ``due``; return when to run next."""

    def next_time(self) -> float:
        return max(self.retry_at, self.due if self.started else 0.0)


class TickJob(Job):
    """A machinery or Celery entry: one send per tick, behind its lock."""

    def __init__(self, sender: Sender, outage: Outage) -> None:
        super().__init__(str(sender.entry), outage)
        self.sender = sender
        self.entry = sender.entry

    def start(self, now: float) -> float:
        schedule = self.entry.schedule
        upcoming = schedule.next_after(now)
        last = self.sender.last_sent()
        if last is None:
            return upcoming
        latest = schedule.latest(last, now)
        if latest is None:
            return upcoming
        missed = _count(schedule.count(last, now))
        if self.entry.system == "celery":
            log.warning("%s: %s tick(s) since %s went unsent (no beat was running): sending "
                        "it once now, as Celery beat does", self.entry, missed, _utc(last))
            return latest
        log.warning("%s: %s tick(s) since %s went unsent (no beat was running): skipped, as "
                    "machinery's scheduler (robfig/cron) does; next at %s", self.entry, missed,
                    _utc(last), _utc(upcoming))
        return upcoming

    def run(self, due: float, now: float) -> float:
        schedule = self.entry.schedule
        tick = schedule.latest(due, now) or due
        if tick != due:
            log.warning("%s: %s tick(s) from %s passed while this beat was held up: sending "
                        "once for %s, as %s does", self.entry, _count(schedule.count(due, now)),
                        _utc(due), _utc(tick), "Celery beat" if self.entry.system == "celery"
                        else "machinery's scheduler")
        self.sender.fire(tick, now)
        return schedule.next_after(max(now, tick))


class GocraftPassJob(Job):
    """The gocraft entries of one Redis and namespace: a pass now and every minute."""

    def __init__(self, enqueuer: GocraftPass, outage: Outage) -> None:
        super().__init__(f"gocraft {enqueuer.scheduled_key}", outage)
        self.enqueuer = enqueuer

    def start(self, now: float) -> float:
        self.enqueuer.report_missed(now)
        return now

    def run(self, due: float, now: float) -> float:
        added = self.enqueuer.run(now)
        if added:
            log.info("gocraft: %d new tick(s) scheduled in %s for %s", added,
                     self.enqueuer.scheduled_key,
                     ", ".join(e.name for e in self.enqueuer.entries))
        return now + PASS_EVERY


class Beat:
    """Runs the jobs until stopped."""

    def __init__(self, jobs: Sequence[Job], connections: Connections | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.jobs = list(jobs)
        self.connections = connections
        self.clock = clock
        self.signals = StopSignals(log, "stopping")

    def stop(self) -> None:
        self.signals.stop()

    def run(self) -> int:
        """Until SIGTERM/SIGINT (or :meth:`stop`); returns exit status 0."""
        self.signals.install()
        log.info("beat: %d job(s): %s", len(self.jobs), "; ".join(j.what for j in self.jobs))
        try:
            while not self.signals.requested():
                self.turn()
                wake = min((j.next_time() for j in self.jobs), default=self.clock() + MAX_WAIT)
                self.signals.pause(min(MAX_WAIT, max(0.0, wake - self.clock())))
        finally:
            if self.connections is not None:
                self.connections.close()
        log.info("beat: stopped")
        return 0

    def turn(self) -> None:
        """Run every job that is due (or start it), each on its own outage."""
        for job in self.jobs:
            now = self.clock()
            if job.retry_at > now or (job.started and job.due > now):
                continue
            try:
                if not job.started:
                    job.due = job.start(now)
                    job.started = True
                else:
                    job.due = job.run(job.due, now)
            except Exception as exc:  # an outage (or a bug): say so once, back off, go on
                job.retry_at = now + job.outage.failed(exc)
                continue
            job.retry_at = 0.0
            job.outage.succeeded()


def open_beat(entries: Sequence[Entry], config: Config) -> Beat:
    """The beat for ``entries``: connections, a checked message per entry, the jobs, and
    one reach of every server (one that cannot be reached is waited for, not fatal)."""
    connections = Connections(config)
    outages: dict[tuple[str, ...], Outage] = {}

    def outage(urls: tuple[str, ...]) -> Outage:
        if urls not in outages:
            outages[urls] = Outage(f"beat: {', '.join(redact_url(u) for u in urls)}", log)
        return outages[urls]

    jobs: list[Job] = []
    gocraft: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if entry.system == "gocraft":
            gocraft.setdefault((entry.broker, entry.namespace), []).append(entry)
            continue
        sender: Sender = (MachinerySender if entry.system == "machinery" else
                          CelerySender)(entry, connections)
        sender.check()
        jobs.append(TickJob(sender, outage(entry.endpoints)))
    for (url, namespace), group in gocraft.items():
        jobs.append(GocraftPassJob(GocraftPass(connections.redis(url), namespace, group),
                                   outage((url,))))
    _reach(connections, sorted({u for e in entries for u in e.endpoints}))
    return Beat(jobs, connections)


def _reach(connections: Connections, urls: Sequence[str]) -> None:
    for url in urls:
        try:
            probe([("beat server", url, "the schedule file or --config",
                    lambda url=url: connections.ping(url))])  # type: ignore[misc]
        except Unreachable as exc:
            log.warning("%s; beat starts anyway and retries with back-off", exc)


def _count(n: int) -> str:
    return f"{n}+" if n >= MAX_TICKS else str(n)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
