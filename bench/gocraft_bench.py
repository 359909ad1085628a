"""gocraft/work benchmark: our pool and enqueuer vs the real gocraft/work v0.5.1, one Redis.

Pools: N no-op jobs (``args: null``, the same bytes for both) are queued in a fresh
namespace, then a pool starts with the same concurrency: Go's ``gocraft-harness
bench-pool`` or ours, ``mbridge worker --gocraft NS --no-machinery`` running this
module's ``noop`` task. Both are timed the same way, inside the job function: from the
first job's start to the last job's end (Go's bench-pool does it in its handler, ours in
``noop``: a lock and two clock reads per job). Enqueuers: N jobs (args ``{"n": i}``) with
Go's ``Enqueuer.Enqueue`` one by one (``gocraft-harness enqueue --count N``, its own
timing, no process start), and ours one by one and batched. Sides alternate over the
rounds; medians and ranges are printed, with ratios ours / Go. No pass or fail.

Run (after ``bash compat_fixtures/gocraft/build.sh``):
``python -m bench.gocraft_bench [--jobs 20000] [--concurrency 8] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from bench.worker_bench import stop
from bridge.app import Bridge
from bridge.config import Config
from bridge.gocraft import Enqueuer
from bridge.gocraft.keys import GocraftKeys
from bridge.localredis import local_redis

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "compat_fixtures" / "bin" / "gocraft-harness"
JOB = "noop"

# ------------------------------------------------------------------ the app our pool runs
# ``mbridge worker -A bench.gocraft_bench:app``: $BENCH_REDIS, and the number of jobs to
# expect and the file to write first/last into ($BENCH_GOCRAFT_EXPECT, $BENCH_GOCRAFT_OUT).

app = Bridge(Config(broker=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"),
                    result_backend=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")))
_EXPECT = int(os.environ.get("BENCH_GOCRAFT_EXPECT", "0"))
_OUT = os.environ.get("BENCH_GOCRAFT_OUT", "")
_lock = threading.Lock()
_span = {"ran": 0, "first": 0.0, "last": 0.0}


@app.task(JOB)
def noop() -> None:
    """Does nothing but note the first start and the last end, as Go's bench-pool does."""
    now = time.time()
    with _lock:
        if _span["ran"] == 0:
            _span["first"] = now
        _span["ran"] += 1
        _span["last"] = time.time()
        if _span["ran"] == _EXPECT and _OUT:
            Path(_OUT).write_text(json.dumps(_span))


# ------------------------------------------------------------------ pools


def fill(client: redis.Redis, n: int) -> str:
    """A fresh namespace with N queued no-op jobs; its name."""
    client.flushdb()
    ns = f"gcbench{uuid.uuid4().hex[:6]}"
    enqueuer = Enqueuer(client, ns)
    for start in range(0, n, 10_000):
        enqueuer.enqueue_batch(JOB, [None] * min(10_000, n - start))
    return ns


