"""Per-task cost of our worker, in process: CPU µs of this process and of redis-server.

Fills a queue with N no-op tasks (PENDING written, as ``send_batch`` does), runs the
worker in this process until every task is SUCCESS, and prints wall time, this process's
CPU time and redis-server's CPU time per task. CPU time is far less sensitive than
tasks/s to other load on the machine. ``--profile FILE`` writes a cProfile dump of the
worker loop thread (what the loop spends per task); run under ``valgrind --tool=callgrind``
for instruction counts.

Run: ``python -m bench.worker_profile --tasks 5000 --rounds 3``
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import threading
import time
import uuid

import redis

from bridge.app import Bridge
from bridge.config import Config
from bridge.localredis import local_redis
from bridge.worker import Worker, WorkerOptions


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one_round(url: str, n: int, concurrency: int,
              profile: cProfile.Profile | None) -> tuple[float, float, float, float]:
    """(wall s, own CPU s, loop thread CPU s, redis CPU s) to run ``n`` no-op tasks."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    queue = f"prof_{uuid.uuid4().hex[:6]}"
    app = Bridge(Config(broker=url, result_backend=url, default_queue=queue))

    @app.task("noop")
    def noop() -> None:
        """Does nothing."""

    results = []
    for offset in range(0, n, 5000):
        batch = [app.signature("noop") for _ in range(min(5000, n - offset))]
        results += app.send_batch(batch)
    keys = [r.task_uuid for r in results]
    worker = Worker(app, WorkerOptions(queue=queue, concurrency=concurrency))

    def done(some: list[str]) -> bool:
        return all(v is not None and b'"State":"SUCCESS"' in v for v in client.mget(some))

    def watch() -> None:  # cheap polling: the last few tasks, then all of them once
        tail = keys[-4 * concurrency:]
        while not (done(tail) and all(done(keys[i:i + 5000]) for i in range(0, n, 5000))):
            time.sleep(0.02)
        worker.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    redis_before = _redis_cpu(client)
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
    redis_cpu = _redis_cpu(client) - redis_before
    watcher.join()
    app.close()
    client.close()
    return wall, cpu, loop_cpu, redis_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", help="write a cProfile dump of the worker loop here")
    parser.add_argument("--url", help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None

    def run(url: str) -> None:
        rows = [one_round(url, args.tasks, args.concurrency, profile)
                for _ in range(args.rounds)]
        n = args.tasks
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        loop = statistics.median(r[2] for r in rows)
        rcpu = statistics.median(r[3] for r in rows)
        print(f"{n} tasks, median of {args.rounds}: {n / wall:6.0f} tasks/s; CPU µs/task: "
              f"worker {cpu / n * 1e6:5.1f} (loop thread {loop / n * 1e6:5.1f}), "
              f"redis {rcpu / n * 1e6:5.1f}")
        for wall_s, cpu_s, loop_s, rcpu_s in rows:
            print(f"  round: {n / wall_s:6.0f} tasks/s; worker {cpu_s / n * 1e6:5.1f} "
                  f"(loop {loop_s / n * 1e6:5.1f}), redis {rcpu_s / n * 1e6:5.1f}")
        if profile is not None:
            profile.dump_stats(args.profile)

    if args.url:
        run(args.url)
    else:
        with local_redis() as url:
            run(url)


if __name__ == "__main__":
    main()
