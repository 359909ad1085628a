"""CPU-bound tasks: one worker process against every core, and against Celery's prefork.

Each task is about 1 ms of pure Python (``bench.bench_apps.burn(20000)``, which holds the
GIL), on one Redis, same run, our workers at ``-c`` = twice the number of cores: with
threads (one process: the GIL lets one task run at a time); with ``--processes`` at twice
the number of cores (whole workers side by side, each with its task threads and its own
loop); with ``--pool processes`` (one loop, a child process per thread: a second child per
core runs while the first waits for the loop to hand it its next task). Celery prefork at
``-c`` = the number of cores. Our workers are started first and the tasks sent once every loop
waits on the queue (a worker process starts in 0.4-1.4 s here: on a full queue the first
would run alone for a while); the rate is send → last SUCCESS. Celery's worker starts on
the full queue, timed from its first take. Prints tasks/s and the ratios.

Run (after `bash .ci/setup`): ``python -m bench.cpu_bench --tasks 12000 --rounds 3``
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

from bench.bench_apps import burn
from bench.worker_bench import bench_setup, celery_run, machinery_run
from bridge.localredis import local_redis
from bridge.process_slots import ProcessSlots

WORK = 20000  # burn(n): about 1 ms


def children_alone(tasks: int, concurrency: int) -> float:
    """Tasks/s through ``concurrency`` threads each feeding its own child process, with no
    broker, backend or worker loop: the ceiling of ``--pool processes`` on this machine."""
    slots = ProcessSlots()
    per_thread = tasks // concurrency
    ready = threading.Barrier(concurrency + 1)

    def feed() -> None:
        slots.call(burn, [WORK], {})  # this thread's child started before the clock runs
        ready.wait()
        for _ in range(per_thread):
            slots.call(burn, [WORK], {})

    try:
        threads = [threading.Thread(target=feed) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        ready.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        return per_thread * concurrency / (time.perf_counter() - began)
    finally:
        slots.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=12000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    c = args.concurrency
    with local_redis() as url:
        env, client, ours = bench_setup(url, 2 * c)
        def ours_run(*extra: str, loops: int = 1) -> float:
            return machinery_run(url, args.tasks, lambda q: [*ours, *extra, "-Q", q], env,
                                 client, "burn", WORK, loops=loops)

        runs: dict[str, Callable[[], float]] = {
            f"bridge worker, threads (-c {2 * c}, one process)": lambda: ours_run(),
            f"bridge worker, --processes {2 * c} (-c {2 * c} each)": lambda: ours_run(
                "--processes", str(2 * c), loops=2 * c),
            f"bridge worker, --pool processes (-c {2 * c})": lambda: ours_run(
                "--pool", "processes"),
            f"Celery 5 worker (prefork -c {c}, acks_late)": lambda: celery_run(
                url, args.tasks, "prefork", c, env, client, "burn", WORK),
        }
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # alternate, so a slow spell of the machine hits all
            for name, run in runs.items():
                samples.setdefault(name, []).append(run())
    rows = {name: statistics.median(values) for name, values in samples.items()}
    single, processes, pool, celery = rows.values()
    print(f"CPU-bound tasks (~1 ms of pure Python each), {os.cpu_count()} cores, "
          f"median of {args.rounds} round(s)")
    print(f"{'worker':48} {'tasks/s':>9} {'range':>14}")
    for name, rate in rows.items():
        print(f"{name:48} {rate:9.0f} {min(samples[name]):6.0f}-{max(samples[name]):<6.0f}")
    ceiling = children_alone(args.tasks, c)
    print(f"{'(ceiling: the child processes alone, no Redis)':48} {ceiling:9.0f}")
    print(f"\nvs one process: --processes {processes / single:.2f}x, --pool processes "
          f"{pool / single:.2f}x; vs Celery prefork: --processes {processes / celery:.2f}x, "
          f"--pool processes {pool / celery:.2f}x")


if __name__ == "__main__":
    main()
