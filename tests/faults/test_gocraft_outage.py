"""Fault injection: a running gocraft/work pool of ours (``mbridge worker --gocraft``) and its
Redis restarted under it. Every job runs (twice at most for what was held at the fault),
the lock counters come back to zero, the in-progress list empties, and the worker says
"unreachable" and "reconnected" once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from bridge.gocraft import Enqueuer
from bridge.gocraft.keys import GocraftKeys
from tests.faults.controlled_redis import ControlledRedis
from tests.interop.gocraft_go import read_records

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 4


def _wait(what: str, done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
          timeout: float = 90, state: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"the worker exited while waiting for {what}:\n" \
            + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({state()}):\n" \
            + log.read_text()[-1500:]
        time.sleep(0.1)


def test_redis_restart_under_our_gocraft_pool(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = ControlledRedis(tmp_path / "redis")
    server.start()
    record, log = tmp_path / "record.jsonl", tmp_path / "worker.log"
    keys = GocraftKeys("faulty")
    client = redis.Redis.from_url(server.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        jobs = Enqueuer(client, "faulty").enqueue_batch("slow", [{"ms": 20}] * 300)

        def ran() -> Counter[str]:
            return Counter(line["id"] for line in read_records(record))

        def held() -> list[list[bytes]]:
            return [client.lrange(key, 0, -1)
                    for key in client.keys(b"faulty:jobs:slow:*:inprogress")]

        env = {**os.environ, "BRIDGE_GOCRAFT_REDIS": server.url,
               "BRIDGE_GOCRAFT_RECORD": str(record)}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.interop.gocraft_app",
                 "--gocraft", "faulty", "--no-machinery", "--gocraft-job", "slow", "-c",
                 str(CONCURRENCY), "-l", "info"], env=env, cwd=ROOT, stdout=out, stderr=out)
        _wait("50 jobs", lambda: len(ran()) >= 50, proc, log)
        server.stop()
        # down until the worker says so: redis-py's own retries (up to ~5.3 s of back-off)
        # absorb a shorter outage without a word (CI once restarted it 5.0 s later)
        _wait("the worker to say Redis is unreachable",
              lambda: "unreachable" in log.read_text(), proc, log, 30)
        server.start()
        _wait("every job", lambda: len(ran()) == len(jobs), proc, log)
        _wait("the counters", lambda: int(client.get(keys.lock("slow")) or 0) == 0
              and client.llen(keys.jobs("slow")) == 0, proc, log, 30,
              lambda: f"lock {client.get(keys.lock('slow'))!r}, lock_info "
                      f"{client.hgetall(keys.lock_info('slow'))}, queued "
                      f"{client.llen(keys.jobs('slow'))}, held {held()}, "
                      f"runs {sorted(ran().values())[-5:]}")
        counts = ran()
        assert set(counts) == {job.id for job in jobs}
        assert sum(n - 1 for n in counts.values()) <= CONCURRENCY, counts.most_common(5)
        text = log.read_text()
        assert text.count("unreachable") == text.count("reconnected") == 1, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert not client.smembers(keys.worker_pools)  # left the namespace cleanly
        assert held() == []  # nothing left in progress
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()
        server.close()
