"""Live interop on one RabbitMQ (results in Redis) with real Go machinery v1 and v2.

The harness configures machinery's AMQP broker as its examples do (durable direct exchange
``machinery_exchange``, BindingKey = the queue); our side uses the same settings:

- Go producer → our worker (AmqpBroker) → Go's AsyncResult gets the typed values, ETA tasks
  through Go's delay queue and retries through ours included;
- our producer → a Go worker → our AsyncResult.get, a countdown through our delay queue and
  a Go retry through Go's;
- Go v1, Go v2 and our worker consume one queue (each declares it): a chord of 50 runs once.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from bridge.app import Bridge
from bridge.brokers.amqp import AmqpBroker
from bridge.config import AMQPConfig
from tests.interop.conftest import VERSIONS
from tests.interop.go_processes import go_produce, go_worker
from tests.interop.interop_app import echo_task_name, make_app
from tests.interop.workflow_checks import check_workflows
from tests.worker_thread import worker_thread

pytestmark = pytest.mark.go

ECHO = {"int64": [0, -(2**63), 2**63 - 1], "uint8": [255], "float64": [0.1, -2.5e-8],
        "string": ["<&> é \u2028"], "bool": [True], "[]string": [["a", "b"], []],
        "[]byte": [b"\x00\xff<>&"]}


def amqp_app(amqp_url: str, redis_url: str, queue: str) -> Bridge:
    """The interop task set with an AMQP broker (as the harness configures it) and the
    Redis result backend."""
    app = make_app(redis_url, queue)
    app.config = dataclasses.replace(app.config, broker=amqp_url,
                                     amqp=AMQPConfig(binding_key=queue, prefetch_count=16))
    assert isinstance(app.broker, AmqpBroker)
    return app


@contextmanager
def python_worker(amqp_url: str, redis_url: str, queue: str,
                  concurrency: int = 8) -> Iterator[Bridge]:
    app = amqp_app(amqp_url, redis_url, queue)
    app.broker.declare(queue)  # consuming from here on: nothing published now is missed
    with worker_thread(app, concurrency):
        yield app


def wait_for_consumers(amqp_url: str, queue: str, count: int) -> None:
    """Until ``queue`` has ``count`` consumers (ours starts with its first fetch)."""
    deadline = time.monotonic() + 30
    with Connection(amqp_url) as conn:
        while True:
            _, _, consumers = conn.default_channel.queue_declare(queue, passive=True)
            if consumers >= count:
                return
            assert time.monotonic() < deadline, f"{consumers} consumers on {queue}"
            time.sleep(0.05)


def fresh_queue() -> str:
    return f"interop_amqp_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_python_worker(version: str, harness: dict[str, Path], amqp_url: str,
                                   redis_url: str) -> None:
    queue = fresh_queue()
    with python_worker(amqp_url, redis_url, queue):
        out = go_produce(harness[version], amqp_url, queue, "all", backend=redis_url)
    passed = int(out.splitlines()[-1].split()[0])
    assert passed >= 30  # every arg type, chain, group, chord, eta, fail, retry
    assert "ok eta/not_before_eta" in out  # through Go's delay queue
    assert "ok retry/" in out  # our RetryLater through the same delay queues


@pytest.mark.parametrize("version", VERSIONS)
def test_python_producer_go_worker(version: str, harness: dict[str, Path], amqp_url: str,
                                   redis_url: str) -> None:
    queue = fresh_queue()
    app = amqp_app(amqp_url, redis_url, queue)  # its registry types the args; no worker
    with go_worker(harness[version], amqp_url, queue, backend=redis_url):
        sent: list[tuple[str, Any, Any]] = []
        for go_type, values in ECHO.items():
            for value in values:
                sent.append((go_type, value, app.send_task(echo_task_name(go_type), value)))
        for go_type, value, result in sent:
            assert result.get(timeout=60) == value, go_type
        # the countdown waits in delay.<ms>.machinery_exchange.<queue>; Go's worker retries
        # retry_later twice through Go's delay queue
        key = check_workflows(app)
    assert int(redis.Redis.from_url(redis_url).get(key) or 0) == 1
    app.close()


def test_go_and_python_workers_share_a_queue(harness: dict[str, Path], amqp_url: str,
                                             redis_url: str) -> None:
    """Each worker declares the exchange, the queue and its binding: none is refused, all
    consume, and a chord of 50 split between them fires its callback once."""
    queue = fresh_queue()
    with go_worker(harness["v2"], amqp_url, queue, 4, backend=redis_url), \
            go_worker(harness["v1"], amqp_url, queue, 4, backend=redis_url), \
            python_worker(amqp_url, redis_url, queue, 4):
        wait_for_consumers(amqp_url, queue, 3)
        for _ in range(2):
            out = go_produce(harness["v2"], amqp_url, queue, "chord", "--n", "50",
                             backend=redis_url)
            assert "ok chord/" in out
