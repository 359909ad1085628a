"""AmqpBroker against a real RabbitMQ: machinery's declarations, publish properties, delay
queues, fetch / ack / requeue / dead letters, and consumers that die.

Compatibility with real Go machinery (v1 and v2 producers and workers on the same queues) is
tested live in tests/interop/test_live_amqp.py; here each declaration Go makes is replayed
with Go's exact arguments on a raw channel: RabbitMQ accepts it only if ours is equivalent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
from kombu import Connection

import bridge.brokers.amqp as amqp_module
from bridge.app import Bridge, broker_from_config
from bridge.brokers.amqp import AmqpBroker, AmqpDeliveryTag, dead_queue_name, delay_queue_name
from bridge.brokers.amqp_consuming import REASON_HEADER
from bridge.brokers.amqp_topology import go_delay_queue_name
from bridge.brokers.base import Delivery
from bridge.config import AMQPConfig, Config
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import Arg, Signature, new_uuid
from bridge.worker import Worker, WorkerOptions

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0
"""Generous upper bound for a message to arrive; tests never assert durations."""
EXCHANGE = "machinery_exchange"

MakeBroker = Callable[..., AmqpBroker]


@pytest.fixture
def queue() -> str:
    """A queue of this test only."""
    return f"bridge_mq_{uuid.uuid4().hex[:10]}"


def config(url: str, queue: str, **amqp_options: Any) -> Config:
    """The harness's AMQP settings: BindingKey = the queue (routing key = queue)."""
    return Config(broker=url, default_queue=queue,
                  amqp=AMQPConfig(**{"binding_key": queue, **amqp_options}))


