"""``mbridge demo``: a worker serving machinery tasks, a chain and a chord through it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import click

from bridge.app import Bridge
from bridge.config import Config, redact_url
from bridge.localredis import local_redis
from bridge.worker import Worker, WorkerOptions


@contextlib.contextmanager
def _broker_url(config_path: str | None) -> Iterator[Config]:
    """The configured Redis, or a private redis-server when none is configured."""
    if config_path or os.environ.get("BROKER"):
        yield Config.load(config_path)
        return
    with local_redis() as url:
        click.echo(f"no broker configured: started a private redis-server at {url}")
        yield Config(broker=url, result_backend=url, default_queue="bridge_demo")


def demo_app(config: Config) -> Bridge:
    """An app with the tasks Go's machinery examples use."""
    app = Bridge(config)

    @app.task("add")
    def add(*values: int) -> int:
        return sum(values)

    @app.task("multiply")
    def multiply(*values: int) -> int:
        product = 1
        for value in values:
            product *= value
        return product

    @app.task("concat")
    def concat(parts: list[str]) -> str:
        return "".join(parts)

    return app


def run_demo(config_path: str | None) -> None:
    with _broker_url(config_path) as config:
        app = demo_app(config)
        click.echo(f"broker {redact_url(config.broker)}, queue {config.default_queue}")
        app.check()
        worker = Worker(app, WorkerOptions(concurrency=4, poll_timeout=0.2))
        thread = threading.Thread(target=worker.run, name="bridge-demo-worker", daemon=True)
        thread.start()
        try:
            chain = app.send_chain(app.signature("add", 1, 2), app.signature("multiply", 10),
                                   app.signature("add", 5))
            click.echo(f"chain add(1, 2) → multiply(10) → add(5) = {chain.get(timeout=30)}")
            chord = app.send_chord([app.signature("add", i, i) for i in range(1, 6)],
                                   app.signature("add"))
            click.echo(f"chord add(i, i) for i in 1..5 → add = {chord.get(timeout=30)}")
            text = app.send_task("concat", ["<go>", " & ", "python"]).get(timeout=30)
            click.echo(f"concat = {text!r}")
        finally:
            worker.stop()
            thread.join(timeout=10)
            app.close()
        click.echo("demo done")
