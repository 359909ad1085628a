"""A task the worker that took it does not know goes back promptly, so another worker on
the same queue that knows it runs it within seconds (machinery users expect that); the
back-off starts only after a hand-off window and grows while nobody takes it, jittered, up
to --max-unregistered-backoff."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.result import AsyncResult
from bridge.worker import unregistered_delay
from tests.worker_thread import worker_thread


def app_for(url: str, queue: str) -> Bridge:
    config = Config(broker=url, result_backend=url, default_queue=queue)
    return Bridge(config, broker=RedisBroker(url, config), backend=RedisBackend(url, config))


def test_the_delay_after_the_window_grows_and_is_capped() -> None:
    assert [unregistered_delay(n, 60.0, lambda: 0.99) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert [unregistered_delay(n, 60.0, lambda: 0.0) for n in (1, 2)] == [0.125, 0.25]
    assert unregistered_delay(50, 60.0, lambda: 0.99) == 60.0
    assert unregistered_delay(50, 5.0, lambda: 0.5) == 3.75
    assert {unregistered_delay(2, 60.0, lambda r=r: r) for r in (0.0, 0.4, 0.7)} == {
        0.25, 0.375, 0.5}


def test_two_workers_each_knowing_half_of_the_tasks_share_one_queue(redis_url: str) -> None:
    queue = f"handoff_{uuid.uuid4().hex[:8]}"
    adder, multiplier = app_for(redis_url, queue), app_for(redis_url, queue)
    adder.register("add", lambda a, b: a + b)
    multiplier.register("mul", lambda a, b: a * b)
    producer = app_for(redis_url, queue)
    producer.register("add", lambda a, b: a + b)  # for the Go types of the args only
    producer.register("mul", lambda a, b: a * b)
    with worker_thread(adder, concurrency=2), worker_thread(multiplier, concurrency=2):
        sums = [producer.send_task("add", i, 1) for i in range(40)]
        products = [producer.send_task("mul", i, 2) for i in range(40)]
        assert [r.get(timeout=30) for r in sums] == [i + 1 for i in range(40)]
        assert [r.get(timeout=30) for r in products] == [i * 2 for i in range(40)]
    producer.close()


def test_a_message_taken_with_a_lost_reply_is_run_after_the_outage(redis_url: str) -> None:
    """A take whose reply an outage lost leaves the message in this worker's processing
    list, unknown to it; after a failed turn the worker finds and runs it (it would
    otherwise wait there until the worker dies)."""
    import redis as redis_py

    queue = f"lost_{uuid.uuid4().hex[:8]}"
    app = app_for(redis_url, queue)
    app.register("add", lambda a, b: a + b)
    sig = app.signature("add", 20, 22)
    with worker_thread(app, concurrency=2) as worker:
        broker = app.broker
        assert isinstance(broker, RedisBroker)
        app.backend.set_state_pending(sig)  # sent, but never in the queue: instead
        client = redis_py.Redis.from_url(redis_url)
        processing = broker.layout.processing_key(queue)
        client.rpush(processing, sig.to_json())  # as if a take ran but its reply was lost
        result = AsyncResult(sig.uuid, app.backend)
        worker._reconcile = True  # what a failed turn sets
        assert result.get(timeout=20) == 42
        # the ack follows the stored result (it rides on the next take)
        deadline = time.monotonic() + 10
        while client.llen(processing) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.llen(processing) == 0
        client.close()


def test_a_lone_unknown_task_is_not_spun_on_during_the_window(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Nobody here knows it and nothing else comes: the worker hands it back at once but
    waits a little between takes (tens a second, where it used to spin at thousands)."""
    queue = f"lone_{uuid.uuid4().hex[:8]}"
    app = app_for(redis_url, queue)
    app.register("known", lambda: 1)
    caplog.set_level(logging.DEBUG, logger="bridge.worker")
    with worker_thread(app, concurrency=2, handoff_window=60.0):
        producer = app_for(redis_url, queue)
        producer.send(producer.signature("nobody_knows_this", arg_types=[]))
        time.sleep(1.5)
        assert producer.send_task("known").get(timeout=10) == 1  # still serves its own
        producer.close()
    returns = [r for r in caplog.records if "nobody_knows_this" in r.getMessage()]
    assert 1 <= len(returns) < 300, len(returns)  # spinning, it was about 10,000 a second
