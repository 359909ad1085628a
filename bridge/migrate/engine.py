"""What moves one batch of ``mbridge migrate``, and the opening of a run's two sides."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bridge.endpoints import Endpoint
from bridge.heap import collector_paused
from bridge.migrate.bookkeeping import Held
from bridge.migrate.report import MigrationReport, Progress
from bridge.migrate.results import ResultCarrier
from bridge.migrate.sinks import Sink, open_sink
from bridge.migrate.sources import Source, open_source
from bridge.migrate.translate import Translated, Translator
from bridge.schema import TaskSchema

__all__ = ["Engine", "open_engine"]


class Engine:
    """Moves batches: translate, carry results, publish, let the source forget."""

    def __init__(self, src: Source, sink: Sink | None, translator: Translator,
                 report: MigrationReport, *, park: bool, results: ResultCarrier | None,
                 progress: Progress | None) -> None:
        self.src, self.sink, self.translator = src, sink, translator
        self.report, self.park, self.results, self.progress = report, park, results, progress

    def batch(self, batch: str, held: Sequence[Held], *, resumed: bool = False,
              take: bool = True) -> None:
        """Translate, publish, then let the source forget the batch (``take``)."""
        with collector_paused():
            self._batch(batch, held, resumed, take)

    def _batch(self, batch: str, held: Sequence[Held], resumed: bool, take: bool) -> None:
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

    def close(self) -> None:
        for closeable in (self.results, self.sink, self.src):
            if closeable is not None:
                closeable.close()


def open_engine(src: Endpoint, dst: Endpoint, run: str, report: MigrationReport, *,
                dry_run: bool, results: bool, schema: TaskSchema | None,
                tasks: Collection[str], accept: Sequence[str], park: bool,
                progress: Progress | None) -> Engine:
    """Open both sides of run ``run`` and what lies between them (``Engine.close`` closes
    them); a dry run opens no destination."""
    translator = Translator(src.protocol, dst.protocol, dst.queue, schema=schema, tasks=tasks,
                            accept=accept)
    engine = Engine(open_source(src, run), None, translator, report,
                    park=park and not dry_run, results=None, progress=progress)
    try:
        if not dry_run:
            engine.sink = open_sink(dst, run)
            translator.keep_signatures = engine.sink.needs_signatures
            same = (src.protocol, src.backend_url) == (dst.protocol, dst.backend_url)
            if results and same:
                report.notes.append("--results: both sides share one result backend")
            if results and not same:
                engine.results = ResultCarrier(src, dst, schema)
    except BaseException:
        engine.close()
        raise
    return engine

