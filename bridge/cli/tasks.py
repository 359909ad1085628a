"""``mbridge send`` and ``mbridge result``: send a task to Go or Python workers, show its state."""

from __future__ import annotations

import json
from typing import Any

import click

from bridge.cli.options import app_option, config_option, load_app, with_logging
from bridge.cli.pretty import describe
from bridge.errors import BridgeError
from bridge.result import AsyncResult, ResultTimeout, TaskFailed


@click.command()
@with_logging()
@app_option
@config_option
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("-t", "--type", "types", multiple=True,
              help="Go type of each arg in order (int8, []string, ...); default: inferred.")
@click.option("-Q", "--queue", default="", help="Queue (default: default_queue).")
@click.option("--countdown", type=float, help="Run after this many seconds.")
@click.option("--retry-count", default=0, help="machinery RetryCount.")
@click.option("--wait", type=float, help="Wait this many seconds for the result and print it.")
def send(app_path: str | None, config_path: str | None, name: str, args: tuple[str, ...],
         types: tuple[str, ...], queue: str, countdown: float | None, retry_count: int,
         wait: float | None) -> None:
    """Send task NAME with ARGS (JSON literals, else strings) to Go or Python workers."""
    app = load_app(app_path, config_path)
    app.check()
    try:
        result = app.send_task(name, *(_parse_value(a) for a in args),
                               arg_types=list(types) or None, queue=queue, countdown=countdown,
                               retry_count=retry_count)
    except BridgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.task_uuid)
    if wait is not None:
        _print_result(result, wait)


@click.command()
@with_logging()
@app_option
@config_option
@click.argument("task_uuid")
@click.option("--wait", default=0.0, help="Seconds to wait for completion.")
def result(app_path: str | None, config_path: str | None, task_uuid: str, wait: float) -> None:
    """Show a task's state and typed results."""
    app = load_app(app_path, config_path)
    app.check(broker=False)
    async_result = AsyncResult(task_uuid, app.backend)
    if wait:
        _print_result(async_result, wait)
        return
    state = async_result.state()
    if state is None:
        raise click.ClickException(f"no state stored for {task_uuid} (expired or never written)")
    click.echo("\n".join(describe(state)))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _print_result(result: AsyncResult, wait: float) -> None:
    try:
        click.echo(repr(result.get(timeout=wait)))
    except TaskFailed as exc:
        raise click.ClickException(f"task failed: {exc.error}") from None
    except ResultTimeout as exc:
        raise click.ClickException(str(exc)) from None
