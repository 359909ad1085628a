"""CeleryAmqpBroker against a real RabbitMQ, a real Celery 5.6.2 producer and worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
from celery import Celery
from kombu import Connection

from bridge.brokers.base import Delivery
from bridge.brokers.celery_amqp import (
    REASON_HEADER,
    AmqpTag,
    CeleryAmqpBroker,
    dead_queue_name,
    delay_queue_name,
)
from bridge.protocol.celery_message import CeleryMessage
from tests.celery_worker import celery_worker

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0
"""Generous upper bound for a message to arrive; tests never assert durations."""
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

MakeBroker = Callable[..., CeleryAmqpBroker]


@pytest.fixture
def queue() -> str:
    """A queue of this test only."""
    return f"bridge_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_broker(amqp_url: str) -> Iterator[MakeBroker]:
    brokers: list[CeleryAmqpBroker] = []

    def make(**options: Any) -> CeleryAmqpBroker:
        broker = CeleryAmqpBroker.from_url(amqp_url, **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> CeleryAmqpBroker:
    return make_broker()


@pytest.fixture
def producer(amqp_url: str, redis_url: str) -> Iterator[Celery]:
    """A Celery 5.6.2 producer app on the test RabbitMQ (results in the test Redis)."""
    app = Celery("bridge_amqp_tests", broker=amqp_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    yield app
    app.close()


def task_message(task: str, args: list[Any], kwargs: dict[str, Any], *, priority: int = 0,
                 task_id: str | None = None) -> CeleryMessage:
    """A protocol-2 message built by hand, as a non-Celery producer would."""
    tid = task_id or str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": tid, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": tid, "parent_id": None,
               "argsrepr": repr(args), "kwargsrepr": repr(kwargs), "origin": "bridge-test",
               "ignore_result": False}
    body = json.dumps([args, kwargs, EMBED]).encode()
    return CeleryMessage(body=body, headers=headers, properties={
        "correlation_id": tid, "reply_to": str(uuid.uuid4()), "priority": priority})


def fetch_n(broker: CeleryAmqpBroker, queue: str, count: int) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (each wait bounded by WAIT)."""
    got: list[Delivery] = []
    while len(got) < count:
        batch = broker.fetch(queue, count - len(got), WAIT)
        assert batch, f"only {len(got)} of {count} messages arrived"
        got += batch
    return got


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until true (RabbitMQ requeues a closed consumer's messages
    asynchronously); fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def drain(broker: CeleryAmqpBroker, queue: str) -> None:
    """Ack whatever waits in ``queue`` (a queue shared with Celery's defaults)."""
    while batch := broker.fetch(queue, 100, 0.2):
        broker.ack(batch)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message.headers["id"] for d in deliveries if d.message is not None]


# ------------------------------------------------------------------ Celery -> bridge


def test_celery_send_task_is_fetched_as_sent(broker: CeleryAmqpBroker, producer: Celery,
                                             queue: str) -> None:
    """Celery declares its queues and publishes; we consume them (same declarations)."""
    drain(broker, "celery")
    result = producer.send_task("tasks.add", (2, 3), {"z": 1}, priority=5, expires=600,
                                headers={"custom": "yes"})
    other = producer.send_task("tasks.echo", ("x",), queue=queue)  # Celery declares it first
    [delivery] = fetch_n(broker, "celery", 1)
    message = delivery.message
    assert message is not None
    assert delivery.queue == "celery"
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert json.loads(delivery.body) == [[2, 3], {"z": 1}, EMBED]
    assert message.body == delivery.body
    headers = message.headers
    assert headers["task"] == "tasks.add" and headers["id"] == result.id
    assert headers["root_id"] == result.id and headers["parent_id"] is None
    assert headers["timelimit"] == [None, None] and headers["retries"] == 0
    assert headers["expires"] is not None and headers["custom"] == "yes"
    props = message.properties
    assert props["correlation_id"] == result.id
    assert props["reply_to"] == producer.thread_oid
    assert props["delivery_mode"] == 2
    assert props["priority"] == 5
    assert props["expiration"] == "600000"
    assert "application_headers" not in props and "content_type" not in props
    assert isinstance(delivery.tag, AmqpTag) and not delivery.tag.redelivered
    broker.ack([delivery])
    assert broker.queue_depth("celery") == 0
    [echo] = fetch_n(broker, queue, 1)
    assert ids([echo]) == [other.id] and json.loads(echo.body)[0] == ["x"]
    broker.ack([echo])


