"""A Bridge app for worker subprocess tests (`mbridge worker -A tests.integration.sample_app`).

Broker and backend come from $BRIDGE_TEST_REDIS; a short heartbeat TTL lets a killed
worker's messages come back quickly.
"""

from __future__ import annotations

import os
import time

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config

URL = os.environ.get("BRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BRIDGE_TEST_QUEUE", "sample_tasks")
config = Config(broker=URL, result_backend=URL, default_queue=QUEUE)
app = Bridge(config, broker=RedisBroker(URL, config, heartbeat_ttl=2.0),
             backend=RedisBackend(URL, config))


@app.task("sleep_ms")
def sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


@app.task("pid_after")
def pid_after(ms: int) -> int:
    """The id of the process that ran it, after ``ms`` milliseconds (``--processes``)."""
    time.sleep(ms / 1000)
    return os.getpid()


def square(value: int) -> int:
    """Module-level so a process pool can run it."""
    return value * value


def die(code: int) -> int:
    """Ends the process running it at once (a child of ``--pool processes``): exit code
    ``code``, or killed by signal ``-code`` (the OOM killer's SIGKILL: -9)."""
    if code < 0:
        os.kill(os.getpid(), -code)
    os._exit(code)


def slow_square(value: int) -> int:
    time.sleep(0.3)
    return value * value


app.register("square", square)
