"""machinery's queue taken a window at a time (bridge.brokers.redis_window) against a real
redis-server: the take script's deliveries and parks, a window acked whole deleted with the
next take, and nothing lost however a window is left (closed, crashed, its reply lost)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from bridge.brokers.base import Delivery
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_keys import QueueKeys
from bridge.config import Config
from bridge.protocol.machinery import Arg, Signature
from tests.redis_servers import empty_dbs

QUEUE = "machwindow"


@pytest.fixture
def urls(redis_url: str) -> Iterator[tuple[str, str]]:
    """Two databases: the window's and the take script's."""
    with empty_dbs(redis_url, 13, 14) as (window, script):
        yield window, script


def body(i: int, pad: int = 0) -> bytes:
    return Signature(uuid=f"task_{uuid.uuid4()}", name="add", routing_key=QUEUE,
                     args=[Arg("", "int64", i), Arg("", "string", "x" * pad)]).to_json()


def loaded(url: str, count: int, **options: object
           ) -> tuple[RedisBroker, redis.Redis, list[bytes]]:
    """A window-taking consumer of QUEUE, its client, and the ``count`` bodies queued."""
    broker = broker_on(url, **options)  # type: ignore[arg-type]
    bodies = [body(i) for i in range(count)]
    broker.publish_raw(QUEUE, bodies)
    return broker, broker.layout.client, bodies


def broker_on(url: str, window: bool = True, **options: object) -> RedisBroker:
    broker = RedisBroker(url, Config(broker=url, result_backend=url, default_queue=QUEUE),
                         **options)  # type: ignore[arg-type]
    broker.window_take = window
    broker.fetch(QUEUE, 0, 0)  # consuming (registered): fetch_later takes from here on
    return broker


def take(broker: RedisBroker, count: int, acks: list[Delivery] | None = None
         ) -> list[Delivery]:
    read = broker.fetch_later(QUEUE, count, acks or [])
    assert read is not None
    return read()


def drain(broker: RedisBroker, batch: int = 50) -> list[Delivery]:
    """Every message of QUEUE by prefetched takes, each acknowledging the one before."""
    got: list[Delivery] = []
    acks: list[Delivery] = []
    while True:
        acks = take(broker, batch, acks)
        got += acks
        if not acks:
            return got


def windows(broker: RedisBroker) -> list[str]:
    return QueueKeys.of(QUEUE).windows(broker.worker_id)


def held_anywhere(client: redis.Redis) -> list[bytes]:
    return [item for key in client.scan_iter("bridge:*") if client.type(key) == b"list"
            and b":dead" not in key for item in client.lrange(key, 0, -1)]


def dead_reasons(client: redis.Redis) -> list[str]:
    return [json.loads(e)["reason"] for e in client.lrange(QueueKeys.of(QUEUE).dead, 0, -1)]


def test_windows_deliver_and_park_what_the_take_script_does(urls: tuple[str, str]) -> None:
    bodies = [body(i, pad=3000 if i % 97 == 5 else 0) for i in range(430)]
    took: dict[bool, list[bytes]] = {}
    parked: dict[bool, list[str]] = {}
    for window, url in zip((True, False), urls, strict=True):
        broker = broker_on(url, window, max_message_bytes=2000)
        broker.publish_raw(QUEUE, bodies)
        took[window] = [d.body for d in drain(broker)]
        client = broker.layout.client
        parked[window] = dead_reasons(client)
        assert client.llen(QUEUE) == 0
        assert held_anywhere(client) == []  # every window deleted, nothing processing
        broker.close()
    assert took[True] == took[False] == [b for b in bodies if len(b) <= 2000]
    assert len(parked[True]) == len(parked[False]) == 5
    assert all("exceeds max_message_bytes=2000" in reason for reason in parked[True])


def test_a_window_acked_whole_is_deleted_with_the_next_take(urls: tuple[str, str]) -> None:
    broker = broker_on(urls[0])
    client = broker.layout.client
    broker.publish_raw(QUEUE, [body(i) for i in range(30)])
    first = take(broker, 10)
    assert {d.tag for d in first} == {windows(broker)[0]}
    assert client.lrange(windows(broker)[0], 0, -1) == [d.body for d in first]
    assert client.llen(QUEUE) == 20
    assert broker.worker_health(QUEUE)[broker.worker_id] == (10, True)
    second = take(broker, 10, first)
    assert not client.exists(windows(broker)[0])
    assert {d.tag for d in second} == {windows(broker)[1]}
    third = take(broker, 10, second)
    assert {d.tag for d in third} == {windows(broker)[0]}  # the freed slot again
    broker.ack(third)
    assert held_anywhere(client) == []
    broker.close()


def test_a_window_left_by_parts_goes_by_body_and_loses_nothing(urls: tuple[str, str]) -> None:
    broker, client, _ = loaded(urls[0], 10)
    got = take(broker, 10)
    broker.dead_letter(got[3], "refused by the test")
    broker.requeue(got[4])
    rest = take(broker, 10, got[:3])  # part of the window: acked by body, the window stays
    assert rest == [got[4]]  # requeued to the tail, taken again
    assert client.lrange(windows(broker)[0], 0, -1) == [d.body for d in got[5:]]
    broker.ack(got[5:])  # the rest of it: the window is empty, its slot free
    assert not client.exists(windows(broker)[0])
    broker.ack(rest)
    assert dead_reasons(client) == ["refused by the test"]
    assert held_anywhere(client) == []
    broker.close()


def test_close_gives_every_window_back_in_order(urls: tuple[str, str]) -> None:
    broker, client, bodies = loaded(urls[0], 40)
    first = take(broker, 10)
    take(broker, 10, first)  # the first acked whole (its DEL sent with this take)
    take(broker, 10)  # held, not acked
    broker.close()
    assert client.lrange(QUEUE, 0, -1) == bodies[10:]
    assert held_anywhere(client) == []


def test_a_dead_workers_windows_go_back_to_the_next_consumer(urls: tuple[str, str]) -> None:
    url = urls[0]
    crashed = broker_on(url, heartbeat_ttl=0.5)
    client = crashed.layout.client
    bodies = [body(i) for i in range(25)]
    crashed.publish_raw(QUEUE, bodies)
    held = take(crashed, 10) + take(crashed, 10)
    assert len(held) == 20  # then it dies: no ack, no close, no heartbeat
    time.sleep(0.8)
    other = broker_on(url, window=False)  # its start recovers dead workers' messages
    assert sorted(client.lrange(QUEUE, 0, -1)) == sorted(bodies)
    assert held_anywhere(client) == []
    other.close()


def test_a_window_whose_reply_was_lost_is_adopted(urls: tuple[str, str]) -> None:
    broker, client, bodies = loaded(urls[0], 10)
    read = broker.fetch_later(QUEUE, 10, [])
    assert read is not None
    deadline = time.monotonic() + 10
    while not client.exists(windows(broker)[0]):  # the take ran; its reply is lost below
        assert time.monotonic() < deadline
        time.sleep(0.01)
    broker.layout.lane._conn.disconnect()  # the reply lost with its connection
    with pytest.raises(redis.ConnectionError):
        read()
    found = broker.unknown_held(QUEUE, [])
    assert [d.body for d in found] == bodies
    assert take(broker, 10, found) == []  # acked whole: deleted with this take
    assert held_anywhere(client) == []
    broker.close()


def test_a_window_too_large_to_read_at_once_is_taken_by_the_script(
        urls: tuple[str, str]) -> None:
    broker = broker_on(urls[0])
    client = broker.layout.client
    bodies = [body(i, pad=400_000) for i in range(4)]  # 1.6 MB together: over the budget
    broker.publish_raw(QUEUE, bodies)
    got = drain(broker, 10)
    assert [d.body for d in got] == bodies
    assert held_anywhere(client) == []
    broker.close()


def test_a_message_waiting_from_a_blocked_fetch_is_the_scripts(urls: tuple[str, str]) -> None:
    broker = broker_on(urls[0])
    client = broker.layout.client
    bodies = [body(i) for i in range(6)]
    client.rpush(QueueKeys.of(QUEUE).wait(broker.worker_id), bodies[0])
    broker.publish_raw(QUEUE, bodies[1:])
    got = take(broker, 10)
    assert [d.body for d in got] == bodies
    assert {d.tag for d in got} == {broker.layout.processing_key(QUEUE)}
    broker.ack(got)
    assert held_anywhere(client) == []
    broker.close()