def test_celery_queue_with_max_priority(make_broker: MakeBroker, amqp_url: str,
                                        redis_url: str, queue: str) -> None:
    """Celery with task_queue_max_priority declares x-max-priority; the same option on our
    side consumes it, a mismatch is refused by RabbitMQ with PRECONDITION_FAILED."""
    app = Celery("bridge_amqp_prio", broker=amqp_url, backend=redis_url)
    app.conf.update(task_queue_max_priority=10, broker_connection_retry_on_startup=True)
    try:
        low = app.send_task("tasks.add", (1, 1), queue=queue, priority=1)
        high = app.send_task("tasks.add", (9, 9), queue=queue, priority=9)
    finally:
        app.close()
    mismatched = make_broker()
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        mismatched.fetch(queue, 1, 0.1)
    broker = make_broker(max_priority=10)
    got = fetch_n(broker, queue, 2)
    assert ids(got) == [high.id, low.id]  # the higher priority first
    assert [d.message.priority for d in got if d.message] == [9, 1]
    broker.ack(got)


# ------------------------------------------------------------------ bridge -> Celery


def test_published_messages_run_on_a_celery_worker(make_broker: MakeBroker, amqp_url: str,
                                                  redis_url: str, producer: Celery,
                                                  queue: str, tmp_path: Path) -> None:
    """We declare the queues first (Celery's default ``celery`` and another); a real worker
    declares them again without PRECONDITION_FAILED and runs our messages."""
    drainer = make_broker()
    drain(drainer, "celery")
    drainer.close()  # its consumer would otherwise take (and hold) what we publish
    broker = make_broker()  # a new connection: declares ``celery`` itself
    messages = [task_message("tasks.add", [2, 3], {}),
                task_message("tasks.mul", [4], {"y": 5}, priority=3),
                task_message("tasks.concat", ["a", "b"], {"sep": "-"})]
    default = task_message("tasks.xsum", [[1, 2, 3]], {})
    broker.publish_messages(queue, messages)
    broker.publish_messages("celery", [default])
    assert broker.queue_depth(queue) == 3
    with celery_worker(amqp_url, redis_url, queues=["celery", queue],
                       log_path=tmp_path / "worker.log"):
        results = [producer.AsyncResult(m.headers["id"]).get(timeout=60)
                   for m in [*messages, default]]
    assert results == [5, 20, "a-b", 6]
    assert broker.queue_depth(queue) == 0 and broker.queue_depth("celery") == 0


# ------------------------------------------------------------------ publish / fetch


def test_publish_fetch_round_trip(broker: CeleryAmqpBroker, queue: str) -> None:
    message = CeleryMessage(
        body=b'[[1], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
        headers={"task": "t", "id": "i1", "n": None, "nested": {"a": [1, "x", True]}},
        properties={"correlation_id": "i1", "reply_to": "r", "priority": 4,
                    "expiration": 60000, "message_id": "m1", "app_id": "bridge"})
    broker.publish_messages(queue, [message] * 5)
    got = fetch_n(broker, queue, 5)
    first = got[0].message
    assert first is not None
    assert first.body == message.body and first.headers == message.headers
    assert first.properties == {"correlation_id": "i1", "reply_to": "r", "priority": 4,
                                "expiration": "60000", "message_id": "m1", "app_id": "bridge",
                                "delivery_mode": 2}
    broker.ack(got)
    assert broker.fetch(queue, 5, 0.2) == []


def test_fetch_acks_the_previous_batch(broker: CeleryAmqpBroker, make_broker: MakeBroker,
                                       queue: str) -> None:
    broker.publish_messages(queue, [task_message("tasks.noop", [], {}) for _ in range(4)])
    first = fetch_n(broker, queue, 2)
    second = broker.fetch(queue, 2, WAIT, ack=first)  # "up to 2": the rest may come later
    assert second
    second += fetch_n(broker, queue, 2 - len(second)) if len(second) < 2 else []
    assert len(second) == 2
    broker.close()  # second was never acked: back in the queue, first is gone
    other = make_broker()
    back = fetch_n(other, queue, 2)
    assert sorted(ids(back)) == sorted(ids(second))
    assert all(isinstance(d.tag, AmqpTag) and d.tag.redelivered for d in back)
    other.ack(back)
    assert other.fetch(queue, 4, 0.2) == []


