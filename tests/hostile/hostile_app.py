"""The app a hostile test's worker process runs (``mbridge worker -A tests.hostile.hostile_app``).

Broker and result backend: $BRIDGE_HOSTILE_REDIS; machinery queue: $BRIDGE_HOSTILE_QUEUE.
Each run of ``h.record`` appends its key to the Redis list ``hostile:runs:<queue>``, so a
test counts runs across processes.
"""

from __future__ import annotations

import os

import redis

from bridge.app import Bridge
from bridge.config import Config

URL = os.environ.get("BRIDGE_HOSTILE_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BRIDGE_HOSTILE_QUEUE", "hostile_tasks")
RUNS = f"hostile:runs:{QUEUE}"
app = Bridge(Config(broker=URL, result_backend=URL, default_queue=QUEUE))
_client = redis.Redis.from_url(URL)


@app.task("h.record")
def record(key: str) -> str:
    """Note that ``key`` ran."""
    _client.rpush(RUNS, key)
    return key
