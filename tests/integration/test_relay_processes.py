"""``mbridge relay --processes N`` on a real redis-server: N relays side by side relay every
message once, each carries back the results it owes, a helper that dies is started again,
helpers stop with the run (or when it is killed), and a smaller N takes over the results in
flight of the helpers it no longer runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.protocol.celery import encode_task, new_task
from bridge.relay import inflight_key
from bridge.relay.processes import adopt_orphans, helper_name
from tests.integration.test_relay import fresh, machinery_worker
from tests.proc_tree import alive, grandchildren

ROOT = Path(__file__).resolve().parents[2]


def eventually(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f} s: {what}"
        time.sleep(0.05)
    return value


@contextmanager
def relay_cli(url: str, cq: str, mq: str, processes: int, log: Path
              ) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "relay", "--from", f"celery+{url}?queue={cq}",
             "--to", f"machinery+{url}?queue={mq}", "--name", cq, "--poll", "0.05",
             "--processes", str(processes), "-l", "info"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def publish(url: str, queue: str, count: int) -> dict[str, int]:
    """``count`` Celery add(i, 1) tasks; their ids with the result each should get."""
    tasks = [new_task("add", [i, 1]) for i in range(count)]
    broker = CeleryRedisBroker.from_url(url)
    broker.publish_messages(queue, [encode_task(t) for t in tasks])
    broker.close()
    return {t.id: i + 1 for i, t in enumerate(tasks)}


def started(log: Path) -> int:
    """How many relays have begun their loop (each says which bookkeeping it keeps)."""
    return log.read_text().count(" results in flight, bookkeeping ")


def in_flight(client: redis.Redis, name: str, processes: int) -> list[int]:
    names = [name] + [helper_name(name, n) for n in range(2, processes + 1)]
    return [int(client.hlen(inflight_key(n))) for n in names]


def results(client: redis.Redis, ids: dict[str, int]) -> dict[str, Any]:
    raws = client.mget([f"celery-task-meta-{task_id}" for task_id in ids])
    return {task_id: json.loads(raw) for task_id, raw in zip(ids, raws, strict=True) if raw}


def test_relays_side_by_side_relay_once_and_carry_their_results(redis_url: str,
                                                                 tmp_path: Path) -> None:
    cq, mq = fresh("cq"), fresh("mq")
    client = redis.Redis.from_url(redis_url)
    log = tmp_path / "relay.log"
    with relay_cli(redis_url, cq, mq, 3, log) as proc:
        eventually("three relays", lambda: started(log) == 3)
        ids = publish(redis_url, cq, 3000)
        eventually("every task relayed", lambda: client.llen(mq) == 3000)
        relayed = [json.loads(raw)["UUID"] for raw in client.lrange(mq, 0, -1)]
        assert len(set(relayed)) == 3000 and set(relayed) == set(ids)  # once each
        owed = eventually("results owed by all three", lambda: (
            counts if sum(counts := in_flight(client, cq, 3)) == 3000 else None))
        assert all(owed), owed  # each process relayed a share
        with machinery_worker(redis_url, mq):
            done = eventually("every result carried back",
                              lambda: (r if len(r := results(client, ids)) == 3000 else None))
        assert all(done[i]["status"] == "SUCCESS" and done[i]["result"] == ids[i] for i in ids)
        eventually("nothing owed", lambda: sum(in_flight(client, cq, 3)) == 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "relaying with 3 processes side by side" in text, text
    assert text.count("relay stopped") == 3, text  # the helpers stopped gracefully too


def test_a_dead_helper_starts_again_and_a_killed_run_stops_its_helpers(
        redis_url: str, tmp_path: Path) -> None:
    cq, mq = fresh("cq"), fresh("mq")
    client = redis.Redis.from_url(redis_url)
    log = tmp_path / "relay.log"
    with relay_cli(redis_url, cq, mq, 2, log) as proc:
        eventually("two relays", lambda: started(log) == 2)
        helper = grandchildren(proc.pid)[0]
        os.kill(helper, signal.SIGKILL)
        eventually("started again", lambda: "starting it again" in log.read_text())
        eventually("the helper relaying again", lambda: started(log) == 3)
        again = [p for p in grandchildren(proc.pid) if p != helper]
        ids = publish(redis_url, cq, 500)
        eventually("relayed", lambda: client.llen(mq) == 500)
        owed = eventually("owed by both", lambda: (
            counts if sum(counts := in_flight(client, cq, 2)) == 500 else None))
        proc.kill()  # SIGKILL: no goodbye; the helper reads EOF and stops after its turn
        proc.wait()
        eventually("the helper stopped", lambda: not alive(again[0]), 30)
    assert all(owed), owed
    text = log.read_text()
    assert f"relay process {helper_name(cq, 2)} exited (killed by SIGKILL)" in text, text
    assert "Traceback" not in text, text
    # one relay now: it takes over what the helper owed, and carries every result
    with relay_cli(redis_url, cq, mq, 1, log) as proc:
        with machinery_worker(redis_url, mq):
            done = eventually("every result carried back",
                              lambda: (r if len(r := results(client, ids)) == 500 else None))
        assert all(done[i]["result"] == ids[i] for i in ids)
        assert client.exists(inflight_key(helper_name(cq, 2))) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    assert "took over" in log.read_text()


def test_adopting_takes_only_helpers_beyond_the_count(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    name = fresh("odd[name]*")
    for index, uuid in ((2, "a"), (3, "b"), (4, "c")):
        client.hset(inflight_key(helper_name(name, index)), uuid, b"{}")
    client.hset(inflight_key(f"{name}.x"), "d", b"{}")  # not a helper of ours
    client.hset(inflight_key(f"{name}2.5"), "e", b"{}")  # another relay's helper
    assert adopt_orphans(client, name, 2) == 2
    assert sorted(client.hkeys(inflight_key(name))) == [b"b", b"c"]
    assert client.hkeys(inflight_key(helper_name(name, 2))) == [b"a"]
    assert client.exists(inflight_key(f"{name}.x"), inflight_key(f"{name}2.5")) == 2