def test_a_larger_fetch_widens_the_prefetch_window(make_broker: MakeBroker,
                                                   queue: str) -> None:
    """prefetch_count is raised to what a fetch asks for, on a consumer already running:
    RabbitMQ applies basic.qos to new consumers only, so the consumer is restarted."""
    broker = make_broker(prefetch_count=2)
    broker.publish_messages(queue, [task_message("tasks.noop", [], {})])
    held = fetch_n(broker, queue, 1)  # a consumer with a window of 2
    broker.publish_messages(queue, [task_message("tasks.noop", [], {}) for _ in range(6)])
    more = fetch_n(broker, queue, 6)  # none acked: a window of 2 would stop at 1 more
    broker.ack([*held, *more])
    assert broker.fetch(queue, 6, 0.2) == []


def test_odd_messages_are_delivered_not_dropped(broker: CeleryAmqpBroker, amqp_url: str,
                                                queue: str) -> None:
    """No content type, text/plain, a non-JSON body, an empty body, no properties at all."""
    broker.publish_messages(queue, [
        CeleryMessage(body=b'{"task": "x"}', content_type=None, content_encoding=None),
        CeleryMessage(body=b"hello", content_type="text/plain"),
        CeleryMessage(body=b"\xff\xfe not json", headers={"task": "x", "id": "1"}),
        CeleryMessage(body=b""),
    ])
    with Connection(amqp_url) as conn:  # a foreign producer: no properties at all
        conn.default_channel.basic_publish(amqp.Message(b"\x00bare"), exchange="",
                                           routing_key=queue)
    got = fetch_n(broker, queue, 5)
    by_body = {d.body: d.message for d in got}
    assert by_body[b'{"task": "x"}'] is not None
    assert by_body[b'{"task": "x"}'].content_type is None  # type: ignore[union-attr]
    assert by_body[b"hello"].content_type == "text/plain"  # type: ignore[union-attr]
    assert by_body[b"\xff\xfe not json"].headers == {"task": "x", "id": "1"}  # type: ignore
    assert b"" in by_body
    bare = by_body[b"\x00bare"]
    assert bare is not None and bare.headers == {} and bare.content_type is None
    broker.ack(got)


def test_unparsable_frame_does_not_crash(broker: CeleryAmqpBroker, amqp_url: str,
                                        queue: str) -> None:
    """A content type that is not UTF-8 breaks py-amqp's frame parser: the fetch logs it and
    reconnects, and the message stays in the queue (not lost, for an operator to remove)."""
    broker.fetch(queue, 1, 0)  # declares the queue and starts consuming
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.default_channel
        channel.basic_publish(amqp.Message(b"body", content_type=b"\xff\xfe"), exchange="",
                              routing_key=queue)  # confirmed: RabbitMQ has it
        assert broker.fetch(queue, 5, WAIT) == []
        eventually(lambda: broker.queue_depth(queue) == 1, "the message is back in the queue")
        channel.queue_delete(queue)


def test_oversized_message_is_parked(make_broker: MakeBroker, queue: str) -> None:
    broker = make_broker(max_message_bytes=100)
    small = task_message("tasks.noop", [], {})
    big = CeleryMessage(body=b"x" * 1000, headers={"task": "tasks.big", "id": "big"})
    broker.publish_messages(queue, [big, small])
    got = fetch_n(broker, queue, 1)
    assert ids(got) == [small.headers["id"]]
    broker.ack(got)
    [entry] = broker.dead_letters(queue)
    assert "exceeds max_message_bytes=100" in entry["reason"]
    assert entry["body"] == "x" * 1000 and entry["headers"]["task"] == "tasks.big"


# ------------------------------------------------------------------ requeue / dead letters


def test_requeue_now(broker: CeleryAmqpBroker, queue: str) -> None:
    broker.publish_messages(queue, [task_message("tasks.noop", [], {})])
    [first] = fetch_n(broker, queue, 1)
    broker.requeue(first)
    [again] = fetch_n(broker, queue, 1)
    assert again.body == first.body and ids([again]) == ids([first])
    assert isinstance(again.tag, AmqpTag) and again.tag.redelivered
    broker.ack([again])


