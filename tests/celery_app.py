"""A real Celery 5 app for the interop tests, configured from the environment.

``CELERY_TEST_BROKER`` / ``CELERY_TEST_BACKEND`` set the URLs (a test starts
``celery -A tests.celery_app worker`` with them). Task names are explicit so
Go and bridge producers can call them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

app = Celery(
    "celery_tests",
    broker=os.environ.get("CELERY_TEST_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_TEST_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=int(os.environ.get("CELERY_TEST_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_extended=os.environ.get("CELERY_TEST_RESULT_EXTENDED", "") == "1",
    task_serializer=os.environ.get("CELERY_TEST_SERIALIZER", "json"),
    accept_content=["json", "msgpack"],
    result_accept_content=["json", "msgpack"],
)


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="tasks.concat")
def concat(*parts: Any, sep: str = "") -> str:
    return sep.join(str(p) for p in parts)


@app.task(name="tasks.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="tasks.xsum")
def xsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="tasks.fail")
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task(name="tasks.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.noop")
def noop() -> None:
    return None


@app.task(bind=True, name="tasks.retry_twice", max_retries=3, default_retry_delay=0.2)
def retry_twice(self: Any, value: int) -> int:
    if self.request.retries < 2:
        raise self.retry(exc=KeyError("not yet"), countdown=0.2)
    return value


@app.task(name="tasks.spin")
def spin(seconds: float) -> str:
    """Busy for ``seconds`` in short sleeps; "soft limit" when the soft time limit came."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return "finished"
