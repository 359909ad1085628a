"""Scale: throughput against 1, 2 and 4 worker processes, and against a 1,000,000-message
backlog (does the cost per task stay flat as the queue drains?), ours beside Go's.

Processes: N no-op tasks as ``bench.worker_bench`` sends them (PENDING states, then the
same message bytes), P worker processes each with the same concurrency, ours and Go
machinery v2 alternating within each round: ours as users run them (``mbridge worker
--processes P``, whose workers do not spin for Redis's replies with fewer than two cores
each), Go's as P harness processes. The messages are pushed in one transaction once
all P workers wait on the queue (a Python worker starts in ~0.4-1.4 s here, Go's in ~0.02 s,
so started on a full queue the first process would run alone for a while); the rate is N
over push → last SUCCESS.
Backlog: the queue is filled with pipelined SET (PENDING) + RPUSH of pre-encoded bytes,
then one worker drains it while LLEN is sampled; each window is a tenth of the backlog.

Run (after ``bash .ci/setup``): ``python -m bench.scale_bench [--tasks 20000]
[--processes 1,2,4] [--backlog 1000000] [--rounds 1] [--redis URL] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import redis

from bench.worker_bench import HARNESS, bench_setup, start, stop, wait_blocked, wait_done
from bridge.backends.base import new_state
from bridge.cli.worker_processes import die_with_parent
from bridge.localredis import local_redis
from bridge.protocol.machinery import PENDING, Signature, new_uuid

CHUNK = 10_000
WINDOWS = 10
SUCCESS = b'"State":"SUCCESS"'


def spawn(count: int, cmd: list[str]) -> None:
    """Hidden ``--spawn``: run COUNT copies of CMD until SIGTERM, then stop them all (each
    copy also gets SIGTERM if this process dies, so none is left behind)."""
    stopping = False

    def on_term(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    procs = [subprocess.Popen(cmd, preexec_fn=die_with_parent) for _ in range(count)]
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.1)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def task_id(run: str, i: int) -> str:
    """A machinery task UUID whose last group is the index (keys can be rebuilt, not kept)."""
    return f"task_{run}-{i:012x}"


def fill(client: redis.Redis, queue: str, n: int, run: str, push: bool = True
         ) -> list[bytes]:
    """PENDING states and RPUSH of N no-op signatures, a pipeline per CHUNK; without
    ``push`` only the states are written and the message bodies returned."""
    first = task_id(run, 0)
    sig = Signature(uuid=first, name="noop", routing_key=queue, args=[], headers={})
    body_head, body_tail = sig.to_json().split(first.encode())
    state_head, state_tail = new_state(sig, PENDING).to_json().split(first.encode())
    held: list[bytes] = []
    for offset in range(0, n, CHUNK):
        pipe = client.pipeline(transaction=False)
        bodies = []
        for i in range(offset, min(offset + CHUNK, n)):
            uid = task_id(run, i).encode()
            pipe.set(uid, state_head + uid + state_tail, ex=3600)
            bodies.append(body_head + uid + body_tail)
        if push:
            pipe.rpush(queue, *bodies)
        else:
            held += bodies
        pipe.execute()
    return held


def successes(client: redis.Redis, run: str, start_at: int, stop_at: int) -> int:
    """How many of the tasks start_at..stop_at-1 have a SUCCESS state (MGET in chunks)."""
    done = 0
    for offset in range(start_at, stop_at, CHUNK):
        keys = [task_id(run, i) for i in range(offset, min(offset + CHUNK, stop_at))]
        done += sum(1 for v in client.mget(keys) if v is not None and SUCCESS in v)
    return done


def processes_run(n: int, count: int, head: list[str], env: dict[str, str],
                  client: redis.Redis, supervised: bool) -> float:
    """Tasks/s of COUNT workers for N tasks pushed once they all wait: push → last SUCCESS.
    ``supervised``: one ``head + [queue, "--processes", COUNT]``; else COUNT of ``head +
    [queue]`` under one ``--spawn`` parent."""
    client.flushdb()
    run, queue = new_uuid("")[:23], f"bench_{os.urandom(3).hex()}"
    bodies = fill(client, queue, n, run, push=False)
    cmd = ([*head, queue, "--processes", str(count)] if supervised else
           [sys.executable, "-m", "bench.scale_bench", "--spawn", str(count), "--", *head, queue])
    proc = start(cmd, {**env, "BENCH_QUEUE": queue})
    try:
        wait_blocked(client, count, proc)
        pipe = client.pipeline(transaction=True)
        for offset in range(0, n, CHUNK):
            pipe.rpush(queue, *bodies[offset:offset + CHUNK])
        began = time.monotonic()
        pipe.execute()
        _, last = wait_done(client, queue, [task_id(run, i) for i in range(n)], SUCCESS,
                            timeout=600)
    finally:
        stop(proc)
    return n / (last - began)


def drain(client: redis.Redis, queue: str, n: int, run: str, timeout: float
          ) -> list[float]:
    """Times of: the first take, each tenth of the backlog taken (LLEN sampled every 20 ms),
    and the last SUCCESS (the last 1,000 tasks polled after the queue is empty)."""
    began = time.monotonic()
    marks: list[float] = []
    bounds = [n - 1] + [n - n * k // WINDOWS for k in range(1, WINDOWS)]  # LLEN at starts
    tail = max(0, n - 1000)
    while True:
        now = time.monotonic()
        if now - began > timeout:
            raise TimeoutError(f"backlog not drained in {timeout:.0f} s")
        length = client.llen(queue)
        while len(marks) < WINDOWS and length <= bounds[len(marks)]:
            marks.append(now)
        if length == 0 and successes(client, run, tail, n) == n - tail:
            return [*marks, time.monotonic()]
        time.sleep(0.02 if length else 0.05)


def backlog_run(n: int, cmd: list[str], env: dict[str, str], client: redis.Redis
                ) -> dict[str, Any]:
    """Fill, drain with one worker, check every state; window rates and Redis memory."""
    client.flushdb()
    run, queue = new_uuid("")[:23], f"backlog_{os.urandom(3).hex()}"
    base = int(client.info("memory")["used_memory"])
    began = time.monotonic()
    fill(client, queue, n, run)
    fill_s = time.monotonic() - began
    used = int(client.info("memory")["used_memory"])
    proc = start([*cmd, queue], {**env, "BENCH_QUEUE": queue})
    try:
        marks = drain(client, queue, n, run, timeout=max(900.0, n / 200))
    finally:
        stop(proc)
    taken = [n * k // WINDOWS for k in range(WINDOWS + 1)]
    return {"rates": [(taken[k + 1] - taken[k]) / (marks[k + 1] - marks[k])
                      for k in range(WINDOWS)],
            "overall": n / (marks[-1] - marks[0]), "fill": n / fill_s,
            "redis_mb": used / 2**20, "per_msg": (used - base) / n,
            "ok": successes(client, run, 0, n), "left": client.llen(queue)}


def rng(values: list[float]) -> str:
    return f"{min(values):,.0f}–{max(values):,.0f}"


def print_processes(samples: dict[tuple[str, int], list[float]], procs: list[int], c: int,
                    rounds: int) -> None:
    print(f"\nThroughput against worker processes: no-op tasks, one Redis, {os.cpu_count()} "
          f"cores, each process concurrency {c}, median of {rounds} round(s)\n")
    print("| worker processes | bridge tasks/s | range | Go machinery v2 tasks/s | range "
          f"| bridge ÷ Go | ÷ own rate at {procs[0]} process(es): bridge, Go |")
    print("|---|---|---|---|---|---|---|")
    base_o, base_g = (statistics.median(samples[(k, procs[0])]) for k in ("ours", "go"))
    for p in procs:
        ours, go = samples[("ours", p)], samples[("go", p)]
        mo, mg = statistics.median(ours), statistics.median(go)
        print(f"| {p} (total concurrency {p * c}) | {mo:,.0f} | {rng(ours)} | {mg:,.0f} "
              f"| {rng(go)} | {mo / mg:.2f}× | {mo / base_o:.2f}×, {mg / base_g:.2f}× |")
    print("\nEach run: PENDING states written, the P workers started and all blocked on the "
          "empty queue, then the messages pushed in one transaction; tasks/s = N / (push → "
          "last SUCCESS state).")


def print_backlog(results: dict[str, dict[str, Any]], n: int, c: int) -> None:
    ours, go = results["ours"], results["go"]
    print(f"\nThroughput against a {n:,}-message backlog: one worker process each "
          f"(concurrency {c}), no-op tasks\n")
    print("| backlog taken | queue length at start | bridge tasks/s | Go machinery v2 tasks/s "
          "| bridge ÷ Go |")
    print("|---|---|---|---|---|")
    step = 100 // WINDOWS
    for k, (a, b) in enumerate(zip(ours["rates"], go["rates"], strict=True)):
        print(f"| {k * step}–{(k + 1) * step}% | {n - n * k // WINDOWS:,} | {a:,.0f} "
              f"| {b:,.0f} | {a / b:.2f}× |")
    print(f"| whole drain | | {ours['overall']:,.0f} | {go['overall']:,.0f} "
          f"| {ours['overall'] / go['overall']:.2f}× |")
    for name, r in (("bridge", ours), ("Go", go)):
        rates = r["rates"]
        print(f"\n{name}: last window ÷ first {rates[-1] / rates[0]:.2f}, slowest ÷ fastest "
              f"{min(rates) / max(rates):.2f}; {r['ok']:,}/{n:,} SUCCESS states, "
              f"{r['left']} left in the queue; fill {r['fill']:,.0f} msg/s; Redis "
              f"{r['redis_mb']:,.0f} MB used with the full backlog "
              f"({r['per_msg']:.0f} B per message with its PENDING state)")
    print("\nWindows: LLEN sampled every 20 ms; window k runs from the sample where the queue "
          "first fell to its start length to the one where it fell a tenth lower (the first "
          "from the first take, the last to the last SUCCESS of the last 1,000 tasks). "
          "So windows 1–9 count takes; with ≤ the prefetch in flight, takes ≈ completions. "
          "Every state is checked with MGET after the worker stopped (outside the timing).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, help="tasks per processes run (20000)")
    parser.add_argument("--processes", help="worker process counts (1,2,4)")
    parser.add_argument("--backlog", type=int, help="backlog messages (1000000)")
    parser.add_argument("--concurrency", type=int, default=8, help="per worker process")
    parser.add_argument("--rounds", type=int, default=1,
                        help="processes runs per contender, alternating; medians")
    parser.add_argument("--only", choices=["processes", "backlog"])
    parser.add_argument("--redis", default="", help="a Redis URL (its database is FLUSHED)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tasks 2000, backlog 10000, processes 1,2")
    parser.add_argument("--spawn", type=int, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.spawn:
        spawn(args.spawn, rest[1:] if rest[:1] == ["--"] else rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    quick = args.quick
    n = args.tasks or (2000 if quick else 20_000)
    backlog = args.backlog or (10_000 if quick else 1_000_000)
    procs = [int(p) for p in (args.processes or ("1,2" if quick else "1,2,4")).split(",")]
    c = args.concurrency
    samples: dict[tuple[str, int], list[float]] = {}
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        env, client, ours = bench_setup(url, c)
        heads = {"ours": [*ours, "-Q"],
                 "go": [str(HARNESS), "worker", "--broker", url, "--backend", url,
                        "--concurrency", str(c), "--queue"]}
        if args.only != "backlog":
            for _ in range(args.rounds):  # alternate, so a slow spell of the VM hits both
                for p in procs:
                    for name, head in heads.items():
                        rate = processes_run(n, p, head, env, client, name == "ours")
                        samples.setdefault((name, p), []).append(rate)
        if args.only != "processes":
            for name, head in heads.items():
                results[name] = backlog_run(backlog, head, env, client)
        client.flushdb()
        client.close()
    print(f"command: python -m bench.scale_bench {' '.join(sys.argv[1:])}".rstrip())
    if samples:
        print_processes(samples, procs, c, args.rounds)
    if results:
        print_backlog(results, backlog, c)


if __name__ == "__main__":
    main()
