"""The relay's loop: translate one system's queue into the other's, and carry results back.

One loop, batched. Each turn it fetches up to ``batch`` messages from the source queue
(acknowledging the previous turn's, whose translations are already published), hands them
to the direction's :class:`Side` (``bridge.relay.forward`` for Celery → machinery,
``bridge.relay.reverse`` for machinery → Celery); after a full batch the next take is sent
before this one is relayed, so Redis runs it meanwhile (``bridge.relay.prefetch``; the next
turn reads it), and a batch's writes are sent without waiting: the next turn translates its
batch first, then reads them (``Side.prepare`` and ``Side.send``; on Redis both sides send
them by script calls on a lane). Every ``poll_interval`` it reads the
states of every task id it still owes a result for in one round trip per 1,000 ids and
writes the finished ones into the producing side's result backend (:class:`ReadSchedule`).
Reading grows with what is in flight, so the next read waits at least four times as long as
the last one took, and twice as long after each read that found nothing ended (up to 16
intervals) while the oldest 1,000 ids are still read every interval: a deep backlog nobody
works on slows neither the relaying nor the first results, which end first in a FIFO queue.

The ids in flight live in Redis (``bridge.relay.track``), so a restart loses nothing.
A message is acknowledged only after its translation is published (a crash duplicates
at most); results are written idempotently (Celery's store skips a stored SUCCESS). SIGTERM
or SIGINT stops fetching, acknowledges what was published and gives back what was held.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from itertools import islice

from bridge.brokers.base import Delivery
from bridge.config import ConfigError
from bridge.endpoints import Endpoint
from bridge.heap import SparseCollector
from bridge.outage import Outage, is_outage
from bridge.relay.forward import CeleryToMachinery
from bridge.relay.prefetch import Prefetch
from bridge.relay.reverse import MachineryToCelery
from bridge.relay.track import (
    CHORD,
    DROP,
    FAIL,
    Outcome,
    RelayOptions,
    Side,
    Tracked,
    chord_error,
)
from bridge.stop_signals import StopSignals

__all__ = ["HEAD", "ReadSchedule", "Relay", "next_read_at", "open_relay", "relay_name"]

log = logging.getLogger("bridge.relay")

_CHUNK = 1000
_CARRY_SHARE = 4  # the wait between reads of what is in flight, in units of the last read
_IDLE_DOUBLINGS = 4  # reads that found nothing ended: the wait doubles, up to 16 intervals
HEAD = _CHUNK
"""How many of the oldest ids in flight are read every interval, whatever the backlog."""


def next_read_at(began: float, ended: float, poll_interval: float, idle: int = 0) -> float:
    """When to read every state in flight again, after a read from ``began`` to ``ended``:
    ``poll_interval`` later, or four times the read's length if that is longer (reading
    takes at most a fifth of the loop's time, however much is in flight); after ``idle``
    reads in a row that found nothing ended, 2**idle intervals (at most 16)."""
    wait = poll_interval * (1 << min(idle, _IDLE_DOUBLINGS))
    return ended + max(wait, _CARRY_SHARE * (ended - began))


class ReadSchedule:
    """When the relay reads the states in flight: all of them (see :func:`next_read_at`),
    and in between, every interval, the oldest :data:`HEAD` ids (a whole read when no more
    are in flight). A read of the oldest that finds some ended makes the next read of all
    due as if the last had found some too."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.all_at = 0.0
        self.head_at = 0.0
        self.idle = 0
        self._last = (0.0, 0.0)  # the last read of all: began, ended

    @property
    def next_at(self) -> float:
        return min(self.all_at, self.head_at)

    def due(self, now: float, in_flight: int) -> int | None:
        """What to read now: 0 every id, n the oldest n, None nothing."""
        if now >= self.all_at or (now >= self.head_at and in_flight <= HEAD):
            return 0
        return HEAD if now >= self.head_at else None

    def read(self, limit: int, began: float, ended: float, ended_tasks: int) -> None:
        """A read of ``limit`` ids (0: all) from ``began`` to ``ended`` found
        ``ended_tasks`` ended."""
        self.head_at = ended + self.poll_interval
        if limit == 0:
            self._last = (began, ended)
        if ended_tasks:
            self.idle = 0
        elif limit == 0:
            self.idle += 1
        if limit == 0 or ended_tasks:
            self.all_at = next_read_at(*self._last, self.poll_interval, self.idle)


