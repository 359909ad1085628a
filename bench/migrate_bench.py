"""``mbridge migrate`` throughput and peak memory: Celery → machinery and back.

Run: ``python -m bench.migrate_bench [--messages 100000] [--batch 1000] [--redis URL]``.
Without ``--redis`` a private redis-server is started. N Celery tasks (``add(i, 1)``, the
bytes Celery 5.6.2 writes) are published to a Celery queue, moved to a machinery queue, then
moved back to another Celery queue. Each migration runs in a fresh child process, whose peak
RSS (``ru_maxrss``) is reported; a 10,000-message reference row shows whether memory grows with
the queue length (it should not: the migrator streams in batches).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.endpoints import parse_endpoint
from bridge.localredis import local_redis
from bridge.protocol.celery import encode_task, new_task

REFERENCE = 10_000


def child(src: str, dst: str, batch: int) -> None:
    """Run one migration and print its numbers as JSON (peak RSS of this process only)."""
    from bridge.migrate import migrate

    report = migrate(parse_endpoint(src), parse_endpoint(dst), batch=batch)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"moved": report.moved, "left": report.left_behind,
                      "elapsed": report.elapsed, "maxrss_kb": usage.ru_maxrss}))


def publish(url: str, queue: str, count: int) -> float:
    """Publish ``count`` Celery tasks in chunks; seconds taken."""
    broker = CeleryRedisBroker.from_url(url)
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        broker.publish_messages(queue, [encode_task(new_task("add", [i, 1]))
                                        for i in range(start, min(start + 10_000, count))])
    broker.close()
    return time.perf_counter() - started


def run_child(src: str, dst: str, batch: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.migrate_bench", "--child", src, dst,
                          "--batch", str(batch)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(url: str, count: int, batch: int, tag: str) -> list[dict[str, Any]]:
    """Celery → machinery → Celery for ``count`` messages; one row per direction."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(url, f"celery_{tag}", count)
    rows = []
    legs = [(f"celery+{url}?queue=celery_{tag}", f"machinery+{url}?queue=machinery_{tag}",
             "Celery -> machinery"),
            (f"machinery+{url}?queue=machinery_{tag}", f"celery+{url}?queue=back_{tag}",
             "machinery -> Celery")]
    for src, dst, label in legs:
        result = run_child(src, dst, batch)
        assert result["moved"] == count and result["left"] == 0, result
        used = int(client.info("memory")["used_memory"])
        rows.append({"direction": label, "messages": count, "seconds": result["elapsed"],
                     "rate": count / result["elapsed"], "rss_mb": result["maxrss_kb"] / 1024,
                     "redis_mb": used / 2**20})
    client.flushdb()
    client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--redis", default="", help="a Redis URL (its database is FLUSHED)")
    parser.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.batch)
        return
    with ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        rows = measure(url, REFERENCE, args.batch, "ref")
        if args.messages != REFERENCE:
            rows += measure(url, args.messages, args.batch, "main")
    print(f"{'direction':<22}{'messages':>11}{'seconds':>10}{'msg/s':>10}"
          f"{'peak RSS MB':>13}{'Redis MB':>10}")
    for row in rows:
        print(f"{row['direction']:<22}{row['messages']:>11,}{row['seconds']:>10.1f}"
              f"{row['rate']:>10,.0f}{row['rss_mb']:>13.1f}{row['redis_mb']:>10.0f}")
    print(f"batch {args.batch}; each migration in a fresh process; peak RSS = its ru_maxrss")


if __name__ == "__main__":
    main()
