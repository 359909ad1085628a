"""A pytest plugin for Celery's integration suite: ``celery_session_worker`` starts a
bridge worker instead of Celery's (``-p tests.celery_suite.bridge_worker``).

Celery's fixture calls ``celery.contrib.testing.worker.start_worker(app, ...)`` to run a
worker in a thread of the test process; this plugin puts ours in its place, serving the
app's default queue with the app's tasks (run in Celery's tracer), its remote control
(revoke, inspect) on the app's broker, and the same ping check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bridge.app import Bridge
from bridge.cli.celery_side import CelerySide, side_of_app
from bridge.cli.worker_control import start_controls
from bridge.config import Config
from bridge.handlers.celery import CeleryOptions
from bridge.worker import Worker, WorkerOptions

HOSTNAME = "bridge@celery-suite"


@contextmanager
def start_bridge_worker(app: Any, concurrency: int = 1, pool: str = "solo",
                        loglevel: str | int = "error", logfile: str | None = None,
                        perform_ping_check: bool = True, ping_task_timeout: float = 10.0,
                        shutdown_timeout: float = 10.0, **_: Any) -> Iterator[Worker]:
    """Our worker in a thread, in place of Celery's embedded one (the app set up for it
    as Celery's fixture sets it up: finalized, current, its logging configured)."""
    from celery.contrib.testing.worker import (
        WORKER_LOGLEVEL,
        setup_app_for_worker,
        test_worker_started,
        test_worker_starting,
    )
    from celery.result import allow_join_result

    test_worker_starting.send(sender=app)
    setup_app_for_worker(app, loglevel if loglevel != "error" else WORKER_LOGLEVEL, logfile)
    bridge = Bridge(Config())
    side = side_of_app(bridge, app, CelerySide("", "", (), CeleryOptions(hostname=HOSTNAME)))
    worker = Worker(bridge, WorkerOptions(concurrency=concurrency, pool="threads"),
                    handlers=side.factories(), machinery=False)
    controls = start_controls(worker, HOSTNAME, side, machinery_broker=None, commands=True,
                              task_events=False)
    for control in controls:
        control.ready.wait(10)
    thread = threading.Thread(target=worker.run, name="bridge-suite-worker", daemon=True)
    thread.start()
    test_worker_started.send(sender=app, worker=worker)
    try:
        if perform_ping_check:
            with allow_join_result():
                assert app.tasks["celery.ping"].delay().get(timeout=ping_task_timeout) == "pong"
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        for control in controls:
            control.stop()


def pytest_configure(config: pytest.Config) -> None:
    from celery.contrib.testing import worker as testing_worker

    testing_worker.start_worker = start_bridge_worker
