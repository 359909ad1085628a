"""``mbridge migrate`` against the real peers: Celery-produced tasks run by a Go machinery worker,
machinery-produced tasks run by a Celery worker, with a SIGKILLed migrator in the middle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest
import redis
from celery import Celery

from bridge.backends.celery_redis import CeleryRedisBackend
from bridge.backends.redis import RedisBackend
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.machinery import PENDING, SUCCESS, Arg, Signature
from tests.celery_worker import celery_worker
from tests.interop.go_processes import go_worker

pytestmark = pytest.mark.go

ROOT = Path(__file__).resolve().parents[2]


def run_migrator(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``python -m bridge.cli migrate ARGS -q`` to the end."""
    return subprocess.run([sys.executable, "-m", "bridge.cli", "migrate", *args, "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def kill_migrator_when(args: Sequence[str], dst_url: str, dst_queue: str, count: int) -> None:
    """Start the migrator and SIGKILL it once ``dst_queue`` holds ``count`` messages."""
    client = redis.Redis.from_url(dst_url)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "migrate", *args, "-q"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while client.llen(dst_queue) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_all(check: Callable[[list[str]], list[bool]], ids: list[str],
             timeout: float) -> list[str]:
    """Poll until ``check(ids_chunk)`` reports every id done; the ids not done at the end."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        left = []
        for start in range(0, len(pending), 5000):
            chunk = pending[start:start + 5000]
            left += [i for i, ok in zip(chunk, check(chunk), strict=True) if not ok]
        pending = left
        if pending:
            time.sleep(1)
    return pending


def test_100k_celery_tasks_migrated_with_a_kill_run_by_a_go_worker(
        harness: dict[str, Path], redis_url: str) -> None:
    src_queue, dst_queue = f"cel_{uuid.uuid4().hex[:8]}", f"go_{uuid.uuid4().hex[:8]}"
    total, by_celery = 100_000, 3000
    expected: dict[str, int] = {}
    # 3,000 from a real Celery 5.6 producer (send_task, its own envelopes and headers)
    app = Celery("producer", broker=redis_url, backend=redis_url)
    with app.producer_or_acquire() as producer:
        for i in range(by_celery):
            result = app.send_task("add", args=[i, 1], queue=src_queue, producer=producer)
            expected[result.id] = i + 1
    app.close()
    # the rest built by our codec exactly as Celery writes them, published in bulk
    broker = CeleryRedisBroker.from_url(redis_url)
    for start in range(by_celery, total, 10_000):
        tasks = [new_task("add", [i, 1]) for i in range(start, min(start + 10_000, total))]
        broker.publish_messages(src_queue, [encode_task(t) for t in tasks])
        expected.update((t.id, t.args[0] + 1) for t in tasks)
    assert broker.queue_depth(src_queue) == total

    src = f"celery+{redis_url}?queue={src_queue}"
    dst = f"machinery+{redis_url}?queue={dst_queue}"
    kill_migrator_when([src, dst, "--batch", "1000", "--results"], redis_url, dst_queue, 30_000)
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.llen(dst_queue) < total, "the migrator was not killed mid-way"
    done = run_migrator([src, dst, "--batch", "1000", "--results"])
    assert done.returncode == 0, done.stdout + done.stderr
    # exactly once: every id once in the machinery queue, nothing left in Celery's
    ids = [json.loads(raw)["UUID"] for raw in client.lrange(dst_queue, 0, -1)]
    assert len(ids) == total and set(ids) == set(expected)
    assert broker.queue_depth(src_queue) == 0
    broker.close()
    backend = RedisBackend(redis_url)
    sample = backend.get_states(ids[:100])
    assert all(s is not None and s.state == PENDING and s.task_name == "add" for s in sample)

    def succeeded(chunk: list[str]) -> list[bool]:
        states = backend.get_states(chunk)
        return [s is not None and s.state == SUCCESS
                and s.results is not None and s.results[0] is not None
                and s.results[0].value == expected[i] for i, s in zip(chunk, states, strict=True)]

    with go_worker(harness["v2"], redis_url, dst_queue, concurrency=16):
        missing = wait_all(succeeded, ids, timeout=600)
    assert missing == [], f"{len(missing)} tasks not completed by Go, e.g. {missing[:3]}"


def test_10k_machinery_tasks_migrated_run_by_a_celery_worker(harness: dict[str, Path],
                                                             redis_url: str) -> None:
    src_queue, dst_queue = f"mach_{uuid.uuid4().hex[:8]}", f"cel_{uuid.uuid4().hex[:8]}"
    expected: dict[str, int] = {}
    # 200 from Go machinery's own SendTask ...
    sent = subprocess.run([str(harness["v2"]), "send", "--broker", redis_url, "--backend",
                           redis_url, "--queue", src_queue, "--task", "tasks.add",
                           "--arg", "int64=20", "--arg", "int64=22", "--count", "200"],
                          capture_output=True, text=True, timeout=120, check=True)
    expected.update((line.strip(), 42) for line in sent.stdout.splitlines() if line.strip())
    assert len(expected) == 200
    # ... and 9,800 Signatures from our producer
    broker = RedisBroker(redis_url)
    sigs = [Signature(uuid=f"task_{uuid.uuid4()}", name="tasks.add", routing_key=src_queue,
                      args=[Arg(type="int64", value=i), Arg(type="int64", value=1)])
            for i in range(9800)]
    broker.publish(sigs)
    broker.close()
    expected.update((s.uuid, (s.args or [])[0].value + 1) for s in sigs)

    src = f"machinery+{redis_url}?queue={src_queue}"
    dst = f"celery+{redis_url}?queue={dst_queue}"
    dry = run_migrator([src, dst, "--dry-run", "--json"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["tasks"]["tasks.add"]["moved"] == 10_000
    done = run_migrator([src, dst, "--batch", "2000"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert redis.Redis.from_url(redis_url).llen(src_queue) == 0

    backend = CeleryRedisBackend.from_url(redis_url)

    def succeeded(chunk: list[str]) -> list[bool]:
        metas = cast("list[bytes | None]",
                     backend.client.mget([backend.task_key(i) for i in chunk]))
        out = []
        for task_id, raw in zip(chunk, metas, strict=True):
            meta = backend.decode(raw) if raw else {}
            out.append(meta.get("status") == SUCCESS and meta.get("result") == expected[task_id])
        return out

    with celery_worker(redis_url, redis_url, queues=[dst_queue], pool="prefork",
                       concurrency=4, extra_env={"CELERY_TEST_PREFETCH": "16"}):
        missing = wait_all(succeeded, list(expected), timeout=600)
    assert missing == [], f"{len(missing)} tasks not completed by Celery, e.g. {missing[:3]}"


def test_results_carried_while_go_and_our_workers_race_the_migration(
        harness: dict[str, Path], redis_url: str) -> None:
    """``--results`` writes PENDING before it publishes (as SendTask does), so workers
    already serving the destination never see a finished task set back to PENDING."""
    from tests.interop.interop_app import make_app
    from tests.worker_thread import worker_thread

    src_queue, dst_queue = f"cel_{uuid.uuid4().hex[:8]}", f"go_{uuid.uuid4().hex[:8]}"
    total = 10_000
    broker = CeleryRedisBroker.from_url(redis_url)
    tasks = [new_task("add", [i, 1]) for i in range(total)]
    broker.publish_messages(src_queue, [encode_task(t) for t in tasks])
    expected = {t.id: t.args[0] + 1 for t in tasks}
    broker.close()
    src = f"celery+{redis_url}?queue={src_queue}"
    dst = f"machinery+{redis_url}?queue={dst_queue}"
    backend = RedisBackend(redis_url)

    def succeeded(chunk: list[str]) -> list[bool]:
        states = backend.get_states(chunk)
        return [s is not None and s.state == SUCCESS and s.results is not None
                and s.results[0] is not None and s.results[0].value == expected[i]
                for i, s in zip(chunk, states, strict=True)]

    with go_worker(harness["v2"], redis_url, dst_queue, concurrency=8), \
            worker_thread(make_app(redis_url, dst_queue), concurrency=8):
        done = run_migrator([src, dst, "--batch", "200", "--results"])
        assert done.returncode == 0, done.stdout + done.stderr
        missing = wait_all(succeeded, list(expected), timeout=300)
        assert missing == [], f"{len(missing)} tasks not SUCCESS, e.g. {missing[:3]}"
    time.sleep(1)  # anything still writing would have written by now
    states = backend.get_states(list(expected))
    assert sum(1 for s in states if s is None or s.state != SUCCESS) == 0
    backend.close()
