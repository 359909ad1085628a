"""gocraft/work live: real Go gocraft/work v0.5.1 (enqueuer, worker pool, dead-pool reaper,
``workwebui``) and ours (``mbridge worker --gocraft``, our Enqueuer) in one namespace.

Each run of either pool is one JSON line in a record file (the Go harness's pool and the
middleware of tests/interop/gocraft_app.py write the same fields), so the checks read who
ran what, when, with which args.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from bridge.gocraft import Enqueuer, GocraftJob
from bridge.gocraft.keys import GocraftKeys
from tests.interop.gocraft_go import go_enqueue, go_pool, read_records, workwebui

REPO = Path(__file__).resolve().parents[2]


class Namespace:
    """A namespace of one test in the session's Redis, and the record file of its runs."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.ns = f"gclive{uuid.uuid4().hex[:8]}"
        self.keys = GocraftKeys(self.ns)
        self.client = redis.Redis.from_url(url)
        self.record = tmp / "record.jsonl"
        self.tmp = tmp

    def runs(self) -> list[dict[str, Any]]:
        return read_records(self.record)

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.runs()}"
            time.sleep(0.05)

    def wait_runs(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        self.wait(f"{count} runs", lambda: len(self.runs()) >= count, timeout)
        return self.runs()

    def pools(self) -> set[str]:
        members = cast("set[bytes]", self.client.smembers(self.keys.worker_pools))
        return {m.decode() for m in members}

    def one_pool(self) -> str:
        """The id of the one pool registered in ``worker_pools`` (waits for its heartbeat)."""
        self.wait("a pool in worker_pools", lambda: bool(self.pools()), 30)
        (pool_id,) = self.pools()
        return pool_id

    @contextmanager
    def ours(self, jobs: Sequence[str], concurrency: int = 4) -> Iterator[subprocess.Popen[bytes]]:
        """``mbridge worker --gocraft`` until the block ends (SIGTERM), once it consumes."""
        log = self.tmp / f"ours-{time.monotonic_ns()}.log"
        env = {**os.environ, "BRIDGE_GOCRAFT_REDIS": self.url,
               "BRIDGE_GOCRAFT_RECORD": str(self.record)}
        argv = [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.interop.gocraft_app",
                "--gocraft", self.ns, "--no-machinery", "-c", str(concurrency), "-l", "info"]
        argv += [arg for spec in jobs for arg in ("--gocraft-job", spec)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=out)
        try:
            self.wait("our pool", lambda: "worker consuming" in log.read_text()
                      or proc.poll() is not None, 60)
            assert proc.poll() is None, log.read_text()
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]


@pytest.fixture
def space(redis_url: str, tmp_path: Path) -> Iterator[Namespace]:
    node = Namespace(redis_url, tmp_path)
    try:
        yield node
    finally:
        node.client.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _post(url: str) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_go_enqueuer_to_our_pool(gocraft_bin: dict[str, Path], space: Namespace) -> None:
    harness = gocraft_bin["harness"]
    plain = [go_enqueue(harness, space.url, space.ns, "greet",
                        {"i": n, "s": "<&>", "ratio": 0.5})[0] for n in range(3)]
    [later] = go_enqueue(harness, space.url, space.ns, "greet", {"i": 10}, in_seconds=1)
    [unique] = go_enqueue(harness, space.url, space.ns, "greet", {"i": 20}, unique=True)
    [dup] = go_enqueue(harness, space.url, space.ns, "greet", {"i": 20}, unique=True)
    assert dup["dup"] and unique_key_exists(space, {"i": 20})
    with space.ours(["greet"]):
        runs = space.wait_runs(5)
        space.wait("the completions", lambda: int(space.client.get(
            space.keys.lock("greet")) or 0) == 0)
    assert sorted(run["id"] for run in runs) == sorted(
        [job["id"] for job in plain] + [later["id"], unique["id"]])
    assert {run["pool"] for run in runs} == {"py"} and all(r["outcome"] == "ok" for r in runs)
    assert sorted(run["args"]["i"] for run in runs) == [0, 1, 2, 10, 20]
    assert not unique_key_exists(space, {"i": 20})  # freed when our pool started it
    assert space.client.llen(space.keys.jobs("greet")) == 0
    assert space.client.zcard(space.keys.scheduled) == 0


