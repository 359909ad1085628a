"""``mbridge beat``: the click command over :func:`bridge.beat.open_beat`."""

from __future__ import annotations

import sys

import click

from bridge.beat import load_schedule, open_beat
from bridge.cli.options import config_option, loglevel_option, setup_logging
from bridge.config import default_config, use_config_file

__all__ = ["beat"]


@click.command()
@click.option("--schedule", "schedule_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Schedule file (YAML): entries with name, system (machinery, celery, "
                   "gocraft), task, args, queue, cron or every, timezone.")
@config_option
@loglevel_option()
def beat(schedule_path: str, config_path: str | None, loglevel: str) -> None:
    """Send scheduled tasks to machinery, Celery and gocraft/work: once per tick across any
    number of beats, interlocked with Go machinery's RegisterPeriodicTask and gocraft's
    periodic enqueuer. Connections default to the config's broker. Stops on SIGTERM/SIGINT.
    """
    setup_logging(loglevel)
    config = use_config_file(config_path) or default_config()
    entries = load_schedule(schedule_path, config)
    sys.exit(open_beat(entries, config).run())
