"""Hostile input on RabbitMQ: a Celery task with a malformed errback (it killed the AMQP
worker) is failed once and parked in ``<queue>.bridge.dead``; good tasks run once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bridge.brokers.celery_amqp import CeleryAmqpBroker
from bridge.protocol.celery import encode_task, new_task
from tests.hostile.harness import Served, no_batch_failures, served, wait_for


@pytest.fixture
def worker(redis_url: str, amqp_url: str) -> Iterator[tuple[Served, CeleryAmqpBroker]]:
    with served(redis_url, celery_broker=amqp_url, machinery=False) as state:
        broker = CeleryAmqpBroker.from_url(amqp_url)
        try:
            yield state, broker
        finally:
            broker.close()


@pytest.mark.parametrize("errback", [
    {"args": [], "kwargs": {}, "options": {}},
    {"task": "h.record", "args": [], "kwargs": {}, "options": {"priority": "high"}},
])
def test_malformed_errback_on_rabbitmq(worker: tuple[Served, CeleryAmqpBroker],
                                       errback: dict[str, object],
                                       caplog: pytest.LogCaptureFixture) -> None:
    state, broker = worker
    queue = state.celery_queue
    keys = [f"a-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    bad_id = str(uuid.uuid4())
    messages = [encode_task(new_task("h.record", [k])) for k in keys[:3]]
    messages.append(encode_task(new_task("h.fail", ["bad"], task_id=bad_id,
                                         errbacks=[errback])))
    messages += [encode_task(new_task("h.record", [k])) for k in keys[3:]]
    broker.publish_messages(queue, messages)
    wait_for(lambda: len(broker.dead_letters(queue)) == 1, 30, "the parked message")
    [entry] = broker.dead_letters(queue)
    assert "errback" in entry["reason"], entry["reason"]
    state.assert_exactly_once([*keys, "bad"])
    meta = state.celery_meta(bad_id)
    assert meta is not None and meta["status"] == "FAILURE", meta
    no_batch_failures(caplog)
