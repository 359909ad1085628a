"""Celery events from ``mbridge worker -E``, read by the stock ``celery events --dump`` and by
Flower's HTTP API, on Redis and on RabbitMQ: worker online/heartbeat/offline and every task
event of a success, a failure and a retried task."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.localredis import free_port
from tests.integration.test_celery_remote_control import CELERY, ROOT, Node


@pytest.fixture(params=["redis", "amqp"])
def node(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Node]:
    # the session's Redis (not a private one): a Celery AsyncResult collected after its Redis
    # is gone spends a minute reconnecting in __del__
    broker = redis_url if request.param == "redis" else request.getfixturevalue("amqp_url")
    started = Node(tmp_path, broker, redis_url, "-E")
    try:
        yield started
    finally:
        started.close()


def _tasks(node: Node) -> dict[str, Any]:
    ok = node.client.send_task("tasks.add", (1, 2), queue=node.queue)
    bad = node.client.send_task("tasks.fail", ("no luck",), queue=node.queue)
    again = node.client.send_task("tasks.retry_twice", (7,), queue=node.queue)
    assert ok.get(timeout=30) == 3 and again.get(timeout=30) == 7
    with pytest.raises(ValueError):
        bad.get(timeout=30)
    return {"ok": ok.id, "bad": bad.id, "again": again.id}


def test_celery_events_dump_follows_the_worker(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    with open(out, "wb") as sink:
        dump = subprocess.Popen([CELERY, "-A", "tests.celery_app", "events", "--dump"],
                                env=node.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        node.wait_for(lambda: f"{node.name} [" in out.read_text() and "heartbeat:" in
                      out.read_text(), "a heartbeat in celery events --dump")
        ids = _tasks(node)
        time.sleep(1.0)
        node.control("shutdown")
        node.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while "] shutdown: " not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    text = out.read_text()
    mine = [line for line in text.splitlines() if line.startswith(f"{node.name} [")]
    assert any("] shutdown: " in line for line in mine), text[-2000:]  # worker-offline
    assert any("heartbeat: active=" in line and "sw_ident=machinery-bridge" in line
               for line in mine)

    def seen(kind: str, task_id: str) -> bool:
        return any(f"task {kind}: " in line and task_id in line for line in mine)

    for kind in ("received", "started", "succeeded"):
        assert seen(kind, ids["ok"]), (kind, text[-3000:])
    assert any("task succeeded: tasks.add" in line and "result=3" in line for line in mine)
    assert seen("failed", ids["bad"]) and seen("retried", ids["again"])
    assert any("task failed" in line and "ValueError('no luck')" in line for line in mine)
    assert seen("succeeded", ids["again"])
    assert any("task retried" in line and "exception=KeyError('not yet')" in line
               for line in mine)



def _api(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


def test_flower_lists_the_worker_and_its_tasks(node: Node, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**node.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    with open(log, "wb") as sink:
        flower = subprocess.Popen([CELERY, "-A", "tests.celery_app", "flower",
                                   f"--port={port}", "--address=127.0.0.1"],
                                  env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        node.wait_for(lambda: node.name in (_api(port, "/api/workers?refresh=1") or {}),
                      "Flower's worker list", 60)
        worker = _api(port, "/api/workers")[node.name]
        assert sorted(worker["registered"]) == sorted([
            "tasks.add", "tasks.concat", "tasks.echo", "tasks.fail", "tasks.mul",
            "tasks.noop", "tasks.retry_twice", "tasks.sleep", "tasks.spin", "tasks.xsum"])
        assert worker["stats"]["pool"]["max-concurrency"] == 2
        assert [q["name"] for q in worker["active_queues"]] == [node.queue]
        ids = _tasks(node)
        states = {"ok": "SUCCESS", "bad": "FAILURE", "again": "SUCCESS"}

        def settled() -> bool:
            tasks = _api(port, "/api/tasks") or {}
            return all(tasks.get(ids[k], {}).get("state") == s for k, s in states.items())
        node.wait_for(settled, "Flower's task states", 30)
        info = _api(port, f"/api/task/info/{ids['ok']}")
        assert info["name"] == "tasks.add" and info["result"] == "3"
        assert info["worker"] == node.name and info["runtime"] is not None
        failed = _api(port, f"/api/task/info/{ids['bad']}")
        assert "ValueError" in failed["exception"] and failed["traceback"]
    finally:
        flower.terminate()
        flower.wait(timeout=15)
        if os.environ.get("BRIDGE_KEEP_FLOWER_LOG"):
            print(log.read_text()[-3000:])
