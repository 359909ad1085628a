"""CelerySqsBroker against moto's server mode, beside real Celery 5.6.2 / kombu 5.6.2 clients.

kombu's SQS transport (boto3 only: a client publishes synchronously, no pycurl) is pointed at
moto through the broker URL's host, as celery-wire.md §4.7 says; the queue name carries a dot
so kombu's ``.`` → ``-`` mangling is exercised on both sides.
"""

from __future__ import annotations

import base64
import gc
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, signature
from kombu import Connection

from bridge.app import Bridge
from bridge.brokers.celery_sqs import CelerySqsBroker, entity_name, unwrap_body
from bridge.brokers.sqs_layout import dead_queue_name
from bridge.config import Config
from bridge.handlers.celery import celery_handler_factory
from bridge.protocol.celery import encode_task, new_task
from tests.backend_servers import MotoServer
from tests.worker_thread import worker_thread

WAIT = 60.0


def kombu_url(moto: MotoServer) -> str:
    """Celery's broker_url for moto: the endpoint is the URL's host (http)."""
    host = moto.endpoint.split("://", 1)[1]
    return f"sqs://{moto.access_key}:{moto.secret_key}@{host}"


def transport(moto: MotoServer, **extra: Any) -> dict[str, Any]:
    return {"region": moto.region, "is_secure": False, "wait_time_seconds": 1,
            "visibility_timeout": 30, "polling_interval": 0.2, **extra}


def producer(moto: MotoServer, redis_url: str, queue: str) -> Celery:
    app = Celery(f"sqs-producer-{uuid.uuid4().hex[:6]}", broker=kombu_url(moto),
                 backend=redis_url)
    app.conf.update(task_default_queue=queue, broker_transport_options=transport(moto))
    return app


def close_producer(app: Celery) -> None:
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
    app.close()


def our_broker(moto: MotoServer, **options: Any) -> CelerySqsBroker:
    return CelerySqsBroker(kombu_url(moto), region=moto.region, wait_time_seconds=1, **options)


def test_kombu_names() -> None:
    assert entity_name("my.queue:x") == "my-queue_x"
    assert entity_name("a.b.fifo") == "a-b.fifo"
    assert entity_name("celery") == "celery"
    assert unwrap_body(base64.b64encode(b'{"a": 1}')) == b'{"a": 1}'
    assert unwrap_body(b"plain text") == b"plain text"


def test_kombu_producer_to_us_and_back(moto_server: MotoServer) -> None:
    queue = f"cq.{uuid.uuid4().hex[:8]}"
    sqs = moto_server.client("sqs")
    with Connection(kombu_url(moto_server), transport_options=transport(moto_server)) as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"hello": "world"}, headers={"task": "t", "id": "1"})
        consumer = our_broker(moto_server)
        try:
            got = consumer.fetch(queue, 1, WAIT)
            assert len(got) == 1 and got[0].message is not None
            message = got[0].message
            assert json.loads(message.body) == {"hello": "world"}
            assert message.headers == {"task": "t", "id": "1"}
            assert message.content_type == "application/json"
            url = consumer.sqs.urls(entity_name(queue))
        finally:
            consumer.close()  # gives the held message back at once
        # the SQS body is base64 of kombu's envelope, under the mangled name
        raw = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]
        envelope = json.loads(base64.b64decode(raw["Body"]))
        assert envelope["properties"]["delivery_info"]["routing_key"] == queue
        sqs.delete_message(QueueUrl=url, ReceiptHandle=raw["ReceiptHandle"])
        publisher = our_broker(moto_server)  # publishing starts no receive
        try:
            publisher.publish_messages(queue, [message])
            received = simple.get(timeout=WAIT)
            assert received.payload == {"hello": "world"}
            assert received.headers == {"task": "t", "id": "1"}
            received.ack()
            simple.close()
            assert publisher.queue_depth(queue) == 0
        finally:
            publisher.close()


