"""A real Go gocraft/work v0.5.1 pool's PeriodicallyEnqueue and two ``mbridge beat``
processes on the same job name and spec (``*/2 * * * * *``) in one namespace: every
writer adds the same ``<ns>:scheduled`` member per tick, so each tick is one job, run once
by the Go pool (id ``periodic:tick:<spec>:<epoch>``)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
import redis

from bridge.beat.gocraft import periodic_job
from tests.integration.test_beat_processes import beats, wait_for
from tests.interop.gocraft_go import go_pool, read_records

pytestmark = pytest.mark.go
SPEC = "*/2 * * * * *"
JOB = "tick"
TICKS = 6


def test_go_periodic_enqueue_and_two_beats_schedule_each_tick_once(
        gocraft_bin: dict[str, Path], tmp_path: Path, private_redis_url: str) -> None:
    ns = f"gcbeat{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yml"
    config.write_text(f"broker: {private_redis_url}\nresult_backend: {private_redis_url}\n")
    schedule = tmp_path / "schedule.yml"
    schedule.write_text(f"""
- name: tick-{ns}
  system: gocraft
  job: {JOB}
  namespace: {ns}
  cron: "{SPEC}"
""")
    client = redis.Redis.from_url(private_redis_url)
    scheduled, last_key = f"{ns}:scheduled", f"{ns}:last_periodic_enqueue"
    record = tmp_path / "record.jsonl"

    def ran() -> list[str]:
        return [run["id"] for run in read_records(record)]

    with beats(2, schedule, config, tmp_path) as logs:
        wait_for("the beats' first passes", lambda: client.zcard(scheduled) > 0 and all(
            "beat: 1 job(s)" in log.read_text() for log in logs), timeout=60)
        # Go's pool skips its start-up pass if last_periodic_enqueue is under 2 s old
        # (v0.5.1's shouldEnqueue): let it be older, so Go's pass overlaps the beats'.
        time.sleep(3)
        go_started = int(time.time())
        with go_pool(gocraft_bin["harness"], private_redis_url, ns, [JOB], record,
                     periodic=[f"{SPEC}={JOB}"]):
            wait_for("Go's pass", lambda: int(client.get(last_key) or 0) >= go_started,
                     timeout=30)
            wait_for(f"{TICKS} ticks run", lambda: len(ran()) >= TICKS, timeout=90)
        zset = cast("list[tuple[bytes, float]]",
                    client.zrange(scheduled, 0, -1, withscores=True))

    runs = read_records(record)
    assert {(r["pool"], r["name"], r["outcome"], r["fails"], r["args"]) for r in runs} == {
        ("go", JOB, "ok", 0, None)}
    ids = [r["id"] for r in runs]
    assert [i for i, n in Counter(ids).items() if n != 1] == [], ids  # no tick ran twice
    prefix = f"periodic:{JOB}:{SPEC}:"
    assert all(i.startswith(prefix) for i in ids), ids
    epochs = sorted(int(i.removeprefix(prefix)) for i in ids)
    assert len(epochs) >= TICKS and epochs[0] % 2 == 0, epochs
    assert epochs == list(range(epochs[0], epochs[-1] + 1, 2)), f"a tick was skipped: {epochs}"

    # the ticks still ahead: one member each, in Go's bytes, none of them already run
    scores = [int(score) for _, score in zset]
    assert zset and all(member == periodic_job(JOB, SPEC, int(score)) for member, score in zset)
    assert [s for s, n in Counter(scores).items() if n != 1] == [], scores
    assert not set(scores) & set(epochs)
    assert scores == list(range(scores[0], scores[-1] + 1, 2))