@pytest.fixture
def make_broker(amqp_url: str, queue: str) -> Iterator[MakeBroker]:
    brokers: list[AmqpBroker] = []

    def make(cfg: Config | None = None, **options: Any) -> AmqpBroker:
        broker = AmqpBroker.from_config(cfg or config(amqp_url, queue), **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> AmqpBroker:
    return make_broker()


@pytest.fixture
def raw(amqp_url: str) -> Iterator[Callable[[], Any]]:
    """Fresh py-amqp channels on a connection of the test's own (a refused declaration
    closes its channel, so each check takes a new one)."""
    with Connection(amqp_url) as conn:
        conn.ensure_connection(max_retries=1)
        yield conn.channel


def sig(name: str = "add", *values: int, **fields: Any) -> Signature:
    return Signature(uuid=new_uuid("task_"), name=name,
                     args=[Arg("", "int64", v) for v in values], **fields)


def fetch_n(broker: AmqpBroker, queue: str, count: int) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (each wait bounded by WAIT)."""
    got: list[Delivery] = []
    while len(got) < count:
        batch = broker.fetch(queue, count - len(got), WAIT)
        assert batch, f"only {len(got)} of {count} messages arrived"
        got += batch
    return got


def uuids(deliveries: list[Delivery]) -> list[str]:
    return [Signature.from_json(d.body).uuid for d in deliveries]


def props(delivery: Delivery) -> dict[str, Any]:
    assert isinstance(delivery.tag, AmqpDeliveryTag)
    return delivery.tag.properties


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------ declarations


def test_declarations_are_machinery_s(broker: AmqpBroker, raw: Callable[[], Any],
                                      queue: str) -> None:
    """Go's ExchangeDeclare / QueueDeclare / QueueBind with Go's arguments are accepted after
    ours (equivalent), a different durability is refused (so the check is real), and a Go
    publish to the exchange with routing key = queue reaches our consumer."""
    broker.declare(queue)
    channel = raw()
    channel.exchange_declare(EXCHANGE, "direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments={})
    channel.queue_bind(queue, EXCHANGE, queue)
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        raw().queue_declare(queue, durable=False, auto_delete=False)
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        raw().exchange_declare(EXCHANGE, "direct", durable=False, auto_delete=False)
    body = sig("add", 1, 2, routing_key=queue).to_json()
    raw().basic_publish(amqp.Message(body, content_type="application/json", delivery_mode=2),
                        exchange=EXCHANGE, routing_key=queue)
    [got] = fetch_n(broker, queue, 1)
    assert got.body == body
    broker.ack([got])


def test_queue_declare_args_match(make_broker: MakeBroker, raw: Callable[[], Any],
                                  amqp_url: str, queue: str) -> None:
    """queue_declare_args (x-max-priority) go on the queue: Go's declaration with the same
    arguments is accepted, one without them is refused, and priorities are honoured."""
    broker = make_broker(config(amqp_url, queue, queue_declare_args={"x-max-priority": 10}))
    broker.publish([sig("low", priority=1), sig("high", priority=9), sig("none")])
    raw().queue_declare(queue, durable=True, auto_delete=False,
                        arguments={"x-max-priority": 10})
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        raw().queue_declare(queue, durable=True, auto_delete=False, arguments={})
    got = fetch_n(broker, queue, 3)
    assert [Signature.from_json(d.body).name for d in got] == ["high", "low", "none"]
    assert [props(d).get("priority") for d in got] == [9, 1, None]
    broker.ack(got)


def test_binding_key_is_not_the_queue_name(make_broker: MakeBroker, amqp_url: str,
                                           queue: str) -> None:
    """machinery's defaults bind the worker's queue with a binding key that is not its name
    (``machinery_task`` vs ``machinery_tasks``): an unrouted task (routing key = binding key,
    as Go's AdjustRoutingKey sets it) and a task routed to the queue's name (what Bridge.send
    sets) both reach the worker's queue."""
    key = f"key_{queue}"
    cfg = Config(broker=amqp_url, default_queue=queue, amqp=AMQPConfig(binding_key=key))
    consumer, producer = make_broker(cfg), make_broker(cfg)
    consumer.declare(queue)
    unrouted, routed = sig("add", 1), sig("add", 2, routing_key=queue)
    producer.publish([unrouted, routed])
    assert unrouted.routing_key == key
    got = fetch_n(consumer, queue, 2)
    assert sorted(uuids(got)) == sorted([unrouted.uuid, routed.uuid])
    consumer.ack(got)
    # like Go's publisher, ours declared a queue named after the routing key (machinery #483)
    assert consumer.queue_depth(key) == 1
    consumer.ack(fetch_n(consumer, key, 1))


# ------------------------------------------------------------------ publishing


def test_publish_is_byte_exact_with_go_properties(broker: AmqpBroker, queue: str) -> None:
    headers = {"trace": "abc", "sampled": True, "n": 3, "x": 1.5, "map": {"k": ["v", 1]}}
    message = sig("add", 1, 2, headers=headers, priority=4)
    unrouted = sig("noop", headers={})
    broker.publish([message, unrouted])
    assert unrouted.routing_key == queue  # AdjustRoutingKey: direct exchange → binding key
    got = fetch_n(broker, queue, 2)
    assert [d.body for d in got] == [message.to_json(), unrouted.to_json()]
    assert json.loads(got[0].body)["RoutingKey"] == queue
    first, second = props(got[0]), props(got[1])
    assert first["content_type"] == "application/json" and first["delivery_mode"] == 2
    assert first["priority"] == 4 and first["application_headers"] == headers
    assert "content_encoding" not in first and "expiration" not in first
    assert "priority" not in second and not second.get("application_headers")  # as amqp091
    broker.ack(got)


def test_acked_messages_are_gone(make_broker: MakeBroker, broker: AmqpBroker,
                                 queue: str) -> None:
    broker.publish([sig() for _ in range(4)])
    got = fetch_n(broker, queue, 4)
    broker.ack(got[:2])
    broker.close()  # the other two were never acked: RabbitMQ requeues them
    other = make_broker()
    back = fetch_n(other, queue, 2)
    assert sorted(uuids(back)) == sorted(uuids(got[2:]))
    assert all(isinstance(d.tag, AmqpDeliveryTag) and d.tag.redelivered for d in back)
    assert other.fetch(queue, 5, 0.3, ack=back) == []  # acks ride on the fetch
    assert other.queue_depth(queue) == 0


def test_eta_goes_through_go_s_delay_queue(broker: AmqpBroker, raw: Callable[[], Any],
                                           queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ETA 3 s ahead: queue delay.3000.machinery_exchange.<queue> declared exactly as Go
    declares it (Go's redeclaration is accepted), then the task lands on the queue."""
    now = time.time_ns()
    monkeypatch.setattr(amqp_module.time, "time_ns", lambda: now)  # a fixed clock: 3000 ms
    later = sig("add", 5, eta=GoTime.from_unix_nano(now + 3_000_000_123))
    broker.publish([later])
    monkeypatch.undo()
    name = go_delay_queue_name(3000, EXCHANGE, queue)
    assert name == f"delay.3000.machinery_exchange.{queue}"
    raw().queue_declare(name, durable=True, auto_delete=False, arguments={
        "x-dead-letter-exchange": EXCHANGE, "x-dead-letter-routing-key": queue,
        "x-message-ttl": 3000, "x-expires": 6000})
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        raw().queue_declare(name, durable=True, auto_delete=False, arguments={
            "x-dead-letter-exchange": EXCHANGE, "x-dead-letter-routing-key": queue,
            "x-message-ttl": 3001, "x-expires": 6000})
    [got] = fetch_n(broker, queue, 1)
    assert got.body == later.to_json()
    assert props(got)["content_type"] == "application/json"
    broker.ack([got])


def test_configured_delayed_queue(make_broker: MakeBroker, raw: Callable[[], Any],
                                  amqp_url: str, queue: str) -> None:
    """amqp.delayed_queue: one queue with the dead-letter arguments only, and a per-message
    expiration of the delay in ms, as machinery >= 1.10.7 does."""
    waiting = f"{queue}_delayed"
    broker = make_broker(config(amqp_url, queue, delayed_queue=waiting))
    later = sig("add", 1, eta=GoTime.from_unix_nano(time.time_ns() + 1_000_000_000))
    broker.publish([later])
    raw().queue_declare(waiting, durable=True, auto_delete=False, arguments={
        "x-dead-letter-exchange": EXCHANGE, "x-dead-letter-routing-key": queue})
    [got] = fetch_n(broker, queue, 1)
    assert got.body == later.to_json()
    broker.ack([got])


# ------------------------------------------------------------------ requeue / dead letters


def test_requeue_now(broker: AmqpBroker, queue: str) -> None:
    broker.publish([sig()])
    [first] = fetch_n(broker, queue, 1)
    broker.requeue(first)
    [again] = fetch_n(broker, queue, 1)
    assert again.body == first.body
    assert isinstance(again.tag, AmqpDeliveryTag) and again.tag.redelivered
    broker.ack([again])


def test_requeue_with_delay_comes_back(broker: AmqpBroker, queue: str) -> None:
    message = sig("add", 1, 2, headers={"h": "v"}, priority=2)
    broker.publish([message])
    [first] = fetch_n(broker, queue, 1)
    broker.requeue(first, delay=2.0)
    waiting = delay_queue_name(queue, 2000)
    assert broker.queue_depth(waiting) + broker.queue_depth(queue) == 1  # acked, not lost
    [back] = fetch_n(broker, queue, 1)
    assert back.body == message.to_json()
    assert props(back)["priority"] == 2
    assert props(back)["application_headers"]["h"] == "v"
    broker.requeue(back, delay=2.0)  # our own x-death bookkeeping is not carried again
    [again] = fetch_n(broker, queue, 1)
    deaths = props(again)["application_headers"]["x-death"]
    assert [d["queue"] for d in deaths] == [waiting] and deaths[0]["count"] == 1
    broker.ack([again])
    assert broker.fetch(queue, 1, 0.2) == []


def test_dead_letter_and_replay(broker: AmqpBroker, queue: str) -> None:
    bad = sig("add", 1, headers={"h": "v"}, priority=7)
    keep = sig("noop")
    broker.publish([bad, keep])
    got = fetch_n(broker, queue, 2)
    broker.dead_letter(got[0], "cannot decode: boom")
    broker.ack(got[1:])
    assert broker.queue_depth(queue) == 0
    assert broker.queue_depth(dead_queue_name(queue)) == 1
    [entry] = broker.dead_letters(queue)
    assert entry["reason"] == "cannot decode: boom" and entry["queue"] == queue
    assert entry["time"].endswith("Z") and entry["body"] == bad.to_json().decode()
    assert entry["headers"] == {"h": "v"}
    eventually(lambda: broker.queue_depth(dead_queue_name(queue)) == 1,
               "looking at dead letters leaves them in place")
    assert broker.replay_dead(queue) == 1
    [back] = fetch_n(broker, queue, 1)
    assert back.body == bad.to_json()
    assert props(back)["application_headers"] == {"h": "v"}
    assert REASON_HEADER not in props(back)["application_headers"]
    assert props(back)["priority"] == 7
    broker.ack([back])
    assert broker.replay_dead(queue) == 0


def test_undecodable_and_empty_bodies_are_delivered_not_dropped(
        broker: AmqpBroker, raw: Callable[[], Any], queue: str) -> None:
    """machinery nacks these without requeue (lost); we hand them to the worker to park."""
    broker.declare(queue)
    channel = raw()
    for body in (b"", b"\xff not json"):
        channel.basic_publish(amqp.Message(body), exchange=EXCHANGE, routing_key=queue)
    got = fetch_n(broker, queue, 2)
    assert sorted(d.body for d in got) == [b"", b"\xff not json"]
    for delivery in got:
        broker.dead_letter(delivery, "undecodable")
    assert len(broker.dead_letters(queue)) == 2


def test_oversized_message_is_parked(make_broker: MakeBroker, queue: str) -> None:
    broker = make_broker(max_message_bytes=600)
    big = sig("concat", headers={"pad": "x" * 1000})
    small = sig("noop")
    broker.publish([big, small])
    got = fetch_n(broker, queue, 1)
    assert uuids(got) == [small.uuid]
    broker.ack(got)
    [entry] = broker.dead_letters(queue)
    assert "exceeds max_message_bytes=600" in entry["reason"]
    assert entry["body"] == big.to_json().decode()


def test_publish_raw_and_peek(broker: AmqpBroker, queue: str) -> None:
    bodies = [sig("add", i).to_json() for i in range(3)]
    broker.publish_raw(queue, bodies)
    assert broker.peek(queue, 2) == bodies[:2]
    eventually(lambda: broker.queue_depth(queue) == 3, "peeked messages stay")
    got = fetch_n(broker, queue, 3)
    assert [d.body for d in got] == bodies
    broker.ack(got)


def test_worker_backs_off_unregistered_tasks_without_losing_them(
        make_broker: MakeBroker, amqp_url: str, redis_url: str, queue: str) -> None:
    """Our worker does not know the task: it goes back with growing back-off through delay
    queues of ours (machinery would nack-requeue it at once, in a loop) and is still there
    when the worker stops."""
    app = Bridge(dataclasses.replace(config(amqp_url, queue), result_backend=redis_url))
    unknown = sig("registered_elsewhere")
    app.broker.publish([unknown])
    worker = Worker(app, WorkerOptions(concurrency=1, poll_timeout=0.1, handoff_window=0.0))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    inspect = make_broker()
    try:
        eventually(lambda: any(inspect.queue_depth(delay_queue_name(queue, ms)) == 1
                               for ms in (125, 188, 250, 375, 500, 750, 1000)),
                   "a back-off (¼ s, then ½ s, each × ½, ¾ or 1) holds the task")
    finally:
        worker.stop()
        thread.join(timeout=WAIT)
        app.close()
    [back] = fetch_n(inspect, queue, 1)  # after its back-off, or returned at once
    assert back.body == unknown.to_json()
    inspect.ack([back])


# ------------------------------------------------------------------ consumers that die


CHILD = """
import sys
from bridge.brokers.amqp import AmqpBroker
from bridge.config import AMQPConfig, Config
queue = sys.argv[2]
broker = AmqpBroker.from_config(Config(broker=sys.argv[1], default_queue=queue,
                                       amqp=AMQPConfig(binding_key=queue)))
got = []
while len(got) < int(sys.argv[3]):
    got += broker.fetch(queue, 10, 30)
print(len(got), flush=True)
sys.stdin.read()  # hold them, unacked, until killed
"""


def test_killed_consumer_loses_nothing(broker: AmqpBroker, amqp_url: str,
                                       queue: str) -> None:
    messages = [sig("add", i) for i in range(5)]
    broker.publish(messages)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, amqp_url, queue, "5"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"5"
        assert broker.queue_depth(queue) == 0  # all held by the child
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    back = fetch_n(broker, queue, 5)
    assert sorted(uuids(back)) == sorted(m.uuid for m in messages)
    broker.ack(back)


def test_lost_connection_redelivers_and_reconnects(broker: AmqpBroker, queue: str) -> None:
    broker.publish([sig("add", i) for i in range(3)])
    held = fetch_n(broker, queue, 3)
    sock = broker.session.conn.connection.transport.sock  # the TCP connection breaks under us
    sock.shutdown(socket.SHUT_RDWR)
    assert broker.fetch(queue, 3, 1.0) == []  # logged, reset
    broker.ack(held)  # their channel is gone: skipped, not an error
    back = fetch_n(broker, queue, 3)
    assert sorted(uuids(back)) == sorted(uuids(held))
    broker.ack(back)
    # basic.ack has no reply: a round trip on the same channel makes sure RabbitMQ applied
    # the acks before the connection breaks (a reset can discard frames it has not read)
    broker.session.consume.queue_declare(queue, passive=True)
    broker.session.conn.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    broker.publish([sig("noop")])  # a publish reconnects and retries once
    [last] = fetch_n(broker, queue, 1)
    broker.ack([last])
    broker.maintain()
    assert broker.fetch(queue, 3, 0.2) == []


# ------------------------------------------------------------------ wiring


def test_broker_from_config_and_failover(amqp_url: str, queue: str) -> None:
    """amqp:// gives an AmqpBroker; with multiple_broker_separator the URLs are tried in
    order, as machinery's AMQPConnector does."""
    dead = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
    cfg = Config(broker=f"{dead}|{amqp_url}", multiple_broker_separator="|",
                 default_queue=queue, amqp=AMQPConfig(binding_key=queue))
    broker = broker_from_config(cfg)
    try:
        assert isinstance(broker, AmqpBroker)
        broker.publish([sig("noop")])
        [got] = fetch_n(broker, queue, 1)
        broker.ack([got])
    finally:
        broker.close()


def test_repr_hides_the_password(broker: AmqpBroker, amqp_url: str) -> None:
    password = Connection(amqp_url).password
    assert "***" in repr(broker) and f":{password}@" not in repr(broker)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
