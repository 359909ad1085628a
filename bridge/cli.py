"""The ``mbridge`` command."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from bridge import __version__
from bridge.app import Bridge
from bridge.cli_migrate import migrate as migrate_command
from bridge.cli_relay import relay as relay_command
from bridge.config import Config, ConfigError, redact_url
from bridge.errors import BridgeError
from bridge.pretty import decode_any, describe
from bridge.result import AsyncResult, ResultTimeout, TaskFailed
from bridge.worker import Worker, WorkerOptions


def _read_redis(url: str, key: str, index: int) -> bytes:
    """One raw message from Redis: a queue list item, a delayed ZSET member or a state key."""
    import redis

    client = redis.Redis.from_url(url)
    kind = _text(client.type(key))
    item: object
    if kind == "list":
        item = client.lindex(key, index)
    elif kind == "zset":
        members: list[object] = list(client.zrange(key, index, index))
        item = members[0] if members else None
    elif kind == "string":
        item = client.get(key)
    elif kind == "none":
        raise click.ClickException(f"no key {key!r} in {redact_url(url)}")
    else:
        raise click.ClickException(f"key {key!r} is a Redis {kind}: not a machinery message")
    if item is None:
        raise click.ClickException(f"{key!r} has no item at index {index}")
    return item if isinstance(item, bytes) else str(item).encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Group(click.Group):
    """Every error we raise on purpose becomes one clear line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mbridge")
def main() -> None:
    """machinery-bridge: Python workers, producers and codecs for Go machinery and Celery."""


@main.command()
@click.argument("source", required=False, default="-")
@click.option("--redis", "redis_key", metavar="KEY",
              help="Read KEY from Redis (a queue, the delayed_tasks ZSET or a state key).")
@click.option("--index", default=0, show_default=True, help="Item of a queue or ZSET to read.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="machinery config.yml (its broker URL is used with --redis).")
@click.option("--url", help="Redis URL for --redis (default: the config's broker, or env BROKER).")
@click.option("--raw", is_flag=True, help="Also print the message bytes as Go would write them.")
def decode(source: str, redis_key: str | None, index: int, config_path: str | None,
           url: str | None, raw: bool) -> None:
    """Decode a machinery message (SOURCE file, - for stdin) and show its typed args."""
    if redis_key:
        if url is None:
            try:
                url = Config.load(config_path).broker
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        data = _read_redis(url, redis_key, index)
    elif source == "-":
        data = sys.stdin.buffer.read()
    else:
        data = Path(source).read_bytes()
    try:
        message = decode_any(data)
    except BridgeError as exc:
        raise click.ClickException(f"not a valid machinery message: {exc}") from None
    click.echo("\n".join(describe(message)))
    if raw:
        click.echo(message.to_json().decode("utf-8"))


def _load_app(app_path: str | None, config_path: str | None) -> Bridge:
    """The Bridge in ``module[:attribute]`` (default attribute ``app``), or one from config."""
    if app_path is None:
        try:
            return Bridge.from_config(config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    module_name, _, attribute = app_path.partition(":")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, Bridge):
        raise click.ClickException(f"{app_path}: no Bridge app (define `app = Bridge(...)`)")
    if config_path is not None:
        app.config = Config.load(config_path)
    return app


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


app_option = click.option("-A", "--app", "app_path", metavar="MODULE[:ATTR]",
                          help="Module holding your Bridge app (attribute `app` by default).")
config_option = click.option("--config", "config_path", type=click.Path(exists=True),
                             help="machinery config.yml (default: machinery's env variables).")


@main.command()
@app_option
@config_option
@click.option("-Q", "--queue", default="", help="Queue to consume (default: default_queue).")
@click.option("-c", "--concurrency", default=4, show_default=True, help="Tasks run at once.")
@click.option("--pool", type=click.Choice(["threads", "processes"]), default="threads",
              show_default=True, help="Run tasks in threads, or processes for CPU-bound work.")
@click.option("--graceful-timeout", default=30.0, show_default=True,
              help="Seconds to let running tasks finish after SIGTERM.")
@click.option("--celery-app", metavar="MODULE[:ATTR]",
              help="Import this Celery app: its tasks are served (to Go producers too) and its "
                   "queue, broker and result backend are used for Celery clients.")
@click.option("--celery-queue", "celery_queues", multiple=True, metavar="NAME",
              help="Celery queue to consume as well (repeatable; default with --celery-app: "
                   "its task_default_queue).")
@click.option("--celery-broker", metavar="URL", help="Broker of the Celery queues "
              "(default: the Celery app's broker_url).")
@click.option("--celery-backend", metavar="URL", help="Celery result backend (Redis) "
              "(default: the Celery app's result_backend).")
@click.option("--no-machinery", is_flag=True, help="Serve only the Celery queues.")
@click.option("-l", "--loglevel", default="info", show_default=True)
def worker(app_path: str | None, config_path: str | None, queue: str, concurrency: int,
           pool: str, graceful_timeout: float, celery_app: str | None,
           celery_queues: tuple[str, ...], celery_broker: str | None,
           celery_backend: str | None, no_machinery: bool, loglevel: str) -> None:
    """Serve machinery tasks (from Go or Python producers) with your Python functions,
    and Celery clients' tasks from Celery queues."""
    _setup_logging(loglevel)
    app = _load_app(app_path, config_path)
    handlers = _celery_handlers(app, celery_app, celery_queues, celery_broker, celery_backend)
    log = logging.getLogger("bridge")
    if not no_machinery:
        log.info("broker %s, backend %s", redact_url(app.config.broker),
                 redact_url(app.config.result_backend))
    log.info("%d tasks: %s", len(app.tasks), ", ".join(sorted(app.tasks)))
    options = WorkerOptions(queue=queue, concurrency=concurrency, pool=pool,
                            graceful_timeout=graceful_timeout)
    runner = Worker(app, options, handlers=handlers, machinery=not no_machinery)
    status = runner.run()
    if runner.busy:  # abandoned past the graceful timeout; they are back in the queue
        logging.shutdown()
        os._exit(status)
    sys.exit(status)


def _celery_handlers(app: Bridge, celery_app: str | None, queues: tuple[str, ...],
                     broker: str | None, backend: str | None) -> list[Any]:
    """Handler factories for the Celery queues the worker options ask for."""
    from bridge.celery_import import celery_settings, load_celery_app, register_celery_tasks
    from bridge.handlers.celery import CeleryOptions, celery_handler_factory

    if celery_app is None and not queues:
        return []
    options = CeleryOptions()
    if celery_app is not None:
        capp = load_celery_app(celery_app)
        register_celery_tasks(app, capp)
        settings = celery_settings(capp)
        broker = broker or settings.broker_url
        backend = backend or settings.result_backend
        queues = queues or (settings.default_queue,)
        options = CeleryOptions(default_queue=settings.default_queue,
                                track_started=settings.track_started,
                                result_extended=settings.result_extended,
                                serializer=settings.task_serializer)
    if not broker or not backend:
        raise click.UsageError("--celery-queue needs --celery-broker and --celery-backend "
                               "(or --celery-app)")
    logging.getLogger("bridge").info("Celery queues %s on %s, results in %s",
                                     ", ".join(queues), redact_url(broker), redact_url(backend))
    return [celery_handler_factory(broker, backend, name, options) for name in queues]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command()
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
    app = _load_app(app_path, config_path)
    try:
        result = app.send_task(name, *(_parse_value(a) for a in args),
                               arg_types=list(types) or None, queue=queue, countdown=countdown,
                               retry_count=retry_count)
    except BridgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.task_uuid)
    if wait is not None:
        _print_result(result, wait)


