"""One bridge worker serving Celery producers and Go producers, against the real things.

Celery 5.6.2 clients send to a Celery queue on Redis and wait with
``AsyncResult.get()``; Go machinery (v1 and v2) sends to a machinery queue and
waits with its own ``AsyncResult.Get``; the tasks are plain Python functions and
the tasks of a real Celery app (tests/celery_app.py) imported as ``--celery-app``
would import them.
"""

from __future__ import annotations

import gc
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, group, signature
from celery.exceptions import TaskRevokedError

from bridge.app import Bridge
from bridge.backends.celery_redis import CeleryRedisBackend
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.celery_import import register_celery_tasks
from bridge.config import Config
from bridge.handlers.celery import celery_handler_factory
from bridge.protocol.celery import encode_task, new_task
from bridge.retry import RetryLater
from tests import celery_app as celery_tasks
from tests.worker_thread import worker_thread


@dataclass
class Served:
    url: str
    celery_queue: str
    machinery_queue: str
    producer: Celery
    bridge: Bridge


def _close_producer(app: Celery) -> None:
    """Drop the client's pending results while Redis is up (Celery unsubscribes each one in
    ``AsyncResult.__del__``, retrying for 20 s once Redis is gone), then its connections."""
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
    app.close()


def _producer(url: str, queue: str, **conf: Any) -> Celery:
    app = Celery(f"producer-{uuid.uuid4().hex[:6]}", broker=url, backend=url)
    app.conf.update(task_default_queue=queue, result_accept_content=["json", "msgpack"],
                    accept_content=["json", "msgpack"], **conf)
    return app


@pytest.fixture
def served(redis_url: str) -> Iterator[Served]:
    """A bridge worker on a fresh Celery queue and a fresh machinery queue of one Redis."""
    celery_queue = f"cq_{uuid.uuid4().hex[:8]}"
    machinery_queue = f"mq_{uuid.uuid4().hex[:8]}"
    # the imported Celery app retries through its own producer: point it at this Redis
    celery_tasks.app.conf.update(broker_url=redis_url, result_backend=redis_url,
                                 task_default_queue=celery_queue)
    bridge = Bridge(Config(broker=redis_url, result_backend=redis_url,
                           default_queue=machinery_queue))
    register_celery_tasks(bridge, celery_tasks.app)

    @bridge.task("py.divide")
    def divide(a: float, b: float) -> float:
        return a / b

    calls: dict[str, int] = {}

    @bridge.task("py.later")
    def later(key: str) -> int:
        calls[key] = calls.get(key, 0) + 1
        if calls[key] < 3:
            raise RetryLater(0.2)
        return calls[key]

    @bridge.task("py.kw")
    def kw(a: int, *, scale: int = 1, label: str = "") -> str:
        return f"{label}{a * scale}"

    producer = _producer(redis_url, celery_queue)
    handler = celery_handler_factory(redis_url, redis_url, celery_queue)
    try:
        with worker_thread(bridge, 4, handlers=[handler], handoff_window=0.5):
            yield Served(redis_url, celery_queue, machinery_queue, producer, bridge)
    finally:
        _close_producer(producer)


def test_celery_client_gets_results_and_errors(served: Served) -> None:
    app = served.producer
    assert app.send_task("tasks.add", (2, 3)).get(timeout=20) == 5
    assert app.send_task("py.divide", (7, 2)).get(timeout=20) == 3.5
    assert app.send_task("py.kw", (4,), {"scale": 3, "label": "x="}).get(timeout=20) == "x=12"
    assert app.send_task("tasks.echo", (1, "a"), {"k": [1, 2]}).get(timeout=20) == {
        "args": [1, "a"], "kwargs": {"k": [1, 2]}}
    with pytest.raises(ValueError, match="bad <&> é"):
        app.send_task("tasks.fail", ("bad <&> é",)).get(timeout=20)
    with pytest.raises(ZeroDivisionError):
        app.send_task("py.divide", (1, 0)).get(timeout=20)
    result = app.send_task("tasks.mul", (6, 7))
    assert result.get(timeout=20) == 42
    meta = CeleryRedisBackend.from_url(served.url).get_meta(result.id)
    assert (meta["status"], meta["result"], meta["children"]) == ("SUCCESS", 42, [])
    assert meta["date_done"] and meta["task_id"] == result.id


def test_celery_canvas_runs_on_the_bridge(served: Served) -> None:
    app = served.producer
    add = signature("tasks.add", app=app)
    mul = signature("tasks.mul", app=app)
    assert chain(add.clone((1, 2)), add.clone((3,)), mul.clone((10,))).apply_async().get(
        timeout=30) == 60
    assert chord([add.clone((i, i)) for i in range(6)],
                 signature("tasks.xsum", app=app)).apply_async().get(timeout=30) == 30
    assert group(add.clone((i, 1)) for i in range(4)).apply_async().get(timeout=30) == [
        1, 2, 3, 4]
    linked = app.send_task("tasks.add", (1, 1), link=signature("tasks.mul", args=(5,)))
    assert linked.get(timeout=20) == 2
    child = linked.children[0] if linked.children else None
    assert child is not None and child.get(timeout=20) == 10  # children meta, as Celery


