"""``mbridge relay``: the click command (registered in ``bridge.cli`` with ``add_command``)."""

from __future__ import annotations

import logging
import sys

import click

from bridge.endpoints import parse_endpoint
from bridge.errors import BridgeError
from bridge.relay import RelayOptions, open_relay
from bridge.schema import TaskSchema

__all__ = ["relay"]


@click.command()
@click.option("--from", "source", required=True, metavar="SPEC",
              help="Queue to consume: celery+redis://h:6379/0?queue=celery&backend=URL, "
                   "celery+amqp://..., or machinery+redis://h:6379/0?queue=machinery_tasks.")
@click.option("--to", "target", required=True, metavar="SPEC",
              help="Queue to publish to, in the other protocol (same forms).")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False),
              help="Task schema (YAML/TOML): Go arg types for Celery tasks, result types "
                   "for machinery results. Without one, types are inferred.")
@click.option("--batch", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="Messages fetched and published per round trip.")
@click.option("--lenient", is_flag=True,
              help="Celery → machinery: pass values without a Go type untyped (Python "
                   "machinery workers can take them, Go workers cannot).")
@click.option("--poll", "poll_interval", default=0.2, show_default=True,
              type=click.FloatRange(0.01, 60), help="Seconds between result polls.")
@click.option("--name", default="",
              help="Bookkeeping name (default: from both protocols and queues); keep it "
                   "across restarts.")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def relay(source: str, target: str, schema_path: str | None, batch: int, lenient: bool,
          poll_interval: float, name: str, loglevel: str) -> None:
    """Relay tasks from one queue to the other protocol's queue and carry results back.

    Celery → machinery: Celery producers' tasks (chains and chords included) run on Go
    machinery workers; Celery's AsyncResult.get() sees their results. machinery → Celery:
    Go producers' tasks run on Celery workers; Go's AsyncResult.Get sees typed results.
    Stops gracefully on SIGTERM/SIGINT; results in flight survive a restart.
    """
    logging.basicConfig(level=loglevel.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        schema = TaskSchema.load(schema_path) if schema_path else None
        runner = open_relay(parse_endpoint(source), parse_endpoint(target), RelayOptions(
            batch=batch, schema=schema, strict=not lenient, poll_interval=poll_interval,
            name=name))
    except BridgeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(runner.run())


if __name__ == "__main__":  # python -m bridge.cli_relay, until bridge.cli registers it
    relay()
