"""Live interop on one Redis with real Go machinery v1 and v2: Go cannot tell us from Go.

- Go producer → our worker → Go's AsyncResult.GetWithTimeout gets the right typed values;
- our producer → a Go worker → our AsyncResult.get gets them;
- Go and Python workers on one queue run a chord of 50: the callback fires exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.app import Bridge
from tests.interop.conftest import VERSIONS
from tests.interop.go_processes import go_produce, go_worker
from tests.interop.interop_app import echo_task_name, make_app
from tests.interop.python_corpus import EDGE
from tests.interop.workflow_checks import check_workflows
from tests.worker_thread import worker_thread

pytestmark = pytest.mark.go


@contextmanager
def python_worker(url: str, queue: str, concurrency: int = 8) -> Iterator[Bridge]:
    app = make_app(url, queue)
    with worker_thread(app, concurrency):
        yield app


def fresh_queue() -> str:
    return f"interop_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_python_worker(version: str, harness: dict[str, Path],
                                   redis_url: str) -> None:
    queue = fresh_queue()
    with python_worker(redis_url, queue):
        out = go_produce(harness[version], redis_url, queue, "all")
    passed = int(out.splitlines()[-1].split()[0])
    assert passed >= 30  # every arg type, chain, group, chord, eta, fail, retry


@pytest.mark.parametrize("version", VERSIONS)
def test_python_producer_go_worker(version: str, harness: dict[str, Path],
                                   redis_url: str) -> None:
    queue = fresh_queue()
    app = make_app(redis_url, queue)  # its registry types the args; no worker of ours runs
    with go_worker(harness[version], redis_url, queue):
        sent: list[tuple[str, Any, Any]] = []
        for go_type, values in _typed_edge_values():
            for value in values:
                sent.append((go_type, value, app.send_task(echo_task_name(go_type), value)))
        for go_type, value, result in sent:
            got = result.get(timeout=60)
            assert got == _expected(go_type, value), (go_type, value, got)
        key = check_workflows(app)
    assert int(redis.Redis.from_url(redis_url).get(key) or 0) == 1
    app.close()


def test_go_and_python_workers_share_a_chord_of_50(harness: dict[str, Path],
                                                   redis_url: str) -> None:
    queue = fresh_queue()
    with go_worker(harness["v2"], redis_url, queue, 4), \
            go_worker(harness["v1"], redis_url, queue, 4), \
            python_worker(redis_url, queue, 4):
        for _ in range(3):
            out = go_produce(harness["v2"], redis_url, queue, "chord", "--n", "50")
            assert "ok chord/" in out


def _typed_edge_values() -> Iterator[tuple[str, list[Any]]]:
    for go_type, values in EDGE.items():
        yield go_type, values
        yield f"[]{go_type}", [values, []]
    yield "[]byte", [b"\x00\xff<>&", b""]


def _expected(go_type: str, value: Any) -> Any:
    from bridge.types import to_python, to_wire

    return to_python(go_type, to_wire(go_type, value))


def test_delayed_tasks_move_exactly_once_beside_go_workers(harness: dict[str, Path],
                                                           redis_url: str) -> None:
    """Go v1, Go v2 and our movers race on one delayed_tasks ZSET: each task runs once."""
    queue = fresh_queue()
    app = make_app(redis_url, queue)
    keys = [f"once_{uuid.uuid4().hex}" for _ in range(300)]
    with go_worker(harness["v2"], redis_url, queue, 4), \
            go_worker(harness["v1"], redis_url, queue, 4), \
            python_worker(redis_url, queue, 4):
        results = app.send_batch([app.signature("count_call", key, countdown=1)
                                  for key in keys])
        for result in results:
            assert result.get(timeout=120) == 0
        time.sleep(1.0)  # a duplicate would still be on its way
    counts = redis.Redis.from_url(redis_url).mget(keys)
    assert [int(c or 0) for c in counts] == [1] * len(keys)
    app.close()
