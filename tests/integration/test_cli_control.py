"""``mbridge inspect --workers`` and ``mbridge control`` for machinery workers (Go has no
remote control): workers alive with their queues, tasks and rates, a killed worker shown as
gone, ping, revoke and shutdown by node name, a stopped worker leaving the registry; and
``inspect`` / ``requeue-dead`` on a Celery endpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from bridge import new_uuid
from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _mbridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bridge.cli", "worker", "-A",
                                 "tests.integration.sample_app", "-c", "2", "-n", name,
                                 "--recover-after", "2"],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_machinery_workers_seen_and_steered(tmp_path: Path, private_redis_url: str) -> None:
    queue = f"ctl_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BRIDGE_TEST_REDIS": private_redis_url, "BRIDGE_TEST_QUEUE": queue,
           "BROKER": private_redis_url, "RESULT_BACKEND": private_redis_url,
           "DEFAULT_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    config = Config(broker=private_redis_url, result_backend=private_redis_url,
                    default_queue=queue)
    producer = Bridge(config, broker=RedisBroker(private_redis_url, config),
                      backend=RedisBackend(private_redis_url, config))
    log = tmp_path / "workers.log"
    first = _worker(env, "first@test", log)
    try:
        _wait(lambda: "first@test: pong" in _mbridge(env, "control", "ping").stdout,
              "the first worker's pong")
        results = [producer.send_task("sleep_ms", 10) for _ in range(12)]
        assert [r.get(timeout=20) for r in results] == [10] * 12
        shown = _mbridge(env, "inspect", "--workers").stdout
        assert "worker first@test: alive" in shown and f"consuming {queue}" in shown, shown
        assert f"{queue}: 12 processed" in shown, shown
        assert "registered: 3 tasks: pid_after, sleep_ms, square" in shown, shown

        # a killed worker holding messages: listed as gone until recovered
        second = _worker(env, "second@test", log)
        _wait(lambda: "second@test: pong" in _mbridge(env, "control", "ping", "-d",
                                                       "second@test").stdout, "second's pong")
        first.send_signal(signal.SIGSTOP)  # only the second takes the slow tasks
        slow = [producer.send_task("sleep_ms", 5000) for _ in range(2)]
        client = redis.Redis.from_url(private_redis_url)
        _wait(lambda: client.llen(queue) == 0, "the second worker to take both")
        second.kill()
        second.wait(timeout=10)
        time.sleep(2.5)  # its 2 s heartbeat TTL (--recover-after 2) runs out
        shown = _mbridge(env, "inspect").stdout
        assert "(gone: back to the queue at the next recovery)" in shown, shown
        first.send_signal(signal.SIGCONT)
        assert [r.get(timeout=30) for r in slow] == [5000, 5000]  # recovered by the first
        client.close()

        doomed = producer.signature("sleep_ms", 10)
        doomed.uuid = new_uuid("task_")
        reply = _mbridge(env, "control", "revoke", doomed.uuid)
        assert f"first@test: tasks {{'{doomed.uuid}'}} flagged as revoked" in reply.stdout, reply
        sent = producer.send(doomed)
        _wait(lambda: getattr(sent.state(), "state", "") == "FAILURE",
              "the revoked task's FAILURE")
        state = sent.state()
        assert state is not None and "revoked" in state.error
        assert "revoked: discarded" in log.read_text()
        assert _mbridge(env, "control", "shutdown", "-d", "first@test").returncode == 0
        assert first.wait(timeout=30) == 0
        shown = _mbridge(env, "inspect").stdout
        assert "held by worker" not in shown, shown  # a clean stop leaves the registry
        nobody = _mbridge(env, "control", "ping")
        assert nobody.returncode == 1 and "no worker replied" in nobody.stderr
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        producer.close()


def test_inspect_and_requeue_dead_on_a_celery_endpoint(tmp_path: Path,
                                                       private_redis_url: str) -> None:
    """A Celery queue named by its endpoint: depth, dead letters of an undecodable message our
    worker parked, the worker seen through the Celery broker, replay of the dead letter."""
    queue = f"cel_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CELERY_TEST_BROKER": private_redis_url,
           "CELERY_TEST_BACKEND": private_redis_url, "PYTHONPATH": str(ROOT)}
    endpoint = f"celery+{private_redis_url}?queue={queue}"
    with open(tmp_path / "worker.log", "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "--celery-app", "tests.celery_app",
             "--celery-queue", queue, "--no-machinery", "-n", "celery-side@test"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(private_redis_url)
    try:
        _wait(lambda: "celery-side@test: pong" in _mbridge(
            env, "control", "ping", "--broker", endpoint).stdout, "the worker's pong")
        bad = (b'{"body": "bm90IGpzb24=", "content-encoding": "utf-8", "content-type": '
               b'"application/json", "headers": {"id": "x1", "task": "tasks.add", "lang": "py"}'
               b', "properties": {"delivery_tag": "t1", "body_encoding": "base64", '
               b'"delivery_info": {"exchange": "", "routing_key": "' + queue.encode() +
               b'"}, "priority": 0}}')
        client.lpush(queue, bad)
        _wait(lambda: "dead letters: 1" in _mbridge(env, "inspect", endpoint).stdout,
              "the parked message in inspect")
        shown = _mbridge(env, "inspect", endpoint, "--workers").stdout
        assert f"queue {queue}: 0 waiting" in shown and "undecodable" in shown, shown
        assert "worker celery-side@test: alive" in shown, shown
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        replay = _mbridge(env, "requeue-dead", endpoint)
        assert replay.stdout.strip() == "requeued 1 message(s)", replay
        assert client.llen(queue) == 1 and "dead letters: 0" in _mbridge(
            env, "inspect", endpoint).stdout
    finally:
        if worker.poll() is None:
            worker.kill()
        client.close()
