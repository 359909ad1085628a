"""The app a fault test's worker runs (`mbridge worker -A tests.faults.fault_app`).

The broker is $BRIDGE_FAULT_BROKER (Redis or RabbitMQ; default: the backend), the result
backend $BRIDGE_FAULT_REDIS. Each run of ``record`` appends its task id to
the file $BRIDGE_FAULT_RUNS (one line, one O_APPEND write), outside the Redis under test,
so a test can count executions across broker outages and restarts.
"""

from __future__ import annotations

import os
import time

from bridge.app import Bridge
from bridge.config import AMQPConfig, Config

URL = os.environ.get("BRIDGE_FAULT_REDIS", "redis://127.0.0.1:6379/0")
RUNS = os.environ.get("BRIDGE_FAULT_RUNS", os.devnull)
config = Config(broker=os.environ.get("BRIDGE_FAULT_BROKER", URL), result_backend=URL,
                default_queue="fault_tasks", amqp=AMQPConfig(binding_key="fault_tasks"))
app = Bridge(config)


@app.task("record")
def record(key: str, ms: int) -> str:
    """Sleep ``ms`` milliseconds, then note that ``key`` ran."""
    time.sleep(ms / 1000)
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)
    return key
