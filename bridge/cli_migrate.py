"""``mbridge migrate SRC DST``: the click command over :func:`bridge.migrate.migrate`.

Registered in ``bridge/cli.py`` with ``main.add_command(migrate)``; also runnable alone as
``python -m bridge.cli_migrate SRC DST``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from bridge.config import ConfigError
from bridge.endpoints import parse_endpoint
from bridge.errors import BridgeError
from bridge.migrate import MigrationReport
from bridge.migrate import migrate as run_migration
from bridge.schema import TaskSchema

EXIT_LEFT_BEHIND = 3
"""Exit status when untranslatable messages stayed in the source."""


class StderrProgress:
    """One line on stderr, rewritten at most every ``interval`` s: counts and rate."""

    def __init__(self, total: int = 0, interval: float = 0.5) -> None:
        self.total = total
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, report: MigrationReport) -> None:
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
            sys.stderr.write("\n")
            sys.stderr.flush()


@click.command("migrate")
@click.argument("src")
@click.argument("dst")
@click.option("--copy", is_flag=True, help="Copy: leave the source untouched.")
@click.option("--dry-run", is_flag=True,
              help="Only say what would move and what cannot (nothing is written).")
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
@click.option("--park", is_flag=True,
              help="Park untranslatable messages in the source's dead letters instead of "
                   "leaving them in the queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def migrate(src: str, dst: str, copy: bool, dry_run: bool, tasks: tuple[str, ...],
            schema: Path | None, results: bool, delayed: bool, unacked: bool,
            unacked_older_than: float | None, batch: int, park: bool, as_json: bool,
            quiet: bool) -> None:
    """Move pending messages from SRC to DST, translating between Celery and machinery.

    SRC and DST are endpoints: celery+redis://HOST:PORT/DB?queue=Q&backend=URL,
    celery+amqp://USER:PASS@HOST:PORT/VHOST?queue=Q&backend=URL,
    machinery+redis://HOST:PORT/DB?queue=Q&backend=URL or
    machinery+amqp://USER:PASS@HOST:PORT/?queue=Q&backend=URL. Each message is published to DST
    before it leaves SRC; a killed run is resumed by running the same command again.
    Exit status 3 when untranslatable messages stayed in SRC.
    """
    try:
        source, target = parse_endpoint(src), parse_endpoint(dst)
        task_schema = TaskSchema.load(schema) if schema is not None else None
    except (ConfigError, BridgeError) as exc:
        raise click.UsageError(str(exc)) from None
    if copy and dry_run:
        raise click.UsageError("--copy and --dry-run: choose one")
    progress = None if quiet else StderrProgress()
    try:
        report = run_migration(source, target, copy=copy, dry_run=dry_run, tasks=tasks,
                               schema=task_schema, results=results, include_delayed=delayed,
                               include_unacked=unacked, unacked_older_than=unacked_older_than,
                               batch=batch, park=park, progress=progress)
    except (BridgeError, ValueError, NotImplementedError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if progress is not None:
            progress.end()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
    if report.left_behind and not dry_run:
        sys.exit(EXIT_LEFT_BEHIND)


if __name__ == "__main__":
    migrate()
