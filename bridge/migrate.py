"""``mbridge migrate``: move (or copy) pending messages between Celery and machinery queues.

::

    report = migrate(parse_endpoint("celery+redis://h:6379/0?queue=celery"),
                     parse_endpoint("machinery+redis://h:6379/0?queue=machinery_tasks"),
                     schema=TaskSchema.load("tasks.yaml"), results=True)
    print(report.render())

Streams in batches (memory stays flat whatever the queue length). Moving a batch:

1. one Lua call moves it from the source (delayed set first, then the lists) into hold keys
   of this run (:mod:`bridge.migrate_store`);
2. each message is translated (:mod:`bridge.migrate_translate`); those the ``tasks`` filter
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

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.endpoints import Endpoint, format_endpoint
from bridge.migrate_io import Sink, Source, open_sink, open_source
from bridge.migrate_results import (
    celery_meta,
    machinery_state,
    pending_state,
    read_celery_metas,
)
from bridge.migrate_store import Held, run_id
from bridge.migrate_translate import Translated, Translator
from bridge.protocol.machinery import PENDING, TaskState
from bridge.schema import TaskSchema

__all__ = ["MAX_REASONS", "MigrationReport", "TaskCounts", "migrate"]

MAX_REASONS = 200
"""Distinct (task, reason) pairs kept in a report; the rest are counted under '(other)'."""


@dataclass(slots=True)
class TaskCounts:
    """Per task name."""

    moved: int = 0
    """Published to the destination (would be, in a dry run)."""
    untranslatable: int = 0
    filtered: int = 0
    parked: int = 0


@dataclass(slots=True)
class MigrationReport:
    """What a migration did (or, dry, would do)."""

    src: str
    dst: str
    mode: str
    """``move``, ``copy`` or ``dry-run``."""
    seen: int = 0
    moved: int = 0
    delayed: int = 0
    """Of ``moved``: messages taken from a delayed set."""
    filtered: int = 0
    untranslatable: int = 0
    parked: int = 0
    resumed_batches: int = 0
    already_published: int = 0
    """Messages of a killed run's batches found published: forgotten, not published again."""
    unacked_restored: int = 0
    aside_restored: int = 0
    results_carried: int = 0
    results_pending: int = 0
    pending_before: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Messages looked at per second."""
        elapsed = self.elapsed or (time.monotonic() - self.started)
        return self.seen / elapsed if elapsed > 0 else 0.0

    @property
    def left_behind(self) -> int:
        """Messages that stay in the source because they could not be migrated."""
        return self.untranslatable - self.parked

    def task(self, name: str) -> TaskCounts:
        counts = self.tasks.get(name)
        if counts is None:
            counts = self.tasks[name] = TaskCounts()
        return counts

    def reason(self, task: str, reason: str) -> None:
        key = (task, reason)
        if key not in self.reasons and len(self.reasons) >= MAX_REASONS:
            key = (task, "(other reasons)")
        self.reasons[key] += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "src": self.src, "dst": self.dst, "mode": self.mode, "seen": self.seen,
            "moved": self.moved, "delayed": self.delayed, "filtered": self.filtered,
            "untranslatable": self.untranslatable, "parked": self.parked,
            "resumed_batches": self.resumed_batches,
            "already_published": self.already_published,
            "unacked_restored": self.unacked_restored, "aside_restored": self.aside_restored,
            "results_carried": self.results_carried, "results_pending": self.results_pending,
            "pending_before": self.pending_before,
            "tasks": {name: {"moved": c.moved, "untranslatable": c.untranslatable,
                             "filtered": c.filtered, "parked": c.parked}
                      for name, c in sorted(self.tasks.items())},
            "reasons": [{"task": t, "reason": r, "count": n}
                        for (t, r), n in self.reasons.most_common()],
            "notes": self.notes, "elapsed": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
        }

    def render(self) -> str:
        """A human-readable summary: totals, a per-task table, reasons."""
        verb = "would move" if self.mode == "dry-run" else (
            "copied" if self.mode == "copy" else "moved")
        lines = [f"{self.mode}: {self.src} -> {self.dst}"]
        if self.pending_before:
            lines.append("  waiting before: " + ", ".join(
                f"{k} {v:,}" for k, v in self.pending_before.items()))
        lines.append(f"  looked at {self.seen:,}, {verb} {self.moved:,} "
                     f"({self.delayed:,} delayed), filtered out {self.filtered:,}, "
                     f"untranslatable {self.untranslatable:,}, parked {self.parked:,} "
                     f"in {self.elapsed:.1f}s ({self.rate:,.0f} msg/s)")
        extra = [f"{label} {value:,}" for label, value in (
            ("resumed batches", self.resumed_batches),
            ("already published", self.already_published),
            ("unacked restored", self.unacked_restored),
            ("set-aside returned", self.aside_restored),
            ("results carried", self.results_carried),
            ("PENDING states written", self.results_pending)) if value]
        if extra:
            lines.append("  " + ", ".join(extra))
        if self.tasks:
            width = max(4, *(len(n) for n in self.tasks))
            lines.append(f"  {'task':<{width}}  {verb:>10}  {'untransl.':>9}  "
                         f"{'filtered':>8}  {'parked':>6}")
            for name, c in sorted(self.tasks.items()):
                lines.append(f"  {name:<{width}}  {c.moved:>10,}  {c.untranslatable:>9,}  "
                             f"{c.filtered:>8,}  {c.parked:>6,}")
        if self.reasons:
            lines.append("  cannot migrate:")
            for (task, reason), count in self.reasons.most_common(20):
                lines.append(f"    {count:>8,} x {task}: {reason}")
            if len(self.reasons) > 20:
                lines.append(f"    ... {len(self.reasons) - 20} more reasons (see --json)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


Progress = Callable[[MigrationReport], None]


class _Results:
    """Carries result states of migrated ids from the source's backend to the destination's."""

    def __init__(self, src: Endpoint, dst: Endpoint, schema: TaskSchema | None) -> None:
        self.src_protocol, self.dst_protocol = src.protocol, dst.protocol
        self.src = src.open_backend()
        self.dst = dst.open_backend()
        self.schema = schema

    def carry(self, items: Sequence[Translated], report: MigrationReport) -> None:
        items = [i for i in items if i.task_id]
        if not items:
            return
        ids = [i.task_id for i in items]
        if self.src_protocol == "machinery":
            found: list[Any] = self.src.get_states(ids)
        else:
            found = read_celery_metas(self.src, ids)
        if self.dst_protocol == "celery":
            metas = []
            for state in found:
                meta = None
                if isinstance(state, TaskState):
                    meta = celery_meta(state)
                elif isinstance(state, dict) and state.get("status") != PENDING:
                    meta = _celery_copy(state)
                if meta is not None:
                    metas.append(meta)
            report.results_carried += sum(self.dst.store_many(metas))
            return
        states: list[TaskState] = []
        for item, state in zip(items, found, strict=True):
            if isinstance(state, dict):
                state = machinery_state(item.task_id, item.task, state, self.schema)
            pending = pending_state(item.task_id, item.task)
            if state is not None and state.created_at.year > 1:
                pending.created_at = state.created_at
            states.append(pending)
            report.results_pending += 1
            if state is not None and state.state != PENDING:
                states.append(state)
                report.results_carried += 1
        self.dst.set_states(states)

    def close(self) -> None:
        for backend in (self.src, self.dst):
            backend.close()


def _celery_copy(meta: dict[str, Any]) -> Any:
    from bridge.backends.celery_redis import TaskMeta

    return TaskMeta(str(meta.get("task_id")), str(meta.get("status")), meta.get("result"),
                    traceback=meta.get("traceback"), children=list(meta.get("children") or []),
                    group_id=meta.get("group_id"), parent_id=meta.get("parent_id"),
                    date_done=meta.get("date_done"))


class _Engine:
    def __init__(self, src: Source, sink: Sink | None, translator: Translator,
                 report: MigrationReport, *, park: bool, results: _Results | None,
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
                report.delayed += item.origin < 0
            elif not t.wanted:
                counts.filtered += 1
                report.filtered += 1
                aside.append(item)
            else:
                counts.untranslatable += 1
                report.untranslatable += 1
                report.reason(t.task, t.reason)
                if self.park:
                    parked.append((item, t.reason))
                    counts.parked += 1
                    report.parked += 1
                else:
                    aside.append(item)
        report.moved += len(out)
        if self.sink is not None and out:
            done = self.sink.done
            if resumed and batch and done is not None and done.contains(batch):
                report.already_published += len(out)
            else:
                self.sink.publish(out, batch if take else "")
            if self.results is not None:
                self.results.carry(out, report)
        if take:
            self.src.finish(batch, published, aside, parked)
            if self.sink is not None and self.sink.done is not None and batch:
                self.sink.done.forget(batch)
            if self.src.store is not None:
                self.src.store.refresh()
        if self.progress is not None:
            self.progress(report)


def migrate(src: Endpoint, dst: Endpoint, *, copy: bool = False, dry_run: bool = False,
            tasks: Collection[str] = (), schema: TaskSchema | None = None,
            results: bool = False, include_delayed: bool = True,
            include_unacked: bool = False, unacked_older_than: float | None = None,
            batch: int = 1000, park: bool = False,
            progress: Progress | None = None) -> MigrationReport:
    """Move (``copy``: copy; ``dry_run``: only count) the pending messages of ``src`` to ``dst``.

    ``tasks``: only these task names (the others stay); ``schema``: Go types for Celery calls
    going to machinery; ``results``: carry the result states of migrated ids;
    ``include_unacked``: first return orphaned unacked messages (Celery: older than the
    visibility timeout, or ``unacked_older_than`` s; machinery: held by dead bridge workers)
    to the source queue; ``park``: untranslatable messages go to the source's dead letters
    instead of staying. ``progress`` is called with the report after each batch.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    mode = "dry-run" if dry_run else ("copy" if copy else "move")
    run = run_id(format_endpoint(src), format_endpoint(dst))
    report = MigrationReport(str(src), str(dst), mode)
    translator = Translator(src.protocol, dst.protocol, dst.queue, schema=schema, tasks=tasks)
    source = open_source(src, run)
    sink: Sink | None = None
    carrier: _Results | None = None
    try:
        if (src.protocol, src.broker_url, src.queue, src.options) == (
                dst.protocol, dst.broker_url, dst.queue, dst.options):
            raise ValueError(f"source and destination are the same queue: {src}")
        report.pending_before = source.pending_counts(include_delayed)
        if not dry_run:
            sink = open_sink(dst, run)
            same = (src.protocol, src.backend_url) == (dst.protocol, dst.backend_url)
            if results and same:
                report.notes.append("--results: both sides share one result backend")
            carrier = _Results(src, dst, schema) if results and not same else None
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
