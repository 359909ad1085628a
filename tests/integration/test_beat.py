"""Two ``mbridge beat`` processes on a 1-second schedule against a real Redis: each tick's
message is in machinery's queue once, in the Celery queue once (read with our decoder),
and in gocraft's scheduled zset once, in Go's bytes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from bridge.beat.gocraft import periodic_job
from bridge.beat.model import parse_entries
from bridge.beat.senders import celery_task_id
from bridge.config import Config
from bridge.protocol.celery import decode_task
from bridge.protocol.kombu_envelope import from_envelope
from tests.integration.test_beat_processes import (
    assert_once_per_tick,
    beats,
    machinery_created_seconds,
    wait_for,
)

TICKS = 6


def test_two_beats_send_each_tick_once_to_all_three_systems(tmp_path: Path,
                                                             private_redis_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    mqueue, cqueue = f"m_{tag}", f"c_{tag}"
    config = tmp_path / "config.yml"
    config.write_text(f"broker: {private_redis_url}\nresult_backend: {private_redis_url}\n"
                      f"default_queue: {mqueue}\n")
    schedule = tmp_path / "schedule.yml"
    schedule.write_text(f"""
entries:
  - name: m-{tag}
    system: machinery
    task: add
    args: [1, 2]
    arg_types: [int64, int64]
    cron: "*/1 * * * * *"
  - name: c-{tag}
    system: celery
    task: proj.add
    args: [1, 2]
    kwargs: {{"z": 3}}
    queue: {cqueue}
    cron: "*/1 * * * * *"
  - name: g-{tag}
    system: gocraft
    job: clean_{tag}
    namespace: ns_{tag}
    cron: "*/1 * * * * *"
""")
    client = redis.Redis.from_url(private_redis_url)
    with beats(2, schedule, config, tmp_path):
        wait_for(f"{TICKS} machinery and Celery ticks",
                 lambda: client.llen(mqueue) >= TICKS and client.llen(cqueue) >= TICKS)

    assert_once_per_tick(machinery_created_seconds(client, mqueue), TICKS)

    entry = parse_entries([{"name": f"c-{tag}", "system": "celery", "every": 1}],
                          Config(broker=private_redis_url))[0]
    tasks = [decode_task(from_envelope(raw)) for raw in client.lrange(cqueue, 0, -1)]
    assert {(t.name, tuple(t.args), tuple(t.kwargs.items())) for t in tasks} == \
        {("proj.add", (1, 2), (("z", 3),))}
    ids = [t.id for t in tasks]
    now = int(time.time())
    by_id = {celery_task_id(entry, float(s)): s for s in range(now - 120, now + 2)}
    assert_once_per_tick([by_id[i] for i in ids], TICKS)  # each id is one tick's

    zset = client.zrange(f"ns_{tag}:scheduled", 0, -1, withscores=True)
    assert zset and all(member == periodic_job(f"clean_{tag}", "*/1 * * * * *", int(score))
                        for member, score in zset)
    assert_once_per_tick([int(score) for _, score in zset], 200)
    assert client.get(f"ns_{tag}:last_periodic_enqueue") is not None
