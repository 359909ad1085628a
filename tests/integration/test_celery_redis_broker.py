"""The Celery Redis broker against a real redis-server, real Celery producers and workers."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from bridge.brokers.base import Delivery
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.protocol.celery_message import CeleryMessage
from tests.celery_app import app as worker_app
from tests.celery_worker import ROOT, celery_worker
from tests.redis_servers import blocks_once, with_db

# A Celery worker started with ``-A tests.integration.test_celery_redis_broker:worker_app``
# gets kombu transport options from $BRIDGE_TEST_TRANSPORT_OPTIONS (e.g. visibility_timeout).
if os.environ.get("BRIDGE_TEST_TRANSPORT_OPTIONS"):
    worker_app.conf.broker_transport_options = json.loads(
        os.environ["BRIDGE_TEST_TRANSPORT_OPTIONS"])
WORKER_APP = "tests.integration.test_celery_redis_broker:worker_app"

BROKER_DB, BACKEND_DB = 7, 8


@pytest.fixture
def broker_url(redis_url: str) -> str:
    url = with_db(redis_url, BROKER_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def backend_url(redis_url: str) -> str:
    return with_db(redis_url, BACKEND_DB)


@pytest.fixture
def client(broker_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(broker_url)
    yield conn
    conn.close()


@pytest.fixture
def make_broker(broker_url: str) -> Iterator[Callable[..., CeleryRedisBroker]]:
    made: list[CeleryRedisBroker] = []

    def make(**options: Any) -> CeleryRedisBroker:
        made.append(CeleryRedisBroker.from_url(broker_url, **options))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def producer(broker_url: str, backend_url: str) -> Iterator[Celery]:
    """A Celery client app (sends by task name)."""
    app = Celery("bridge_client", broker=broker_url, backend=backend_url)
    app.conf.update(accept_content=["json", "msgpack"],
                    result_accept_content=["json", "msgpack"])
    yield app
    app.close()


@pytest.fixture
def queue() -> str:
    return f"cq_{uuid.uuid4().hex[:8]}"


def task_message(task: str, args: list[Any], kwargs: dict[str, Any] | None = None, *,
                 task_id: str | None = None, priority: int = 0,
                 **headers: Any) -> CeleryMessage:
    """A protocol-2 message built by hand, as the Celery checklist (§10) describes."""
    tid = task_id or str(uuid.uuid4())
    body = json.dumps([args, kwargs or {}, {"callbacks": None, "errbacks": None,
                                            "chain": None, "chord": None}]).encode()
    return CeleryMessage(body, headers={
        "lang": "py", "task": task, "id": tid, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": tid, "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}",
        "origin": "bridge-test", **headers,
    }, properties={"correlation_id": tid, "reply_to": "", "delivery_mode": 2,
                   "priority": priority})


def args_of(delivery: Delivery) -> Any:
    assert delivery.message is not None
    return json.loads(delivery.message.body)[0]


# ------------------------------------------------------------------ Celery producer -> us


def test_celery_producer_to_our_fetch(make_broker: Callable[..., CeleryRedisBroker],
                                      producer: Celery, client: redis.Redis,
                                      queue: str) -> None:
    plain = producer.send_task("tasks.add", (2, 3), queue=queue)
    later = producer.send_task("tasks.add", (4, 5), queue=queue, countdown=10, expires=60)
    urgent = producer.send_task("tasks.add", (6, 7), queue=queue, priority=5)
    assert client.llen(queue) == 2 and client.llen(f"{queue}\x06\x163") == 1
    broker = make_broker()
    assert broker.queue_depth(queue) == 3
    written = broker.peek(queue, 10)
    got = broker.fetch(queue, 10, 0)
    assert [d.body for d in got] == written  # the raw envelopes, as Celery stored them
    assert [d.message.headers["id"] for d in got if d.message] == [plain.id, later.id,
                                                                   urgent.id]
    assert [args_of(d) for d in got] == [[2, 3], [4, 5], [6, 7]]
    for delivery in got:
        stored = json.loads(delivery.body)
        msg = delivery.message
        assert msg is not None and delivery.tag == stored["properties"]["delivery_tag"]
        assert msg.body == base64.b64decode(stored["body"])
        assert msg.headers == stored["headers"]
        assert msg.content_type == "application/json" and msg.content_encoding == "utf-8"
        assert msg.properties["correlation_id"] == msg.headers["id"]
        # recorded in kombu's unacked hash exactly as kombu's QoS.append records it
        record = client.hget("unacked", delivery.tag)
        assert record is not None and json.loads(record) == [stored, "", queue]
        assert client.zscore("unacked_index", delivery.tag) is not None
    assert got[1].message and got[1].message.headers["eta"] is not None
    assert got[1].message.properties["expiration"] == "60000"
    assert got[2].message and got[2].message.priority == 5
    broker.fetch(queue, 10, 0, ack=got)
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_take_goes_through_the_lane_and_survives_a_script_flush(
        make_broker: Callable[..., CeleryRedisBroker], producer: Celery, client: redis.Redis,
        queue: str) -> None:
    sent = [producer.send_task("tasks.add", (i, 1), queue=queue).id for i in range(6)]
    broker = make_broker()
    first = broker.fetch(queue, 2, 0)
    assert broker.lane._conn is not None  # the take went out on the lane's connection
    client.script_flush()  # Redis forgets the take script: NOSCRIPT, then loaded again
    second = broker.fetch(queue, 2, 0, ack=first)
    with broker.lane._lock:  # the lane busy (another thread): the client's way
        third = broker.fetch(queue, 2, 0, ack=second)
    assert [d.message.headers["id"] for d in first + second + third if d.message] == sent
    assert client.hlen("unacked") == 2  # the last two, still unacked
    broker.fetch(queue, 2, 0, ack=third)
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_priority_buckets_and_fifo(make_broker: Callable[..., CeleryRedisBroker],
                                   producer: Celery, queue: str) -> None:
    sent = [producer.send_task("tasks.add", (i, 0), queue=queue, priority=p).id
            for i, p in enumerate([9, 0, 3, 0, 6, 4, 0])]
    broker = make_broker()
    order = []
    while batch := broker.fetch(queue, 2, 0, ack=[]):
        order += [d.message.headers["id"] for d in batch if d.message]
        broker.ack(batch)
    # bucket 0 first (publish order), then 3 (3 and 4), then 6, then 9
    assert order == [sent[1], sent[3], sent[6], sent[2], sent[5], sent[4], sent[0]]


def test_global_keyprefix_with_celery_and_kombu(broker_url: str,
                                                make_broker: Callable[..., CeleryRedisBroker],
                                                client: redis.Redis, queue: str) -> None:
    options = {"global_keyprefix": "pfx:"}
    app = Celery("prefixed", broker=broker_url, broker_transport_options=options)
    sent = app.send_task("tasks.add", (1, 1), queue=queue).id
    app.close()
    assert client.llen(f"pfx:{queue}") == 1
    broker = make_broker(global_keyprefix="pfx:")
    (got,) = broker.fetch(queue, 5, 0)
    assert got.message and got.message.headers["id"] == sent
    assert client.hexists("pfx:unacked", got.tag) and not client.exists("unacked")
    broker.ack([got])
    broker.publish_messages(queue, [task_message("tasks.add", [3, 4])])
    with Connection(broker_url, transport_options=options) as conn:
        message = conn.SimpleQueue(queue).get(timeout=5)
        assert message.payload[0] == [3, 4] and message.headers["task"] == "tasks.add"
        message.ack()
    assert client.smembers(f"pfx:_kombu.binding.{queue}") == {
        f"{queue}\x06\x16\x06\x16{queue}".encode()}


# ------------------------------------------------------------------ us -> Celery worker


def test_our_publish_runs_on_a_real_worker(make_broker: Callable[..., CeleryRedisBroker],
                                           producer: Celery, broker_url: str,
                                           backend_url: str, client: redis.Redis,
                                           queue: str) -> None:
    broker = make_broker()
    messages = [task_message("tasks.add", [i, i]) for i in range(20)]
    messages.append(task_message("tasks.mul", [6, 7], priority=7))
    messages.append(task_message("tasks.echo", [1], {"k": "v"}))
    broker.publish_messages(queue, messages)
    assert broker.queue_depth(queue) == 22
    with celery_worker(broker_url, backend_url, queues=[queue]):
        results = [producer.AsyncResult(m.headers["id"]).get(timeout=30) for m in messages]
        # Celery declared its binding: the very member we wrote first
        assert client.smembers(f"_kombu.binding.{queue}") == {
            f"{queue}\x06\x16\x06\x16{queue}".encode()}
    assert results[:20] == [2 * i for i in range(20)]
    assert results[20:] == [42, {"args": [1], "kwargs": {"k": "v"}}]
    assert broker.queue_depth(queue) == 0 and client.hlen("unacked") == 0


# ------------------------------------------------------------------ ack, requeue, dead letters


def test_requeue_now_and_delayed(make_broker: Callable[..., CeleryRedisBroker],
                                 client: redis.Redis, queue: str) -> None:
    broker = make_broker()
    broker.publish_messages(queue, [task_message("tasks.add", [i, 0]) for i in range(3)])
    first, second, third = broker.fetch(queue, 3, 0)
    broker.requeue(first)
    assert client.hlen("unacked") == 2 and broker.queue_depth(queue) == 1
    (again,) = broker.fetch(queue, 1, 0)
    assert again.tag == first.tag and args_of(again) == [0, 0]
    assert again.message and again.message.headers["redelivered"] is True
    assert json.loads(again.body)["properties"]["delivery_info"]["redelivered"] is True
    broker.requeue(second, delay=30)
    assert broker.delayed_count(queue) == 1 and broker.queue_depth(queue) == 0
    assert not client.hexists("unacked", second.tag)
    assert broker.move_delayed(queue) == 0  # not due yet
    assert broker.move_delayed(queue, now=time.time() + 31) == 1
    (due,) = broker.fetch(queue, 5, 0, ack=[again, third])
    assert due.tag == second.tag and broker.delayed_count(queue) == 0
    broker.ack([due])
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_dead_letter_and_replay(make_broker: Callable[..., CeleryRedisBroker],
                                client: redis.Redis, queue: str) -> None:
    broker = make_broker()
    broker.publish_messages(queue, [task_message("tasks.add", [1, 2], priority=3)])
    (delivery,) = broker.fetch(queue, 1, 0)
    broker.dead_letter(delivery, "no such task here")
    assert client.hlen("unacked") == 0 and broker.queue_depth(queue) == 0
    (entry,) = broker.dead_letters(queue)
    assert entry["reason"] == "no such task here" and entry["queue"] == queue
    assert entry["body"].encode() == delivery.body
    assert broker.replay_dead(queue) == 1 and broker.dead_letters(queue) == []
    assert client.llen(f"{queue}\x06\x163") == 1  # back in its priority list, raw
    (back,) = broker.fetch(queue, 1, 0)
    assert back.body == delivery.body


def test_a_message_whose_tag_is_unacked_already_is_parked_not_recorded_twice(
        make_broker: Callable[..., CeleryRedisBroker], client: redis.Redis,
        queue: str) -> None:
    broker = make_broker()
    broker.publish_messages(queue, [task_message("tasks.add", [1, 1])])
    (held,) = broker.fetch(queue, 10, 0)
    record = client.hget("unacked", held.tag)
    twin = json.loads(client.hget("unacked", held.tag))[0]  # the envelope, same tag
    twin["headers"] = {**twin["headers"], "id": "twin"}
    client.lpush(queue, json.dumps(twin).encode())
    broker.publish_messages(queue, [task_message("tasks.add", [2, 2])])
    got = broker.fetch(queue, 10, 0)
    assert [args_of(d) for d in got] == [[2, 2]]
    (dead,) = broker.dead_letters(queue)
    assert "duplicate delivery_tag" in dead["reason"]
    assert client.hget("unacked", held.tag) == record  # the first one's record kept
    broker.ack([held, *got])
    assert client.hlen("unacked") == 0


def test_garbage_is_parked_and_the_broker_goes_on(
        make_broker: Callable[..., CeleryRedisBroker], client: redis.Redis,
        queue: str) -> None:
    broker = make_broker(max_message_bytes=4096)
    good = task_message("tasks.add", [1, 1])
    valid = json.loads(broker_envelope(good, queue))
    dup = dict(valid, headers={"task": "tasks.add", "id": "dup"})
    garbage: list[tuple[bytes, str]] = [
        (b'{"task": "tasks.add", "args": [1, 2]}', "no 'properties' object"),
        (b"\x00\x01 not json", "not JSON"),
        (b"[1, 2]", "no 'properties' object"),
        (json.dumps({**valid, "properties": {**valid["properties"], "delivery_tag": None}})
         .encode(), "delivery_tag is missing, null or empty"),
        (json.dumps({**valid, "body": "%%%", "properties": {**valid["properties"],
                                                            "delivery_tag": "bad64"}})
         .encode(), "not valid base64"),
        (b'{"properties": {"delivery_tag": "big"}, "body": "' + b"A" * 5000 + b'"}',
         "exceeds max_message_bytes=4096"),
        (json.dumps(dup).encode(), "duplicate delivery_tag"),
    ]
    # LPUSH order: valid first, garbage after, one more valid at the end
    client.lpush(queue, json.dumps(valid).encode(), *[g for g, _ in garbage])
    broker.publish_messages(queue, [task_message("tasks.add", [2, 2])])
    got = broker.fetch(queue, 100, 0)
    assert [args_of(d) for d in got] == [[1, 1], [2, 2]]
    dead = broker.dead_letters(queue)
    assert len(dead) == len(garbage)
    parked = {(entry["body"].encode() if "body" in entry
               else base64.b64decode(entry["body_b64"])): entry["reason"] for entry in dead}
    for raw, reason in garbage:  # each one parked byte for byte, with its reason
        assert reason in parked[raw]
    assert set(client.hkeys("unacked")) == {d.tag.encode() for d in got}
    broker.ack(got)
    assert broker.replay_dead(queue) == len(garbage)  # replayed raw
    # parked again, except the duplicate: its twin was acked, so it is a message now
    (dup_again,) = broker.fetch(queue, 100, 0)
    assert dup_again.message and dup_again.message.headers["id"] == "dup"
    assert len(broker.dead_letters(queue)) == len(garbage) - 1


def test_unacked_records_what_the_envelope_says(
        make_broker: Callable[..., CeleryRedisBroker], client: redis.Redis,
        queue: str) -> None:
    """The take reads a kombu envelope's tag, exchange and routing key from its end (where
    kombu writes its properties) and decodes any other: the unacked records are kombu's
    either way, and an envelope whose end names another tag than its properties is parked."""
    broker = make_broker()
    canonical = json.loads(broker_envelope(task_message("tasks.add", [1, 1]), queue))
    escaped = json.loads(broker_envelope(task_message("tasks.add", [2, 2]), queue))
    escaped["properties"]["delivery_info"]["routing_key"] = 'odd"key'  # needs decoding
    decoy = json.loads(broker_envelope(task_message("tasks.add", [3, 3]), queue))
    props = decoy.pop("properties")
    decoy["properties"] = props
    decoy["headers"] = dict(decoy.pop("headers"), **{
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
        "body_encoding": "base64", "delivery_tag": "not-the-tag"})  # headers last now
    raws = [json.dumps(m).encode() for m in (canonical, escaped, decoy)]
    assert raws[2].endswith(b'"delivery_tag": "not-the-tag"}}')
    client.lpush(queue, *raws)
    got = broker.fetch(queue, 10, 0)
    assert [args_of(d) for d in got] == [[1, 1], [2, 2]]
    records = {tag.decode(): json.loads(value) for tag, value in client.hgetall("unacked").items()}
    assert records == {
        canonical["properties"]["delivery_tag"]: [canonical, "", queue],
        escaped["properties"]["delivery_tag"]: [escaped, "", 'odd"key'],
    }
    (dead,) = broker.dead_letters(queue)
    assert dead["body"].encode() == raws[2]
    assert f"{props['delivery_tag']!r} is not the tag at" in dead["reason"]
    assert client.zcard("unacked_index") == 2


def broker_envelope(msg: CeleryMessage, queue: str) -> bytes:
    from bridge.protocol.kombu_envelope import to_envelope
    return to_envelope(msg, routing_key=queue)


def test_blocking_fetch_wakes_and_stages_nothing(make_broker: Callable[..., CeleryRedisBroker],
                                                 client: redis.Redis, queue: str) -> None:
    consumer = make_broker(block_slice=0.5)
    publisher = make_broker()
    with blocks_once(client):
        assert consumer.fetch(queue, 10, 0.3) == []
    timer = threading.Timer(0.3, publisher.publish_messages,
                            (queue, [task_message("tasks.add", [5, 5])]))
    timer.start()
    got = consumer.fetch(queue, 10, 10)
    timer.join()
    assert [args_of(d) for d in got] == [[5, 5]]
    staging = consumer.keys.staging(queue, consumer.worker_id)
    assert client.llen(staging) == 0 and client.hexists("unacked", got[0].tag)


def test_staged_item_of_a_dead_worker_goes_back(make_broker: Callable[..., CeleryRedisBroker],
                                                client: redis.Redis, queue: str) -> None:
    """Simulates a worker killed between its BLMOVE and the next Lua call."""
    dead = make_broker(worker_id="dead-worker", lease_ttl=0.1, block_slice=0.1)
    dead.fetch(queue, 1, 0)  # registers as a stager
    broker = make_broker()
    broker.publish_messages(queue, [task_message("tasks.add", [i, i]) for i in range(3)])
    client.lmove(queue, dead.keys.staging(queue, "dead-worker"), "RIGHT", "LEFT")
    client.set(dead.keys.lease(queue, "dead-worker"), b"1", px=200)
    assert broker.recover_staged(queue) == 0  # lease still valid
    time.sleep(0.3)
    assert broker.recover_staged(queue) == 1
    got = broker.fetch(queue, 10, 0)
    assert [args_of(d) for d in got] == [[0, 0], [1, 1], [2, 2]]  # order kept


# ------------------------------------------------------------------ crash safety, restore

CHILD = textwrap.dedent("""
    import os, random, sys, time
    from bridge.brokers.celery_redis import CeleryRedisBroker
    url, queue, log_path = sys.argv[1:4]
    broker = CeleryRedisBroker.from_url(url, block_slice=0.2, lease_ttl=0.3)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    held = []
    while True:
        held = broker.fetch(queue, random.randint(1, 20), 0.5, ack=held)
        for delivery in held:  # "processed" before the ack (in the next fetch)
            os.write(fd, (delivery.message.headers["id"] + "\\n").encode())
        time.sleep(random.choice([0, 0, 0.001, 0.005]))  # the "work": messages are held
