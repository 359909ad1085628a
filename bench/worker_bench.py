"""Worker benchmark: our worker vs Go machinery v2 vs Celery 5, one Redis, same run.

For each contender the queue is filled with N no-op tasks (states written as each
system writes them: machinery's PENDING/RECEIVED/STARTED/SUCCESS, Celery's result
meta), then a worker starts; throughput is N over the time from its first take to the
last completed state. Also: producer throughput (single and batched) and p50/p99
round-trip latency of one task. Prints a table and ratios.

Run (after `bash .ci/setup`): ``python -m bench.worker_bench --tasks 20000 --celery-tasks 3000``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from bench.proc_cpu import cpu_seconds
from bridge.app import Bridge
from bridge.config import Config
from bridge.localredis import local_redis

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "compat_fixtures" / "bin" / "harness-v2"


def wait_done(client: redis.Redis, queue: str, keys: Sequence[str], state_field: bytes,
              timeout: float) -> tuple[float, float]:
    """(first take, last completion) times: the queue shrinking, then every key done. Until
    the last key is done only it is read: reading thousands of states every 50 ms would
    take a core's tenth from the workers being timed. Then the rest, 5,000 at a time."""
    start = time.monotonic()
    first = None
    total = client.llen(queue)
    remaining = list(keys)
    while remaining:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{len(remaining)} of {len(keys)} tasks not done")
        if first is None and client.llen(queue) < total:
            first = time.monotonic()
        last = client.get(remaining[-1])
        if last is not None and state_field in last:
            values = client.mget(remaining[:5000])
            done = sum(1 for v in values if v is not None and state_field in v)
            if done == len(values):
                remaining = remaining[len(values):]
                continue
        time.sleep(0.02 if first is None else 0.05)
    end = time.monotonic()
    return first or start, end


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_blocked(client: redis.Redis, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Until COUNT clients block on Redis (each idle worker: one BLMOVE / BLPOP)."""
    deadline = time.monotonic() + 120
    while int(client.info("clients")["blocked_clients"]) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not all start waiting on the queue")
        time.sleep(0.02)


def machinery_run(url: str, n: int, cmd: Callable[[str], list[str]], env: dict[str, str],
                  client: redis.Redis, task: str = "noop", *args: Any, loops: int = 0
                  ) -> float:
    """Fill a fresh queue with N machinery tasks (``task(*args)``, default no-op), start a
    worker, return tasks/s (first take → last SUCCESS). With ``loops``, the worker starts
    first and the tasks are sent once that many fetch loops wait on the queue (several
    worker processes then start together): send → last SUCCESS."""
    client.flushdb()
    queue = f"bench_{uuid.uuid4().hex[:6]}"
    app = Bridge(Config(broker=url, result_backend=url, default_queue=queue))
    types = ["int64"] * len(args)
    proc = start(cmd(queue), {**env, "BENCH_QUEUE": queue}) if loops else None
    try:
        if proc is not None:
            wait_blocked(client, loops, proc)
        batches = [[app.signature(task, *args, arg_types=types)
                    for _ in range(min(5000, n - offset))] for offset in range(0, n, 5000)]
        began = time.monotonic()
        results = [result for batch in batches for result in app.send_batch(batch)]
        if proc is None:
            proc = start(cmd(queue), {**env, "BENCH_QUEUE": queue})
        first, last = wait_done(client, queue, [r.task_uuid for r in results],
                                b'"State":"SUCCESS"', timeout=600)
    finally:
        if proc is not None:
            stop(proc)
        app.close()
    return n / (last - (began if loops else first))


def celery_run(url: str, n: int, pool: str, concurrency: int, env: dict[str, str],
               client: redis.Redis, task: str = "noop", *args: Any) -> float:
    """The same for a Celery worker (acks_late) on Celery's own queue and result keys."""
    client.flushdb()
    queue = f"bench_{uuid.uuid4().hex[:6]}"
    env = {**env, "BENCH_QUEUE": queue, "BENCH_CELERY": "1"}
    ids = celery_publish(url, queue, n, env, task, *args)
    cmd = [sys.executable, "-m", "celery", "-A", "bench.bench_apps:celery_app", "worker",
           "-P", pool, "-c", str(concurrency), "-Q", queue, "-l", "warning",
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    proc = start(cmd, env)
    try:
        first, last = wait_done(client, queue, [f"celery-task-meta-{i}" for i in ids],
                                b'"status": "SUCCESS"', timeout=900)
    finally:
        stop(proc)
    return n / (last - first)


def celery_publish(url: str, queue: str, n: int, env: dict[str, str], task: str = "noop",
                   *args: Any) -> list[str]:
    code = ("import sys, json; from bench.bench_apps import celery_app as a; "
            "t = a.tasks[sys.argv[3]]; args = json.loads(sys.argv[4]); "
            "[print(t.apply_async(args, queue=sys.argv[1]).id) for _ in range(int(sys.argv[2]))]")
    out = subprocess.run([sys.executable, "-c", code, queue, str(n), task, json.dumps(args)],
                         env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def producer_rates(url: str, n: int) -> dict[str, float]:
    """Tasks/s a producer publishes (with PENDING states), one by one and batched."""
    rates = {}
    app = Bridge(Config(broker=url, result_backend=url, default_queue="produce_bench"))
    began = time.monotonic()
    for _ in range(n):
        app.send(app.signature("noop"))
    rates["bridge send (one by one)"] = n / (time.monotonic() - began)
    began = time.monotonic()
    app.send_batch([app.signature("noop") for _ in range(n)])
    rates["bridge send_batch"] = n / (time.monotonic() - began)
    app.close()
    for label, extra in (("Go machinery SendTask", []), ("Go machinery SendTask x64", ["--batch"])):
        began = time.monotonic()
        subprocess.run([str(HARNESS), "send", "--broker", url, "--backend", url, "--queue",
                        "produce_bench", "--task", "noop", "--count", str(n), "-q", *extra],
                       check=True, capture_output=True)
        rates[label] = n / (time.monotonic() - began)
    return rates


def latency(send_and_get: Callable[[], Any], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        send_and_get()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bench_setup(url: str, concurrency: int) -> tuple[dict[str, str], redis.Redis, list[str]]:
    """The environment the apps read, a client of the Redis, our worker's command."""
    env = {**os.environ, "BENCH_REDIS": url, "PYTHONPATH": str(ROOT)}
    ours = [sys.executable, "-m", "bridge.cli", "worker", "-A", "bench.bench_apps:bridge_app",
            "-c", str(concurrency), "-l", "warning"]
    return env, redis.Redis.from_url(url), ours


def bridge_latency(url: str, env: dict[str, str], cmd: Callable[[str], list[str]],
                   count: int) -> tuple[float, float, float]:
    """p50/p99 ms of send → result through a worker started by ``cmd(queue)``, and the
    worker's CPU % over 3 s idle after them (waiting, not polling, is near 0)."""
    queue = f"lat_{uuid.uuid4().hex[:6]}"
    proc = start(cmd(queue), {**env, "BENCH_QUEUE": queue})
    app = Bridge(Config(broker=url, result_backend=url, default_queue=queue))
    try:
        app.send_task("noop").get(timeout=60, interval=0.001)  # warm up
        p50, p99 = latency(lambda: app.send_task("noop").get(timeout=60, interval=0.001),
                           count)
        before = cpu_seconds(proc.pid)
        time.sleep(3)
        return p50, p99, (cpu_seconds(proc.pid) - before) / 3 * 100
    finally:
        stop(proc)
        app.close()


def print_parts(part: str, url: str, env: dict[str, str], ours: list[str], go: list[str],
                samples: int) -> None:
    """``--only``: the producers' rates (median of 3) or the round-trip latency."""
    if part == "producers":
        runs = [producer_rates(url, 5000) for _ in range(3)]
        print(f"{'producer (publish + PENDING state)':48} {'tasks/s':>9}")
        for name in runs[0]:
            print(f"{name:48} {statistics.median(r[name] for r in runs):9.0f}")
        return
    print(f"{'round trip of one task':48} {'p50 ms':>9} {'p99 ms':>9} {'idle CPU %':>11}")
    for name, cmd in (("bridge producer → bridge worker", [*ours, "-Q"]),
                      ("bridge producer → Go machinery v2 worker", [*go, "--queue"])):

        def command(queue: str, head: list[str] = cmd) -> list[str]:
            return [*head, queue]

        p50, p99, idle = bridge_latency(url, env, command, samples)
        print(f"{name:48} {p50:9.2f} {p99:9.2f} {idle:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--celery-tasks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the workers this many times, alternating; report medians")
    parser.add_argument("--quick", action="store_true",
                        help="only the bridge and Go workers (no Celery, producers, latency)")
    parser.add_argument("--only", choices=["producers", "latency"],
                        help="only the producers' rates, or only the round-trip latency")
    args = parser.parse_args()
    c = args.concurrency
    with local_redis() as url:
        env, client, ours = bench_setup(url, c)
        go = [str(HARNESS), "worker", "--broker", url, "--backend", url, "--concurrency", str(c)]
        if args.only:
            print_parts(args.only, url, env, ours, go, args.latency_samples)
            return
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # alternate, so a slow spell of the machine hits all
            runs: list[tuple[str, Callable[[], float]]] = [
                (f"bridge worker (-c {c} threads)", lambda: machinery_run(
                    url, args.tasks, lambda q: [*ours, "-Q", q], env, client)),
                (f"Go machinery v2 worker (concurrency {c})", lambda: machinery_run(
                    url, args.tasks, lambda q: [*go, "--queue", q], env, client)),
            ]
            if not args.quick:
                runs += [
                    ("Celery 5 worker (solo, acks_late)", lambda: celery_run(
                        url, args.celery_tasks, "solo", 1, env, client)),
                    (f"Celery 5 worker (prefork -c {c}, acks_late)", lambda: celery_run(
                        url, args.celery_tasks, "prefork", c, env, client)),
                ]
            for name, run in runs:
                samples.setdefault(name, []).append(run())
        rows = {name: statistics.median(values) for name, values in samples.items()}
        if args.quick:
            for name, rate in rows.items():
                print(f"{name:48} {rate:9.0f}")
            return
        client.flushdb()
        produce = producer_rates(url, 2000)
        lat = {
            "bridge producer → bridge worker": bridge_latency(
                url, env, lambda q: [*ours, "-Q", q], args.latency_samples),
            "bridge producer → Go machinery v2 worker": bridge_latency(
                url, env, lambda q: [*go, "--queue", q], args.latency_samples),
        }
    ours_rate = rows[f"bridge worker (-c {c} threads)"]
    celery_best = max(v for k, v in rows.items() if k.startswith("Celery"))
    print(f"\nworker throughput, no-op tasks, one Redis, {os.cpu_count()} cores, "
          f"median of {args.rounds} round(s)")
    print(f"{'worker':48} {'tasks/s':>9} {'bridge is':>10} {'range':>14}")
    for name, rate in rows.items():
        low, high = min(samples[name]), max(samples[name])
        print(f"{name:48} {rate:9.0f} {ours_rate / rate:9.1f}x {low:6.0f}-{high:<6.0f}")
    print(f"\nbridge vs Celery's best: {ours_rate / celery_best:.1f}x")
    print(f"\n{'producer (publish + PENDING state)':48} {'tasks/s':>9}")
    for name, rate in produce.items():
        print(f"{name:48} {rate:9.0f}")
    print(f"\n{'round trip of one task':48} {'p50 ms':>9} {'p99 ms':>9} {'idle CPU %':>11}")
    for name, (p50, p99, idle) in lat.items():
        print(f"{name:48} {p50:9.2f} {p99:9.2f} {idle:11.1f}")


if __name__ == "__main__":
    main()
