"""The relay's prefetched take with the messages kept out of Lua (bridge.brokers.
celery_redis_window) against a real redis-server: the same deliveries and the same kombu
keys as the take script, whatever the window holds, and nothing lost between its steps."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from bridge.brokers.base import Delivery
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.celery_redis_window import end_fields
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.kombu_envelope import to_envelope
from tests.redis_servers import empty_dbs

QUEUE = "windowq"


@pytest.fixture
def urls(redis_url: str) -> Iterator[tuple[str, str]]:
    """Two databases: the window's and the take script's."""
    with empty_dbs(redis_url, 11, 12) as (window, script):
        yield window, script


def envelope(i: int, routing_key: str = QUEUE, tag: str | None = None) -> bytes:
    return to_envelope(encode_task(new_task("add", [i, 1])), routing_key=routing_key,
                       delivery_tag=tag or str(uuid.uuid4()))


def broker_on(url: str, window: bool, **options: object) -> CeleryRedisBroker:
    broker = CeleryRedisBroker.from_url(url)
    for name, value in options.items():
        setattr(broker, name, value)
    broker.window_take = window
    broker.decode_on_fetch = False
    broker.fetch(QUEUE, 0, 0)  # consuming: fetch_later takes from here on
    return broker


def take(broker: CeleryRedisBroker, count: int) -> list[Delivery]:
    """One prefetched take of QUEUE (nothing acknowledged), read at once."""
    read = broker.fetch_later(QUEUE, count, [])
    assert read is not None
    return read()


def drain(broker: CeleryRedisBroker, batch: int = 50) -> list[Delivery]:
    """Every message of QUEUE by prefetched takes, each acknowledging the one before."""
    got: list[Delivery] = []
    acks: list[Delivery] = []
    for _ in range(1000):
        read = broker.fetch_later(QUEUE, batch, acks)
        assert read is not None
        acks = read()
        got += acks
        if not acks and not broker.client.exists(broker.keys.staging(QUEUE, broker.worker_id)):
            break
    broker.ack(acks)
    return got


def kombu_keys(client: redis.Redis, broker: CeleryRedisBroker) -> dict[str, object]:
    return {"unacked": client.hgetall("unacked"),
            "index": sorted(client.zrange("unacked_index", 0, -1)),
            "dead": [json.loads(e)["reason"] for e in client.lrange(broker.keys.dead(QUEUE),
                                                                    0, -1)],
            "queue": client.lrange(QUEUE, 0, -1)}


MUTANTS: list[Callable[[bytes], bytes]] = [
    lambda raw: raw,
    lambda raw: b"not json at all",
    lambda raw: raw.replace(b'"routing_key": "windowq"', b'"routing_key": "a/b"'),
    lambda raw: raw.replace(b'"exchange": ""', b'"exchange": "ex\\\\u00e9"'),
    lambda raw: raw.replace(b'"priority": 0', b'"priority": -1'),
    lambda raw: raw.replace(b'"body_encoding": "base64"', b'"body_encoding":"base64"'),
    lambda raw: raw[:-2] + b', "x": 1}}',
    lambda raw: raw.replace(b'"delivery_tag": "', b'"delivery_tag": "caf\xc3\xa9-'),
]


def test_end_fields_reads_what_kombu_writes_and_nothing_else() -> None:
    raw = envelope(1, tag="tag-1")
    assert end_fields(raw) == (b"tag-1", b"", QUEUE.encode())
    for mutant in MUTANTS[1:]:
        assert end_fields(mutant(raw)) is None


def test_a_window_gives_the_take_scripts_deliveries_and_keys(urls: tuple[str, str]) -> None:
    raws = [MUTANTS[i % len(MUTANTS)](envelope(i)) if i % 7 == 3 else envelope(i)
            for i in range(400)]
    raws.insert(11, raws[10])  # a tag twice in one take: the second is parked
    took: dict[bool, list[tuple[bytes, str]]] = {}
    keys: dict[bool, dict[str, object]] = {}
    for window, url in zip((True, False), urls, strict=True):
        broker = broker_on(url, window)
        broker.publish_raw(QUEUE, raws)
        got = drain(broker)
        took[window] = [(d.body, d.tag) for d in got]
        keys[window] = kombu_keys(broker.client, broker)
        assert not broker.client.exists(broker.keys.staging(QUEUE, broker.worker_id))
        broker.close()
    assert took[True] == took[False]
    assert keys[True] == keys[False]
    reasons = keys[True]["dead"]
    assert isinstance(reasons, list)
    assert sum("not JSON" in reason for reason in reasons) == sum(
        1 for i in range(400) if i % 7 == 3 and i % len(MUTANTS) == 1)
    assert sum("duplicate delivery_tag" in reason for reason in reasons) == 1


def test_records_match_the_take_scripts_byte_for_byte(urls: tuple[str, str]) -> None:
    raws = [envelope(i) for i in range(120)]
    records: dict[bool, object] = {}
    for window, url in zip((True, False), urls, strict=True):
        broker = broker_on(url, window)
        broker.publish_raw(QUEUE, raws)
        got = take(broker, 100)
        broker.fetch(QUEUE, 0, 0)  # writes what the window recorded (nothing acked)
        records[window] = (broker.client.hgetall("unacked"),
                           sorted(broker.client.zrange("unacked_index", 0, -1)),
                           broker.client.get(broker.keys.taken(QUEUE, broker.worker_id)),
                           [d.tag for d in got])
        broker.close()
    assert records[True] == records[False]


def test_a_tag_unacked_already_stops_the_window_and_the_script_parks_it(
        urls: tuple[str, str]) -> None:
    raws = [envelope(i, tag=f"t{i}") for i in range(10)]
    broker = broker_on(urls[0], True)
    broker.client.hset("unacked", "t3", b'["held elsewhere", "", "windowq"]')
    broker.publish_raw(QUEUE, raws)
    assert [d.tag for d in take(broker, 10)] == ["t0", "t1", "t2"]
    assert [d.tag for d in take(broker, 10)] == [f"t{i}" for i in range(4, 10)]
    assert broker.client.hget("unacked", "t3") == b'["held elsewhere", "", "windowq"]'
    [entry] = broker.client.lrange(broker.keys.dead(QUEUE), 0, -1)
    assert "duplicate delivery_tag t3" in json.loads(entry)["reason"]
    broker.close()


def test_records_are_written_before_an_ack_the_next_take_or_a_close(urls: tuple[str, str]) -> None:
    client = redis.Redis.from_url(urls[0])
    broker = broker_on(urls[0], True)
    broker.publish_raw(QUEUE, [envelope(i) for i in range(20)])
    first = take(broker, 10)
    staging = broker.keys.staging(QUEUE, broker.worker_id)
    assert client.llen(staging) == 10 and client.hlen("unacked") == 0  # step 3 waits
    broker.ack(first[:4])
    assert client.hlen("unacked") == 6 and not client.exists(staging)
    second = take(broker, 10)
    assert len(second) == 10 and client.llen(QUEUE) == 0
    broker.close()  # writes the records, then gives every held message back
    assert client.hlen("unacked") == 0 and not client.exists(staging)
    back = [json.loads(raw)["properties"] for raw in client.lrange(QUEUE, 0, -1)]
    assert sorted(p["delivery_tag"] for p in back) == sorted(
        d.tag for d in [*first[4:], *second])


def test_a_take_that_crashed_before_recording_is_given_back(urls: tuple[str, str]) -> None:
    client = redis.Redis.from_url(urls[0])
    crashed = broker_on(urls[0], True, lease_ttl=0.2, block_slice=0.0)
    crashed._window.lease_ms = 200
    raws = [envelope(i) for i in range(30)]
    crashed.publish_raw(QUEUE, raws)
    assert len(take(crashed, 30)) == 30  # taken; step 3 never sent: the process "dies" here
    assert client.llen(QUEUE) == 0
    time.sleep(0.3)
    other = broker_on(urls[0], True)  # a consumer starting gives back expired staging
    assert client.llen(QUEUE) == 30
    assert drain(other) and client.hlen("unacked") == 0
    other.close()


def test_records_are_written_on_a_connection_of_their_own_when_the_lane_is_busy(
        urls: tuple[str, str]) -> None:
    client = redis.Redis.from_url(urls[0])
    broker = broker_on(urls[0], True)
    broker.publish_raw(QUEUE, [envelope(i) for i in range(20)])
    taken = take(broker, 10)
    assert client.hlen("unacked") == 0
    assert broker.lane._lock.acquire(blocking=False)  # another caller holds the lane
    try:
        broker._window.write()
    finally:
        broker.lane._lock.release()
    assert sorted(client.hkeys("unacked")) == sorted(d.tag.encode() for d in taken)
    assert not client.exists(broker.keys.staging(QUEUE, broker.worker_id))
    assert json.loads(client.get(broker.keys.taken(QUEUE, broker.worker_id)) or b"[]") == [
        d.tag for d in taken]
    broker.close()
