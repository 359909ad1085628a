"""A traced Celery task's SUCCESS meta, left by Celery's tracer to the worker's batch, is the
meta Celery's own store writes (same keys in the same order, same values, same expiry), is
never written over a stored SUCCESS, and is only deferred where nothing can tell."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, signals

from bridge.brokers.base import Delivery
from bridge.handlers.celery_defer import store_deferred
from bridge.handlers.celery_trace import CeleryTracer, Traced
from bridge.protocol.celery import CeleryTask, new_task


@pytest.fixture
def app(private_redis_url: str) -> Iterator[Celery]:
    app = Celery("defer_test", broker=private_redis_url, backend=private_redis_url)
    app.conf.update(result_extended=True, result_expires=600)

    @app.task(name="t.echo")
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="t.fail")
    def fail() -> None:
        raise ValueError("boom")

    class Hooked(app.Task):  # type: ignore[name-defined,misc]
        def on_success(self, *args: Any) -> None:
            """A hook that runs after the store: the store is not deferred."""

    @app.task(name="t.hooked", base=Hooked)
    def hooked(x: int) -> int:
        return x

    yield app
    app.close()


@pytest.fixture
def client(private_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis_url)
    yield client
    client.close()


def run(app: Celery, name: str, *args: Any) -> tuple[CeleryTask, Traced]:
    tracer = CeleryTracer(app, "w1@host")
    ctask = new_task(name, args, {"k": "v"} if name == "t.echo" else None)
    return ctask, tracer.run(app.tasks[name], ctask, Delivery(b"", "q1"))


def meta(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    raw = client.get(f"celery-task-meta-{task_id}")
    return None if raw is None else dict(json.loads(raw))


def test_the_deferred_meta_is_the_one_celerys_store_writes(app: Celery,
                                                           client: redis.Redis) -> None:
    def listener(**_: Any) -> None:
        """Someone listening after the store: Celery stores it itself."""

    signals.task_postrun.connect(listener)
    try:
        reference_task, reference = run(app, "t.echo", 1, [2])
    finally:
        signals.task_postrun.disconnect(listener)
    assert reference.deferred is None
    theirs = meta(client, reference_task.id)

    ctask, traced = run(app, "t.echo", 1, [2])
    assert traced.state == "SUCCESS" and traced.deferred is not None
    assert meta(client, ctask.id) is None  # not written by the tracer: left to the batch
    assert store_deferred([traced.deferred]) == [1]
    ours = meta(client, ctask.id)
    assert ours is not None and theirs is not None
    assert list(ours) == list(theirs)
    differ = {"date_done", "task_id"}
    assert {k: v for k, v in ours.items() if k not in differ} == {
        k: v for k, v in theirs.items() if k not in differ}
    assert ours["task_id"] == ctask.id and ours["result"] == {"args": [1, [2]],
                                                              "kwargs": {"k": "v"}}
    assert 590 < client.ttl(f"celery-task-meta-{ctask.id}") <= 600
    assert app.AsyncResult(ctask.id).get(timeout=5) == ours["result"]
    # a SUCCESS is never written over (as Celery's store checks first)
    assert store_deferred([traced.deferred]) == [0]


def test_hooks_listeners_and_failures_keep_celerys_own_store(app: Celery,
                                                             client: redis.Redis) -> None:
    ctask, traced = run(app, "t.hooked", 5)
    assert traced.deferred is None and meta(client, ctask.id)["result"] == 5  # type: ignore[index]

    ctask, traced = run(app, "t.fail")
    assert traced.state == "FAILURE" and traced.deferred is None
    assert meta(client, ctask.id)["status"] == "FAILURE"  # type: ignore[index]

    def listener(**_: Any) -> None:
        """Listens to task_success."""

    signals.task_success.connect(listener)
    try:
        ctask, traced = run(app, "t.echo")
    finally:
        signals.task_success.disconnect(listener)
    assert traced.deferred is None and meta(client, ctask.id)["status"] == "SUCCESS"  # type: ignore[index]
    # and without anything in the way, deferred again
    ctask, traced = run(app, "t.echo")
    assert traced.deferred is not None and meta(client, ctask.id) is None


def test_a_key_of_another_type_is_not_written_over(app: Celery, client: redis.Redis) -> None:
    ctask, traced = run(app, "t.echo")
    assert traced.deferred is not None
    client.hset(f"celery-task-meta-{ctask.id}", "x", "1")
    assert store_deferred([traced.deferred]) == [-1]
    assert client.type(f"celery-task-meta-{ctask.id}") == b"hash"


def test_a_task_with_something_to_follow_stores_its_own_result(app: Celery,
                                                                client: redis.Redis) -> None:
    follow = {"task": "t.echo", "args": [], "kwargs": {}, "options": {}, "subtask_type": None,
              "immutable": True, "chord_size": None}
    for options in ({"chain": [follow]}, {"callbacks": [follow]}, {"group": "g1"}):
        ctask = new_task("t.echo", (), None, **options)  # type: ignore[arg-type]
        traced = CeleryTracer(app, "w1@host").run(app.tasks["t.echo"], ctask,
                                                  Delivery(b"", "q1"))
        assert traced.state == "SUCCESS" and traced.deferred is None, options
        assert meta(client, ctask.id)["status"] == "SUCCESS"  # type: ignore[index]


def test_the_worker_parks_a_task_whose_deferred_meta_meets_a_foreign_key(
        tmp_path: Path, redis_url: str) -> None:
    """End to end: our worker serving a Celery app runs a leaf task whose result key holds a
    hash; the meta is not written over it and the message is parked, with why."""
    from tests.integration.test_celery_remote_control import Node

    node = Node(tmp_path, redis_url, redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        task_id = f"foreign-{uuid.uuid4().hex}"
        client.hset(f"celery-task-meta-{task_id}", "owner", "another app")
        node.client.send_task("tasks.add", (2, 3), task_id=task_id, queue=node.queue)
        node.wait_for(lambda: "holds another type than a string" in node.log.read_text(),
                      "the park")
        assert client.type(f"celery-task-meta-{task_id}") == b"hash"
        said = re.search(rf"parked a message of {node.queue} in (\S+): .*another type",
                         node.log.read_text())
        assert said is not None, node.log.read_text()[-2000:]
        dead = client.lrange(said.group(1), 0, -1)
        assert len(dead) == 1 and task_id.encode() in dead[0], dead
        # the worker goes on: the next task's result is stored (deferred) and read
        assert node.client.send_task("tasks.add", (1, 1), queue=node.queue).get(
            timeout=20) == 2
    finally:
        client.close()
        node.close()


def test_metas_of_many_threads_go_out_in_one_call(app: Celery, client: redis.Redis) -> None:
    """Celery makes a result backend (and a Redis client) per thread; the deferred metas of
    every thread's backend to the same server share one client, so one script call."""
    import threading

    traced: list[Traced] = []

    def one() -> None:
        traced.append(run(app, "t.echo", len(traced))[1])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
        thread.join()
    deferred = [t.deferred for t in traced]
    assert all(d is not None for d in deferred)
    assert len({id(d.client) for d in deferred if d is not None}) == 1
    client.config_resetstat()
    assert store_deferred([d for d in deferred if d is not None]) == [1, 1, 1, 1]
    stats = client.info("commandstats")["cmdstat_evalsha"]
    assert stats["calls"] - stats.get("failed_calls", 0) == 1  # (a NOSCRIPT first: failed)
