"""``mbridge inspect`` and ``mbridge requeue-dead``: look into a broker's queues (machinery's
from the config, or any endpoint such as ``celery+redis://…?queue=celery``), see the workers
alive or gone, replay dead letters."""

from __future__ import annotations

import inspect as pyinspect
from typing import Any

import click

from bridge.cli.options import app_option, config_option, load_app, with_logging
from bridge.cli.pretty import decode_any, describe
from bridge.config import redact_url
from bridge.endpoints import Endpoint, parse_endpoint
from bridge.errors import BridgeError
from bridge.queuestats import dead_page, queue_stats

endpoint_argument = click.argument("endpoint", required=False, metavar="[ENDPOINT]")
ENDPOINT_HELP = ("ENDPOINT names a queue as migrate does (celery+redis://host/0?queue=celery, "
                 "machinery+amqp://…); without it, machinery's broker from the config.")


class Target:
    """The broker and queues a command looks at, and the URL its workers' mailbox is on."""

    def __init__(self, endpoint: str | None, app_path: str | None, config_path: str | None,
                 queues: tuple[str, ...]) -> None:
        self.endpoint: Endpoint | None = None
        if endpoint:
            self.endpoint = parse_endpoint(endpoint)
            self.broker: Any = self.endpoint.open_broker()
            self.broker_url = self.endpoint.broker_url
            self.queues = queues or (self.endpoint.queue,)
            self.protocol = self.endpoint.protocol
            self.broker.ping()
        else:
            app = load_app(app_path, config_path)
            app.check(backend=False)
            self.broker = app.broker
            self.broker_url = app.config.broker
            self.queues = queues or (app.config.default_queue,)
            self.protocol = "machinery"

    def mailbox_url(self) -> str | None:
        from bridge.control.client import NO_BROADCAST, mailbox_url

        if self.protocol == "celery":
            return None if self.broker_url.startswith(NO_BROADCAST) else self.broker_url
        return mailbox_url(self.broker_url)

    def close(self) -> None:
        if self.endpoint is not None:
            self.broker.close()


@click.command(help="Queue depth, delayed tasks, messages held by workers (alive or gone), "
                    "dead letters, a decoded peek; with --workers, the workers themselves. "
                    + ENDPOINT_HELP)
@with_logging()
@endpoint_argument
@app_option
@config_option
@click.option("-Q", "--queue", "queues", multiple=True, help="Queues (default: default_queue).")
@click.option("--peek", default=3, show_default=True, help="Messages to decode from each queue.")
@click.option("--workers", is_flag=True,
              help="Also ask the workers (remote control): alive, tasks, rates.")
@click.option("-t", "--timeout", default=1.0, show_default=True,
              help="Seconds to wait for the workers' replies (with --workers).")
def inspect(endpoint: str | None, app_path: str | None, config_path: str | None,
            queues: tuple[str, ...], peek: int, workers: bool, timeout: float) -> None:
    target = Target(endpoint, app_path, config_path, queues)
    try:
        broker = target.broker
        click.echo(f"broker {redact_url(target.broker_url)}")
        delayed_count = getattr(broker, "delayed_count", None)
        if delayed_count is not None and not pyinspect.signature(delayed_count).parameters:
            click.echo(f"delayed tasks: {delayed_count()}")  # machinery's one delayed set
        for queue in target.queues:
            _show_queue(broker, queue, peek)
        if workers:
            _show_workers(target, timeout)
    finally:
        target.close()


def _show_queue(broker: Any, queue: str, peek: int) -> None:
    stats = queue_stats(broker, queue)
    click.echo(f"queue {queue}: {stats.get('waiting', 0)} waiting")
    delayed_count = getattr(broker, "delayed_count", None)
    if delayed_count is not None and pyinspect.signature(delayed_count).parameters:
        click.echo(f"  delayed: {stats.get('delayed', 0)}")
    health = getattr(broker, "worker_health", None)
    if health is not None:
        for worker_id, (count, alive) in health(queue).items():
            state = "alive" if alive else "gone: back to the queue at the next recovery"
            click.echo(f"  held by worker {worker_id}: {count} ({state})")
    else:
        processing = getattr(broker, "processing", None)
        for worker_id, count in (processing(queue) if processing else {}).items():
            click.echo(f"  held by worker {worker_id}: {count}")
    # a page, never the whole list: a dead list may hold 100,000 entries
    dead = dead_page(broker, queue, peek)
    click.echo(f"  dead letters: {stats.get('dead', len(dead))}")
    for entry in dead[:peek]:
        size = f" ({entry['size']} bytes, kept aside)" if "body_ref" in entry else ""
        click.echo(f"    {entry.get('time', '')} {entry.get('reason', '')}{size}")
    peeking = getattr(broker, "peek", None)
    for body in peeking(queue, peek) if peeking is not None and peek > 0 else ():
        try:
            click.echo("\n".join(describe(decode_any(body), "  ")))
        except BridgeError as exc:
            click.echo(f"  <undecodable: {exc}>")