def test_bad_input_is_parked_with_its_reason(moto_server: MotoServer) -> None:
    queue = f"bad.{uuid.uuid4().hex[:8]}"
    broker = our_broker(moto_server)
    try:
        good = encode_task(new_task("tasks.add", (1, 2)))
        broker.publish_messages(queue, [good])
        sqs = moto_server.client("sqs")
        url = broker.sqs.urls(entity_name(queue))
        sqs.send_message(QueueUrl=url, MessageBody="not a kombu message")
        sqs.send_message(QueueUrl=url, MessageBody=base64.b64encode(b'{"x": 1}').decode())
        got: list[Any] = []
        deadline = time.monotonic() + WAIT
        while len(got) < 1 and time.monotonic() < deadline:
            got += broker.fetch(queue, 10, 2.0)
        assert [d.message.headers["task"] for d in got] == ["tasks.add"]
        broker.ack(got)
        dead: list[dict[str, Any]] = []
        while len(dead) < 2 and time.monotonic() < deadline:
            dead = broker.dead_letters(queue)
        reasons = sorted(e["reason"] for e in dead)
        assert len(reasons) == 2 and all("not a kombu envelope" in r for r in reasons)
        assert {e["body"] for e in dead} == {"not a kombu message",
                                             base64.b64encode(b'{"x": 1}').decode()}
        assert dead_queue_name(entity_name(queue)) in str(sqs.list_queues(
            QueueNamePrefix="bad-")["QueueUrls"])
    finally:
        broker.close()


@pytest.fixture
def served(moto_server: MotoServer, redis_url: str) -> Iterator[tuple[Celery, str]]:
    queue = f"cq.{uuid.uuid4().hex[:8]}"
    bridge = Bridge(Config(broker=redis_url, result_backend=redis_url,
                           default_queue=f"mq_{uuid.uuid4().hex[:8]}"))

    @bridge.task("tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @bridge.task("tasks.fail")
    def fail(text: str) -> None:
        raise ValueError(text)

    handler = celery_handler_factory(kombu_url(moto_server), redis_url, queue, None,
                                     transport(moto_server))
    app = producer(moto_server, redis_url, queue)
    try:
        with worker_thread(bridge, 4, handlers=[handler], machinery=False, handoff_window=0.0):
            yield app, queue
    finally:
        close_producer(app)


def test_celery_client_on_sqs_gets_results(served: tuple[Celery, str]) -> None:
    app, _ = served
    assert app.send_task("tasks.add", (2, 3)).get(timeout=WAIT) == 5
    with pytest.raises(ValueError, match="bad <&> é"):
        app.send_task("tasks.fail", ("bad <&> é",)).get(timeout=WAIT)
    add = signature("tasks.add", app=app)
    assert chain(add.clone((1, 2)), add.clone((3,))).apply_async().get(timeout=WAIT) == 6
    sent = time.time()
    assert app.send_task("tasks.add", (1, 1), countdown=2).get(timeout=WAIT) == 2
    assert time.time() - sent >= 1.5
    results = [app.send_task("tasks.add", (i, i)) for i in range(30)]
    assert [r.get(timeout=WAIT) for r in results] == [2 * i for i in range(30)]


def test_unregistered_task_goes_back_not_parked(served: tuple[Celery, str],
                                                moto_server: MotoServer) -> None:
    app, queue = served
    app.send_task("tasks.nobody_serves_this", (1,))
    assert app.send_task("tasks.add", (1, 1)).get(timeout=WAIT) == 2  # served meanwhile
    sqs = moto_server.client("sqs")
    url = sqs.get_queue_url(QueueName=entity_name(queue))["QueueUrl"]
    time.sleep(3)  # several back-off rounds
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]

    def held() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attributes[n]) for n in names)

    counts = [held()]  # moto's approximate counts read 0 once while a receive ran: ask again
    deadline = time.monotonic() + 10
    while counts[-1] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        counts.append(held())
    assert counts[-1] == 1, counts  # still there, for another worker
    dead = dead_queue_name(entity_name(queue))
    assert dead not in str(sqs.list_queues(QueueNamePrefix=dead).get("QueueUrls", []))
