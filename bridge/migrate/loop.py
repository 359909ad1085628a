"""The run loop of ``mbridge migrate``: move (or copy) pending messages between Celery and
machinery queues.

::

    report = migrate(parse_endpoint("celery+redis://h:6379/0?queue=celery"),
                     parse_endpoint("machinery+redis://h:6379/0?queue=machinery_tasks"),
                     schema=TaskSchema.load("tasks.yaml"), results=True)
    print(report.render())

Streams in batches (memory stays flat whatever the queue length). Moving a batch:

1. one Lua call moves it from the source (delayed set first, then the lists) into hold keys
   of this run (:mod:`bridge.migrate.bookkeeping`);
2. each message is translated (:mod:`bridge.migrate.translate`); those the ``tasks`` filter
   leaves out and the untranslatable ones (with their reason) are set aside, or parked in the
   source's dead letters with ``park``;
3. the translatable ones are published to the destination, and on Redis the batch id is
   recorded as done in the same MULTI;
4. one MULTI on the source forgets the hold keys; then the done record is dropped.

A run killed anywhere finds its unfinished batches on the next run (same endpoints):
recorded as done → only forgotten, else published. So with a Redis source and a Redis
destination every message arrives exactly once; with RabbitMQ on either side at least once
(at most one batch twice). Set-aside messages go back to the consuming end of their list, in
order, when the run ends (until then consumers of the source do not see them), so a filter
or an untranslatable message never makes the run loop. What was in the queue when the run
started is moved; messages published meanwhile may stay (run again).

``copy`` reads without taking (the source is untouched; a killed copy is simply re-run, and
copies again). ``dry_run`` reads and translates without writing anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence

from bridge.config import ConfigError
from bridge.endpoints import Endpoint, format_endpoint
from bridge.migrate.bookkeeping import Held, run_id
from bridge.migrate.report import MigrationReport, Progress
from bridge.migrate.results import ResultCarrier
from bridge.migrate.sinks import Sink, open_sink
from bridge.migrate.sources import Source, open_source
from bridge.migrate.translate import Translated, Translator
from bridge.outage import Outage, is_outage
from bridge.schema import TaskSchema

__all__ = ["migrate"]

log = logging.getLogger("bridge.migrate")


class _Engine:
    def __init__(self, src: Source, sink: Sink | None, translator: Translator,
                 report: MigrationReport, *, park: bool, results: ResultCarrier | None,
                 progress: Progress | None) -> None:
        self.src, self.sink, self.translator = src, sink, translator
        self.report, self.park, self.results, self.progress = report, park, results, progress

    def batch(self, batch: str, held: Sequence[Held], *, resumed: bool = False,
              take: bool = True) -> None:
        """Translate, publish, then let the source forget the batch (``take``)."""
        report = self.report
        out: list[Translated] = []
        published: list[Held] = []
        aside: list[Held] = []
        parked: list[tuple[Held, str]] = []
        for item in held:
            t = self.src.translate(item, self.translator)
            counts = report.task(t.task)
            report.seen += 1
            if t.ok:
                out.append(t)
                published.append(item)
                counts.moved += 1
                report.delayed += item.origin < 0 or t.delayed
            elif not t.wanted:
                counts.filtered += 1
                report.filtered += 1
                aside.append(item)
            else:
                self._untranslatable(item, t.task, t.reason, aside, parked)
        if self.sink is not None and out:
            done = self.sink.done
            if resumed and batch and done is not None and done.contains(batch):
                report.already_published += len(out)  # and their results: a worker may
                # have moved them on since, so they are not written again
            else:
                if self.results is not None:  # before publishing, as SendTask writes
                    refused = self.results.carry(out, report)  # PENDING: a fast worker's
                    if refused:  # state wins; a key that is not a task state: not moved
                        out, published = self._refused(out, published, refused, aside,
                                                       parked)
                if out:
                    self.sink.publish(out, batch if take else "")
        report.moved += len(out)
        if take:
            self.src.finish(batch, published, aside, parked)
            if self.sink is not None and self.sink.done is not None and batch:
                self.sink.done.forget(batch)
            if self.src.store is not None:
                self.src.store.refresh()
        if self.progress is not None:
            self.progress(report)


    def _untranslatable(self, item: Held, task: str, reason: str, aside: list[Held],
                        parked: list[tuple[Held, str]]) -> None:
        """Count a message that cannot move, and park it or set it aside."""
        counts = self.report.task(task)
        counts.untranslatable += 1
        self.report.untranslatable += 1
        self.report.reason(task, reason)
        if self.park:
            parked.append((item, reason))
            counts.parked += 1
            self.report.parked += 1
        else:
            aside.append(item)

    def _refused(self, out: list[Translated], published: list[Held], refused: dict[str, str],
                 aside: list[Held], parked: list[tuple[Held, str]]
                 ) -> tuple[list[Translated], list[Held]]:
        """Take the messages whose result the destination refused out of the batch."""
        kept: list[Translated] = []
        kept_held: list[Held] = []
        for t, item in zip(out, published, strict=True):
            if t.task_id not in refused:
                kept.append(t)
                kept_held.append(item)
                continue
            self.report.task(t.task).moved -= 1
            self.report.delayed -= item.origin < 0 or t.delayed
            self._untranslatable(item, t.task, f"its result cannot be written: "
                                 f"{refused[t.task_id]}", aside, parked)
        return kept, kept_held


def migrate(src: Endpoint, dst: Endpoint, *, copy: bool = False, dry_run: bool = False,
            tasks: Collection[str] = (), schema: TaskSchema | None = None,
            results: bool = False, include_delayed: bool = True,
            include_unacked: bool = False, unacked_older_than: float | None = None,
            batch: int = 1000, park: bool = False,
            progress: Progress | None = None,
            accept: Sequence[str] = ("json", "msgpack")) -> MigrationReport:
    """Move (``copy``: copy; ``dry_run``: only count) the pending messages of ``src`` to ``dst``.

    ``tasks``: only these task names (the others stay); ``schema``: Go types for Celery calls
    going to machinery; ``results``: carry the result states of migrated ids;
    ``include_unacked``: first return orphaned unacked messages (Celery: older than the
    visibility timeout, or ``unacked_older_than`` s; machinery: held by dead bridge workers)
    to the source queue; ``park``: untranslatable messages go to the source's dead letters
    instead of staying. ``progress`` is called with the report after each batch.
    ``accept``: the serializers taken from Celery messages (a Celery app's accept_content).

    A move or dry run that meets an outage of a broker or backend waits (capped, jittered
    back-off; "unreachable" and "reconnected" logged once) and runs again, resuming the
    batches it had taken; the report is then the last run's. A copy is not re-run (it would
    copy again): the outage is raised.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    outage = Outage("migration: a broker or result backend", log)
    runs = 0
    while True:
        runs += 1
        try:
            report = _migrate_once(src, dst, copy=copy, dry_run=dry_run, tasks=tasks,
                                   schema=schema, results=results,
                                   include_delayed=include_delayed,
                                   include_unacked=include_unacked,
                                   unacked_older_than=unacked_older_than, batch=batch,
                                   park=park, progress=progress, accept=accept)
        except Exception as exc:
            if copy or not is_outage(exc):
                raise
            time.sleep(outage.failed(exc))
            continue
        outage.succeeded()
        if runs > 1:
            report.notes.append(f"the run was resumed {runs - 1} time(s) after an outage; "
                                "these counts are the last run's")
        return report