""")


def test_sigkill_mid_fetch_loses_nothing(make_broker: Callable[..., CeleryRedisBroker],
                                         broker_url: str, client: redis.Redis, queue: str,
                                         tmp_path: Path) -> None:
    publisher = make_broker()
    messages = [task_message("tasks.add", [i, i]) for i in range(1000)]
    log = tmp_path / "processed.log"
    log.touch()
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fed = 0
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", CHILD, broker_url, queue, str(log)],
                                 env=env, cwd=ROOT)
        seen = len(log.read_text().split())
        fed = _feed(publisher, queue, messages, fed, rng, child, log, seen)
        child.send_signal(signal.SIGKILL)
        child.wait()
    publisher.publish_messages(queue, messages[fed:])
    time.sleep(0.6)  # the dead children's staging leases expire
    recovery = make_broker(visibility_timeout=0)
    recovery.restore_visible()  # what the killed children held (typically a few dozen)
    recovery.recover_staged(queue)
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    assert not [k for k in client.keys("bridge:celery:staging:*") if client.llen(k)]
    waiting = [json.loads(raw)["headers"]["id"] for raw in recovery.peek(queue, 2000)]
    processed = set(log.read_text().split())
    assert len(waiting) == len(set(waiting))  # nothing duplicated in the queue
    assert processed  # the children did work before dying
    every = {m.headers["id"] for m in messages}
    assert every - set(waiting) <= processed  # each message is back, or was processed
    assert recovery.dead_letters(queue) == []


def _feed(publisher: CeleryRedisBroker, queue: str, messages: list[CeleryMessage], fed: int,
          rng: random.Random, child: subprocess.Popen[bytes], log: Path, seen: int) -> int:
    """Publish in small batches until the child processed a random amount; returns ``fed``."""
    target = seen + rng.randint(50, 200)
    deadline = time.monotonic() + 30
    while len(log.read_text().split()) < target and time.monotonic() < deadline:
        assert child.poll() is None, "the fetching child died on its own"
        if fed < len(messages):
            batch = messages[fed:fed + rng.randint(1, 15)]
            publisher.publish_messages(queue, batch)
            fed += len(batch)
        time.sleep(rng.choice([0, 0.001, 0.01, 0.05]))
    time.sleep(rng.random() * 0.05)
    return fed


def test_celery_worker_restores_our_unacked(make_broker: Callable[..., CeleryRedisBroker],
                                            producer: Celery, broker_url: str,
                                            backend_url: str, client: redis.Redis,
                                            queue: str) -> None:
    broker = make_broker()
    messages = [task_message("tasks.add", [i, 10]) for i in range(3)]
    broker.publish_messages(queue, messages)
    held = broker.fetch(queue, 10, 0)
    assert len(held) == 3 and client.hlen("unacked") == 3
    time.sleep(1.2)  # older than the worker's visibility_timeout
    with celery_worker(broker_url, backend_url, queues=[queue], app=WORKER_APP,
                       extra_env={"BRIDGE_TEST_TRANSPORT_OPTIONS": '{"visibility_timeout": 1}'}):
        results = [producer.AsyncResult(m.headers["id"]).get(timeout=30) for m in messages]
    assert results == [10, 11, 12]
    assert client.hlen("unacked") == 0
    broker.requeue(held[0])  # restored by Celery meanwhile: nothing is pushed twice
    broker.ack(held[1:])
    assert broker.queue_depth(queue) == 0


def test_we_restore_a_killed_celery_workers_unacked(
        make_broker: Callable[..., CeleryRedisBroker], producer: Celery, broker_url: str,
        backend_url: str, client: redis.Redis, queue: str) -> None:
    sent = [producer.send_task("tasks.sleep", (60,), queue=queue).id for _ in range(3)]
    with celery_worker(broker_url, backend_url, queues=[queue]) as proc:
        deadline = time.monotonic() + 30
        while not client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the solo worker runs the first one; others may be prefetched
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = client.hlen("unacked")
    assert held >= 1 and held + client.llen(queue) == 3
    broker = make_broker()
    assert broker.restore_visible() == 0  # younger than visibility_timeout
    assert {e.tag for e in broker.unacked()} == {t.decode() for t in client.hkeys("unacked")}
    later = time.time() + 3601
    with client.lock("unacked_mutex", timeout=5):  # a Celery worker restoring right now
        assert broker.restore_visible(now=later) == 0
    celery_held = {json.loads(v)[0]["headers"]["id"]
                   for v in client.hvals("unacked")}
    assert broker.restore_visible(now=later) == held
    got = broker.fetch(queue, 10, 0)
    assert sorted(d.message.headers["id"] for d in got if d.message) == sorted(sent)
    restored = [d for d in got if d.message and d.message.headers.get("redelivered")]
    assert {d.message.headers["id"] for d in restored if d.message} == celery_held
    assert got[:held] == restored  # restored to the front, as kombu's restore does
    broker.ack(got)
    assert client.hlen("unacked") == 0


def test_maintain_and_close_give_everything_back(
        make_broker: Callable[..., CeleryRedisBroker], client: redis.Redis,
        queue: str) -> None:
    broker = make_broker(visibility_timeout=0.2, delayed_poll=0, restore_interval=0)
    broker.publish_messages(queue, [task_message("tasks.add", [i, 0]) for i in range(4)])
    stuck, delayed, *held = broker.fetch(queue, 4, 0)
    broker.requeue(delayed, delay=0.1)
    time.sleep(0.3)
    broker.maintain()  # the delayed one is due; ``stuck`` outlived the visibility timeout
    assert broker.delayed_count(queue) == 0 and broker.queue_depth(queue) == 4
    assert client.hlen("unacked") == 0  # held ones too: they are as old as ``stuck``
    again = broker.fetch(queue, 2, 0)
    broker.close()  # kombu's shutdown restore: held deliveries back to the front
    assert client.hlen("unacked") == 0
    fresh = make_broker()
    order = [args_of(d) for d in fresh.fetch(queue, 10, 0)]
    assert order[:2] == [args_of(d) for d in again]  # in their original order
    assert len(order) == 4
    assert {args_of(d)[0] for d in [stuck, delayed, *held]} == {o[0] for o in order}


def test_repr_hides_credentials() -> None:
    broker = CeleryRedisBroker.from_url("redis://:s3cret@127.0.0.1:1/0",
                                        global_keyprefix="p:")
    assert "s3cret" not in repr(broker) and "127.0.0.1:1/0" in repr(broker)
