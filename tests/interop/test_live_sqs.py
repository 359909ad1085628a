"""Live interop on one SQS endpoint (moto's server mode) with real Go machinery v1
(aws-sdk-go) and v2 (aws-sdk-go-v2), results in Redis: Go cannot tell us from Go.

- Go producer → our worker → Go's AsyncResult.GetWithTimeout gets the right typed values
  (every arg type, chain, group, chord, ETA, failure text, ErrRetryTaskLater);
- our producer → a Go worker → our AsyncResult.get gets them;
- Go v1, Go v2 and our worker on one queue run a chord of 50: the callback fires once;
- a FIFO queue keeps each message group's order across the three workers;
- a task longer than the visibility timeout runs once, a Go worker polling beside it;
- ETAs beyond SQS's limit (scaled down) reach Go workers, never before they are due.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.app import Bridge
from bridge.brokers.sqs import SqsBroker
from bridge.brokers.sqs_layout import MAX_DELAY
from bridge.config import SQSConfig
from tests.backend_servers import MotoServer
from tests.interop.conftest import VERSIONS
from tests.interop.go_processes import go_produce, go_worker
from tests.interop.interop_app import echo_task_name, make_app
from tests.interop.test_live_redis import _expected, _typed_edge_values
from tests.interop.workflow_checks import check_workflows
from tests.worker_thread import worker_thread

pytestmark = pytest.mark.go

SQS_FLAGS = ("--sqs-wait", "1")


@pytest.fixture(autouse=True)
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region for boto3 in this process (the endpoint is the broker URL's)."""
    for name, value in moto_server.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)


def go_env(moto: MotoServer) -> dict[str, str]:
    """The Go processes' environment: moto's endpoint, region and test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **moto.env()}


def fresh_queue(moto: MotoServer, fifo: bool = False) -> str:
    name = f"interop_sqs_{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
    moto.client("sqs").create_queue(QueueName=name,
                                    Attributes={"FifoQueue": "true"} if fifo else {})
    return name


def sqs_app(moto: MotoServer, redis_url: str, queue: str, max_delay: int = MAX_DELAY,
            **sqs: Any) -> Bridge:
    """The interop task set on the SQS broker (SQS's delay limit scaled down to
    ``max_delay``), results and counters in Redis."""
    template = make_app(redis_url, queue)  # its broker is never opened
    config = dataclasses.replace(template.config, broker=moto.sqs_broker_url,
                                 sqs=SQSConfig(**{"wait_time_seconds": 1, **sqs}))
    app = Bridge(config, broker=SqsBroker(config.broker, config, max_delay=max_delay,
                                          lookup_interval=0.5))
    app.tasks = template.tasks
    return app


@contextmanager
def python_worker(moto: MotoServer, redis_url: str, queue: str, concurrency: int = 8,
                  max_delay: int = MAX_DELAY, **sqs: Any) -> Iterator[Bridge]:
    app = sqs_app(moto, redis_url, queue, max_delay, **sqs)
    with worker_thread(app, concurrency):
        yield app


@contextmanager
def go_sqs_worker(binary: Path, moto: MotoServer, redis_url: str, queue: str,
                  concurrency: int = 8, *extra: str) -> Iterator[None]:
    with go_worker(binary, moto.sqs_broker_url, queue, concurrency, backend=redis_url,
                   extra=(*SQS_FLAGS, *extra), env=go_env(moto)):
        yield


def go_sqs_produce(binary: Path, moto: MotoServer, redis_url: str, queue: str,
                   scenario: str, *extra: str) -> str:
    return go_produce(binary, moto.sqs_broker_url, queue, scenario, *SQS_FLAGS, *extra,
                      backend=redis_url, env=go_env(moto))


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_python_worker(version: str, harness: dict[str, Path],
                                   moto_server: MotoServer, redis_url: str) -> None:
    """Go's own eta scenario passes here, though Go's DelaySeconds truncates (a Go worker
    runs that task ~0.5 s early): our consumer holds a message back until its ETA."""
    queue = fresh_queue(moto_server)
    with python_worker(moto_server, redis_url, queue):
        out = go_sqs_produce(harness[version], moto_server, redis_url, queue, "all")
    passed = int(out.splitlines()[-1].split()[0])
    assert passed >= 30  # every arg type, chain, group, chord, eta, fail, retry
    assert "ok eta/" in out and "ok retry/" in out and "ok fail/" in out


@pytest.mark.parametrize("version", VERSIONS)
def test_python_producer_go_worker(version: str, harness: dict[str, Path],
                                   moto_server: MotoServer, redis_url: str) -> None:
    queue = fresh_queue(moto_server)
    app = sqs_app(moto_server, redis_url, queue)  # no worker of ours runs
    with go_sqs_worker(harness[version], moto_server, redis_url, queue):
        sent: list[tuple[str, Any, Any]] = []
        for go_type, values in _typed_edge_values():
            for value in values:
                sent.append((go_type, value, app.send_task(echo_task_name(go_type), value)))
        for go_type, value, result in sent:
            assert result.get(timeout=60) == _expected(go_type, value), (go_type, value)
        # DelaySeconds rounded up: a Go worker never runs a countdown task before its ETA
        key = check_workflows(app, not_before_ms=2000)
    assert int(redis.Redis.from_url(redis_url).get(key) or 0) == 1
    app.close()


def test_go_v1_v2_and_python_workers_share_a_chord_of_50(
        harness: dict[str, Path], moto_server: MotoServer, redis_url: str) -> None:
    queue = fresh_queue(moto_server)
    with go_sqs_worker(harness["v2"], moto_server, redis_url, queue, 4), \
            go_sqs_worker(harness["v1"], moto_server, redis_url, queue, 4), \
            python_worker(moto_server, redis_url, queue, 4):
        for version in ("v2", "v1"):
            out = go_sqs_produce(harness[version], moto_server, redis_url, queue, "chord",
                                 "--n", "50")
            assert "ok chord/" in out  # the scenario checks the callback ran exactly once


def test_fifo_queue_keeps_each_group_in_order(harness: dict[str, Path],
                                              moto_server: MotoServer, redis_url: str) -> None:
    """Three message groups of stamp tasks through Go v1, Go v2 and our worker: each
    group's Redis list (the order its tasks ran) is its results in send order."""
    queue = fresh_queue(moto_server, fifo=True)
    app = sqs_app(moto_server, redis_url, queue)
    groups = {f"g{n}": f"fifo_{uuid.uuid4().hex}" for n in range(3)}
    with go_sqs_worker(harness["v2"], moto_server, redis_url, queue, 1), \
            go_sqs_worker(harness["v1"], moto_server, redis_url, queue, 1), \
            python_worker(moto_server, redis_url, queue, 2):
        results: dict[str, list[Any]] = {group: [] for group in groups}
        for _ in range(6):
            for group, key in groups.items():
                sig = app.signature("stamp", key)
                sig.broker_message_group_id = group
                results[group].append(app.send(sig))
        ran = {group: [r.get(timeout=120) for r in rs] for group, rs in results.items()}
    client = redis.Redis.from_url(redis_url)
    for group, key in groups.items():
        assert [int(v) for v in client.lrange(key, 0, -1)] == ran[group]
        assert ran[group] == sorted(ran[group])
    app.close()


