"""The relay takes its next batch while it relays the one in hand (bridge.relay.prefetch), on
a real redis-server, both ways: every message is relayed once and in order, nothing stays
held once it stops, and a stop with a batch taken ahead gives that batch back to the front
of its queue."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_keys import QueueKeys
from bridge.endpoints import parse_endpoint
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.machinery import Arg, Signature
from bridge.relay import Relay, RelayOptions, open_relay

COUNT = 100
BATCH = 7


def celery_calls(url: str, queue: str) -> None:
    broker = CeleryRedisBroker.from_url(url)
    broker.publish_messages(queue, [encode_task(new_task("add", [i, 1]))
                                    for i in range(COUNT)])
    broker.close()


def machinery_calls(url: str, queue: str) -> None:
    broker = RedisBroker(url)
    broker.publish([Signature(name="add", routing_key=queue,
                              args=[Arg("", "int64", i), Arg("", "int64", 1)])
                    for i in range(COUNT)])
    broker.close()


def relay_between(url: str, source: str, target: str, window: bool = False
                  ) -> tuple[Relay, list[bool]]:
    """A relay of batches of ``BATCH`` (``window``: by the window take), and the outcomes
    of its takes ahead."""
    src, dst = source.split(":"), target.split(":")
    relay = open_relay(parse_endpoint(f"{src[0]}+{url}?queue={src[1]}"),
                       parse_endpoint(f"{dst[0]}+{url}?queue={dst[1]}"),
                       RelayOptions(batch=BATCH, fetch_timeout=0.2, window_take=window))
    started: list[bool] = []
    start = relay._prefetch.start

    def counted(acks: Any) -> bool:
        started.append(start(acks))
        return started[-1]

    relay._prefetch.start = counted  # type: ignore[method-assign]
    return relay, started


def run_until(relay: Relay, done: Callable[[], bool]) -> None:
    thread = threading.Thread(target=relay.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stop()
    thread.join(30)
    assert not thread.is_alive()


def machinery_values(client: redis.Redis, queue: str) -> list[int]:
    return [json.loads(body)["Args"][0]["Value"] for body in client.lrange(queue, 0, -1)]


def celery_values(client: redis.Redis, queue: str) -> list[int]:
    """The first argument of each envelope in consumption order (kombu pops the right)."""
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
            for raw in reversed(client.lrange(queue, 0, -1))]


@pytest.mark.parametrize("window", [False, True])
def test_celery_to_machinery_takes_ahead_and_relays_each_once_in_order(
        private_redis_url: str, window: bool) -> None:
    client = redis.Redis.from_url(private_redis_url)
    celery_calls(private_redis_url, "cq")
    relay, started = relay_between(private_redis_url, "celery:cq", "machinery:mq", window)
    run_until(relay, lambda: client.llen("mq") >= COUNT)
    assert machinery_values(client, "mq") == list(range(COUNT))
    assert started.count(True) >= COUNT // BATCH - 1
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    assert client.llen("cq") == 0


def test_machinery_to_celery_takes_ahead_and_relays_each_once_in_order(
        private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    machinery_calls(private_redis_url, "mq")
    relay, started = relay_between(private_redis_url, "machinery:mq", "celery:cq")
    worker_id = relay.side.consumer.worker_id  # type: ignore[attr-defined]
    run_until(relay, lambda: client.llen("cq") >= COUNT)
    assert celery_values(client, "cq") == list(range(COUNT))
    assert started.count(True) >= COUNT // BATCH - 1
    assert held_by(client, worker_id) == 0
    assert client.llen("mq") == 0


def held_by(client: redis.Redis, worker_id: str) -> int:
    """Messages of ``mq`` a machinery consumer holds: processing list and windows."""
    keys = QueueKeys.of("mq")
    return sum(client.llen(key) for key in (keys.processing(worker_id),
                                            *keys.windows(worker_id)))


def stop_after_first_batch(relay: Relay) -> None:
    prepare = relay.side.prepare

    def prepare_then_stop(deliveries: Any) -> Any:
        assert relay._prefetch.in_flight  # the next batch is being taken
        relay.stop()
        return prepare(deliveries)

    relay.side.prepare = prepare_then_stop  # type: ignore[method-assign]


@pytest.mark.parametrize("window", [False, True])
def test_a_stop_gives_the_batch_taken_ahead_back_to_the_front(private_redis_url: str,
                                                              window: bool) -> None:
    client = redis.Redis.from_url(private_redis_url)
    celery_calls(private_redis_url, "cq")
    relay, started = relay_between(private_redis_url, "celery:cq", "machinery:mq", window)
    stop_after_first_batch(relay)
    relay.run()
    assert started == [True]
    assert machinery_values(client, "mq") == list(range(BATCH))
    assert celery_values(client, "cq") == list(range(BATCH, COUNT))
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_a_stop_gives_back_the_machinery_batch_taken_ahead(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    machinery_calls(private_redis_url, "mq")
    relay, started = relay_between(private_redis_url, "machinery:mq", "celery:cq")
    worker_id = relay.side.consumer.worker_id  # type: ignore[attr-defined]
    stop_after_first_batch(relay)
    relay.run()
    assert started == [True]
    assert celery_values(client, "cq") == list(range(BATCH))
    assert machinery_values(client, "mq") == list(range(BATCH, COUNT))
    assert held_by(client, worker_id) == 0


def fail_one_carry(relay: Relay) -> list[Exception]:
    """The relay's next results read fails (with a take ahead in flight) and its turn with
    it; the failure left to raise (empty once raised)."""
    carry = relay.carry
    failures: list[Exception] = [ConnectionError("Redis went away for a moment")]

    def carry_once_failing(limit: int = 0) -> int:
        if failures:
            assert relay._prefetch.in_flight
            raise failures.pop()
        return carry(limit)

    relay.carry = carry_once_failing  # type: ignore[method-assign]
    return failures


@pytest.mark.parametrize("window", [False, True])
def test_a_failed_turn_with_a_batch_taken_ahead_relays_each_once(
        private_redis_url: str, window: bool) -> None:
    """After a failed turn the relay adopts what a lost take left held; the batch taken ahead
    (read once Redis answers) is its own, not one to adopt again."""
    client = redis.Redis.from_url(private_redis_url)
    celery_calls(private_redis_url, "cq")
    relay, started = relay_between(private_redis_url, "celery:cq", "machinery:mq", window)
    failures = fail_one_carry(relay)
    run_until(relay, lambda: client.llen("mq") >= COUNT)
    assert not failures and started.count(True) >= 2
    assert machinery_values(client, "mq") == list(range(COUNT))
    assert client.hlen("unacked") == 0 and client.llen("cq") == 0


def test_a_failed_turn_relays_each_machinery_message_once(private_redis_url: str) -> None:
    """The way back, whose batches are windows: a turn failing with one taken ahead (read
    once Redis answers), the windows acked whole are deleted and nothing stays held."""
    client = redis.Redis.from_url(private_redis_url)
    machinery_calls(private_redis_url, "mq")
    relay, started = relay_between(private_redis_url, "machinery:mq", "celery:cq")
    worker_id = relay.side.consumer.worker_id  # type: ignore[attr-defined]
    failures = fail_one_carry(relay)
    run_until(relay, lambda: client.llen("cq") >= COUNT)
    assert not failures and started.count(True) >= 2
    assert celery_values(client, "cq") == list(range(COUNT))
    assert client.llen("mq") == 0 and held_by(client, worker_id) == 0
