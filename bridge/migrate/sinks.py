"""Sinks of ``mbridge migrate``: where messages are published, in each system's layout.

The Redis sinks publish a batch and record it as done in one MULTI (every message once);
the RabbitMQ sinks publish with confirms, the SQS sinks with SendMessageBatch (at least
once: the broker's ``publish`` / ``publish_messages``). The gocraft/work sink enqueues as
Go's enqueuer does, in one MULTI with its done record too.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from bridge.endpoints import Endpoint
from bridge.migrate.bookkeeping import DoneSet
from bridge.migrate.translate import Translated
from bridge.protocol.gotime import unix_nano
from bridge.protocol.kombu_envelope import to_envelope
from bridge.redisconn import RedisClient


class Sink(ABC):
    """Where messages go."""

    done: DoneSet | None = None
    """Redis sinks: the record of published batches (written with the messages)."""
    needs_signatures = False
    """machinery sinks that publish Signature objects, not ``Translated.body`` and ``eta``."""

    @abstractmethod
    def publish(self, items: Sequence[Translated], batch: str) -> None:
        """Publish translated messages; with ``batch``, mark it done in the same MULTI."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


class MachinerySink(Sink):
    """machinery's Redis layout: RPUSH to the queue, ZADD future ETAs to the delayed ZSET."""

    def __init__(self, endpoint: Endpoint, broker: Any, run: str) -> None:
        self.broker = broker
        self.queue = endpoint.queue
        self.client: RedisClient = broker.layout.client
        self.cluster = bool(broker.layout.cluster)
        self.done = None if self.cluster else DoneSet(self.client, run)

    def publish(self, items: Sequence[Translated], batch: str) -> None:
        now = time.time_ns()
        now_list: list[bytes] = []
        delayed: dict[bytes, int] = {}
        for item in items:
            eta = unix_nano(item.eta) if item.eta is not None else 0
            if eta > now:
                delayed[item.body] = eta
            else:
                now_list.append(item.body)
        pipe = self.client.pipeline(transaction=self.done is not None)
        for start in range(0, len(now_list), 10_000):
            pipe.rpush(self.queue, *now_list[start:start + 10_000])
        if delayed:
            pipe.zadd(self.broker.delayed_tasks_key, delayed)
        if self.done is not None and batch:
            self.done.mark(pipe, batch)
        pipe.execute()

    def close(self) -> None:
        self.broker.close()


class CelerySink(Sink):
    """kombu's Redis layout: LPUSH envelopes to the priority list, the queue's binding kept."""

    def __init__(self, endpoint: Endpoint, broker: Any, run: str) -> None:
        self.broker = broker
        self.queue = endpoint.queue
        self.done = DoneSet(broker.client, run)

    def publish(self, items: Sequence[Translated], batch: str) -> None:
        by_list: dict[str, list[bytes]] = {}
        for item in items:
            if item.message is None:
                continue
            key = self.broker.keys.list_for(self.queue, item.message.priority)
            by_list.setdefault(key, []).append(to_envelope(item.message, routing_key=self.queue))
        pipe = self.broker.client.pipeline(transaction=True)
        self.broker.declare_queue(self.queue, pipe)
        for key, envelopes in by_list.items():
            for start in range(0, len(envelopes), 10_000):
                pipe.lpush(key, *envelopes[start:start + 10_000])
        if self.done is not None and batch:
            self.done.mark(pipe, batch)
        pipe.execute()

    def close(self) -> None:
        self.broker.close()


class MachineryAmqpSink(Sink):
    """machinery on RabbitMQ: published as Go's Publish does (future ETAs through machinery's
    delay queues), publisher-confirmed (no done record: at least once)."""

    needs_signatures = True

    def __init__(self, endpoint: Endpoint, broker: Any) -> None:
        self.broker = broker

    def publish(self, items: Sequence[Translated], batch: str) -> None:
        self.broker.publish([i.signature for i in items if i.signature is not None])

    def close(self) -> None:
        self.broker.close()


class AmqpSink(Sink):
    """Celery on RabbitMQ: publisher-confirmed batches (no done record: at least once)."""

    def __init__(self, endpoint: Endpoint, broker: Any) -> None:
        self.broker = broker
        self.queue = endpoint.queue

    def publish(self, items: Sequence[Translated], batch: str) -> None:
        self.broker.publish_messages(self.queue, [i.message for i in items if i.message])

    def close(self) -> None:
        self.broker.close()


class GocraftSink(Sink):
    """gocraft/work's layout: each job LPUSHed on the list of its name (as Go's Enqueue), one
    due later ZADDed to ``<ns>:scheduled`` at its run-at (as EnqueueIn), the names added to
    ``known_jobs``; with the batch's done record in the same MULTI."""

    def __init__(self, endpoint: Endpoint, side: Any, run: str) -> None:
        self.side = side
        self.keys = side.keys
        self.done = DoneSet(side.client, run)

    def publish(self, items: Sequence[Translated], batch: str) -> None:
        now = time.time()
        lists: dict[str, list[bytes]] = {}
        scheduled: dict[bytes, int] = {}
        for item in items:
            if item.job is None:
                continue
            eta = item.eta.timestamp() if item.eta is not None else 0.0
            if eta > now:
                scheduled[item.job.encode()] = math.ceil(eta)
            else:
                lists.setdefault(item.job.name, []).append(item.job.encode())
        names = {item.job.name for item in items if item.job is not None}
        pipe = self.side.client.pipeline(transaction=True)
        for name, bodies in lists.items():
            for start in range(0, len(bodies), 10_000):
                pipe.lpush(self.keys.jobs(name), *bodies[start:start + 10_000])
        if scheduled:
            pipe.zadd(self.keys.scheduled, scheduled)
        if names:
            pipe.sadd(self.keys.known_jobs, *names)
        if self.done is not None and batch:
            self.done.mark(pipe, batch)
        pipe.execute()

    def close(self) -> None:
        self.side.close()


def open_sink(endpoint: Endpoint, run: str) -> Sink:
    """The sink for ``endpoint``."""
    broker = endpoint.open_broker()
    if endpoint.protocol == "gocraft":
        return GocraftSink(endpoint, broker, run)
    if endpoint.protocol == "machinery":
        if endpoint.is_amqp or endpoint.is_sqs:
            return MachineryAmqpSink(endpoint, broker)
        return MachinerySink(endpoint, broker, run)
    if endpoint.is_amqp or endpoint.is_sqs:
        return AmqpSink(endpoint, broker)
    return CelerySink(endpoint, broker, run)


__all__ = ["AmqpSink", "CelerySink", "GocraftSink", "MachineryAmqpSink", "MachinerySink", "Sink",
           "open_sink"]