def test_celery_semantics_countdown_expires_retries(served: Served) -> None:
    app = served.producer
    sent = time.time()
    assert app.send_task("tasks.add", (1, 1), countdown=1).get(timeout=20) == 2
    assert time.time() - sent >= 1.0
    expired = app.send_task("tasks.add", (1, 1), expires=0.01, countdown=0.5)
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=20)
    assert app.send_task("tasks.retry_twice", (7,)).get(timeout=30) == 7
    key = uuid.uuid4().hex
    result = app.send_task("py.later", (key,))
    assert result.get(timeout=30) == 3
    assert result.state == "SUCCESS"


@pytest.mark.parametrize("protocol,serializer", [(1, "json"), (2, "msgpack"), (1, "msgpack")])
def test_protocols_and_serializers(served: Served, protocol: int, serializer: str) -> None:
    app = _producer(served.url, served.celery_queue, task_protocol=protocol,
                    task_serializer=serializer)
    try:
        assert app.send_task("tasks.add", (20, 22)).get(timeout=20) == 42
        assert app.send_task("tasks.echo", ("é",), {"n": None}).get(timeout=20) == {
            "args": ["é"], "kwargs": {"n": None}}
    finally:
        _close_producer(app)


def test_bad_celery_input_is_parked_and_the_worker_goes_on(served: Served) -> None:
    client = redis.Redis.from_url(served.url)
    broker = CeleryRedisBroker.from_url(served.url)
    client.lpush(served.celery_queue, b"not json at all")
    bad = new_task("tasks.add", [1, 2])
    message = encode_task(bad)
    broken = type(message)(body=b"[[1, 2]]", content_type=message.content_type,
                           content_encoding=message.content_encoding,
                           headers=message.headers, properties=message.properties)
    broker.publish_messages(served.celery_queue, [broken])  # a 1-element body
    assert served.producer.send_task("tasks.add", (2, 2)).get(timeout=20) == 4
    deadline = time.monotonic() + 10
    while len(broker.dead_letters(served.celery_queue)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    reasons = [d["reason"] for d in broker.dead_letters(served.celery_queue)]
    assert any("not a kombu envelope" in r for r in reasons)
    assert any("undecodable Celery message" in r for r in reasons)
    meta = CeleryRedisBackend.from_url(served.url).get_meta(bad.id)
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "DecodeError"
    broker.close()


def test_unregistered_celery_task_waits_in_the_queue(served: Served) -> None:
    result = served.producer.send_task("nobody.has.this", (1,))
    broker = CeleryRedisBroker.from_url(served.url)
    deadline = time.monotonic() + 10
    while not broker.delayed_count(served.celery_queue) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.delayed_count(served.celery_queue) == 1  # backing off, not lost
    assert result.state == "PENDING"
    broker.close()


def _go_send(binary: Path, url: str, queue: str, task: str, *args: str
             ) -> tuple[str, Any]:
    out = subprocess.run(
        [str(binary), "send", "--broker", url, "--backend", url, "--queue", queue, "-q",
         "--task", task, *(a for arg in args for a in ("--arg", arg)), "--wait",
         "--timeout", "30"],
        capture_output=True, text=True, timeout=90, check=True).stdout.strip()
    task_uuid, _, line = out.partition(" ")
    reply = json.loads(line)
    if "results" in reply:  # the harness's canonical form of each value, with its Go type
        reply["results"] = [(r["type"], r["canon"]) for r in reply["results"]]
    return task_uuid, reply


@pytest.mark.go
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_go_producer_calls_celery_app_tasks(served: Served, harness: dict[str, Path],
                                            version: str) -> None:
    _, reply = _go_send(harness[version], served.url, served.machinery_queue,
                                "tasks.add", "int64=40", "int64=2")
    assert reply == {"results": [("int64", "42")]}, reply
    _, reply = _go_send(harness[version], served.url, served.machinery_queue,
                        "tasks.concat", "string=a<", "string=b")
    assert reply == {"results": [("string", "a<b")]}, reply
    _, reply = _go_send(harness[version], served.url, served.machinery_queue,
                        "tasks.fail", "string=from go")
    assert reply == {"error": "from go"}, reply
    # and Celery clients are served by the same worker at the same time
    assert served.producer.send_task("tasks.add", (1, 2)).get(timeout=20) == 3


def test_celery_clients_on_rabbitmq(redis_url: str, amqp_url: str) -> None:
    """The same worker on a Celery queue of RabbitMQ (kombu's pyamqp layout), results in
    Celery's Redis backend."""
    queue = f"amqp_cq_{uuid.uuid4().hex[:8]}"
    bridge = Bridge(Config(broker=redis_url, result_backend=redis_url))
    register_celery_tasks(bridge, celery_tasks.app)
    producer = Celery("amqp-producer", broker=amqp_url, backend=redis_url)
    producer.conf.update(task_default_queue=queue)
    handler = celery_handler_factory(amqp_url, redis_url, queue)
    try:
        with worker_thread(bridge, 4, handlers=[handler], machinery=False):
            assert producer.send_task("tasks.add", (20, 22)).get(timeout=30) == 42
            add = signature("tasks.add", app=producer)
            assert chain(add.clone((1, 2)), add.clone((3,))).apply_async().get(
                timeout=30) == 6
            with pytest.raises(ValueError, match="rabbit"):
                producer.send_task("tasks.fail", ("rabbit",)).get(timeout=30)
            assert producer.send_task("tasks.add", (1, 1), countdown=1).get(timeout=30) == 2
    finally:
        _close_producer(producer)
