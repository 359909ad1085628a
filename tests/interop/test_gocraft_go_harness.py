"""The gocraft/work Go harness itself: real Go enqueuer, pool, dead set and web UI."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.interop.gocraft_go import go_enqueue, go_pool, wait_for_records, workwebui


def namespace() -> str:
    """A namespace of this test's own in the session's Redis."""
    return f"gocraft_{uuid.uuid4().hex[:10]}"


def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll ``check`` until it is true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def get_json(url: str) -> Any:
    """GET ``url``, checking that it answers JSON."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.load(response)


def test_go_enqueue_runs_on_go_pool(gocraft_bin: dict[str, Path], redis_url: str,
                                    tmp_path: Path) -> None:
    """Three jobs from the Go enqueuer run once each on the Go pool, through the middleware."""
    ns, record = namespace(), tmp_path / "record.jsonl"
    enqueued = [go_enqueue(gocraft_bin["harness"], redis_url, ns, "greet", {"i": i, "s": "<&>"})
                for i in range(3)]
    ids = {job["id"] for [job] in enqueued}
    assert len(ids) == 3 and not any(job["dup"] for [job] in enqueued)
    with go_pool(gocraft_bin["harness"], redis_url, ns, ["greet"], record):
        runs = wait_for_records(record, 3)
    assert {run["id"] for run in runs} == ids
    assert sorted(run["args"]["i"] for run in runs) == [0, 1, 2]
    assert all(run["mw"] and run["outcome"] == "ok" and run["pool"] == "go" for run in runs)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(f"{ns}:jobs:greet") == 0
    assert client.smembers(f"{ns}:known_jobs") == {b"greet"}


def test_go_failing_job_ends_in_dead_set(gocraft_bin: dict[str, Path], redis_url: str,
                                         tmp_path: Path) -> None:
    """A job that always fails, max_fails=2: two runs, then one member in ``<ns>:dead``;
    a duplicate unique enqueue is refused."""
    ns, record = namespace(), tmp_path / "record.jsonl"
    [job] = go_enqueue(gocraft_bin["harness"], redis_url, ns, "doomed", {"k": 1}, unique=True)
    [dup] = go_enqueue(gocraft_bin["harness"], redis_url, ns, "doomed", {"k": 1}, unique=True)
    assert dup == {"id": None, "name": "doomed", "dup": True}
    client = redis.Redis.from_url(redis_url)
    with go_pool(gocraft_bin["harness"], redis_url, ns,
                 ["doomed:fail,max_fails=2,backoff=0"], record):
        runs = wait_for_records(record, 2)
        wait_until(lambda: client.zcard(f"{ns}:dead"), "the dead set")
    assert [(run["id"], run["fails"], run["outcome"]) for run in runs] == [
        (job["id"], 0, "fail"), (job["id"], 1, "fail")]
    [member] = client.zrange(f"{ns}:dead", 0, -1)
    assert isinstance(member, bytes)
    dead = json.loads(member)
    assert (dead["id"], dead["fails"], dead["err"]) == (job["id"], 2, "boom doomed")
    assert client.zcard(f"{ns}:retry") == 0


def test_workwebui_answers_json(gocraft_bin: dict[str, Path], redis_url: str,
                                tmp_path: Path) -> None:
    """gocraft/work's web UI lists the queue, the live pool, a dead job and a scheduled job."""
    ns, record = namespace(), tmp_path / "record.jsonl"
    harness = gocraft_bin["harness"]
    go_enqueue(harness, redis_url, ns, "later", {"x": 1}, in_seconds=3600)
    [job] = go_enqueue(harness, redis_url, ns, "doomed", {"k": 2})
    client = redis.Redis.from_url(redis_url)
    with go_pool(harness, redis_url, ns, ["doomed:fail,max_fails=1", "later"], record), \
            workwebui(gocraft_bin["workwebui"], redis_url, ns) as base:
        [run] = wait_for_records(record, 1)
        wait_until(lambda: client.zcard(f"{ns}:dead"), "the dead set")
        queues = get_json(f"{base}/queues")
        pools = get_json(f"{base}/worker_pools")
        dead = get_json(f"{base}/dead_jobs?page=1")
        scheduled = get_json(f"{base}/scheduled_jobs?page=1")
    assert {q["job_name"] for q in queues} == {"doomed", "later"}
    assert [pool["worker_pool_id"] for pool in pools] == [run["pool_id"]]
    assert sorted(pools[0]["job_names"]) == ["doomed", "later"]
    assert dead["count"] == 1 and dead["jobs"][0]["id"] == job["id"]
    assert dead["jobs"][0]["err"] == "boom doomed"
    assert scheduled["count"] == 1 and scheduled["jobs"][0]["args"] == {"x": 1}
