"""The apps the benchmarks run: a no-op task and a CPU-bound one, for the bridge and Celery.

Both read $BENCH_REDIS and $BENCH_QUEUE, so the benchmark can start them as workers:
``mbridge worker -A bench.bench_apps:bridge_app`` and
``celery -A bench.bench_apps:celery_app worker``.
"""

from __future__ import annotations

import os

from bridge.app import Bridge
from bridge.config import Config

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")

bridge_app = Bridge(Config(broker=URL, result_backend=URL, default_queue=QUEUE))


@bridge_app.task("noop")
def noop() -> None:
    """Does nothing: the benchmark measures the machinery around it."""


def burn(n: int) -> int:
    """About 1 ms of pure Python at n = 20,000 (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


bridge_app.register("burn", burn)


def _celery_app() -> object:
    from celery import Celery

    app = Celery("bench", broker=URL, backend=URL)
    app.conf.update(
        task_acks_late=True,  # reliability comparable to ours: ack after the task ran
        task_default_queue=QUEUE, worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True, result_expires=3600,
        accept_content=["json", "msgpack"],  # bench.celery_protocol_bench --serializer
    )

    @app.task(name="noop")
    def celery_noop() -> None:
        """Does nothing."""

    app.task(name="burn")(burn)

    return app


celery_app = _celery_app() if os.environ.get("BENCH_CELERY") else None
