"""``mbridge demo``: the command over :func:`bridge.demo.run_demo`."""

from __future__ import annotations

import click

from bridge.cli.options import config_option, loglevel_option, setup_logging


@click.command()
@config_option
@loglevel_option("warning")
def demo(config_path: str | None, loglevel: str) -> None:
    """Start a worker (and a private redis-server when no broker is configured), run a chain
    and a chord through it, print the results, clean up."""
    from bridge.demo import run_demo

    setup_logging(loglevel)

    run_demo(config_path)
