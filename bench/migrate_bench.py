"""``mbridge migrate`` throughput and peak memory: Celery → machinery and back.

Run: ``python -m bench.migrate_bench [--messages 100000] [--batch 1000] [--relay N]
[--amqp URL] [--redis URL] [--processes 1 2] [--relay-processes 1 2]``.
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

from bench.proc_cpu import redis_cpu_seconds, tree_cpu_seconds
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.endpoints import parse_endpoint
from bridge.localredis import local_redis
from bridge.protocol.celery import encode_task, new_task

REFERENCE = 10_000


def child(src: str, dst: str, batch: int, processes: int) -> None:
    """Run one migration and print its numbers as JSON (peak RSS of this process only: a
    helper process's is about the same)."""
    from bridge.migrate import migrate

    report = migrate(parse_endpoint(src), parse_endpoint(dst), batch=batch,
                     processes=processes)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"moved": report.moved, "left": report.left_behind,
                      "elapsed": report.elapsed, "maxrss_kb": usage.ru_maxrss}))


def publish(url: str, queue: str, count: int) -> float:
    """Publish ``count`` Celery tasks in chunks (Redis or RabbitMQ); seconds taken."""
    broker: Any
    if url.startswith("amqp"):
        from bridge.brokers.celery_amqp import CeleryAmqpBroker

        broker = CeleryAmqpBroker.from_url(url)
    else:
        broker = CeleryRedisBroker.from_url(url)
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        broker.publish_messages(queue, [encode_task(new_task("add", [i, 1]))
                                        for i in range(start, min(start + 10_000, count))])
    broker.close()
    return time.perf_counter() - started


def run_child(src: str, dst: str, batch: int, processes: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.migrate_bench", "--child", src, dst,
                          "--batch", str(batch), "--processes", str(processes)],
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(url: str, count: int, batch: int, tag: str, broker: str = "",
            processes: int = 1) -> list[dict[str, Any]]:
    """Celery → machinery → Celery for ``count`` messages; one row per direction. The
    queues are on ``broker`` (default: the Redis at ``url``, which holds the states)."""
    broker = broker or url
    backend = f"&backend={url}" if broker != url else ""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(broker, f"celery_{tag}", count)
    rows = []
    where = " (RabbitMQ)" if broker != url else (f" -P {processes}" if processes > 1 else "")
    legs = [(f"celery+{broker}?queue=celery_{tag}{backend}",
             f"machinery+{broker}?queue=machinery_{tag}{backend}", "Celery -> machinery"),
            (f"machinery+{broker}?queue=machinery_{tag}{backend}",
             f"celery+{broker}?queue=back_{tag}{backend}", "machinery -> Celery")]
    for src, dst, label in legs:
        result = run_child(src, dst, batch, processes)
        assert result["moved"] == count and result["left"] == 0, result
        used = int(client.info("memory")["used_memory"])
        rows.append({"direction": label + where, "messages": count,
                     "seconds": result["elapsed"], "rate": count / result["elapsed"],
                     "rss_mb": result["maxrss_kb"] / 1024, "redis_mb": used / 2**20})
    client.flushdb()
    client.close()
    return rows


def relay_leg(url: str, src: str, dst: str, dst_queue: str, count: int,
              processes: int = 1) -> dict[str, Any]:
    """``mbridge relay SRC → DST`` over a full source queue: msg/s from the first message on
    the destination to the last, the relay's peak RSS (VmHWM) before it stops, and the CPU
    a message of the relay's processes and of redis-server over the same span."""
    client = redis.Redis.from_url(url)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "relay", "--from", src,
                             "--to", dst, "-l", "warning", "--processes", str(processes)],
                            stdout=subprocess.DEVNULL)
    try:
        first = None
        deadline = time.monotonic() + 600 + count / 500
        while (moved := int(client.llen(dst_queue))) < count:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"relay stopped or stalled at {moved} of {count}")
            if first is None and moved:
                first = (time.monotonic(), moved, tree_cpu_seconds(proc.pid),
                         redis_cpu_seconds(client))
            time.sleep(0.01)
        last = time.monotonic()
        relay_cpu, redis_cpu = tree_cpu_seconds(proc.pid), redis_cpu_seconds(client)
        with open(f"/proc/{proc.pid}/status") as status:
            hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        client.close()
    began, already, relay_before, redis_before = first or (last, 0, relay_cpu, redis_cpu)
    span = max(count - already, 1)
    return {"rate": (count - already) / max(last - began, 1e-9), "rss_mb": hwm / 1024,
            "relay_us": (relay_cpu - relay_before) / span * 1e6,
            "redis_us": (redis_cpu - redis_before) / span * 1e6}


def relay_rows(url: str, count: int, processes: int = 1) -> list[dict[str, Any]]:
    """Celery → machinery, then machinery → Celery, each by a running relay (with
    ``processes`` side by side)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(url, "celery_relay", count)
    rows = []
    for src, dst, queue, label in (
            (f"celery+{url}?queue=celery_relay", f"machinery+{url}?queue=machinery_relay",
             "machinery_relay", "relay Celery -> machinery"),
            (f"machinery+{url}?queue=machinery_relay", f"celery+{url}?queue=back_relay",
             "back_relay", "relay machinery -> Celery")):
        leg = relay_leg(url, src, dst, queue, count, processes)
        if processes > 1:
            label += f" -P {processes}"
        rows.append({"direction": label, "messages": count, "seconds": count / leg["rate"],
                     "rate": leg["rate"], "rss_mb": leg["rss_mb"],
                     "cpu": f"{leg['relay_us']:.0f} + {leg['redis_us']:.0f}",
                     "redis_mb": int(client.info("memory")["used_memory"]) / 2**20})
    client.flushdb()
    client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--redis", default="", help="a Redis URL (its database is FLUSHED)")
    parser.add_argument("--relay", type=int, default=0, metavar="N",
                        help="also time a running relay over N messages each way")
    parser.add_argument("--amqp", default="", metavar="URL",
                        help="also move --messages over RabbitMQ at URL (states in Redis)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], metavar="N",
                        help="move --messages with each of these --processes (Redis)")
    parser.add_argument("--relay-processes", type=int, nargs="+", default=[1], metavar="N",
                        help="time the relays with each of these --processes")
    parser.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.batch, args.processes[0])
        return
    with ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        rows = measure(url, REFERENCE, args.batch, "ref")
        for processes in args.processes:
            if args.messages != REFERENCE or processes > 1:
                rows += measure(url, args.messages, args.batch, "main", processes=processes)
        if args.amqp:
            rows += measure(url, args.messages, args.batch, "amqp", broker=args.amqp)
        if args.relay:
            for processes in args.relay_processes:
                rows += relay_rows(url, args.relay, processes)
    print(f"{'direction':<32}{'messages':>11}{'seconds':>10}{'msg/s':>10}"
          f"{'peak RSS MB':>13}{'Redis MB':>10}{'CPU us/msg':>14}")
    for row in rows:
        print(f"{row['direction']:<32}{row['messages']:>11,}{row['seconds']:>10.1f}"
              f"{row['rate']:>10,.0f}{row['rss_mb']:>13.1f}{row['redis_mb']:>10.0f}"
              f"{row.get('cpu', ''):>14}")
    print(f"batch {args.batch}; each migration in a fresh process; peak RSS = its ru_maxrss "
          "(-P N: of the run's process; each helper's is about the same; a relay's: its "
          "VmHWM once the last message arrived); CPU us/msg (relays): the relay's processes "
          "+ redis-server's, from the first message on the destination to the last")


if __name__ == "__main__":
    main()
