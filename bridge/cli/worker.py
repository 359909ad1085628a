"""``mbridge worker``: serve machinery queues and, optionally, Celery queues and a
gocraft/work namespace."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from typing import Any

import click

from bridge.cli.celery_side import celery_side, node_name
from bridge.cli.gocraft_side import gocraft_factory
from bridge.cli.options import (
    app_option,
    config_option,
    load_app,
    loglevel_option,
    setup_logging,
)
from bridge.cli.worker_control import start_controls
from bridge.cli.worker_processes import indexed_node, indexed_port, process_index, supervise
from bridge.config import Config, redact_url
from bridge.heap import freeze_loaded
from bridge.outage import one_line, probe
from bridge.worker import Worker, WorkerOptions


@click.command()
@app_option
@config_option
@click.option("-Q", "--queue", default="", help="Queue to consume (default: default_queue).")
@click.option("-c", "--concurrency", default=4, show_default=True, help="Tasks run at once.")
@click.option("--pool", type=click.Choice(["threads", "processes"]), default="threads",
              show_default=True, help="Run tasks in threads, or processes for CPU-bound work.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Run this many whole workers side by side, one per core or more (each "
                   "with -c task threads); CPU-bound tasks use every core this way.")
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
@click.option("--gocraft", "gocraft_namespace", metavar="NAMESPACE",
              help="Serve gocraft/work jobs of this namespace (e.g. work) as a worker pool "
                   "beside Go's: each registered task is a job name (or --gocraft-job).")
@click.option("--gocraft-redis", metavar="URL",
              help="Redis of the gocraft/work namespace (default: the broker).")
@click.option("--gocraft-job", "gocraft_jobs", multiple=True,
              metavar="NAME[,max_fails=N][,skip_dead][,max_concurrency=N][,priority=N][,backoff=S]",
              help="A gocraft/work job name to serve, with its options (repeatable; default: "
                   "every registered task).")
@click.option("--no-machinery", is_flag=True,
              help="Serve only the Celery queues or the gocraft/work namespace.")
@click.option("-n", "--hostname", default="bridge@%h", show_default=True,
              help="Node name for Celery's remote control and events (%h host, %n its "
                   "first label, %d the domain), as Celery's -n.")
@click.option("-E", "--task-events", is_flag=True,
              help="Send Celery task events (celery events, Flower), as Celery's -E; worker "
                   "heartbeats are sent either way.")
@click.option("--no-remote-control", is_flag=True,
              help="Do not answer `celery inspect/control` or `mbridge control` (Celery's "
                   "worker_enable_remote_control = False).")
@click.option("--max-unregistered-backoff", default=60.0, show_default=True, metavar="SECONDS",
              help="Longest wait before a task this worker does not know goes back to its "
                   "queue (after the hand-off window).")
@click.option("--handoff-window", default=5.0, show_default=True, metavar="SECONDS",
              help="For this long after first taking a task it does not know, the worker "
                   "puts it back at once, for a worker that knows it; then with back-off.")
@click.option("--recover-after", default=10.0, show_default=True, metavar="SECONDS",
              help="Redis: a worker silent this long is dead and its messages go back to "
                   "the queue (its heartbeat TTL).")
@click.option("--metrics-port", type=int, metavar="PORT",
              help="Serve Prometheus metrics on /metrics and a health check on /health "
                   "(needs the metrics extra; 0 picks a free port).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics server binds.")
@click.option("--metrics-interval", default=5.0, show_default=True, metavar="SECONDS",
              help="How often queue depths, delayed, held and dead letters are sampled.")
@loglevel_option()
def worker(app_path: str | None, config_path: str | None, queue: str, concurrency: int,
           pool: str, processes: int, graceful_timeout: float, celery_app: str | None,
           celery_queues: tuple[str, ...], celery_broker: str | None,
           celery_backend: str | None, gocraft_namespace: str | None,
           gocraft_redis: str | None, gocraft_jobs: tuple[str, ...], no_machinery: bool,
           hostname: str,
           task_events: bool, no_remote_control: bool, max_unregistered_backoff: float,
           handoff_window: float,
           recover_after: float, metrics_port: int | None, metrics_host: str,
           metrics_interval: float, loglevel: str) -> None:
    """Serve machinery tasks (from Go or Python producers) with your Python functions,
    and Celery clients' tasks from Celery queues."""
    index = process_index()
    setup_logging(loglevel, f"worker-{index}" if index else "")
    # as Celery's worker: SIGUSR1 prints every thread's stack to stderr (a stuck worker)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app = load_app(app_path, config_path)  # a bad -A or config: one line, before any process
    if processes > 1 and not index:
        sys.exit(supervise(processes))
    if index:
        logging.getLogger("bridge").info("worker process %d of %d (pid %d)", index, processes,
                                         os.getpid())
    if no_machinery and not app.configured:  # no machinery queue: none of its config is used
        app.config = Config()
    node = indexed_node(node_name(hostname), index)
    side = celery_side(app, celery_app, celery_queues, celery_broker, celery_backend, node)
    for celery_task_log in ("celery.app.trace", "celery.worker.strategy"):
        # Celery's tracer says what bridge.task says, with a traceback: one line is enough
        logging.getLogger(celery_task_log).setLevel(logging.CRITICAL)
    handlers = side.factories() if side is not None else []
    log = logging.getLogger("bridge")
    if gocraft_namespace is not None:
        make, serves = gocraft_factory(app, gocraft_namespace, gocraft_redis, gocraft_jobs,
                                       concurrency)
        handlers.append(make)
        log.info("%s", serves)
    if not no_machinery:
        log.info("broker %s, backend %s", redact_url(app.config.broker),
                 redact_url(app.config.result_backend))
    log.info("%d tasks: %s", len(app.tasks), ", ".join(sorted(app.tasks)))
    options = WorkerOptions(queue=queue, concurrency=concurrency, pool=pool,
                            graceful_timeout=graceful_timeout,
                            max_unregistered_backoff=max_unregistered_backoff,
                            handoff_window=handoff_window,
                            metrics_interval=metrics_interval)
    if not no_machinery:  # opening the broker may already connect (AMQP)
        probe([("broker", app.config.broker, "`broker` in the config (or BROKER)",
                lambda: app.broker)])
    runner = Worker(app, options, handlers=handlers, machinery=not no_machinery)
    for handler in runner.handlers:
        handler.consumer.recover_after(recover_after)
    runner.check()
    metrics_port = indexed_port(metrics_port, index)
    server = _serve_metrics(runner, metrics_port, metrics_host) \
        if metrics_port is not None else None
    commands = not no_remote_control and (side is None or side.remote_control)
    controls = start_controls(runner, node, side, commands=commands, task_events=task_events,
                              machinery_broker=None if no_machinery else app.config.broker)
    freeze_loaded()
    status = runner.run()
    for control in controls:
        control.stop()
    if server is not None:
        server.close()
    if runner.busy:  # abandoned past the graceful timeout; they are back in the queue
        logging.shutdown()
        os._exit(status)
    try:  # leave the broker's registry of workers: `mbridge inspect` no longer lists us
        app.close()
    except Exception as exc:
        log.warning("could not close the broker cleanly: %s", one_line(exc))
    # stopped and closed: a thread a task left behind (not a daemon) must not keep the
    # process alive after SIGTERM
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _serve_metrics(runner: Worker, port: int, host: str) -> Any:
    """Metrics and health for ``runner`` on ``host:port``, in a thread of their own."""
    from bridge.metrics import MetricsServer, WorkerMetrics, health_of

    metrics = WorkerMetrics()
    runner.attach_metrics(metrics)
    try:
        server = MetricsServer(metrics, health_of(lambda: runner.outage.since,
                                                  lambda: runner.last_turn), port, host)
    except OSError as exc:
        raise click.UsageError(f"--metrics-port {port}: cannot listen on {host}:{port} "
                               f"({exc.strerror}); pick another port") from None
    return server.start()