def unique_key_exists(space: Namespace, args: dict[str, Any]) -> bool:
    key = json.dumps(args, separators=(",", ":"))
    return bool(space.client.exists(f"{space.ns}:unique:greet:{key}\n"))


def test_failures_dead_set_and_workwebui_retry(gocraft_bin: dict[str, Path],
                                               space: Namespace) -> None:
    """A job from Go's enqueuer and one from ours fail twice each in our pool (max_fails=2)
    and land in the dead set in Go's format; workwebui lists both, its retry button sends
    ours back to our pool (two more attempts), its delete button removes Go's."""
    [go_job] = go_enqueue(gocraft_bin["harness"], space.url, space.ns, "doomed")
    our_job = Enqueuer(space.client, space.ns).enqueue("doomed")
    with space.ours(["doomed,max_fails=2,backoff=0"]), \
            workwebui(gocraft_bin["workwebui"], space.url, space.ns) as ui:
        space.wait_runs(4)
        space.wait("two dead jobs", lambda: space.client.zcard(space.keys.dead) == 2)
        dead = _get(f"{ui}/dead_jobs?page=1")
        assert dead["count"] == 2
        shown = {job["id"]: job for job in dead["jobs"]}
        for job_id in (go_job["id"], our_job.id):
            assert (shown[job_id]["name"], shown[job_id]["fails"], shown[job_id]["err"]) == (
                "doomed", 2, "boom doomed")
        assert _post(f"{ui}/retry_dead_job/{shown[our_job.id]['died_at']}/{our_job.id}") \
            == {"status": "ok"}
        assert _post(f"{ui}/delete_dead_job/{shown[go_job['id']]['died_at']}/"
                     f"{go_job['id']}") == {"status": "ok"}
        runs = space.wait_runs(6)  # fails reset by the retry: two more attempts of ours
        space.wait("ours dead again", lambda: space.client.zcard(space.keys.dead) == 1)
        [(member, _)] = cast("list[tuple[bytes, float]]", space.client.zrange(
            space.keys.dead, 0, -1, withscores=True))
        assert GocraftJob.decode(member).id == our_job.id
    by_job: dict[str, list[int]] = {}
    for run in runs:
        by_job.setdefault(run["id"], []).append(run["fails"])
    assert by_job == {go_job["id"]: [0, 1], our_job.id: [0, 1, 0, 1]}
    assert all(run["outcome"] == "fail" and run["pool"] == "py" for run in runs)


def test_our_enqueuer_to_go_pool(gocraft_bin: dict[str, Path], space: Namespace) -> None:
    enqueuer = Enqueuer(space.client, space.ns)
    plain = [enqueuer.enqueue("greet", {"i": n, "s": "<&>"}) for n in range(3)]
    _, later = enqueuer.enqueue_in("greet", 1, {"i": 10})
    unique = enqueuer.enqueue_unique("greet", {"i": 20})
    assert unique is not None and enqueuer.enqueue_unique("greet", {"i": 20}) is None
    with go_pool(gocraft_bin["harness"], space.url, space.ns, ["greet"], space.record):
        runs = space.wait_runs(5, timeout=90)  # an idle Go pool polls every 5 s
    assert sorted(run["id"] for run in runs) == sorted(
        [job.id for job in plain] + [later.id, unique.id])
    assert {run["pool"] for run in runs} == {"go"} and all(run["mw"] for run in runs)
    assert sorted(run["args"]["s"] for run in runs if "s" in run["args"]) == ["<&>"] * 3
    assert not unique_key_exists(space, {"i": 20})  # Go's v0.5.1 worker freed our key


