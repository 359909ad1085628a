"""``mbridge migrate`` between gocraft/work and the other systems, with real peers on both
ends: Go-enqueued gocraft jobs migrated (with a SIGKILLed migrator in the middle) and run by
a Go machinery worker; Celery- and Go-machinery-produced tasks migrated and run by a Go
gocraft/work pool."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from bridge.backends.redis import RedisBackend
from bridge.gocraft.keys import GocraftKeys
from bridge.protocol.machinery import SUCCESS
from tests.interop.go_processes import go_worker
from tests.interop.gocraft_go import go_enqueue, go_pool, read_records, wait_for_records
from tests.interop.test_migrate_live import kill_migrator_when, run_migrator, wait_all

pytestmark = pytest.mark.go


def test_go_gocraft_jobs_migrated_with_a_kill_run_by_a_go_machinery_worker(
        harness: dict[str, Path], gocraft_bin: dict[str, Path], redis_url: str,
        tmp_path: Path) -> None:
    ns, dst_queue, total = f"mg{uuid.uuid4().hex[:8]}", f"go_{uuid.uuid4().hex[:8]}", 20_000
    *_, rate = go_enqueue(gocraft_bin["harness"], redis_url, ns, "add", {"b": 1}, count=total)
    assert rate["count"] == total
    client = redis.Redis.from_url(redis_url)
    assert client.llen(GocraftKeys(ns).jobs("add")) == total
    schema = tmp_path / "schema.yaml"
    schema.write_text("tasks:\n  add:\n    kwargs: {n: int64, b: int64}\n")
    src = f"gocraft+{redis_url}?namespace={ns}&queue=add"
    dst = f"machinery+{redis_url}?queue={dst_queue}"
    args = [src, dst, "--schema", str(schema), "--batch", "1000"]
    kill_migrator_when(args, redis_url, dst_queue, 5000)
    assert 0 < client.llen(dst_queue) < total, "the migrator was not killed mid-way"
    done = run_migrator(args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert client.llen(GocraftKeys(ns).jobs("add")) == 0
    sigs = [json.loads(raw) for raw in client.lrange(dst_queue, 0, -1)]
    ids = [sig["UUID"] for sig in sigs]
    assert len(ids) == total and len(set(ids)) == total  # every job once
    expected = {sig["UUID"]: sig["Args"][0]["Value"] + 1 for sig in sigs}
    assert sorted(v - 1 for v in expected.values()) == list(range(total))
    backend = RedisBackend(redis_url)

    def succeeded(chunk: list[str]) -> list[bool]:
        states = backend.get_states(chunk)
        return [s is not None and s.state == SUCCESS and s.results is not None
                and s.results[0].value == expected[i] for i, s in zip(chunk, states, strict=True)]

    with go_worker(harness["v2"], redis_url, dst_queue, concurrency=16):
        missing = wait_all(succeeded, ids, timeout=600)
    assert missing == [], f"{len(missing)} tasks not completed by Go, e.g. {missing[:3]}"


def test_celery_and_go_machinery_tasks_migrated_run_by_a_go_gocraft_pool(
        harness: dict[str, Path], gocraft_bin: dict[str, Path], redis_url: str,
        tmp_path: Path) -> None:
    ns = f"mg{uuid.uuid4().hex[:8]}"
    celery_queue, machinery_queue = f"cel_{uuid.uuid4().hex[:8]}", f"m_{uuid.uuid4().hex[:8]}"
    app = Celery("producer", broker=redis_url, backend=redis_url)
    with app.producer_or_acquire() as producer:
        celery_ids = [app.send_task("greet", kwargs={"i": n, "s": "<celery>"},
                                    queue=celery_queue, producer=producer).id
                      for n in range(200)]
    app.close()
    sent = subprocess.run([str(harness["v2"]), "send", "--broker", redis_url, "--backend",
                           redis_url, "--queue", machinery_queue, "--task", "greet",
                           "--arg", "int64=20", "--arg", "string=<go>", "--count", "100"],
                          capture_output=True, text=True, timeout=120, check=True)
    machinery_ids = [line.strip() for line in sent.stdout.splitlines() if line.strip()]
    assert len(machinery_ids) == 100
    schema = tmp_path / "schema.yaml"
    schema.write_text("tasks:\n  greet:\n    kwargs: {i: int64, s: string}\n")
    dst = f"gocraft+{redis_url}?namespace={ns}"
    for src in (f"celery+{redis_url}?queue={celery_queue}",
                f"machinery+{redis_url}?queue={machinery_queue}"):
        done = run_migrator([src, dst, "--schema", str(schema)])
        assert done.returncode == 0, done.stdout + done.stderr
    record = tmp_path / "record.jsonl"
    with go_pool(gocraft_bin["harness"], redis_url, ns, ["greet"], record, concurrency=8):
        wait_for_records(record, 300, timeout=120)
    runs = read_records(record)
    assert sorted(run["id"] for run in runs) == sorted(
        celery_ids + [i.removeprefix("task_") for i in machinery_ids])
    by_origin = {run["args"]["s"] for run in runs}
    assert by_origin == {"<celery>", "<go>"}
    assert all(run["args"]["i"] == 20 for run in runs if run["args"]["s"] == "<go>")
