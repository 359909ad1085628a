"""Per-task cost of our worker, in process: CPU µs of this process and of redis-server.

Fills a queue with N no-op tasks (PENDING written, as ``send_batch`` does), runs the
worker in this process until every task is SUCCESS, and prints wall time, this process's
CPU time and redis-server's CPU time per task. CPU time is far less sensitive than
tasks/s to other load on the machine. ``--profile FILE`` writes a cProfile dump of the
worker loop thread (what the loop spends per task); run under ``valgrind --tool=callgrind``
for instruction counts.

``--burn N --pool processes -c 2`` runs ``bench.bench_apps.burn(N)`` (N = 20,000: ~1 ms of
pure Python) in child processes instead, and adds the children's CPU per task: where the
machine's CPU goes around a CPU-bound task (``bench.cpu_bench`` gives the throughput).
Script calls per task (``EVALSHA`` in redis-server's command stats) count the loop's turns:
a turn is a fetch (one call) and a state write (two calls in the same round trip: a wave
of each task's first state, then one of the new tasks' STARTED), so three a turn.

Run: ``python -m bench.worker_profile --tasks 5000 --rounds 3``
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import threading
import time
import uuid
from typing import NamedTuple

import redis

from bench.bench_apps import burn
from bench.proc_cpu import cpu_seconds, redis_cpu_seconds
from bridge.app import Bridge
from bridge.config import Config
from bridge.localredis import local_redis
from bridge.worker import Worker, WorkerOptions


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def _children_cpu(worker: Worker) -> float:
    slots = worker._process_slots
    children = list(slots._children) if slots is not None else []
    return sum(cpu_seconds(child.process.pid) for child in children)


class Round(NamedTuple):
    """Seconds of one round: wall, CPU of this process, of its loop thread, of
    redis-server and of the task children; and redis-server's script calls."""

    wall: float
    cpu: float
    loop: float
    redis: float
    children: float
    scripts: int


def one_round(url: str, n: int, concurrency: int, profile: cProfile.Profile | None,
              work: int = 0, pool: str = "threads") -> Round:
    """Run ``n`` no-op tasks (``burn(work)`` when ``work``) and measure them."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    queue = f"prof_{uuid.uuid4().hex[:6]}"
    app = Bridge(Config(broker=url, result_backend=url, default_queue=queue))

    @app.task("noop")
    def noop() -> None:
        """Does nothing."""

    app.register("burn", burn)
    results = []
    for offset in range(0, n, 5000):
        batch = [app.signature("burn", work, arg_types=["int64"]) if work else
                 app.signature("noop") for _ in range(min(5000, n - offset))]
        results += app.send_batch(batch)
    keys = [r.task_uuid for r in results]
    worker = Worker(app, WorkerOptions(queue=queue, concurrency=concurrency, pool=pool))
    children = 0.0

    def done(some: list[str]) -> bool:
        return all(v is not None and b'"State":"SUCCESS"' in v for v in client.mget(some))

    def watch() -> None:  # cheap polling: the last few tasks, then all of them once
        nonlocal children
        tail = keys[-4 * concurrency:]
        while not (done(tail) and all(done(keys[i:i + 5000]) for i in range(0, n, 5000))):
            time.sleep(0.02)
        children = _children_cpu(worker)  # before the worker stops them
        worker.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    redis_before, scripts_before = redis_cpu_seconds(client), _script_calls(client)
    cpu_before = time.process_time()
    loop_before = time.thread_time()
    began = time.perf_counter()
    watcher.start()
    if profile is not None:
        profile.enable()
    worker.run()
    if profile is not None:
        profile.disable()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    loop_cpu = time.thread_time() - loop_before
    redis_cpu = redis_cpu_seconds(client) - redis_before
    scripts = _script_calls(client) - scripts_before
    watcher.join()
    app.close()
    client.close()
    return Round(wall, cpu, loop_cpu, redis_cpu, children, scripts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--burn", type=int, default=0,
                        help="run burn(N) instead of no-op tasks (20000: ~1 ms)")
    parser.add_argument("--pool", choices=("threads", "processes"), default="threads")
    parser.add_argument("--profile", help="write a cProfile dump of the worker loop here")
    parser.add_argument("--url", help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None

    def run(url: str) -> None:
        rows = [one_round(url, args.tasks, args.concurrency, profile, args.burn, args.pool)
                for _ in range(args.rounds)]
        n = args.tasks
        median = Round(*(statistics.median(column) for column in zip(*rows, strict=True)))
        print(f"{n} tasks, median of {args.rounds}: {n / median.wall:6.0f} tasks/s; "
              f"CPU µs/task: {_per_task(median, n)}")
        for row in rows:
            print(f"  round: {n / row.wall:6.0f} tasks/s; {_per_task(row, n)}")
        if profile is not None:
            profile.dump_stats(args.profile)

    if args.url:
        run(args.url)
    else:
        with local_redis() as url:
            run(url)


def _per_task(row: Round, n: int) -> str:
    text = (f"worker {row.cpu / n * 1e6:5.1f} (loop thread {row.loop / n * 1e6:5.1f}), "
            f"redis {row.redis / n * 1e6:5.1f}")
    if row.children:
        text += f", children {row.children / n * 1e6:6.1f}"
    return text + f"; script calls/task {row.scripts / n:4.2f}"


if __name__ == "__main__":
    main()
