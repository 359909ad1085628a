"""Deterministic per-task cost of the worker loop's own work, without the task threads.

Drives the real machinery handler the way ``Worker.run`` does in steady state, but with
fixed batches: each turn fetches ``--batch`` messages (the previous batch's acks ride
along), and ``handler.step`` writes the previous batch's SUCCESS and the new batch's
RECEIVED/STARTED in one backend call. The no-op functions are "run" inline. Because the
batch shapes are fixed, the client's instruction count per task is stable under load:
fill a queue (``--fill-only``), then drain it under
``valgrind --tool=callgrind python -m bench.turn_cost --no-fill --rounds 1 ...`` with two
task counts and divide the difference in Ir by the difference in tasks.

Run: ``python -m bench.turn_cost --tasks 20000 --batch 8``
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import redis

from bench.proc_cpu import redis_cpu_seconds
from bridge.app import Bridge
from bridge.config import Config
from bridge.handlers.base import Job
from bridge.localredis import local_redis
from bridge.worker import Worker, WorkerOptions


def _app(url: str, queue: str) -> Bridge:
    app = Bridge(Config(broker=url, result_backend=url, default_queue=queue))

    @app.task("noop")
    def noop() -> None:
        """Does nothing."""

    return app


def fill(url: str, queue: str, n: int) -> None:
    """``n`` no-op tasks on ``queue``, PENDING written, as ``send_batch`` sends them."""
    app = _app(url, queue)
    for offset in range(0, n, 5000):
        app.send_batch([app.signature("noop") for _ in range(min(5000, n - offset))])
    app.close()


def run(url: str, n: int, batch: int, queue: str = "", filled: bool = False
        ) -> tuple[float, float, float]:
    """(client CPU µs, wall µs, redis CPU µs) per task for ``n`` no-op tasks."""
    client = redis.Redis.from_url(url)
    if not filled:
        client.flushdb()
        queue = queue or f"turn_{uuid.uuid4().hex[:6]}"
        fill(url, queue, n)
    app = _app(url, queue)
    worker = Worker(app, WorkerOptions(queue=queue, concurrency=batch))
    handler = worker.handlers[0]
    consumer = handler.consumer
    jobs: list[Job] = []
    done = 0
    redis_before = redis_cpu_seconds(client)
    cpu = time.thread_time()
    wall = time.perf_counter()
    while True:
        finished: list[tuple[Job, Any, BaseException | None]] = [
            (job, job.task.call(job.args, job.kwargs), None) for job in jobs]
        done += len(finished)
        acks = worker._take_acks(handler)  # the loop's own bookkeeping
        deliveries = consumer.fetch(queue, batch, 0.0, ack=acks) if done < n else []
        if not deliveries and not finished:
            if acks:
                consumer.ack(acks)
            break
        jobs = handler.step(finished, deliveries)
    cpu = time.thread_time() - cpu
    wall = time.perf_counter() - wall
    redis_cpu = redis_cpu_seconds(client) - redis_before
    if client.llen(queue) or done != n:
        raise RuntimeError(f"only {done} of {n} tasks ran")
    app.close()
    client.close()
    return cpu / n * 1e6, wall / n * 1e6, redis_cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="an existing Redis (default: a private redis-server)")
    parser.add_argument("--queue", default="", help="the queue (default: a fresh name)")
    parser.add_argument("--fill-only", action="store_true", help="only fill --queue")
    parser.add_argument("--no-fill", action="store_true", help="drain a filled --queue")
    args = parser.parse_args()

    def go(url: str) -> None:
        if args.fill_only:
            fill(url, args.queue, args.tasks)
            return
        rows = [run(url, args.tasks, args.batch, args.queue, args.no_fill)
                for _ in range(args.rounds)]
        cpu, wall, rcpu = (min(r[i] for r in rows) for i in range(3))
        print(f"{args.tasks} tasks, batches of {args.batch}, best of {args.rounds}: "
              f"loop CPU {cpu:6.1f} µs/task, wall {wall:6.1f} µs/task, "
              f"redis CPU {rcpu:6.1f} µs/task")

    if args.url:
        go(args.url)
    else:
        with local_redis() as url:
            go(url)


if __name__ == "__main__":
    main()
