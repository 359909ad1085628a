"""Worker processes under SIGTERM and SIGKILL: graceful exit, and no task ever lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(redis_url: str) -> Iterator[dict[str, str]]:
    queue = f"sig_{uuid.uuid4().hex[:8]}"
    yield {**os.environ, "BRIDGE_TEST_REDIS": redis_url, "BRIDGE_TEST_QUEUE": queue,
           "PYTHONPATH": str(ROOT)}


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.integration.sample_app",
         "-l", "warning", *args], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def producer(env: dict[str, str]) -> Bridge:
    url = env["BRIDGE_TEST_REDIS"]
    config = Config(broker=url, result_backend=url, default_queue=env["BRIDGE_TEST_QUEUE"])
    return Bridge(config, broker=RedisBroker(url, config), backend=RedisBackend(url, config))


def count_states(app: Bridge, uuids: list[str], state: str) -> int:
    return sum(1 for s in app.backend.get_states(uuids) if s is not None and s.state == state)


def test_sigterm_finishes_running_tasks_and_exits_zero(env: dict[str, str]) -> None:
    app = producer(env)
    results = app.send_batch([app.signature("sleep_ms", 700) for _ in range(8)])
    uuids = [r.task_uuid for r in results]
    proc = start_worker(env, "-c", "4")
    deadline = time.time() + 20
    while count_states(app, uuids, "STARTED") < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    done = count_states(app, uuids, "SUCCESS")
    assert done >= 4  # the running ones finished
    client = redis.Redis.from_url(env["BRIDGE_TEST_REDIS"])
    waiting = client.llen(env["BRIDGE_TEST_QUEUE"])
    assert done + waiting == 8  # the rest are back in the queue, none held or lost
    app.close()


def test_sigkill_mid_batch_loses_nothing(env: dict[str, str]) -> None:
    app = producer(env)
    results = app.send_batch([app.signature("sleep_ms", 5) for _ in range(1000)])
    uuids = [r.task_uuid for r in results]
    first = start_worker(env, "-c", "8")
    deadline = time.time() + 60
    while count_states(app, uuids, "SUCCESS") < 200 and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = count_states(app, uuids, "SUCCESS")
    assert killed_at < 1000
    second = start_worker(env, "-c", "8")
    try:
        deadline = time.time() + 120
        while count_states(app, uuids, "SUCCESS") < 1000 and time.time() < deadline:
            time.sleep(0.2)
        assert count_states(app, uuids, "SUCCESS") == 1000
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        app.close()
