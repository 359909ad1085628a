"""Live interop through machinery's AMQP result backend with real Go machinery v1 and v2.

- Go producers → our worker (Redis broker, and RabbitMQ broker) → Go's ``GetWithTimeout``
  gets the typed results, the failure text, the chain, the group and the chord, reading
  the states our worker published;
- Go v1 or v2 and our worker consume one queue: chords of 50, several rounds, the callback
  once per chord (Go's claim and ours exclude each other; who won is counted);
- our producer → Go v1/v2 workers → our ``AsyncResult.get`` reads Go's states;
- machinery's own AMQP example program (``v2/example/amqp``, unchanged but for its URLs)
  sends its whole tour to our worker and completes.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.app import Bridge
from bridge.backends.amqp import AmqpBackend
from bridge.brokers.amqp import AmqpBroker
from bridge.config import AMQPConfig
from tests.amqp_go_model import go_connection
from tests.interop.conftest import VERSIONS
from tests.interop.go_example import build_amqp_example, example_app
from tests.interop.go_processes import go_produce, go_worker
from tests.interop.interop_app import echo_task_name, make_app
from tests.interop.workflow_checks import check_workflows
from tests.worker_thread import worker_thread

pytestmark = pytest.mark.go

BROKERS = ("redis", "amqp")
ECHO = {"int64": [0, -(2**63), 2**63 - 1], "uint64": [2**64 - 1], "float32": [0.1],
        "float64": [-2.5e-8], "string": ["<&> é \u2028"], "bool": [True],
        "[]string": [["a", "b"], []], "[]byte": [b"\x00\xff<>&"], "[]int8": [[-128, 127]]}


def fresh_queue() -> str:
    return f"interop_amqpres_{uuid.uuid4().hex[:10]}"


def our_app(broker: str, amqp_url: str, redis_url: str, queue: str) -> Bridge:
    """The interop task set, results in RabbitMQ; tasks on Redis or on RabbitMQ (configured
    as the harness configures machinery's AMQP broker)."""
    app = make_app(redis_url, queue)
    settings: dict[str, Any] = {"result_backend": amqp_url}
    if broker == "amqp":
        settings.update(broker=amqp_url, amqp=AMQPConfig(binding_key=queue, prefetch_count=16))
    app.config = dataclasses.replace(app.config, **settings)
    assert isinstance(app.backend, AmqpBackend)
    return app


@contextmanager
def python_worker(broker: str, amqp_url: str, redis_url: str, queue: str,
                  concurrency: int = 8, jitter: float = 0.0) -> Iterator[Bridge]:
    """Our worker on ``queue``; ``jitter``: ``add`` takes up to that many seconds more, so
    our worker finishes a chord's last member about as often as a Go worker does."""
    app = our_app(broker, amqp_url, redis_url, queue)
    if jitter:
        @app.task("add")
        def add(*values: int) -> int:
            time.sleep(random.uniform(0.0, jitter))
            return sum(values)

    if isinstance(app.broker, AmqpBroker):
        app.broker.declare(queue)  # consuming from here on: nothing published now is missed
    with worker_thread(app, concurrency):
        yield app


def broker_url(broker: str, amqp_url: str, redis_url: str) -> str:
    return amqp_url if broker == "amqp" else redis_url


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_python_worker(version: str, broker: str, harness: dict[str, Path],
                                   amqp_url: str, redis_url: str) -> None:
    """Every scenario of the harness: basic, every arg type, chain (Go reads the steps first:
    its reads take the states), group, chord, ETA, failure text, RetryLater."""
    queue = fresh_queue()
    counters = ["--redis", redis_url] if broker == "amqp" else []
    with python_worker(broker, amqp_url, redis_url, queue):
        out = go_produce(harness[version], broker_url(broker, amqp_url, redis_url), queue,
                         "all", *counters, backend=amqp_url)
    passed = int(out.splitlines()[-1].split()[0])
    assert passed >= 150  # 156 with v1.10.8 / v2.0.16
    for check in ("ok types/", "ok chain/step_2", "ok chain/result", "ok group/member_5",
                  "ok chord/counter_later", "ok fail/", "ok retry/", "ok eta/"):
        assert check in out, check


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_go_and_python_workers_share_chords_of_50(version: str, broker: str,
                                                  harness: dict[str, Path], amqp_url: str,
                                                  redis_url: str) -> None:
    """A Go worker and ours on one queue finish chords of 50 (six rounds): the callback runs
    once per chord, whichever side claims the group's states (both do, over the rounds:
    the count of ours is printed)."""
    queue = fresh_queue()
    claims: list[bool] = []
    url = broker_url(broker, amqp_url, redis_url)
    extra = ["--redis", redis_url, "--prefetch", "4"] if broker == "amqp" else []
    with python_worker(broker, amqp_url, redis_url, queue, 4, jitter=0.03) as app:
        backend = app.backend
        trigger = backend.trigger_chord

        def observed(group_uuid: str) -> bool:  # counts our claims; the backend runs as is
            claims.append(trigger(group_uuid))
            return claims[-1]

        backend.trigger_chord = observed  # type: ignore[method-assign]
        with go_worker(harness[version], url, queue, 4, backend=amqp_url, extra=extra):
            out = go_produce(harness[version], url, queue, ",".join(["chord"] * 6),
                             "--n", "50", *extra, backend=amqp_url)
    assert out.count("ok chord/callback") == 6
    assert out.count("ok chord/counter_later") == 6  # once, also 500 ms later
    print(f"{version}/{broker}: our worker claimed {sum(claims)} of 6 chords "
          f"({len(claims) - sum(claims)} claims refused), Go's worker the rest")


@pytest.mark.parametrize("version", VERSIONS)
def test_python_producer_go_worker(version: str, harness: dict[str, Path], amqp_url: str,
                                   redis_url: str) -> None:
    """Our AsyncResult reads the states a Go worker published: typed results, a chain, a
    group, a chord, a countdown, the failure text, a Go retry."""
    queue = fresh_queue()
    app = our_app("redis", amqp_url, redis_url, queue)
    with go_worker(harness[version], redis_url, queue, backend=amqp_url):
        sent = [(go_type, value, app.send_task(echo_task_name(go_type), value))
                for go_type, values in ECHO.items() for value in values]
        for go_type, value, result in sent:
            got = result.get(timeout=60)
            assert got == (pytest.approx(value) if go_type == "float32" else value), go_type
        key = check_workflows(app)  # chain, group, chord, countdown, failure, retry
        time.sleep(0.3)
    assert int(redis.Redis.from_url(redis_url).get(key) or 0) == 1
    app.close()


@pytest.fixture(scope="module")
def example_binary(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """machinery's v2/example/amqp, built for this session's RabbitMQ."""
    return build_amqp_example(amqp_url, tmp_path_factory.mktemp("example_amqp"))


def test_machinery_amqp_example_against_our_worker(example_binary: Path,
                                                   amqp_url: str) -> None:
    """``example send``: single tasks, slices, a group, a chord, a chain, a panic and a long
    task, every result read by Go's AsyncResult.Get through the AMQP backend, from our
    worker (the example's fixed queues are emptied first)."""
    with go_connection(amqp_url) as channel:
        for queue in ("machinery_tasks", "machinery_task"):
            channel.queue_delete(queue)
    app = example_app(amqp_url, long_running_seconds=2.0)
    assert isinstance(app.broker, AmqpBroker)
    app.broker.declare()
    with worker_thread(app, 4):
        run = subprocess.run([str(example_binary), "send"], capture_output=True, text=True,
                             timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    for line in ("1 + 1 = 2", "sum([1, 2]) = 3", "sum([1.5, 2.7]) = 4.2",
                 'concat(["foo", "bar"]) = foobar', 'split(["foo"]) = [f o o]',
                 "(1 + 1) * (2 + 2) * (5 + 6) = 88",
                 "(((1 + 1) + (2 + 2)) + (5 + 6)) * 4 = 68",
                 "Task panicked and returned error = oops", "Long running task returned = "):
        assert line in output, line