def go_pool(url: str, client: redis.Redis, n: int, concurrency: int) -> float:
    ns = fill(client, n)
    run = subprocess.run([str(HARNESS), "bench-pool", "--redis", url, "--ns", ns,
                          "--concurrency", str(concurrency), "--job", JOB, "--expect", str(n),
                          "--timeout", "600"], capture_output=True, text=True, timeout=700)
    if run.returncode != 0:
        raise RuntimeError(f"bench-pool failed: {run.stderr[-2000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["jobs"] == n, result
    return float(result["jobs_per_second"])


def our_pool(url: str, client: redis.Redis, n: int, concurrency: int) -> float:
    ns = fill(client, n)
    keys = GocraftKeys(ns)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "span.json"
        env = {**os.environ, "BENCH_REDIS": url, "BENCH_GOCRAFT_EXPECT": str(n),
               "BENCH_GOCRAFT_OUT": str(out), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "-A", "bench.gocraft_bench:app",
             "--gocraft", ns, "--no-machinery", "--gocraft-job", JOB, "-c", str(concurrency),
             "-l", "warning"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while not out.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"our pool stopped or timed out (exit {proc.poll()})")
                time.sleep(0.05)
            time.sleep(0.05)  # the file is written in one go; let a slow write land
            span = json.loads(out.read_text())
            while client.llen(keys.jobs(JOB)) or any(  # every completion applied
                    client.llen(k) for k in client.scan_iter(f"{keys.jobs(JOB)}:*:inprogress")):
                if time.monotonic() > deadline:
                    raise RuntimeError("jobs left queued or in progress")
                time.sleep(0.05)
        finally:
            stop(proc)
    assert span["ran"] == n, span
    return n / float(span["last"] - span["first"])


# ------------------------------------------------------------------ enqueuers


def go_enqueue(url: str, client: redis.Redis, n: int) -> float:
    client.flushdb()
    run = subprocess.run([str(HARNESS), "enqueue", "--redis", url, "--ns", "gcenq",
                          "--job", JOB, "--count", str(n)], capture_output=True, text=True,
                         timeout=600, check=True)
    assert client.llen(GocraftKeys("gcenq").jobs(JOB)) == n
    return float(json.loads(run.stdout.strip().splitlines()[-1])["jobs_per_second"])


def our_enqueue(client: redis.Redis, n: int, batch: bool) -> float:
    client.flushdb()
    enqueuer = Enqueuer(client, "gcenq")
    began = time.perf_counter()
    if batch:
        enqueuer.enqueue_batch(JOB, [{"n": i} for i in range(n)])
    else:
        for i in range(n):
            enqueuer.enqueue(JOB, {"n": i})
    rate = n / (time.perf_counter() - began)
    assert client.llen(GocraftKeys("gcenq").jobs(JOB)) == n
    return rate


# ------------------------------------------------------------------ report


def header(args: argparse.Namespace) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        commit = "?"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"bench/gocraft_bench.py, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z};"
            f" {os.cpu_count()} cores, load average at start {load}; Python "
            f"{platform.python_version()}; bridge commit {commit or '?'}\n"
            f"{args.jobs} no-op jobs, concurrency {args.concurrency}, {args.rounds} round(s), "
            "sides alternating; gocraft/work v0.5.1 (compat_fixtures/gocraft)")


def table(title: str, samples: dict[str, list[float]], base: str) -> None:
    print(f"\n{title:52} {'jobs/s':>9} {'range':>15} {'ours/Go':>8}")
    go = statistics.median(samples[base])
    for name, values in samples.items():
        rate = statistics.median(values)
        ratio = "" if name == base else f"{rate / go:7.2f}x"
        print(f"{name:52} {rate:9.0f} {min(values):7.0f}-{max(values):<7.0f} {ratio:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="N, for pools and enqueuers")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every side this many times, alternating; report medians")
    parser.add_argument("--only", choices=["pools", "enqueue"])
    args = parser.parse_args()
    if not HARNESS.is_file():
        sys.exit(f"{HARNESS} is missing: run bash compat_fixtures/gocraft/build.sh")
    n, c = args.jobs, args.concurrency
    print(header(args), flush=True)
    pools: dict[str, list[float]] = {}
    enqueues: dict[str, list[float]] = {}
    with local_redis() as url:
        client = redis.Redis.from_url(url)
        go_name = f"Go gocraft/work pool (concurrency {c})"
        pool_runs: list[tuple[str, Callable[[], float]]] = [
            (go_name, lambda: go_pool(url, client, n, c)),
            (f"ours: mbridge worker --gocraft (-c {c} threads)",
             lambda: our_pool(url, client, n, c))]
        enqueue_runs: list[tuple[str, Callable[[], float]]] = [
            ("Go Enqueuer.Enqueue, one by one", lambda: go_enqueue(url, client, n)),
            ("ours Enqueuer.enqueue, one by one", lambda: our_enqueue(client, n, False)),
            ("ours Enqueuer.enqueue_batch", lambda: our_enqueue(client, n, True))]
        for round_ in range(args.rounds):
            order = pool_runs if round_ % 2 == 0 else pool_runs[::-1]
            for name, run in order if args.only != "enqueue" else []:
                pools.setdefault(name, []).append(run())
            for name, run in enqueue_runs if args.only != "pools" else []:
                enqueues.setdefault(name, []).append(run())
        client.close()
    if pools:
        table("worker pool, no-op jobs, first start to last end",
              dict(sorted(pools.items(), key=lambda kv: kv[0] != go_name)), go_name)
    if enqueues:
        table("enqueue (LPUSH to <ns>:jobs:noop)", enqueues,
              "Go Enqueuer.Enqueue, one by one")


if __name__ == "__main__":
    main()