class Relay:
    """Runs one :class:`Side` until stopped (see the module docstring)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.options = side.options
        self.inflight = side.inflight
        self.signals = StopSignals(log, "finishing this turn, then exiting",
                                   on_second=self._second_signal)
        self._acks: list[Delivery] = []
        self._prefetch = Prefetch(side.consumer, side.queue, self.options.batch)
        self._sending: tuple[Callable[[], list[Delivery]], list[Delivery]] | None = None
        """The batch whose writes were sent and not yet waited for (Side.send), and its
        deliveries."""
        self._failed = False
        self.outage_level = logging.WARNING
        """Of its "unreachable" and "reconnected" lines (DEBUG in a helper process, whose
        outages the run's process says)."""

    @property
    def stats(self) -> Counter[str]:
        """relayed, parked, results, dropped... since start."""
        return self.side.stats

    def stop(self) -> None:
        """Stop after the current turn."""
        self.signals.stop()

    def run(self) -> int:
        """Relay until stopped (SIGTERM/SIGINT or :meth:`stop`); returns exit status 0."""
        self.signals.install()
        loaded = False
        schedule = ReadSchedule(self.options.poll_interval)
        outage = Outage("relay: a broker or result backend", log, level=self.outage_level)
        with SparseCollector() as collector:  # a batch in flight outlives its turn
            while not self.signals.requested():
                try:
                    if not loaded:  # in the loop: a relay started in an outage waits it out
                        log.info("relaying %s (%d results in flight, bookkeeping %s)",
                                 self.side.queue, self.inflight.load(), self.inflight.key)
                        loaded = True
                    self._turn(schedule.next_at)
                    began = time.monotonic()
                    limit = schedule.due(began, len(self.inflight))
                    if limit is not None:
                        ended_tasks = self.carry(limit)
                        schedule.read(limit, began, time.monotonic(), ended_tasks)
                except Exception as exc:  # said once per outage; the turn is tried again
                    self._failed = True
                    self.signals.pause(outage.failed(exc))
                    continue
                finally:
                    collector.tick()
                outage.succeeded()
            self._shutdown()
        return 0

    def _turn(self, next_poll: float) -> None:
        side = self.side
        deliveries = self._prefetched()
        side.maintain()
        if self._failed:  # a take whose reply the failure lost: relay what it took now
            deliveries = [*self._adopt(deliveries or []), *(deliveries or [])]
        if not deliveries:  # none prefetched, or the queue was empty then: wait here
            self._sent()
            timeout = self.options.fetch_timeout
            if self.inflight or side.held():
                timeout = min(timeout, max(0.0, next_poll - time.monotonic()))
            acks, self._acks = self._acks, []
            try:
                deliveries = side.consumer.fetch(side.queue, self.options.batch, timeout,
                                                 ack=acks)
            except Exception:
                self._acks = acks + self._acks  # acknowledging twice is harmless
                raise
        if len(deliveries) >= self.options.batch and self._prefetch.start(self._acks):
            self._acks = []  # a backlog: Redis takes the next batch while this one is relayed
        if deliveries:
            try:
                prepared = side.prepare(deliveries)
            except Exception:  # not sent: back to the queue (what it parked is gone)
                side.give_back(deliveries)
                raise
            try:
                self._sent()  # the last batch's writes ran meanwhile: acknowledge it
            except Exception:
                side.abandon(prepared)
                raise
            self._sending = (side.send(prepared), deliveries)
        self._acks += side.settle()

    def _sent(self) -> None:
        """Wait for the batch being sent; its deliveries are then acknowledged."""
        sending, self._sending = self._sending, None
        if sending is not None:
            self._acks += sending[0]()

    def _adopt(self, fetched: list[Delivery]) -> list[Delivery]:
        """After a failed turn: what the broker holds for this relay beyond what it knows
        (``fetched`` just now included: a take whose reply was lost), to be relayed now
        rather than when the broker's recovery gives it back (kombu: after
        ``visibility_timeout``)."""
        side = self.side
        sending = self._sending[1] if self._sending is not None else []
        known = [*fetched, *self._acks, *sending, *side.held(), *side.unreturned]
        found = side.consumer.unknown_held(side.queue, known)
        self._failed = False
        if found:
            log.warning("%d message(s) of %s were taken by a call whose reply was lost: "
                        "relaying them now", len(found), side.queue)
        return found

    def _prefetched(self) -> list[Delivery] | None:
        """The batch the last turn started fetching (None: none); a failed fetch's acks
        are kept for the next one."""
        try:
            return self._prefetch.collect()
        except Exception:
            self._acks = self._prefetch.unacknowledged() + self._acks
            raise

    # ------------------------------------------------------------------ results

    def carry(self, limit: int = 0) -> int:
        """Read every tracked id's state (batched; ``limit``: the oldest ``limit`` ids') and
        write the finished ones; returns how many tasks were found ended."""
        entries = self.inflight.entries
        uuids = list(islice(entries, limit) if limit else entries)
        if not uuids:
            return 0
        outcomes: dict[str, Outcome] = {}
        for start in range(0, len(uuids), _CHUNK):
            outcomes.update(self.side.read(uuids[start:start + _CHUNK]))
        done, forget = self._resolve(outcomes)
        now = time.time()
        for uuid, entry in ([] if limit else entries.items()):
            if uuid not in done and uuid not in forget and now - entry.since > self.options.max_age:
                log.warning("task %s (%s): no result after %.0fs; forgotten", uuid, entry.name,
                            now - entry.since)
                forget.add(uuid)
                self.stats["expired"] += 1
        if done:
            self.side.write(list(done.values()))
            self.stats["results"] += len(done)
        self.inflight.remove([*done, *forget])
        return len(outcomes)

    def _resolve(self, outcomes: dict[str, Outcome]
                 ) -> tuple[dict[str, tuple[Tracked, Outcome]], set[str]]:
        """Outcomes plus what they imply for dependents (chain members fail with their head,
        a chord body with a failed header task; errbacks of a success never run)."""
        entries = self.inflight.entries
        done: dict[str, tuple[Tracked, Outcome]] = {}
        forget: set[str] = set()
        work = [(entries[u], o) for u, o in outcomes.items() if u in entries]
        while work:
            entry, outcome = work.pop()
            if entry.uuid in done:
                continue
            done[entry.uuid] = (entry, outcome)
            if outcome.success:
                forget.update(u for u in entry.on_success if u not in done)
                continue
            for uuid, how in entry.on_failure:
                dependent = entries.get(uuid)
                if dependent is None or uuid in done or uuid in outcomes:
                    continue
                if how == DROP:
                    forget.add(uuid)
                elif how == FAIL:
                    work.append((dependent, outcome))
                elif how == CHORD:
                    work.append((dependent, chord_error(entry.uuid, outcome)))
        return done, forget - set(done)

    # ------------------------------------------------------------------ stopping

    def _second_signal(self) -> None:
        log.warning("second signal: giving back held messages and exiting now")
        self._give_back()
        os._exit(0)

    def _shutdown(self) -> None:
        side = self.side
        try:  # a batch taken ahead is then held: the broker's close gives it back
            self._prefetched()
        except Exception as exc:  # what it took stays held, for the broker's recovery
            log.warning("reading the batch taken ahead failed: %s", exc)
        try:
            self._sent()
        except Exception as exc:  # given back (requeued) by the side
            log.warning("the last batch's writes failed: %s", exc)
        try:
            if self._acks:
                side.consumer.ack(self._acks)
                self._acks = []
        except Exception as exc:  # an outage in one line; anything else with its traceback
            log.error("could not acknowledge %d published messages (they will be relayed "
                      "again): %s", len(self._acks), exc, exc_info=not is_outage(exc))
        self._give_back()
        side.close()
        log.info("relay stopped (%d results still in flight, kept in %s)", len(self.inflight),
                 self.inflight.key)

    def _give_back(self) -> None:
        held = self.side.held()
        for index, delivery in enumerate(held):
            try:
                self.side.consumer.requeue(delivery)
            except Exception as exc:
                if is_outage(exc):  # the rest would wait out the same outage: said once
                    log.error("could not give %d message(s) back to %s; broker recovery "
                              "will: %s", len(held) - index, delivery.queue, exc)
                    return
                log.exception("could not give a message back to %s; broker recovery will",
                              delivery.queue)


def relay_name(source: Endpoint, target: Endpoint) -> str:
    """The default bookkeeping name: ``celery.celery-machinery.machinery_tasks``."""
    return f"{source.protocol}.{source.queue}-{target.protocol}.{target.queue}"


def open_relay(source: Endpoint, target: Endpoint,
               options: RelayOptions | None = None) -> Relay:
    """A relay from ``source`` to ``target`` (one Celery and one machinery endpoint)."""
    options = options or RelayOptions()
    pair = (source.protocol, target.protocol)
    if pair == ("celery", "machinery"):
        return Relay(CeleryToMachinery.open(source, target, options,
                                            options.name or relay_name(source, target)))
    if pair == ("machinery", "celery"):
        return Relay(MachineryToCelery.open(source, target, options,
                                            options.name or relay_name(source, target)))
    raise ConfigError(f"relay: from {source.protocol} to {target.protocol} is not a "
                      "translation (one side celery+..., the other machinery+...)",
                      key="endpoint")
