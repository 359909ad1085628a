"""The machinery path at equal concurrency: our worker, Go machinery v2 and Celery's best.

Each shape P×C runs P worker processes of concurrency C: ours as users run them
(``mbridge worker --processes P -c C``), Go's as P harness
processes of ``--concurrency C``, so both hold the same number of tasks at once. A run is
``bench.scale_bench``'s: N no-op tasks with their PENDING states, the workers started and
all waiting on the empty queue, the messages pushed in one transaction, tasks/s = N over
push → last SUCCESS. Celery 5 (acks_late, Celery's own messages and result metas) runs on
the same Redis in each round with its usual pools (solo; prefork at the cores and at 8;
threads at 32); its best median is the one every shape is divided by.

Run (after ``bash .ci/setup``): ``python -m bench.concurrency_bench [--shapes
1x8,1x32,4x8,4x32,4x128] [--tasks 60000] [--celery-tasks 4000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench.scale_bench import processes_run, rng
from bench.worker_bench import HARNESS, bench_setup, celery_run
from bridge.localredis import local_redis

SHAPES = "1x8,1x32,1x128,4x8,4x32,4x128"


def celery_pools() -> list[tuple[str, int]]:
    """Celery's usual pools: solo, prefork at the cores and at 8, threads at 32."""
    return [("solo", 1), ("prefork", os.cpu_count() or 1), ("prefork", 8), ("threads", 32)]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"1x8,4x32"`` → ``[(1, 8), (4, 32)]`` (processes, concurrency each)."""
    shapes = []
    for item in text.split(","):
        processes, _, concurrency = item.strip().partition("x")
        shapes.append((int(processes), int(concurrency)))
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES, help=f"PxC list ({SHAPES})")
    parser.add_argument("--tasks", type=int, default=60_000, help="tasks a machinery run")
    parser.add_argument("--celery-tasks", type=int, default=4000, help="tasks a Celery run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    args = parser.parse_args()
    shapes = parse_shapes(args.shapes)
    samples: dict[tuple[str, int, int], list[float]] = {}
    celery: dict[tuple[str, int], list[float]] = {}
    with local_redis() as url:
        for _ in range(args.rounds):  # alternate, so a slow spell of the VM hits all
            for p, c in shapes:
                env, client, ours = bench_setup(url, c)
                heads = {"ours": [*ours, "-Q"],
                         "go": [str(HARNESS), "worker", "--broker", url, "--backend", url,
                                "--concurrency", str(c), "--queue"]}
                for name, head in heads.items():
                    rate = processes_run(args.tasks, p, head, env, client, name == "ours")
                    samples.setdefault((name, p, c), []).append(rate)
                client.close()
            env, client, _ = bench_setup(url, 1)
            for pool, c in celery_pools():
                celery.setdefault((pool, c), []).append(
                    celery_run(url, args.celery_tasks, pool, c, env, client))
            client.close()
    print(f"command: python -m bench.concurrency_bench {' '.join(sys.argv[1:])}".rstrip())
    medians = {key: statistics.median(values) for key, values in celery.items()}
    best_key = max(medians, key=lambda key: medians[key])
    best = medians[best_key]
    print(f"\nNo-op tasks, one Redis, {os.cpu_count()} cores, median of {args.rounds} "
          f"round(s); {args.tasks:,} machinery tasks a run, {args.celery_tasks:,} Celery\n")
    print("| processes × concurrency | bridge tasks/s | range | Go machinery v2 tasks/s "
          "| range | bridge ÷ Go | bridge ÷ Celery's best |")
    print("|---|---|---|---|---|---|---|")
    for p, c in shapes:
        ours, go = samples[("ours", p, c)], samples[("go", p, c)]
        mo, mg = statistics.median(ours), statistics.median(go)
        print(f"| {p} × {c} (total {p * c}) | {mo:,.0f} | {rng(ours)} | {mg:,.0f} "
              f"| {rng(go)} | {mo / mg:.2f}× | {mo / best:.1f}× |")
    print("\n| Celery 5 worker (acks_late) | tasks/s | range |")
    print("|---|---|---|")
    for (pool, c), values in celery.items():
        mark = " (best)" if (pool, c) == best_key else ""
        print(f"| {pool} -c {c}{mark} | {medians[(pool, c)]:,.0f} | {rng(values)} |")


if __name__ == "__main__":
    main()
