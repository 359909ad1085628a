"""``mbridge relay``: the click command over :func:`bridge.relay.open_relay`."""

from __future__ import annotations

import sys

import click

from bridge.cli.options import loglevel_option, setup_logging
from bridge.cli.sides import celery_app_option, check_sides, open_sides
from bridge.relay import RelayOptions
from bridge.relay.processes import run_side_by_side
from bridge.schema import TaskSchema

__all__ = ["relay"]


@click.command()
@click.option("--from", "source", required=True, metavar="SPEC",
              help="Queue to consume: celery+redis://h:6379/0?queue=celery&backend=URL, "
                   "celery+amqp://..., celery+sqs://..., "
                   "machinery+redis://h:6379/0?queue=machinery_tasks, machinery+sqs://..., "
                   "or (with --celery-app) celery.")
@click.option("--to", "target", required=True, metavar="SPEC",
              help="Queue to publish to, in the other protocol (same forms).")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False),
              help="Task schema (YAML/TOML): Go arg types for Celery tasks, result types "
                   "for machinery results. Without one, types are inferred.")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10_000),
              help="Messages fetched and published per round trip.")
@click.option("--lenient", is_flag=True,
              help="Celery → machinery: pass values without a Go type untyped (Python "
                   "machinery workers can take them, Go workers cannot).")
@click.option("--poll", "poll_interval", default=0.2, show_default=True,
              type=click.FloatRange(0.01, 60), help="Seconds between result polls.")
@click.option("--name", default="",
              help="Bookkeeping name (default: from both protocols and queues); keep it "
                   "across restarts.")
@click.option("--processes", "-P", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Relays side by side in as many processes (bookkeeping NAME, NAME.2 ... "
                   "NAME.N): more messages a second on more cores; order across them is not "
                   "kept.")
@celery_app_option
@loglevel_option()
def relay(source: str, target: str, schema_path: str | None, batch: int, lenient: bool,
          poll_interval: float, name: str, processes: int, celery_app: str | None,
          loglevel: str) -> None:
    """Relay tasks from one queue to the other protocol's queue and carry results back.

    Celery → machinery: Celery producers' tasks (chains and chords included) run on Go
    machinery workers; Celery's AsyncResult.get() sees their results. machinery → Celery:
    Go producers' tasks run on Celery workers; Go's AsyncResult.Get sees typed results.
    Stops gracefully on SIGTERM/SIGINT; results in flight survive a restart.
    """
    setup_logging(loglevel)
    schema = TaskSchema.load(schema_path) if schema_path else None
    sides = open_sides(source, target, celery_app, flags=("--from", "--to"), results=True)
    check_sides(sides, backends=True)
    options = RelayOptions(batch=batch, schema=schema, strict=not lenient,
                           poll_interval=poll_interval, name=name, accept=sides.accept)
    log_format = click.get_current_context().meta.get("bridge.log_format", "plain")
    sys.exit(run_side_by_side(sides.source, sides.target, options, processes,
                              loglevel=loglevel, log_format=log_format))
