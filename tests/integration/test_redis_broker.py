"""The machinery Redis broker and its kombu transport against a real redis-server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message
from kombu.transport import TRANSPORT_ALIASES
from redis.crc import key_slot

from bridge.brokers.base import Delivery
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_keys import QueueKeys, slot_tagged
from bridge.config import Config, RedisConfig
from bridge.protocol.gotime import GoTime, parse_rfc3339, unix_nano
from bridge.protocol.machinery import Signature, new_uuid
from tests.redis_servers import blocks_once

MakeBroker = Callable[..., RedisBroker]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def config(redis_url: str) -> Config:
    """Own default queue and delayed key per test: tests never see each other's keys."""
    tag = uuid.uuid4().hex[:10]
    return Config(broker=redis_url, default_queue=f"q_{tag}",
                  redis=RedisConfig(delayed_tasks_key=f"delayed_{tag}"))


@pytest.fixture
def make_broker(redis_url: str, config: Config) -> Iterator[MakeBroker]:
    brokers: list[RedisBroker] = []

    def make(**kwargs: object) -> RedisBroker:
        broker = RedisBroker(redis_url, config, **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> RedisBroker:
    return make_broker()


def sig(name: str = "add", **kwargs: object) -> Signature:
    kwargs.setdefault("headers", {})
    return Signature(uuid=new_uuid(), name=name, **kwargs)  # type: ignore[arg-type]


def bodies(client: redis.Redis, key: str) -> list[bytes]:
    return client.lrange(key, 0, -1)


def die(client: redis.Redis, broker: RedisBroker, queue: str) -> None:
    """Simulate a killed worker: its heartbeat is gone, its processing list stays."""
    client.delete(QueueKeys.of(queue).heartbeat(broker.worker_id))


# ------------------------------------------------------------------------------ publish


def test_publish_writes_signature_json_byte_for_byte(broker: RedisBroker,
                                                     client: redis.Redis) -> None:
    signatures = [sig(routing_key="other_" + broker.default_queue), sig("mul"),
                  sig(headers={"a": "<b>"})]
    broker.publish(signatures)
    assert bodies(client, signatures[0].routing_key) == [signatures[0].to_json()]
    assert bodies(client, broker.default_queue) == [s.to_json() for s in signatures[1:]]
    client.delete(signatures[0].routing_key)


def test_empty_routing_key_becomes_default_queue_before_encoding(broker: RedisBroker,
                                                                 client: redis.Redis) -> None:
    task = sig()
    broker.publish([task])
    assert task.routing_key == broker.default_queue
    [raw] = bodies(client, broker.default_queue)
    assert f'"RoutingKey":"{broker.default_queue}"'.encode() in raw
    assert raw == task.to_json()


def test_future_eta_goes_to_delayed_zset_scored_in_unix_nanos(broker: RedisBroker,
                                                             client: redis.Redis) -> None:
    eta = GoTime.from_datetime(datetime.now(UTC) + timedelta(hours=1), nanosecond=789)
    late, past = sig(eta=eta), sig(eta=datetime.now(UTC) - timedelta(seconds=5))
    broker.publish([late, past])
    [(member, score)] = client.zrange(broker.delayed_tasks_key, 0, -1, withscores=True)
    assert member == late.to_json()
    assert score == float(unix_nano(eta))
    assert bodies(client, broker.default_queue) == [past.to_json()]
    assert broker.delayed_count() == 1


def test_publish_raw_and_inspection(broker: RedisBroker) -> None:
    broker.publish_raw(broker.default_queue, [b"one", b"two", b"three"])
    assert broker.queue_depth(broker.default_queue) == 3
    assert broker.peek(broker.default_queue, 2) == [b"one", b"two"]
    assert [d.body for d in broker.fetch(broker.default_queue, 2, 0)] == [b"one", b"two"]
    assert broker.processing(broker.default_queue) == {broker.worker_id: 2}


# ------------------------------------------------------------------------------ fetch / ack


def test_fetch_moves_to_processing_list_and_ack_removes(broker: RedisBroker,
                                                        client: redis.Redis) -> None:
    queue = broker.default_queue
    broker.publish_raw(queue, [b"m%d" % i for i in range(5)])
    got = broker.fetch(queue, 3, 1.0)
    assert [d.body for d in got] == [b"m0", b"m1", b"m2"]
    assert all(d.queue == queue for d in got)
    processing = QueueKeys.of(queue).processing(broker.worker_id)
    assert bodies(client, processing) == [b"m0", b"m1", b"m2"]
    assert bodies(client, queue) == [b"m3", b"m4"]
    broker.ack(got[:2])
    assert bodies(client, processing) == [b"m2"]
    broker.ack(got[2:])
    assert not client.exists(processing)


def test_acks_remove_exactly_those_in_any_order(broker: RedisBroker,
                                               client: redis.Redis) -> None:
    # sent with the next fetch (TAKE) or alone (ACK): both by LUA_FORGET
    queue = broker.default_queue
    processing = QueueKeys.of(queue).processing(broker.worker_id)
    broker.publish_raw(queue, [b"same", b"m1", b"same", b"m3", b"m4", b"m5", b"m6"])
    first = broker.fetch(queue, 4, 1.0)
    second = broker.fetch(queue, 2, 1.0, ack=first[:2])  # the head, in order: trimmed
    assert [d.body for d in second] == [b"m4", b"m5"]
    assert bodies(client, processing) == [b"same", b"m3", b"m4", b"m5"]
    third = broker.fetch(queue, 1, 1.0, ack=[second[1], first[3]])  # not the head
    assert [d.body for d in third] == [b"m6"]
    assert bodies(client, processing) == [b"same", b"m4", b"m6"]
    broker.ack([third[0], first[2]])  # alone, not the head
    assert bodies(client, processing) == [b"m4"]
    broker.ack([second[0]])  # alone, the head
    assert not client.exists(processing)


def test_fetch_waits_for_the_first_message(broker: RedisBroker, client: redis.Redis) -> None:
    queue = broker.default_queue
    start = time.monotonic()
    with blocks_once(client):
        assert broker.fetch(queue, 5, 0.3) == []
    assert 0.25 <= time.monotonic() - start < 2
    timer = threading.Timer(0.2, broker.publish_raw, (queue, [b"late1", b"late2"]))
    timer.start()
    got = broker.fetch(queue, 5, 5.0)
    timer.join()
    got += broker.fetch(queue, 5, 0)
    assert [d.body for d in got] == [b"late1", b"late2"]


def test_requeue_goes_to_the_tail_or_the_delayed_set(broker: RedisBroker,
                                                     client: redis.Redis) -> None:
    queue = broker.default_queue
    broker.publish_raw(queue, [b"a", b"b", b"c"])
    first, second = broker.fetch(queue, 2, 0)
    broker.requeue(first)
    assert bodies(client, queue) == [b"c", b"a"]
    before = time.time_ns()
    broker.requeue(second, delay=30)
    [(member, score)] = client.zrange(broker.delayed_tasks_key, 0, -1, withscores=True)
    assert member == b"b"
    assert before + 29e9 < score < time.time_ns() + 31e9
    assert broker.processing(queue) == {broker.worker_id: 0}


def test_requeue_of_a_message_no_longer_held_adds_nothing(broker: RedisBroker,
                                                          client: redis.Redis) -> None:
    queue = broker.default_queue
    broker.publish_raw(queue, [b"x"])
    [held] = broker.fetch(queue, 1, 0)
    broker.ack([held])
    broker.requeue(held)
    broker.dead_letter(held, "late")
    assert bodies(client, queue) == []
    assert broker.dead_letters(queue) == []


def test_dead_letter_and_replay_restore_raw_bytes(broker: RedisBroker,
                                                  client: redis.Redis) -> None:
    queue = broker.default_queue
    text, binary = "tâche <1>".encode(), b"\xff\x00\xfebin"
    broker.publish_raw(queue, [text, binary])
    for delivery in broker.fetch(queue, 2, 0):
        broker.dead_letter(delivery, f"bad {delivery.body[:1]!r}")
    entries = broker.dead_letters(queue, 0, -1)
    assert [e["queue"] for e in entries] == [queue, queue]
    assert entries[0]["body"] == "tâche <1>" and "body_b64" not in entries[0]
    assert entries[1]["body_b64"] == "/wD+Ymlu" and "body" not in entries[1]
    assert entries[0]["reason"].startswith("bad ")
    assert abs(parse_rfc3339(entries[0]["time"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert broker.processing(queue) == {broker.worker_id: 0}
    assert broker.replay_dead(queue, 1) == 1
    assert broker.replay_dead(queue, 0) == 1
    assert bodies(client, queue) == [text, binary]
    assert broker.dead_letters(queue) == []


def test_oversized_message_is_dead_lettered_not_delivered(make_broker: MakeBroker,
                                                          client: redis.Redis) -> None:
    broker = make_broker(max_message_bytes=100)
    queue = broker.default_queue
    broker.publish_raw(queue, [b"small", b"x" * 101, b"fine"])
    got = broker.fetch(queue, 10, 0)
    assert [d.body for d in got] == [b"small", b"fine"]
    [entry] = broker.dead_letters(queue)
    assert "101 bytes exceeds max_message_bytes=100" in entry["reason"]
    assert client.llen(QueueKeys.of(queue).processing(broker.worker_id)) == 2


# ------------------------------------------------------------------------------ recovery


def test_dead_worker_messages_return_to_queue_head_in_order(make_broker: MakeBroker,
                                                            client: redis.Redis) -> None:
    dead, alive = make_broker(), make_broker()
    queue = dead.default_queue
    dead.publish_raw(queue, [b"1", b"2", b"3", b"4", b"5"])
    dead.fetch(queue, 3, 0)
    alive.fetch(queue, 1, 0)
    assert alive.recover(queue) == 0  # the other one is alive
    die(client, dead, queue)
    assert alive.recover(queue) == 3
    assert bodies(client, queue) == [b"1", b"2", b"3", b"5"]
    assert alive.processing(queue) == {alive.worker_id: 1}


def test_expired_heartbeat_is_recovered_by_maintain(make_broker: MakeBroker,
                                                    client: redis.Redis) -> None:
    short = make_broker(heartbeat_ttl=0.3)
    queue = short.default_queue
    short.publish_raw(queue, [b"held"])
    [_held] = short.fetch(queue, 1, 0)
    other = make_broker(heartbeat_ttl=0.3)
    assert other.fetch(queue, 1, 0) == []
    time.sleep(0.5)  # `short` never calls maintain: its heartbeat expires
    other.maintain()
    assert [d.body for d in other.fetch(queue, 1, 0)] == [b"held"]


def test_maintain_keeps_a_live_worker_from_being_recovered(make_broker: MakeBroker) -> None:
    worker = make_broker(heartbeat_ttl=0.4)
    queue = worker.default_queue
    worker.publish_raw(queue, [b"held"])
    worker.fetch(queue, 1, 0)
    other = make_broker(heartbeat_ttl=0.4)
    for _ in range(8):
        worker.maintain()
        time.sleep(0.1)
        assert other.recover(queue) == 0
    assert worker.processing(queue)[worker.worker_id] == 1


def test_a_restarted_worker_takes_back_its_own_leftovers(make_broker: MakeBroker,
                                                         client: redis.Redis) -> None:
    first = make_broker(worker_id="fixed-id")
    queue = first.default_queue
    first.publish_raw(queue, [b"a", b"b"])
    first.fetch(queue, 2, 0)  # then "crashes" without closing; heartbeat still alive
    again = make_broker(worker_id="fixed-id")
    assert [d.body for d in again.fetch(queue, 5, 0)] == [b"a", b"b"]


def test_close_gives_back_what_is_held(make_broker: MakeBroker, client: redis.Redis) -> None:
    worker = make_broker()
    queue = worker.default_queue
    worker.publish_raw(queue, [b"a", b"b", b"c"])
    worker.fetch(queue, 2, 0)
    worker.close()
    assert bodies(client, queue) == [b"a", b"b", b"c"]
    assert client.keys(f"bridge:*{queue}*") == []


def test_nothing_lost_across_1000_messages_and_a_dead_worker(make_broker: MakeBroker,
                                                             client: redis.Redis) -> None:
    worker, rescuer = make_broker(), make_broker()
    queue = worker.default_queue
    sent = [b"msg-%04d" % i for i in range(1000)]
    worker.publish_raw(queue, sent)
    held: list[Delivery] = []
    while batch := worker.fetch(queue, 37, 0):
        held += batch
    assert [d.body for d in held] == sent
    acked = held[::2]
    worker.ack(acked[:250])
    worker.ack(acked[250:])
    die(client, worker, queue)
    assert rescuer.recover(queue) == 500
    back: list[bytes] = []
    while batch := rescuer.fetch(queue, 64, 0):
        back += [d.body for d in batch]
        rescuer.ack(batch)
    assert back == [d.body for d in held[1::2]]  # each once, in the original order
    assert rescuer.processing(queue) == {rescuer.worker_id: 0}


# ------------------------------------------------------------------------------ delayed mover


def test_mover_routes_due_tasks_and_keeps_the_rest(broker: RedisBroker,
                                                   client: redis.Redis) -> None:
    key, queue = broker.delayed_tasks_key, broker.default_queue
    other = "other_" + queue
    now = time.time_ns()
    routed, default, later = sig(routing_key=other), sig(), sig()
    client.zadd(key, {routed.to_json(): now - 10, default.to_json(): now - 5,
                      later.to_json(): now + 60 * 10**9})
    assert broker.move_delayed() == 2
    assert bodies(client, other) == [routed.to_json()]
    assert bodies(client, queue) == [default.to_json()]  # raw bytes, empty RoutingKey kept
    assert client.zrange(key, 0, -1) == [later.to_json()]
    client.delete(other)


def test_mover_parks_undecodable_members(broker: RedisBroker, client: redis.Redis) -> None:
    key = broker.delayed_tasks_key
    client.zadd(key, {b"not json": 1, b"\xff\xfe": 2, b'{"RoutingKey":7}': 3})
    assert broker.move_delayed() == 0
    entries = broker.dead_letters(key)
    assert [e["queue"] for e in entries] == [key] * 3
    assert entries[0]["body"] == "not json" and entries[1]["body_b64"] == "//4="
    assert "RoutingKey is not a string" in entries[2]["reason"]
    assert client.zcard(key) == 0
    assert broker.replay_dead(key) == 3  # back into the ZSET, due now
    assert client.zcard(key) == 3


def test_mover_parks_a_task_whose_queue_is_not_a_list(broker: RedisBroker,
                                                     client: redis.Redis) -> None:
    key, wrong = broker.delayed_tasks_key, "string_" + broker.default_queue
    client.set(wrong, "not a list")
    member = b'{"RoutingKey":"%s"}' % wrong.encode()
    client.zadd(key, {member: 1, b'{"RoutingKey":""}': 2})
    assert broker.move_delayed() == 1
    [entry] = broker.dead_letters(key)
    assert entry["reason"].startswith(f"cannot push to {wrong}: WRONGTYPE")
    assert entry["body"] == member.decode()
    client.delete(wrong, f"bridge:dead:{{{key}}}")


def test_mover_moves_exactly_once_with_four_concurrent_movers(make_broker: MakeBroker,
                                                              client: redis.Redis) -> None:
    movers = [make_broker() for _ in range(4)]
    key, queue = movers[0].delayed_tasks_key, movers[0].default_queue
    now = time.time_ns()
    due = {b'{"UUID":"task_%d","RoutingKey":""}' % i: now - i for i in range(500)}
    later = {b'{"UUID":"later_%d"}' % i: now + 3600 * 10**9 for i in range(20)}
    client.zadd(key, {**due, **later})
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def run(mover: RedisBroker) -> None:
        barrier.wait()
        total = 0
        while client.zcount(key, "-inf", now) > 0:
            total += mover.layout.move_due(now)
        counts.append(total)

    threads = [threading.Thread(target=run, args=(m,)) for m in movers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    moved = bodies(client, queue)
    assert sum(counts) == 500
    assert len(moved) == 500 and set(moved) == set(due)
    assert set(client.zrange(key, 0, -1)) == set(later)


def test_maintain_runs_the_mover(broker: RedisBroker, client: redis.Redis) -> None:
    task = sig(eta=datetime.now(UTC) + timedelta(milliseconds=200))
    broker.publish([task])
    assert broker.queue_depth(broker.default_queue) == 0
    time.sleep(0.3)
    broker.maintain()
    assert bodies(client, broker.default_queue) == [task.to_json()]


# ------------------------------------------------------------------------------ keys, Cluster


@pytest.mark.parametrize("queue", ["machinery_tasks", "{tenant}jobs", "a:b{c", "é"])
def test_bookkeeping_keys_share_the_queue_slot(queue: str) -> None:
    keys = QueueKeys.of(queue)
    for key in (keys.processing("w1"), keys.heartbeat("w1"), keys.workers, keys.dead):
        assert key.startswith("bridge:")
        assert key_slot(key.encode()) == key_slot(queue.encode())
    assert slot_tagged("{t}q") == "{t}q"
    assert slot_tagged("plain") == "{plain}"


# ------------------------------------------------------------------------------ kombu transport


def test_transport_aliases_are_registered() -> None:
    assert TRANSPORT_ALIASES["machinery+redis"] == "bridge.brokers.redis:Transport"
    assert TRANSPORT_ALIASES["machinery"] == "bridge.brokers.redis:Transport"


def test_plain_kombu_simple_queue_reads_and_writes_machinery_layout(
        redis_url: str, client: redis.Redis) -> None:
    queue = f"kombu_{uuid.uuid4().hex[:8]}"
    raw = sig(routing_key=queue).to_json()
    url = "machinery+" + redis_url
    with Connection(url) as conn:
        simple = conn.SimpleQueue(queue)
        simple.put(raw, serializer="raw")
        assert bodies(client, queue) == [raw]  # no kombu envelope: the raw bytes
        message = simple.get(timeout=2)
        assert message.body == raw
        assert message.payload == raw  # undecoded: the consumer decodes machinery JSON
        assert json.loads(message.body)["RoutingKey"] == queue
        assert client.llen(queue) == 0
        held = client.keys(f"bridge:processing:{{{queue}}}:*")
        assert len(held) == 1 and bodies(client, held[0]) == [raw]
        message.ack()
        assert client.llen(held[0]) == 0
        with pytest.raises(simple.Empty):
            simple.get_nowait()
        simple.put(b"again", serializer="raw")
        simple.get_nowait().reject()  # parked, not dropped
        dead = bodies(client, f"bridge:dead:{{{queue}}}")
        assert [json.loads(entry)["body"] for entry in dead] == ["again"]
        simple.close()
    client.delete(f"bridge:dead:{{{queue}}}")


def test_plain_kombu_producer_consumer_requeue_and_restore(redis_url: str,
                                                           client: redis.Redis) -> None:
    queue = f"kombu_{uuid.uuid4().hex[:8]}"
    with Connection(redis_url, transport="machinery+redis") as conn:
        Producer(conn).publish(b'{"n":1}', routing_key=queue, serializer="raw")
        Producer(conn).publish(b'{"n":2}', routing_key=queue, content_type="application/json",
                               content_encoding="utf-8")
        assert bodies(client, queue) == [b'{"n":1}', b'{"n":2}']
        seen: list[Message] = []
        kqueue = Queue(queue, Exchange(queue, "direct"), queue)
        with Consumer(conn, [kqueue], callbacks=[lambda body, m: seen.append(m)],
                      prefetch_count=1):
            conn.drain_events(timeout=2)
            assert [m.body for m in seen] == [b'{"n":1}']
            seen[0].requeue()  # back to the head
            assert bodies(client, queue) == [b'{"n":1}', b'{"n":2}']
            conn.drain_events(timeout=2)
            assert seen[1].body == b'{"n":1}'
        # unacked at close: restored to the queue
    assert bodies(client, queue) == [b'{"n":1}', b'{"n":2}']
    assert client.keys(f"bridge:processing:{{{queue}}}:*") == []
    client.delete(queue)