def test_pause_holds_go_and_python_pools(gocraft_bin: dict[str, Path],
                                         space: Namespace) -> None:
    space.client.set(space.keys.paused("slow"), "0")  # any value pauses, "0" too
    Enqueuer(space.client, space.ns).enqueue_batch("slow", [{"ms": 10} for _ in range(6)])
    with go_pool(gocraft_bin["harness"], space.url, space.ns, ["slow:sleep=10"],
                 space.record), space.ours(["slow"]):
        time.sleep(1.5)
        assert space.runs() == [] and space.client.llen(space.keys.jobs("slow")) == 6
        space.client.delete(space.keys.paused("slow"))
        assert len(space.wait_runs(6, timeout=90)) == 6


def test_max_concurrency_holds_across_go_and_python_pools(gocraft_bin: dict[str, Path],
                                                          space: Namespace) -> None:
    """Cap 1 on ``slow`` in both pools: while a Go pool runs one, ours starts none, and the
    other way round (no two runs overlap). Each pool is stopped while its job runs, so the
    job after it goes to the other pool."""
    enqueuer = Enqueuer(space.client, space.ns)
    go_spec, our_spec = "slow:sleep=1500,max_concurrency=1", "slow,max_concurrency=1"
    holds_one = lambda: space.client.get(space.keys.lock("slow")) == b"1"  # noqa: E731
    enqueuer.enqueue("slow", {"ms": 300})  # 1: Go's, the only pool yet
    with contextlib.ExitStack() as stack:
        go = stack.enter_context(go_pool(gocraft_bin["harness"], space.url, space.ns,
                                         [go_spec], space.record))
        space.wait("Go's job", holds_one)
        enqueuer.enqueue_batch("slow", [{"ms": 300}, {"ms": 300}])  # 2, 3: ours, after it
        ours = stack.enter_context(space.ours([our_spec]))
        time.sleep(0.5)
        go.send_signal(signal.SIGTERM)  # Go finishes its job and fetches no more
        go.wait(timeout=30)
        space.wait_runs(3)
        enqueuer.enqueue("slow", {"ms": 1500})  # 4: ours, the only pool left
        space.wait("our long job", holds_one)
        stack.enter_context(go_pool(gocraft_bin["harness"], space.url, space.ns, [go_spec],
                                    space.record))
        enqueuer.enqueue("slow", {"ms": 10})  # 5: Go's, once our job 4 is over
        time.sleep(0.3)
        ours.send_signal(signal.SIGTERM)  # ours finishes job 4 and fetches no more
        ours.wait(timeout=60)
        runs = space.wait_runs(5, timeout=90)
    ordered = sorted(runs, key=lambda run: run["t"])
    # 1 was Go's (the only pool), 4 ours (Go had stopped), 5 Go's (ours stopped after 4);
    # 2 and 3 either's (Go's stopping worker may take one more: its select is random)
    assert (ordered[0]["pool"], ordered[-1]["pool"]) == ("go", "go")
    assert [run["pool"] for run in runs if run["args"] == {"ms": 1500}] == ["py"]
    spans = sorted((run["t"], run["end"]) for run in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # never two at once, whichever pool ran them
    assert int(space.client.get(space.keys.lock("slow")) or 0) == 0
    assert all(share == b"0" for share in space.client.hvals(space.keys.lock_info("slow")))


def test_a_killed_go_pool_is_reaped_by_ours(gocraft_bin: dict[str, Path],
                                            space: Namespace) -> None:
    enqueuer = Enqueuer(space.client, space.ns)
    jobs = enqueuer.enqueue_batch("slow", [{"ms": 50}, {"ms": 50}])
    with go_pool(gocraft_bin["harness"], space.url, space.ns, ["slow:sleep=60000"],
                 space.record, concurrency=2) as go:
        go_id = space.one_pool()
        held = space.keys.in_progress("slow", go_id)
        space.wait("the Go pool to hold both", lambda: space.client.llen(held) == 2)
        go.send_signal(signal.SIGKILL)
        go.wait()
    assert space.runs() == []
    with space.ours(["slow"]):  # our reaper runs 10 s after start; Go's beat is then stale
        runs = space.wait_runs(2, timeout=90)
        space.wait("the dead pool's exit", lambda: go_id not in space.pools())
    assert sorted(run["id"] for run in runs) == sorted(job.id for job in jobs)
    assert {run["pool"] for run in runs} == {"py"}
    assert space.client.llen(held) == 0 and not space.client.exists(space.keys.heartbeat(go_id))
    assert int(space.client.get(space.keys.lock("slow")) or 0) == 0


def test_our_killed_pool_is_reaped_by_go(gocraft_bin: dict[str, Path],
                                         space: Namespace) -> None:
    enqueuer = Enqueuer(space.client, space.ns)
    jobs = enqueuer.enqueue_batch("slow", [{"ms": 60000}, {"ms": 60000}])
    with space.ours(["slow"], concurrency=2) as ours:
        our_id = space.one_pool()
        held = space.keys.in_progress("slow", our_id)
        space.wait("our pool to hold both", lambda: space.client.llen(held) == 2)
        ours.send_signal(signal.SIGKILL)
        ours.wait()
    # Go's reaper runs 10 s after its pool starts, and finds our heartbeat 10 s stale
    with go_pool(gocraft_bin["harness"], space.url, space.ns, ["slow:sleep=10"],
                 space.record, concurrency=2):
        runs = space.wait_runs(2, timeout=90)
    assert sorted(run["id"] for run in runs) == sorted(job.id for job in jobs)
    assert {run["pool"] for run in runs} == {"go"}
    assert space.client.llen(held) == 0 and our_id not in space.pools()


def test_workwebui_sees_our_pool_and_its_jobs(gocraft_bin: dict[str, Path],
                                              space: Namespace) -> None:
    enqueuer = Enqueuer(space.client, space.ns)
    enqueuer.enqueue("slow", {"ms": 4000})
    _, scheduled = enqueuer.enqueue_in("greet", 600, {"i": 1})
    for _ in range(3):
        enqueuer.enqueue("greet", {"i": 2})  # greet is not served: it waits in its queue
    dead = GocraftJob.new("greet", {"i": 3}).failed("gave up", int(time.time()))
    space.client.zadd(space.keys.dead, {dead.encode(): dead.failed_at})
    with space.ours(["slow"], concurrency=2), \
            workwebui(gocraft_bin["workwebui"], space.url, space.ns) as ui:
        pool_id = space.one_pool()
        space.wait("a busy worker", lambda: bool(_get(f"{ui}/busy_workers")))
        [pool] = _get(f"{ui}/worker_pools")
        assert pool["worker_pool_id"] == pool_id and pool["job_names"] == ["slow"]
        assert pool["concurrency"] == 2 and len(pool["worker_ids"]) == 2
        assert abs(pool["heartbeat_at"] - time.time()) < 15
        [busy] = _get(f"{ui}/busy_workers")
        assert busy["job_name"] == "slow" and json.loads(busy["args_json"]) == {"ms": 4000}
        assert busy["worker_id"] in pool["worker_ids"]
        queues = {q["job_name"]: q["count"] for q in _get(f"{ui}/queues")}
        assert queues["greet"] == 3
        assert [j["id"] for j in _get(f"{ui}/scheduled_jobs?page=1")["jobs"]] == [scheduled.id]
        assert [j["id"] for j in _get(f"{ui}/dead_jobs?page=1")["jobs"]] == [dead.id]
        assert _post(f"{ui}/delete_dead_job/{dead.failed_at}/{dead.id}") == {"status": "ok"}
        assert space.client.zcard(space.keys.dead) == 0