def _migrate_once(src: Endpoint, dst: Endpoint, *, copy: bool, dry_run: bool,
                  tasks: Collection[str], schema: TaskSchema | None, results: bool,
                  include_delayed: bool, include_unacked: bool,
                  unacked_older_than: float | None, batch: int, park: bool,
                  progress: Progress | None, accept: Sequence[str]) -> MigrationReport:
    mode = "dry-run" if dry_run else ("copy" if copy else "move")
    run = run_id(format_endpoint(src), format_endpoint(dst))
    report = MigrationReport(str(src), str(dst), mode)
    translator = Translator(src.protocol, dst.protocol, dst.queue, schema=schema, tasks=tasks,
                            accept=accept)
    source = open_source(src, run)
    sink: Sink | None = None
    carrier: ResultCarrier | None = None
    try:
        if (src.protocol, src.broker_url, src.queue, src.options) == (
                dst.protocol, dst.broker_url, dst.queue, dst.options):
            raise ValueError(f"source and destination are the same queue: {src}")
        if results and "gocraft" in (src.protocol, dst.protocol):
            raise ConfigError("--results: gocraft/work keeps no results; leave it out when "
                              "one side is gocraft", key="results")
        report.pending_before = source.pending_counts(include_delayed)
        if not dry_run:
            sink = open_sink(dst, run)
            same = (src.protocol, src.backend_url) == (dst.protocol, dst.backend_url)
            if results and same:
                report.notes.append("--results: both sides share one result backend")
            carrier = ResultCarrier(src, dst, schema) if results and not same else None
        engine = _Engine(source, sink, translator, report, park=park and not dry_run,
                         results=carrier, progress=progress)
        if dry_run or copy:
            if include_unacked:
                report.notes.append("unacked messages are only returned by a move")
            for held in source.scan(batch, include_delayed):
                engine.batch("", held, take=False)
        else:
            _move(source, engine, report, include_delayed, include_unacked, unacked_older_than,
                  batch)
    finally:
        report.elapsed = time.monotonic() - report.started
        for closeable in (carrier, sink, source):
            if closeable is not None:
                closeable.close()
    if src.is_amqp and not dry_run:
        report.notes.append("delayed requeues waiting in RabbitMQ delay queues "
                            f"({src.queue}.bridge.delay.*) are not moved")
    return report


def _move(source: Source, engine: _Engine, report: MigrationReport, include_delayed: bool,
          include_unacked: bool, unacked_older_than: float | None, batch: int) -> None:
    store = source.store
    if store is not None:
        store.lock()
    try:
        if include_unacked:
            report.unacked_restored = source.restore_unacked(unacked_older_than)
        for batch_id, held in source.resume():
            report.resumed_batches += 1
            engine.batch(batch_id, held, resumed=True)
        for batch_id, held in source.claim(batch, include_delayed):
            engine.batch(batch_id, held)
        report.aside_restored = source.restore_aside()
        done = engine.sink.done if engine.sink is not None else None
        if done is not None and store is not None and not store.in_flight():
            done.clear()  # ids a killed run finished but could not forget
    except BaseException:
        try:  # what stays in the source must not stay hidden; unfinished batches wait
            report.aside_restored = source.restore_aside()
        except Exception as exc:  # the source is gone too: the next run gives them back
            report.notes.append(f"set-aside messages not returned yet ({exc}): run again")
        raise
    finally:
        if store is not None:
            store.unlock()
