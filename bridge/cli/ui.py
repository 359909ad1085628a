"""``mbridge ui``: the operators' web view of the queues machinery's config names and of any
endpoints given (``celery+redis://…?queue=celery``), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import click

from bridge.cli.options import app_option, config_option, load_app, loglevel_option, setup_logging
from bridge.control.client import NO_BROADCAST, mailbox_url
from bridge.endpoints import parse_endpoint
from bridge.ui.server import UiServer
from bridge.ui.watch import Watch, Watched


@click.command()
@click.argument("endpoints", nargs=-1, metavar="[ENDPOINT]...")
@app_option
@config_option
@click.option("-Q", "--queue", "queues", multiple=True,
              help="machinery queues to watch (default: default_queue).")
@click.option("--no-machinery", is_flag=True,
              help="Only the ENDPOINTs, not machinery's broker from the config.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than 127.0.0.1 shows the queues to that "
                   "network: set a --token).")
@click.option("--port", default=8808, show_default=True, help="Port (0 picks a free one).")
@click.option("--token", envvar="BRIDGE_UI_TOKEN", default="",
              help="Ask for this token (or $BRIDGE_UI_TOKEN): open the printed address once.")
@click.option("--interval", default=2.0, show_default=True, metavar="SECONDS",
              help="How often the queues are sampled.")
@loglevel_option("warning")
def ui(endpoints: tuple[str, ...], app_path: str | None, config_path: str | None,
       queues: tuple[str, ...], no_machinery: bool, host: str, port: int, token: str,
       interval: float, loglevel: str) -> None:
    """A web view for operators: every queue with its depth, delayed, held and dead letters
    over time; the workers alive, their rates and running tasks; a task by id; dead letters
    with replay and delete. ENDPOINTs name more queues as migrate does."""
    setup_logging(loglevel)
    watched = []
    if not no_machinery and (not endpoints or app_path or config_path):
        app = load_app(app_path, config_path)
        app.check()
        watched.append(Watched("machinery", app.config.broker, app.broker,
                               list(queues or (app.config.default_queue,)),
                               backend=app.backend, mailbox_url=mailbox_url(app.config.broker)))
    for spec in endpoints:
        endpoint = parse_endpoint(spec)
        broker = endpoint.open_broker()
        broker.ping()
        mailbox = (None if endpoint.broker_url.startswith(NO_BROADCAST) else
                   endpoint.broker_url) if endpoint.protocol == "celery" \
            else mailbox_url(endpoint.broker_url)
        watched.append(Watched(endpoint.protocol, endpoint.broker_url, broker,
                               [endpoint.queue],
                               backend=endpoint.open_backend() if endpoint.backend_url
                               else None, mailbox_url=mailbox))
    if not watched:
        raise click.UsageError("nothing to watch: give ENDPOINTs, or drop --no-machinery")
    watch = Watch(watched, interval).start()
    try:
        server = UiServer(watch, host, port, token).start()
    except OSError as exc:
        watch.stop()
        raise click.UsageError(f"--port {port}: cannot listen on {host}:{port} "
                               f"({exc.strerror}); pick another port") from None
    address = server.url + (f"?token={token}" if token else "")
    click.echo(f"mbridge ui on {address}  (Ctrl-C to stop)", err=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.close()
    watch.stop()
    logging.shutdown()
    os._exit(0)  # the sampler's and server's daemon threads hold nothing worth waiting for
