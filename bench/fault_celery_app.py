"""The Celery 5 app of the fault harness (bench/faults.py): the same ``record`` task as
tests/faults/fault_app.py and the Go harness's ``record``.

``celery -A bench.fault_celery_app worker`` with $BRIDGE_FAULT_BROKER (Redis or
``pyamqp://``), $BRIDGE_FAULT_REDIS (result backend) and $BRIDGE_FAULT_RUNS (the file each
run of ``record`` appends its key to, one O_APPEND write). Late acks, so a task is
acknowledged after it ran, as ours and machinery's are; everything else is Celery's
default (prefetch multiplier 4, Redis visibility timeout 1 hour).
"""

from __future__ import annotations

import os
import time

from celery import Celery

URL = os.environ.get("BRIDGE_FAULT_REDIS", "redis://127.0.0.1:6379/0")
RUNS = os.environ.get("BRIDGE_FAULT_RUNS", os.devnull)

app = Celery("fault_bench", broker=os.environ.get("BRIDGE_FAULT_BROKER", URL), backend=URL)
app.conf.update(
    task_acks_late=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="record")  # type: ignore[untyped-decorator]
def record(key: str, ms: int) -> str:
    """Sleep ``ms`` milliseconds, then note that ``key`` ran."""
    time.sleep(ms / 1000)
    with open(RUNS, "ab", buffering=0) as runs:  # O_APPEND, one unbuffered write
        runs.write(f"{key}\n".encode())
    return key
