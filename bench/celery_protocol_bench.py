"""Celery-protocol benchmark: our worker vs a Celery 5 worker on the same kind of queue.

One Redis; N Celery no-op task messages (protocol 2, json, in kombu's envelope, the
same bytes Celery's client writes) on a fresh queue per run; each worker writes Celery
result metas (``celery-task-meta-<id>`` SUCCESS, with PUBLISH) and acknowledges after
the task ran (acks_late). Rates are from the first take to the last result; with
``--processes P`` (ours as ``mbridge worker --processes P``), our workers start first and
the messages, published to a list aside, are renamed into the queue once all P listen
(a Python worker takes ~1 s to start, so the first would otherwise run alone): the rate is
from the rename to the last result. Celery runs with its usual pools: solo, prefork at -c
and at 8; its best median is the ratio's.

Run (after `bash .ci/setup`)::

    python -m bench.celery_protocol_bench --tasks 20000 --celery-tasks 3000
    python -m bench.celery_protocol_bench --processes 3 --concurrency 32 --tasks 60000 \
        --celery-tasks 4000 --rounds 3 [--serializer msgpack]

On 2 cores ``--processes 3`` fills the machine (two processes leave a fifth of it idle
while both wait on Redis's scripts); Celery's prefork gets its best of -c 8 and -c C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

import redis

from bench.worker_bench import start, stop, wait_done
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.localredis import local_redis
from bridge.protocol.celery import encode_task, new_task


def publish(url: str, queue: str, n: int, serializer: str = "json") -> list[str]:
    """N protocol-2 ``noop`` messages (body in ``serializer``), batched; their task ids."""
    broker = CeleryRedisBroker.from_url(url)
    ids = []
    try:
        for offset in range(0, n, 5000):
            tasks = [new_task("noop") for _ in range(min(5000, n - offset))]
            broker.publish_messages(queue, [encode_task(t, serializer=serializer)
                                             for t in tasks])
            ids += [t.id for t in tasks]
    finally:
        broker.close()
    return ids


def wait_listening(client: redis.Redis, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Until COUNT workers listen for Celery's remote control (each subscribes once its
    fetch loop runs: a Celery queue is taken by script, not by a blocked read), and half
    a second more."""
    deadline = time.monotonic() + 120
    while sum(1 for c in client.client_list() if c.get("cmd") == "psubscribe") < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not all start")
        time.sleep(0.02)
    time.sleep(0.5)


def run(url: str, n: int, cmd: list[str], env: dict[str, str], client: redis.Redis,
        queue: str, loops: int = 0, serializer: str = "json") -> float:
    """Tasks/s of the worker ``cmd`` over N fresh messages on ``queue``; with ``loops``,
    the worker starts first and the messages, published aside, are renamed into the queue
    at once when that many workers listen (rename → last result)."""
    client.flushdb()
    ids = publish(url, f"{queue}.staged" if loops else queue, n, serializer)
    proc = start(cmd, env)
    try:
        if loops:
            wait_listening(client, loops, proc)
            began = time.monotonic()
            client.rename(f"{queue}.staged", queue)
        first, last = wait_done(client, queue, [f"celery-task-meta-{i}" for i in ids],
                                b'"status": "SUCCESS"', timeout=900)
    finally:
        stop(proc)
    return n / (last - (began if loops else first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="messages for our worker")
    parser.add_argument("--celery-tasks", type=int, default=3000, help="messages for Celery")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1, help="our worker processes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--serializer", choices=("json", "msgpack"), default="json",
                        help="the task messages' body (results are Celery's default, json)")
    args = parser.parse_args()
    c, p = args.concurrency, args.processes
    with local_redis() as url:
        client = redis.Redis.from_url(url)
        queue = f"cbench_{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "BENCH_REDIS": url, "BENCH_QUEUE": queue, "BENCH_CELERY": "1"}
        ours = [sys.executable, "-m", "bridge.cli", "worker", "--celery-app",
                "bench.bench_apps:celery_app", "--celery-queue", queue, "--no-machinery",
                "-c", str(c), "-l", "warning", *(["--processes", str(p)] if p > 1 else [])]
        celery = [sys.executable, "-m", "celery", "-A", "bench.bench_apps:celery_app",
                  "worker", "-Q", queue, "-l", "warning", "--without-gossip",
                  "--without-mingle", "--without-heartbeat"]
        shape = f"--processes {p} " if p > 1 else ""
        runs = {
            f"bridge worker ({shape}-c {c}, Celery protocol)": (args.tasks, ours),
            "Celery 5 worker (solo, acks_late)": (args.celery_tasks, [*celery, "-P", "solo"]),
        }
        for pc in sorted({c, 8}):
            runs[f"Celery 5 worker (prefork -c {pc}, acks_late)"] = (
                args.celery_tasks, [*celery, "-P", "prefork", "-c", str(pc)])
        rates: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(args.rounds):
            for label, (n, cmd) in runs.items():
                loops = p if p > 1 and label.startswith("bridge") else 0
                rates[label].append(run(url, n, cmd, env, client, queue, loops,
                                        args.serializer))
    print(f"\n{args.serializer} task messages")
    print(f"{'worker':48} {'tasks/s':>10}")
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label, value in medians.items():
        spread = f"  ({min(rates[label]):,.0f}-{max(rates[label]):,.0f})" if args.rounds > 1 else ""
        print(f"{label:48} {value:>10,.0f}{spread}")
    ours_rate = medians[next(iter(runs))]
    celery_best = max(v for k, v in medians.items() if k.startswith("Celery"))
    print(f"\nbridge vs Celery's best on Celery-protocol messages: {ours_rate / celery_best:.1f}x")


if __name__ == "__main__":
    main()
