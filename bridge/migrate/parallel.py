"""``mbridge migrate --processes N``: helper processes moving a Redis source side by side.

The run's own process holds the run lock, returns orphans, finishes a killed run's batches
and takes the delayed members, as with one process. Then it and N-1 helpers each claim
batches of what waited in the source's lists, a batch's worth at a time from one count in
shared memory (:class:`~bridge.migrate.sources.Allowance`): a helper that starts late takes
less, and no process idles while another still has messages to take. A claim is the same
atomic Lua move into the run's hold keys as with one process, so a helper killed anywhere
leaves its batch for the next run to finish (Redis to Redis: every message once). A helper
dies with the run's process (it watches a pipe that closes then), so no helper outlives the
run and works beside the next one. Each helper sends its report after each batch; the run
adds them up. Batches leave side by side: order is kept within a batch, not across them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from bridge.endpoints import Endpoint
from bridge.errors import BridgeError
from bridge.heap import freeze_loaded
from bridge.migrate.engine import Engine, open_engine
from bridge.migrate.report import MigrationReport
from bridge.migrate.sources import Allowance
from bridge.outage import is_outage, one_line
from bridge.process_slots import how_it_ended
from bridge.schema import TaskSchema

__all__ = ["HelperFailed", "HelperRun", "HelperUnreachable", "Helpers"]

_CONTEXT = multiprocessing.get_context("forkserver")


class HelperFailed(BridgeError):
    """A helper process of the run failed or died; its batch waits for the next run."""


class HelperUnreachable(ConnectionError):
    """A helper met an outage: the run waits, then runs again and resumes every batch."""


@dataclass(frozen=True, slots=True)
class HelperRun:
    """What a helper needs to open its own side of the run (sent to it pickled)."""

    src: Endpoint
    dst: Endpoint
    run: str
    results: bool
    schema: TaskSchema | None
    tasks: tuple[str, ...]
    accept: tuple[str, ...]
    park: bool
    batch: int


def _die_with_run(alive: Connection) -> None:
    """Nothing is ever sent on ``alive``: it reads EOF when the run's process is gone."""
    with contextlib.suppress(EOFError, OSError):
        alive.recv()
    os._exit(1)


def _helper(spec: HelperRun, allowance: Allowance, reports: Connection, alive: Connection
            ) -> None:
    """A helper process: claim and move what ``allowance`` lets it take of the lists."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the run's process stops us
    threading.Thread(target=_die_with_run, args=(alive,), daemon=True).start()
    report = MigrationReport(str(spec.src), str(spec.dst), "move")
    try:
        engine = open_engine(spec.src, spec.dst, spec.run, report, dry_run=False,
                             results=spec.results, schema=spec.schema, tasks=spec.tasks,
                             accept=spec.accept, park=spec.park,
                             progress=lambda done: reports.send(("progress", done)))
        freeze_loaded()
        try:
            for batch_id, held in engine.src.claim(spec.batch, False, waiting=allowance):
                engine.batch(batch_id, held)
        finally:
            engine.close()
    except Exception as exc:
        reports.send(("failed", is_outage(exc), one_line(exc)))
        return
    reports.send(("done", report))


class _Helper:
    def __init__(self, spec: HelperRun, allowance: Allowance) -> None:
        self.reports, theirs = _CONTEXT.Pipe(duplex=False)
        self._alive_theirs, self._alive = _CONTEXT.Pipe(duplex=False)
        self.process: BaseProcess = _CONTEXT.Process(
            target=_helper, args=(spec, allowance, theirs, self._alive_theirs), daemon=True,
            name="bridge-migrate-helper")
        self.process.start()
        theirs.close()
        self._alive_theirs.close()
        self.latest: MigrationReport | None = None
        self.final: MigrationReport | None = None

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()  # mid-batch is safe: the batch waits in its hold keys
        self.process.join(10)
        self.reports.close()
        self._alive.close()


class Helpers:
    """``count`` helper processes moving a run's source beside its own process."""

    def __init__(self, count: int, spec: HelperRun) -> None:
        self.count = count
        self.spec = spec
        self._running: list[_Helper] = []
        self._all: list[_Helper] = []

    def move_beside(self, engine: Engine, delayed: bool) -> None:
        """Move what waits (the delayed members first) beside the helpers; wait for them
        and add their reports to ``engine.report``."""
        source, batch = engine.src, self.spec.batch
        waiting = source.pending_counts(False)["queue"]
        helpers = self.count if waiting >= 2 * batch else 0  # else not worth a process
        allowance = Allowance(waiting, _CONTEXT if helpers else None)
        if helpers:
            engine.report.notes.append(f"moved by {self.count + 1} processes side by side "
                                       "(order kept within each batch, not across them)")
        outer = engine.progress
        if outer is not None:
            engine.progress = lambda report: outer(self._merged(report))
        try:
            for _ in range(helpers):
                helper = _Helper(self.spec, allowance)
                self._running.append(helper)
                self._all.append(helper)
            for batch_id, held in source.claim(batch, delayed, waiting=allowance):
                engine.batch(batch_id, held)
                self._read(0.0)
            refresh_at = 0.0
            while self._running:
                self._read(0.5)
                if source.store is not None and time.monotonic() >= refresh_at:
                    source.store.refresh()  # the helpers refresh it too, at each batch
                    refresh_at = time.monotonic() + 5.0
                if outer is not None:
                    outer(self._merged(engine.report))
        finally:
            engine.progress = outer
            for helper in self._all:
                helper.stop()
        for helper in self._all:
            if helper.final is not None:
                engine.report.absorb(helper.final)

    def _merged(self, report: MigrationReport) -> MigrationReport:
        parts = [h.final or h.latest for h in self._all]
        return report.merged([part for part in parts if part is not None])

    def _read(self, timeout: float) -> None:
        """Take all the helpers sent (a helper never waits on a full pipe); raise when one
        failed or died."""
        ready = wait([h.reports for h in self._running], timeout) if self._running else []
        for helper in [h for h in self._running if h.reports in ready]:
            while helper in self._running and helper.reports.poll():
                try:
                    kind, *rest = helper.reports.recv()
                except (EOFError, OSError):
                    helper.process.join(5)
                    ended = how_it_ended(helper.process.exitcode)
                    raise HelperFailed(f"a helper process of the migration died ({ended}); "
                                       "run the same command again: it finishes that "
                                       "helper's batch") from None
                self._took(helper, kind, rest)

    def _took(self, helper: _Helper, kind: str, rest: Sequence[Any]) -> None:
        if kind == "progress":
            helper.latest = rest[0]
        elif kind == "done":
            helper.final = rest[0]
            self._running.remove(helper)
        else:
            outage, text = rest
            if outage:
                raise HelperUnreachable(text)
            raise HelperFailed(f"a helper process of the migration failed: {text}; run the "
                               "same command again: it finishes that helper's batch")