def test_requeue_with_delay_comes_back(broker: CeleryAmqpBroker, queue: str) -> None:
    message = task_message("tasks.add", [1, 2], {}, priority=2)
    broker.publish_messages(queue, [message])
    [first] = fetch_n(broker, queue, 1)
    broker.requeue(first, delay=3.0)
    waiting = delay_queue_name(queue, 3000)
    assert broker.queue_depth(waiting) + broker.queue_depth(queue) == 1  # acked, not lost
    [back] = fetch_n(broker, queue, 1)
    assert back.message is not None
    assert back.body == message.body
    assert back.message.headers == message.headers  # RabbitMQ's x-death hop is not shown
    assert back.message.properties["correlation_id"] == message.headers["id"]
    assert back.message.priority == 2
    broker.ack([back])
    assert broker.queue_depth(waiting) == 0 and broker.fetch(queue, 1, 0.2) == []


def test_dead_letter_and_replay(broker: CeleryAmqpBroker, queue: str) -> None:
    message = task_message("tasks.add", [1, 2], {}, priority=7)
    keep = task_message("tasks.noop", [], {})
    broker.publish_messages(queue, [message, keep])
    got = fetch_n(broker, queue, 2)
    bad = next(d for d in got if ids([d]) == [message.headers["id"]])
    broker.dead_letter(bad, "cannot decode: boom")
    broker.ack([d for d in got if d is not bad])
    assert broker.queue_depth(queue) == 0
    assert broker.queue_depth(dead_queue_name(queue)) == 1
    [entry] = broker.dead_letters(queue)
    assert entry["reason"] == "cannot decode: boom" and entry["queue"] == queue
    assert entry["time"].endswith("Z") and json.loads(entry["body"])[0] == [1, 2]
    eventually(lambda: broker.queue_depth(dead_queue_name(queue)) == 1,
               "looking at dead letters leaves them in place")
    assert broker.replay_dead(queue) == 1
    [back] = fetch_n(broker, queue, 1)
    assert back.message is not None
    assert back.body == message.body and back.message.headers == message.headers
    assert REASON_HEADER not in back.message.headers
    assert back.message.priority == 7
    assert back.message.properties["correlation_id"] == message.headers["id"]
    broker.ack([back])
    assert broker.replay_dead(queue) == 0


# ------------------------------------------------------------------ consumers that die


CHILD = """
import sys
from bridge.brokers.celery_amqp import CeleryAmqpBroker
broker = CeleryAmqpBroker.from_url(sys.argv[1])
got = []
while len(got) < int(sys.argv[3]):
    got += broker.fetch(sys.argv[2], 10, 30)
print(len(got), flush=True)
sys.stdin.read()  # hold them, unacked, until killed
"""


def test_killed_consumer_loses_nothing(broker: CeleryAmqpBroker, amqp_url: str,
                                       queue: str) -> None:
    messages = [task_message("tasks.noop", [], {}) for _ in range(5)]
    broker.publish_messages(queue, messages)
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
    assert sorted(ids(back)) == sorted(m.headers["id"] for m in messages)
    broker.ack(back)


def test_lost_connection_redelivers_and_reconnects(broker: CeleryAmqpBroker,
                                                   queue: str) -> None:
    broker.publish_messages(queue, [task_message("tasks.noop", [], {}) for _ in range(3)])
    held = fetch_n(broker, queue, 3)
    sock = broker.session.conn.connection.transport.sock  # the TCP connection breaks under us
    sock.shutdown(socket.SHUT_RDWR)
    assert broker.fetch(queue, 3, 1.0) == []  # logged, reset
    broker.ack(held)  # their channel is gone: skipped, not an error
    back = fetch_n(broker, queue, 3)
    assert sorted(ids(back)) == sorted(ids(held))
    broker.ack(back)
    broker.maintain()
    assert broker.fetch(queue, 3, 0.2) == []


# ------------------------------------------------------------------ connection


def test_bad_password_fails_clearly(amqp_url: str) -> None:
    good = Connection(amqp_url)
    bad = Connection(hostname=good.hostname, port=good.port, userid=good.userid,
                     password="wrong-secret", virtual_host=good.virtual_host)
    with pytest.raises(amqp.exceptions.AccessRefused) as caught:
        CeleryAmqpBroker.from_url(bad.as_uri(include_password=True))
    assert "wrong-secret" not in str(caught.value)


def test_repr_hides_the_password(broker: CeleryAmqpBroker, amqp_url: str) -> None:
    password = Connection(amqp_url).password
    assert "***" in repr(broker) and f":{password}@" not in repr(broker)
