"""``mbridge migrate SRC DST``: the click command over :func:`bridge.migrate.migrate`, with a
progress line on stderr."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from bridge.cli.exits import EXIT_INTERRUPTED, EXIT_LEFT_BEHIND
from bridge.cli.options import loglevel_option, setup_logging
from bridge.cli.sides import Sides, celery_app_option, check_sides, open_sides
from bridge.errors import BridgeError
from bridge.heap import freeze_loaded
from bridge.migrate import MigrationReport, held_messages
from bridge.migrate import migrate as run_migration
from bridge.outage import one_line
from bridge.schema import TaskSchema

__all__ = ["EXIT_LEFT_BEHIND", "StderrProgress", "migrate"]


class StderrProgress:
    """One line on stderr, rewritten at most every ``interval`` s: counts and rate."""

    def __init__(self, total: int = 0, interval: float = 0.5, *, show: bool = True) -> None:
        self.total = total
        self.interval = interval if show else float("inf")
        self.report: MigrationReport | None = None
        """The latest report (what an interrupted run prints)."""
        self._last = 0.0
        self._shown = False

    def __call__(self, report: MigrationReport) -> None:
        self.report = report
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self._shown = True
        total = self.total or report.pending_before.get("queue", 0) + (
            report.pending_before.get("delayed", 0))
        of = f"/~{total:,}" if total else ""
        sys.stderr.write(f"\r{report.mode}: {report.seen:,}{of} looked at, {report.moved:,} "
                         f"{'to move' if report.mode == 'dry-run' else 'done'}, "
                         f"{report.filtered + report.untranslatable:,} stay, "
                         f"{report.rate:,.0f} msg/s   ")
        sys.stderr.flush()

    def end(self) -> None:
        if self._shown:
            self._shown = False
            sys.stderr.write("\n")
            sys.stderr.flush()


@click.command("migrate")
@click.argument("src")
@click.argument("dst")
@click.option("--copy", is_flag=True, help="Copy: leave the source untouched.")
@click.option("--dry-run", is_flag=True,
              help="Only say what would move and what cannot (nothing is written; exit "
                   "status 3 when something could not move).")
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Only tasks of this name (repeatable); the others stay.")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Go types of Celery task args (YAML/TOML) for machinery destinations.")
@click.option("--results", is_flag=True,
              help="Carry the result states of migrated ids to the destination's backend.")
@click.option("--delayed/--no-delayed", default=True, show_default=True,
              help="Include delayed (ETA) messages.")
@click.option("--unacked", is_flag=True,
              help="First return orphaned unacked messages to the source queue (Celery: "
                   "older than the visibility timeout; machinery: held by dead workers).")
@click.option("--unacked-older-than", type=float, metavar="SECONDS",
              help="With --unacked: the age that makes a Celery unacked message an orphan.")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Messages per batch (at most one batch is in flight).")
@click.option("--processes", "-P", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Move out of Redis with this many processes side by side (one batch in "
                   "flight each; order kept within a batch, not across batches).")
@click.option("--park", is_flag=True,
              help="Park untranslatable messages in the source's dead letters instead of "
                   "leaving them in the queue.")
@celery_app_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@loglevel_option("warning")
def migrate(src: str, dst: str, copy: bool, dry_run: bool, tasks: tuple[str, ...],
            schema: Path | None, results: bool, delayed: bool, unacked: bool,
            unacked_older_than: float | None, batch: int, processes: int, park: bool,
            celery_app: str | None, as_json: bool, quiet: bool, loglevel: str) -> None:
    """Move pending messages from SRC to DST, translating between Celery and machinery.

    SRC and DST are endpoints: celery+redis://HOST:PORT/DB?queue=Q&backend=URL,
    celery+amqp://USER:PASS@HOST:PORT/VHOST?queue=Q&backend=URL,
    machinery+redis://HOST:PORT/DB?queue=Q&backend=URL,
    machinery+amqp://USER:PASS@HOST:PORT/?queue=Q&backend=URL,
    celery+sqs://KEY:SECRET@[HOST:PORT]?queue=Q&backend=URL&region=R,
    machinery+https://sqs.REGION.amazonaws.com/ACCOUNT?queue=Q&backend=URL, or (with
    --celery-app) celery. Each message is published to DST before it leaves SRC; a run that
    was killed or interrupted is finished by running the same command again (SQS: after the
    visibility timeout; at least once). Exit status 3 when
    messages stayed in SRC because they cannot be translated (in a dry run: would stay).
    """
    setup_logging(loglevel)
    if copy and dry_run:
        raise click.UsageError("--copy and --dry-run: choose one")
    try:
        task_schema = TaskSchema.load(schema) if schema is not None else None
        sides = open_sides(src, dst, celery_app, flags=("SRC", "DST"), results=results)
    except BridgeError as exc:  # an endpoint, the schema or the Celery app
        raise click.UsageError(str(exc)) from None
    check_sides(sides, backends=results and not dry_run)
    progress = StderrProgress(show=not quiet)
    freeze_loaded()
    try:
        report = run_migration(sides.source, sides.target, copy=copy, dry_run=dry_run,
                               tasks=tasks, schema=task_schema, results=results,
                               include_delayed=delayed, include_unacked=unacked,
                               unacked_older_than=unacked_older_than, batch=batch, park=park,
                               progress=progress, accept=sides.accept, processes=processes)
    except KeyboardInterrupt:
        progress.end()
        _interrupted(sides, progress.report, holds=not (dry_run or copy), as_json=as_json)
    except (BridgeError, ValueError, NotImplementedError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        progress.end()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
    if report.seen == 0 and not report.pending_before.get("queue", 0):
        click.echo(f"Warning: {sides.source}: nothing is waiting there: the queue is empty or "
                   "does not exist (check ?queue= in SRC; names are case-sensitive)", err=True)
    if report.left_behind:
        sys.exit(EXIT_LEFT_BEHIND)


def _interrupted(sides: Sides, report: MigrationReport | None, *, holds: bool,
                 as_json: bool) -> None:
    """Ctrl-C: the counts so far, what the run still holds and how to finish; exit 130."""
    if report is not None:
        report.notes.append("interrupted (Ctrl-C): counts up to the last finished batch")
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
    if not holds:
        click.echo("interrupted (Ctrl-C): nothing was changed", err=True)
        sys.exit(EXIT_INTERRUPTED)
    try:
        held = held_messages(sides.source, sides.target)
    except KeyboardInterrupt:
        line = "interrupted again: re-run the same command to finish the migration"
    except Exception as exc:
        line = (f"interrupted (Ctrl-C); what it holds cannot be counted now "
                f"({one_line(exc)}): re-run the same command to finish")
    else:
        line = (f"interrupted (Ctrl-C): {held:,} messages held — re-run the same command to "
                "finish" if held else
                "interrupted (Ctrl-C): nothing held — re-run the same command to move the rest")
    click.echo(line, err=True)
    sys.exit(EXIT_INTERRUPTED)