def _print_result(result: AsyncResult, wait: float) -> None:
    try:
        click.echo(repr(result.get(timeout=wait)))
    except TaskFailed as exc:
        raise click.ClickException(f"task failed: {exc.error}") from None
    except ResultTimeout as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@app_option
@config_option
@click.argument("task_uuid")
@click.option("--wait", default=0.0, help="Seconds to wait for completion.")
def result(app_path: str | None, config_path: str | None, task_uuid: str, wait: float) -> None:
    """Show a task's state and typed results."""
    app = _load_app(app_path, config_path)
    async_result = AsyncResult(task_uuid, app.backend)
    if wait:
        _print_result(async_result, wait)
        return
    state = async_result.state()
    if state is None:
        raise click.ClickException(f"no state stored for {task_uuid} (expired or never written)")
    click.echo("\n".join(describe(state)))


@main.command()
@app_option
@config_option
@click.option("-Q", "--queue", "queues", multiple=True, help="Queues (default: default_queue).")
@click.option("--peek", default=3, show_default=True, help="Messages to decode from each queue.")
def inspect(app_path: str | None, config_path: str | None, queues: tuple[str, ...],
            peek: int) -> None:
    """Queue depth, delayed tasks, messages held by workers, dead letters, and a decoded peek."""
    app = _load_app(app_path, config_path)
    broker = app.broker
    click.echo(f"broker {redact_url(app.config.broker)}")
    delayed_count = getattr(broker, "delayed_count", None)
    if delayed_count is not None:  # AMQP delay queues can't be listed without the admin API
        click.echo(f"delayed tasks: {delayed_count()}")
    for queue in queues or (app.config.default_queue,):
        click.echo(f"queue {queue}: {broker.queue_depth(queue)} waiting")  # type: ignore[attr-defined]
        processing = getattr(broker, "processing", None)
        for worker_id, count in (processing(queue) if processing else {}).items():
            click.echo(f"  held by worker {worker_id}: {count}")
        dead = broker.dead_letters(queue, 0, -1)  # type: ignore[attr-defined]
        click.echo(f"  dead letters: {len(dead)}")
        for entry in dead[:peek]:
            click.echo(f"    {entry.get('time', '')} {entry.get('reason', '')}")
        for body in broker.peek(queue, peek):  # type: ignore[attr-defined]
            try:
                click.echo("\n".join(describe(decode_any(body), "  ")))
            except BridgeError as exc:
                click.echo(f"  <undecodable: {exc}>")


@main.command("requeue-dead")
@app_option
@config_option
@click.option("-Q", "--queue", default="", help="Queue whose dead letters to replay.")
@click.option("--count", default=0, help="How many (0: all).")
def requeue_dead(app_path: str | None, config_path: str | None, queue: str, count: int) -> None:
    """Put parked messages back on their queue, byte for byte."""
    app = _load_app(app_path, config_path)
    moved = app.broker.replay_dead(queue or app.config.default_queue, count)  # type: ignore[attr-defined]
    click.echo(f"requeued {moved} message(s)")


@main.command()
@config_option
def demo(config_path: str | None) -> None:
    """Start a worker (and a private redis-server when no broker is configured), run a chain
    and a chord through it, print the results, clean up."""
    from bridge.demo import run_demo

    run_demo(config_path)


main.add_command(migrate_command)
main.add_command(relay_command)


if __name__ == "__main__":  # pragma: no cover
    main()
