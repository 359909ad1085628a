"""Fault injection for ``mbridge relay`` machinery → Celery, whose batches are windows of
machinery's queue (bridge.brokers.redis_window): Redis restarted under it, or gone when it
is stopped, loses no task; what a stopped relay held goes back once its heartbeat ends."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from bridge.brokers.redis import RedisBroker
from bridge.protocol.machinery import Arg, Signature
from tests.faults.controlled_redis import ControlledRedis
from tests.faults.test_tool_outages import (
    relay_a_backlog,
    restart,
    stop_while_down,
    wait_for,
)


def publish_machinery(url: str, queue: str, count: int) -> set[str]:
    broker = RedisBroker(url)
    signatures = [Signature(uuid=f"task_{uuid.uuid4()}", name="add", routing_key=queue,
                            args=[Arg("", "int64", i), Arg("", "int64", 1)])
                  for i in range(count)]
    for start in range(0, count, 5000):
        broker.publish(signatures[start:start + 5000])
    broker.close()
    return {sig.uuid for sig in signatures}


def relay_back(url: str, log: Path, processes: int) -> subprocess.Popen[bytes]:
    """``mbridge relay`` of machinery queue ``mach`` to Celery queue ``cel``, relaying."""
    return relay_a_backlog(url, log, "--processes", str(processes), source="machinery:mach",
                           target="celery:cel")


def held(client: redis.Redis) -> int:
    """Messages of ``mach`` a consumer holds (processing lists and windows)."""
    return sum(client.llen(key) for pattern in ("bridge:processing:*", "bridge:window:*")
               for key in client.scan_iter(pattern))


def relayed_ids(client: redis.Redis) -> set[str]:
    return {json.loads(raw)["headers"]["id"] for raw in client.lrange("cel", 0, -1)}


@pytest.mark.parametrize("processes", [1, 2])
def test_relay_back_of_a_backlog_loses_nothing_when_redis_restarts_mid_batch(
        server: ControlledRedis, tmp_path: Path, processes: int) -> None:
    """Windows taken ahead and acked with the next take: a restart while they are in
    flight leaves each task relayed (once or again), never lost, and no window behind."""
    url = server.url
    log = tmp_path / "relay.log"
    sent = publish_machinery(url, "mach", 30_000)
    proc = relay_back(url, log, processes)
    try:
        restart(server, log)
        client = redis.Redis.from_url(url)
        try:
            wait_for("the backlog", lambda: client.llen("mach") == 0 and held(client) == 0,
                     120)
        except AssertionError:
            raise AssertionError(f"waiting {client.llen('mach')}, held {held(client)}, "
                                 f"relayed {client.llen('cel')}; "
                                 f"{log.read_text()[-3000:]}") from None
        assert relayed_ids(client) == sent
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("processes", [1, 2])
def test_relay_back_stopped_while_redis_is_down_leaves_its_windows_to_recovery(
        server: ControlledRedis, tmp_path: Path, processes: int) -> None:
    """SIGTERM during an outage: the relay stops in a few lines; the windows it held stay
    in Redis and the next consumer of the queue gives them back once its heartbeat ends."""
    url = server.url
    log = tmp_path / "relay.log"
    sent = publish_machinery(url, "mach", 20_000)
    stop_while_down(server, relay_back(url, log, processes), log)
    server.start()
    client = redis.Redis.from_url(url)
    wait_for("the relay's heartbeats to end",
             lambda: not any(client.scan_iter("bridge:heartbeat:*")), 30)
    assert held(client) > 0  # mid-backlog it holds a batch or more: left in Redis
    consumer = RedisBroker(url)
    consumer.fetch("mach", 0, 0)  # a consumer's start gives back what dead workers held
    consumer.close()
    assert held(client) == 0
    waiting = {json.loads(raw)["UUID"] for raw in client.lrange("mach", 0, -1)}
    relayed = relayed_ids(client)
    client.close()
    assert sent <= relayed | waiting, f"{len(sent - relayed - waiting)} lost"
