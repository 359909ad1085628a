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
from bridge.migrate.bookkeeping import run_id
from bridge.migrate.engine import Engine, open_engine
from bridge.migrate.parallel import HelperRun, Helpers
from bridge.migrate.report import MigrationReport, Progress
from bridge.outage import Outage, is_outage
from bridge.schema import TaskSchema

__all__ = ["migrate"]

log = logging.getLogger("bridge.migrate")


def migrate(src: Endpoint, dst: Endpoint, *, copy: bool = False, dry_run: bool = False,
            tasks: Collection[str] = (), schema: TaskSchema | None = None,
            results: bool = False, include_delayed: bool = True,
            include_unacked: bool = False, unacked_older_than: float | None = None,
            batch: int = 1000, park: bool = False,
            progress: Progress | None = None,
            accept: Sequence[str] = ("json", "msgpack"), processes: int = 1
            ) -> MigrationReport:
    """Move (``copy``: copy; ``dry_run``: only count) the pending messages of ``src`` to ``dst``.

    ``tasks``: only these task names (the others stay); ``schema``: Go types for Celery calls
    going to machinery; ``results``: carry the result states of migrated ids;
    ``include_unacked``: first return orphaned unacked messages (Celery: older than the
    visibility timeout, or ``unacked_older_than`` s; machinery: held by dead bridge workers)
    to the source queue; ``park``: untranslatable messages go to the source's dead letters
    instead of staying. ``progress`` is called with the report after each batch.
    ``accept``: the serializers taken from Celery messages (a Celery app's accept_content).
    ``processes``: a move out of Redis (either layout, or gocraft/work) runs that many
    processes side by side, each claiming its own batches of what waited (the order is then
    kept within a batch, not across batches); RabbitMQ and SQS sources, copies and dry runs
    run in one.

    A move or dry run that meets an outage of a broker or backend waits (capped, jittered
    back-off; "unreachable" and "reconnected" logged once) and runs again, resuming the
    batches it had taken; the report is then the last run's. A copy is not re-run (it would
    copy again): the outage is raised.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if processes < 1:
        raise ValueError("processes must be >= 1")
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
                                   park=park, progress=progress, accept=accept,
                                   processes=processes)
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
                  progress: Progress | None, accept: Sequence[str],
                  processes: int) -> MigrationReport:
    mode = "dry-run" if dry_run else ("copy" if copy else "move")
    run = run_id(format_endpoint(src), format_endpoint(dst))
    report = MigrationReport(str(src), str(dst), mode)
    if (src.protocol, src.broker_url, src.queue, src.options) == (
            dst.protocol, dst.broker_url, dst.queue, dst.options):
        raise ValueError(f"source and destination are the same queue: {src}")
    if results and "gocraft" in (src.protocol, dst.protocol):
        raise ConfigError("--results: gocraft/work keeps no results; leave it out when "
                          "one side is gocraft", key="results")
    engine = open_engine(src, dst, run, report, dry_run=dry_run, results=results,
                         schema=schema, tasks=tasks, accept=accept, park=park,
                         progress=progress)
    try:
        report.pending_before = engine.src.pending_counts(include_delayed)
        if dry_run or copy:
            if include_unacked:
                report.notes.append("unacked messages are only returned by a move")
            for held in engine.src.scan(batch, include_delayed):
                engine.batch("", held, take=False)
        elif processes > 1 and engine.src.store is not None:
            helpers = Helpers(processes - 1, HelperRun(
                src, dst, run, results=results, schema=schema, tasks=tuple(tasks),
                accept=tuple(accept), park=park, batch=batch))
            _move(engine, report, include_delayed, include_unacked, unacked_older_than, batch,
                  helpers)
        else:
            if processes > 1:
                report.notes.append("--processes: a RabbitMQ or SQS source, a copy and a dry "
                                    "run are read by one process")
            _move(engine, report, include_delayed, include_unacked, unacked_older_than, batch)
    finally:
        report.elapsed = time.monotonic() - report.started
        engine.close()
    if src.is_amqp and not dry_run:
        report.notes.append("delayed requeues waiting in RabbitMQ delay queues "
                            f"({src.queue}.bridge.delay.*) are not moved")
    return report


def _move(engine: Engine, report: MigrationReport, include_delayed: bool,
          include_unacked: bool, unacked_older_than: float | None, batch: int,
          helpers: Helpers | None = None) -> None:
    """Move: return orphans, finish a killed run's batches, then claim (with ``helpers``,
    batch by batch beside them from one shared allowance)."""
    source = engine.src
    store = source.store
    if store is not None:
        store.lock()
    try:
        if include_unacked:
            report.unacked_restored = source.restore_unacked(unacked_older_than)
        for batch_id, held in source.resume():
            report.resumed_batches += 1
            engine.batch(batch_id, held, resumed=True)
        if helpers is None:
            for batch_id, held in source.claim(batch, include_delayed):
                engine.batch(batch_id, held)
        else:
            helpers.move_beside(engine, include_delayed)
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
