"""SQS worker benchmark: our worker vs Go machinery v2's, one moto endpoint, same run.

For each worker a fresh queue is fed N no-op tasks (machinery's bodies, PENDING in Redis)
while the worker runs, at most ``--depth`` waiting at once (moto's ReceiveMessage scans the
whole queue for every message it returns, so a deep queue would measure moto); throughput is
N over the time from the first task taken to the last SUCCESS (states in Redis, as both write
them). Rounds alternate the two.

The endpoint's share: the CPU time moto's process spends during each run, per task, next
to the worker process's own. moto is Python on the same machine: on a small machine it
competes with the workers for the CPU, which SQS itself would not.

Run (after `bash .ci/setup` and `compat_fixtures/build.sh`):
``python -m bench.sqs_bench --tasks 3000 --rounds 3``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.proc_cpu import cpu_seconds
from bridge.app import Bridge
from bridge.config import Config, SQSConfig

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "compat_fixtures" / "bin" / "harness-v2"


def _bench_app() -> Bridge | None:
    """The app ``mbridge worker -A bench.sqs_bench:app`` runs ($BENCH_SQS_BROKER...)."""
    broker = os.environ.get("BENCH_SQS_BROKER")
    if not broker:
        return None
    backend = os.environ["BENCH_REDIS"]
    bench = Bridge(Config(broker=broker, result_backend=backend,
                          default_queue=os.environ["BENCH_QUEUE"],
                          sqs=SQSConfig(wait_time_seconds=1)))

    @bench.task("noop")
    def noop() -> None:
        """Does nothing: the benchmark measures the machinery around it."""

    return bench


app = _bench_app()


class Feeder(threading.Thread):
    """Sends N no-op tasks (PENDING states first) in chunks, keeping at most ``depth``
    waiting: moto's ReceiveMessage costs grow with the queue's length, so a shallow queue
    measures the workers rather than moto's list scans."""

    def __init__(self, broker: str, backend: str, sqs: Any, queue: str, n: int,
                 depth: int) -> None:
        super().__init__(daemon=True)
        self.producer = Bridge(Config(broker=broker, result_backend=backend,
                                      default_queue=queue))
        self.url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        self.sqs, self.n, self.depth = sqs, n, depth
        self.uuids = [f"task_{uuid.uuid4()}" for _ in range(n)]
        self.error: BaseException | None = None

    def waiting(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def run(self) -> None:
        try:
            chunk = max(10, self.depth // 2)
            for offset in range(0, self.n, chunk):
                while offset and self.waiting() > self.depth - chunk:
                    time.sleep(0.02)
                sigs = [self.producer.signature("noop") for _ in self.uuids[offset:offset + chunk]]
                for sig, task_uuid in zip(sigs, self.uuids[offset:offset + chunk], strict=True):
                    sig.uuid = task_uuid
                self.producer.send_batch(sigs)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.producer.close()


def wait_done(backend: str, uuids: list[str], timeout: float = 900) -> float:
    """Seconds from the first task taken (a state past PENDING) to the last SUCCESS."""
    import redis

    client = redis.Redis.from_url(backend)
    first: float | None = None
    remaining = list(uuids)
    began = time.monotonic()
    while remaining:
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{len(remaining)} of {len(uuids)} tasks not done")
        values = client.mget(remaining[:2000])
        if first is None and any(v is not None and b'"State":"PENDING"' not in v for v in values):
            first = time.monotonic()
        done = sum(1 for v in values if v is not None and b'"State":"SUCCESS"' in v)
        if done == len(values):
            remaining = remaining[len(values):]
            continue
        time.sleep(0.02)
    return time.monotonic() - (first or began)


def run_worker(cmd: list[str], env: dict[str, str], broker: str, backend: str, sqs: Any,
               n: int, depth: int, moto_pid: int) -> tuple[float, float, float]:
    """(tasks/s, worker CPU ms per task, moto CPU ms per task) of the worker ``cmd`` + its
    queue, fed ``n`` tasks ``depth`` deep."""
    queue = f"bench_{uuid.uuid4().hex[:8]}"
    sqs.create_queue(QueueName=queue)
    feeder = Feeder(broker, backend, sqs, queue, n, depth)
    proc = subprocess.Popen([*cmd, queue], env={**env, "BENCH_QUEUE": queue}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moto_before = cpu_seconds(moto_pid)
    feeder.start()
    try:
        elapsed = wait_done(backend, feeder.uuids)
        worker_cpu = cpu_seconds(proc.pid)
        moto_cpu = cpu_seconds(moto_pid) - moto_before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if feeder.error is not None:
        raise feeder.error
    return n / elapsed, worker_cpu * 1000 / n, moto_cpu * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depth", type=int, default=40,
                        help="most tasks waiting in the queue at once (moto slows with depth)")
    args = parser.parse_args()
    from bridge.localredis import local_redis
    from tests.backend_servers import start_moto

    c = args.concurrency
    samples: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as work, local_redis() as backend:
        moto = start_moto(Path(work))
        assert moto.proc is not None
        try:
            env = {**os.environ, **moto.env(), "BENCH_SQS_BROKER": moto.sqs_broker_url,
                   "BENCH_REDIS": backend, "PYTHONPATH": str(ROOT)}
            os.environ.update({k: v for k, v in moto.env().items() if k != "AWS_ENDPOINT_URL"})
            sqs = moto.client("sqs")
            broker = moto.sqs_broker_url
            ours = [sys.executable, "-m", "bridge.cli", "worker", "-A", "bench.sqs_bench:app",
                    "-c", str(c), "-l", "warning", "-Q"]
            go = [str(HARNESS), "worker", "-q", "--broker", broker, "--backend", backend,
                  "--concurrency", str(c), "--sqs-wait", "1", "--queue"]
            for _ in range(args.rounds):  # alternate: a slow spell of the machine hits both
                for name, cmd in ((f"bridge worker (-c {c} threads)", ours),
                                  (f"Go machinery v2 worker (concurrency {c})", go)):
                    samples.setdefault(name, []).append(run_worker(
                        cmd, env, broker, backend, sqs, args.tasks, args.depth,
                        moto.proc.popen.pid))
        finally:
            moto.stop()
    print(f"{args.tasks} no-op tasks on moto {moto.endpoint} (Redis backend), at most "
          f"{args.depth} waiting, median of {args.rounds} round(s); CPU ms per task")
    rates = []
    for name, values in samples.items():
        rate, worker_ms, moto_ms = (statistics.median(v[i] for v in values) for i in range(3))
        rates.append(rate)
        print(f"  {name:42s} {rate:6.0f} tasks/s {1000 / rate:6.2f} ms/task   worker CPU "
              f"{worker_ms:5.2f}  moto CPU {moto_ms:5.2f}  (endpoint "
              f"{moto_ms / (moto_ms + worker_ms):.0%} of the two)")
    print(f"  ratio bridge / Go v2: {rates[0] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