def test_a_task_longer_than_the_visibility_timeout_runs_once(
        harness: dict[str, Path], moto_server: MotoServer, redis_url: str) -> None:
    """Visibility 2 s, tasks of 5 s: our heartbeat keeps them from a Go v2 worker polling
    the same queue (machinery's own heartbeat is off by default)."""
    queue = fresh_queue(moto_server)
    key = f"long_{uuid.uuid4().hex}"
    counters = redis.Redis.from_url(redis_url)
    with python_worker(moto_server, redis_url, queue, 4, visibility_timeout=2) as app:

        @app.task("slow_count")
        def slow_count(name: str) -> int:
            count = int(counters.incr(name))
            time.sleep(5)
            return count

        results = [app.send_task("slow_count", f"{key}_{n}") for n in range(4)]
        deadline = time.monotonic() + 60
        while not all((state := app.backend.get_state(r.task_uuid)) is not None
                      and state.state == "STARTED" for r in results):
            assert time.monotonic() < deadline, "our worker did not start the tasks"
            time.sleep(0.05)
        with go_sqs_worker(harness["v2"], moto_server, redis_url, queue, 4,
                           "--sqs-visibility", "2"):  # would receive any message that shows
            assert [r.get(timeout=60) for r in results] == [1, 1, 1, 1]
            time.sleep(3)  # a duplicate would surface within a visibility timeout
    assert [int(v or 0) for v in counters.mget([f"{key}_{n}" for n in range(4)])] == [1] * 4


@pytest.mark.parametrize("version", VERSIONS)
def test_etas_beyond_the_limit_reach_a_go_worker_never_early(
        version: str, harness: dict[str, Path], moto_server: MotoServer,
        redis_url: str) -> None:
    """SQS's 900 s scaled down to 2 s: countdowns of 3 to 6 s hop through the delay queue
    (moved on by our worker, which serves another queue) and reach the Go worker's queue
    only when due (Go's own producer fails these with "Max AWS SQS delay exceeded")."""
    queue = fresh_queue(moto_server)
    app = sqs_app(moto_server, redis_url, queue, max_delay=2)
    with go_sqs_worker(harness[version], moto_server, redis_url, queue), \
            python_worker(moto_server, redis_url, fresh_queue(moto_server), 2, max_delay=2):
        sent = [(time.time_ns() // 1_000_000, seconds,
                 app.send_task("stamp", f"far_{uuid.uuid4().hex}", countdown=seconds))
                for seconds in (3, 4.5, 6)]
        for sent_at, seconds, result in sent:
            assert result.get(timeout=60) >= sent_at + seconds * 1000
    app.close()