def _show_workers(target: Target, timeout: float) -> None:
    from bridge.control.client import broadcast

    url = target.mailbox_url()
    if url is None:
        click.echo("workers: this broker has no broadcast (SQS): ask each worker's "
                   "--metrics-port instead")
        return
    stats = broadcast(url, "stats", timeout=timeout)
    active = broadcast(url, "active", timeout=timeout) if stats else {}
    registered = broadcast(url, "registered", timeout=timeout) if stats else {}
    if not stats:
        click.echo(f"workers: none replied within {timeout:g} s")
        return
    for node in sorted(stats):
        info = stats[node] if isinstance(stats[node], dict) else {}
        running = active.get(node) or []
        consuming = ", ".join(info.get("consuming") or []) or "?"
        click.echo(f"worker {node}: alive (pid {info.get('pid', '?')}, up "
                   f"{info.get('uptime', '?')} s, {len(running)} running), consuming "
                   f"{consuming}")
        for queue, counts in sorted((info.get("queues") or {}).items()):
            click.echo(f"  {queue}: {counts.get('processed', 0)} processed, "
                       f"{counts.get('per_second_1m', 0):g}/s over the last minute")
        names = registered.get(node) or []
        shown = ", ".join(names[:12]) + (f", … ({len(names) - 12} more)" if len(names) > 12
                                         else "")
        click.echo(f"  registered: {len(names)} tasks: {shown}")
        for task in running:
            click.echo(f"  running {task.get('name')}[{task.get('id')}]")


@click.command()
@with_logging()
@click.argument("command", type=click.Choice(["ping", "shutdown", "revoke", "add_consumer",
                                              "cancel_consumer"]))
@click.argument("args", nargs=-1)
@click.option("--broker", "endpoint", metavar="ENDPOINT",
              help="Where the workers listen (default: machinery's broker from the config).")
@app_option
@config_option
@click.option("-d", "--destination", multiple=True, metavar="NODE",
              help="Only these workers (node names, as `mbridge inspect --workers` shows).")
@click.option("-t", "--timeout", default=1.0, show_default=True,
              help="Seconds to wait for replies.")
def control(command: str, args: tuple[str, ...], endpoint: str | None, app_path: str | None,
            config_path: str | None, destination: tuple[str, ...], timeout: float) -> None:
    """Steer running workers: ping, shutdown, revoke TASK_ID..., add_consumer QUEUE,
    cancel_consumer QUEUE (Celery's remote control, for machinery workers too)."""
    from bridge.control.client import broadcast

    target = Target(endpoint, app_path, config_path, ())
    try:
        url = target.mailbox_url()
    finally:
        target.close()
    if url is None:
        raise click.UsageError("this broker has no broadcast (SQS): there is no remote control")
    arguments: dict[str, Any] = {}
    if command == "revoke":
        if not args:
            raise click.UsageError("revoke needs task ids")
        arguments = {"task_id": list(args)}
    elif command in ("add_consumer", "cancel_consumer"):
        if len(args) != 1:
            raise click.UsageError(f"{command} needs one queue name")
        arguments = {"queue": args[0]}
    replies = broadcast(url, command, arguments, destination=list(destination) or None,
                        timeout=timeout, reply=command != "shutdown")
    if command == "shutdown":
        click.echo("shutdown sent")
        return
    if not replies:
        raise click.ClickException(f"no worker replied within {timeout:g} s")
    for node, reply in sorted(replies.items()):
        text = reply.get("ok", reply.get("error", reply)) if isinstance(reply, dict) else reply
        click.echo(f"{node}: {text}")


@click.command("requeue-dead", help="Put parked messages back on their queue, byte for "
                                    "byte. " + ENDPOINT_HELP)
@with_logging()
@endpoint_argument
@app_option
@config_option
@click.option("-Q", "--queue", default="", help="Queue whose dead letters to replay.")
@click.option("--count", default=0, help="How many (0: all).")
def requeue_dead(endpoint: str | None, app_path: str | None, config_path: str | None,
                 queue: str, count: int) -> None:
    target = Target(endpoint, app_path, config_path, (queue,) if queue else ())
    try:
        moved = target.broker.replay_dead(target.queues[0], count)
    finally:
        target.close()
    click.echo(f"requeued {moved} message(s)")
