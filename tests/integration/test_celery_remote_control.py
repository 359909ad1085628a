"""Celery's remote control against ``mbridge worker --celery-app``, driven by the stock
``celery`` command of a Celery 5 install, on Redis and on RabbitMQ: status, inspect (ping,
active, reserved, registered, stats, active_queues, revoked, query_task, conf, report),
revoke (before sending, and of an ETA task waiting in the delayed set), cancel_consumer /
add_consumer, and shutdown."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
CELERY_57 = str(ROOT / ".venv-celery57" / "bin" / "celery")
"""Celery's current release, installed apart by .ci/setup: its stock CLI as a client."""


class Node:
    """One worker process and the stock celery command pointed at its broker."""

    def __init__(self, tmp: Path, broker: str, backend: str, *extra: str,
                 celery: str = CELERY) -> None:
        self.celery_bin = celery
        self.queue = f"rc_{uuid.uuid4().hex[:8]}"
        self.name = f"rc-{uuid.uuid4().hex[:6]}@testhost"
        self.env = {**os.environ, "CELERY_TEST_BROKER": broker, "CELERY_TEST_BACKEND": backend,
                    "PYTHONPATH": str(ROOT)}
        self.log = tmp / "worker.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "worker", "--celery-app",
                 "tests.celery_app", "--celery-queue", self.queue, "--no-machinery", "-c", "2",
                 "-n", self.name, *extra], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                cwd=ROOT)
        self.client = Celery("rc-client", broker=broker, backend=backend)
        self.wait_for(lambda: self.inspect("ping") == {"ok": "pong"}, "the first ping")

    def celery(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.celery_bin, "-A", "tests.celery_app", *args], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    def inspect(self, command: str, *args: str) -> Any:
        """Our node's reply to ``celery inspect COMMAND --json`` (None: no reply)."""
        run = self.celery("inspect", command, *args, "-d", self.name, "-t", "3", "--json")
        if run.returncode != 0 or not run.stdout.strip():
            return None
        return json.loads(run.stdout).get(self.name)

    def control(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.celery("control", command, *args, "-d", self.name, "-t", "3")

    def wait_for(self, check: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, \
                f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def close(self) -> None:
        gc.collect()
        self.client.backend.result_consumer.stop() if hasattr(
            self.client.backend, "result_consumer") else None
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture(params=["redis", "amqp"])
def node(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Node]:
    # the session's Redis (not a private one): a Celery AsyncResult collected after its Redis
    # is gone spends a minute reconnecting in __del__
    broker = redis_url if request.param == "redis" else request.getfixturevalue("amqp_url")
    started = Node(tmp_path, broker, redis_url)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(params=["redis", "amqp"])
def node57(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Node]:
    """The worker, steered by Celery 5.7's stock command."""
    assert Path(CELERY_57).exists(), "celery 5.7 is missing: run bash .ci/setup"
    broker = redis_url if request.param == "redis" else request.getfixturevalue("amqp_url")
    started = Node(tmp_path, broker, redis_url, celery=CELERY_57)
    try:
        yield started
    finally:
        started.close()


def test_status_and_inspect(node: Node) -> None:
    _status_and_inspect(node)


def test_celery_57_status_inspect_and_revoke(node57: Node) -> None:
    assert node57.celery("--version").stdout.startswith("5.7.")
    _status_and_inspect(node57)
    _revoke(node57)


def _status_and_inspect(node: Node) -> None:
    status = node.celery("status", "-t", "3")
    assert f"{node.name}: OK" in status.stdout, status.stdout + status.stderr
    assert sorted(node.inspect("registered")) == sorted([
        "tasks.add", "tasks.concat", "tasks.echo", "tasks.fail", "tasks.mul", "tasks.noop",
        "tasks.retry_twice", "tasks.sleep", "tasks.spin", "tasks.xsum"])
    [queue] = node.inspect("active_queues")
    assert queue["name"] == queue["routing_key"] == node.queue
    assert node.inspect("active") == [] and node.inspect("scheduled") == []

    slow = node.client.send_task("tasks.sleep", (3,), queue=node.queue)
    node.wait_for(lambda: [t["id"] for t in node.inspect("active") or []] == [slow.id],
                  "the running task in inspect active")
    [running] = node.inspect("active")
    assert running["name"] == "tasks.sleep" and running["args"] == [3]
    assert running["hostname"] == node.name and running["time_start"] > 0
    assert running["delivery_info"]["routing_key"] == node.queue
    assert node.inspect("query_task", slow.id)[slow.id][0] == "active"
    assert slow.get(timeout=30) == 3
    assert node.client.send_task("tasks.add", (1, 2), queue=node.queue).get(timeout=30) == 3
    node.wait_for(lambda: (node.inspect("stats") or {}).get("total") ==
                  {"tasks.sleep": 1, "tasks.add": 1}, "the totals in inspect stats")
    stats = node.inspect("stats")
    assert stats["pool"]["max-concurrency"] == 2 and stats["pid"] == node.proc.pid
    assert "password" not in stats["broker"]
    conf = node.inspect("conf")
    assert conf["task_acks_late"] is True
    assert "machinery-bridge" in node.inspect("report")["ok"]


def test_revoke_before_sending_and_while_delayed(node: Node) -> None:
    _revoke(node)


def _revoke(node: Node) -> None:
    early = str(uuid.uuid4())
    reply = node.control("revoke", early)
    assert "flagged as revoked" in reply.stdout, reply.stdout + reply.stderr
    assert node.inspect("revoked") == [early]
    result = node.client.send_task("tasks.echo", ("never",), queue=node.queue, task_id=early)
    node.wait_for(lambda: result.state == "REVOKED", "the revoked task's REVOKED state")

    waiting = node.client.send_task("tasks.echo", ("later",), queue=node.queue, countdown=3)
    time.sleep(0.5)  # fetched, sent to the delayed set
    node.control("revoke", waiting.id)
    node.wait_for(lambda: waiting.state == "REVOKED", "the delayed task's REVOKED state", 20)
    ran = node.client.send_task("tasks.echo", ("ran",), queue=node.queue)
    assert ran.get(timeout=30) == {"args": ["ran"], "kwargs": {}}  # the worker goes on
    assert "revoked: discarded" in node.log.read_text()


def test_cancel_and_add_consumer(node: Node) -> None:
    reply = node.control("cancel_consumer", node.queue)
    assert f"no longer consuming from {node.queue}" in reply.stdout, reply.stdout + reply.stderr
    node.wait_for(lambda: node.inspect("active_queues") == [], "the queue cancelled")
    parked = node.client.send_task("tasks.add", (2, 3), queue=node.queue)
    time.sleep(2)
    assert parked.state == "PENDING"
    reply = node.control("add_consumer", node.queue)
    assert f"add consumer {node.queue}" in reply.stdout, reply.stdout + reply.stderr
    assert parked.get(timeout=30) == 5
    other = f"{node.queue}_more"
    node.control("add_consumer", other)
    node.wait_for(lambda: len(node.inspect("active_queues") or []) == 2, "a second queue")
    assert node.client.send_task("tasks.mul", (4, 5), queue=other).get(timeout=30) == 20


def test_unsupported_commands_say_why_and_shutdown_stops_the_worker(node: Node) -> None:
    reply = node.control("rate_limit", "tasks.add", "10/m")
    assert "no rate limits" in reply.stdout + reply.stderr
    node.control("shutdown")
    assert node.proc.wait(timeout=30) == 0
    text = node.log.read_text()
    assert "Got shutdown from remote" in text and "worker stopped" in text
