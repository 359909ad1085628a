"""Sources and sinks of ``mbridge migrate``: where messages are taken from and published to.

Sources: machinery's Redis layout (the queue LIST and the shared ``delayed_tasks`` ZSET,
members of other queues left alone), kombu's Redis layout (the priority lists and our delayed
set of the queue), and Celery on RabbitMQ (consumed with acks). Sinks write each system's
layout; the Redis sinks publish a batch and record it as done in one MULTI.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis.cluster

from bridge.brokers.base import Delivery
from bridge.brokers.redis_layout import QueueKeys, make_envelope, routing_key_of
from bridge.config import ConfigError
from bridge.endpoints import DEFAULT_QUEUES, Endpoint
from bridge.migrate_store import DELAYED, DoneSet, Held, SourceStore
from bridge.migrate_translate import Translated, Translator, due_from_seconds
from bridge.protocol.gotime import unix_nano
from bridge.protocol.kombu_envelope import to_envelope
from bridge.redisconn import RedisClient

ASIDE_SUFFIX = ".bridge.migrate.aside"
"""AMQP: the queue holding set-aside messages of queue Q is ``Q`` + this."""


class Source(ABC):
    """Where messages come from."""

    queue: str
    store: SourceStore | None = None
    """Redis sources: the bookkeeping of claimed batches (None: no crash recovery of ours)."""

    @abstractmethod
    def translate(self, held: Held, translator: Translator) -> Translated: ...

    @abstractmethod
    def claim(self, batch: int, delayed: bool) -> Iterator[tuple[str, list[Held]]]:
        """Take batches out of the source (into hold keys), delayed ones first."""

    @abstractmethod
    def scan(self, batch: int, delayed: bool) -> Iterator[list[Held]]:
        """Read batches without taking them (dry run, copy)."""

    @abstractmethod
    def finish(self, batch: str, published: Sequence[Held], aside: Sequence[Held],
               parked: Sequence[tuple[Held, str]]) -> None:
        """The batch is published: forget it, set ``aside`` apart, park ``parked``."""

    def resume(self) -> list[tuple[str, list[Held]]]:
        """Batches a killed run took and did not finish."""
        return [] if self.store is None else self.store.in_flight()

    def restore_aside(self) -> int:
        """Give set-aside messages back to the source queue, in order."""
        return 0 if self.store is None else self.store.restore_aside()

    def restore_unacked(self, older_than: float | None) -> int:
        """Return orphaned unacked messages to the queue first (0 when not applicable)."""
        return 0

    def pending_counts(self, delayed: bool) -> dict[str, int]:
        """What waits: ``{"queue": n, "delayed": m, ...}``."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional
        pass


class RedisSource(Source):
    """A Redis source: machinery's layout or kombu's (priority lists, consumed from the tail)."""

    def __init__(self, endpoint: Endpoint, broker: Any, run: str) -> None:
        self.endpoint = endpoint
        self.broker = broker
        self.queue = endpoint.queue
        self.celery = endpoint.protocol == "celery"
        if self.celery:
            self.client: RedisClient = broker.client
            lists = list(broker.keys.lists(self.queue))
            delayed_key = broker.keys.delayed(self.queue)
            self.dead = broker.keys.dead(self.queue)
        else:
            self.client = broker.layout.client
            lists = [self.queue]
            delayed_key = broker.delayed_tasks_key
            self.dead = QueueKeys.of(self.queue).dead
        if isinstance(self.client, redis.cluster.RedisCluster):
            raise ConfigError(f"{endpoint}: migrating out of a Redis Cluster is not supported "
                              "(the batch moves need one slot)", key="endpoint")
        self.default_queue = endpoint.options.get("default_queue", DEFAULT_QUEUES["machinery"])
        self.store = SourceStore(self.client, run, lists, "R" if self.celery else "L",
                                 delayed_key)

    # ------------------------------------------------------------ reading

    def translate(self, held: Held, translator: Translator) -> Translated:
        if not self.celery:
            return translator.from_machinery(held.raw)
        due = due_from_seconds(held.score) if held.origin == DELAYED else None
        return translator.from_envelope(held.raw, due)

    def _mine(self, member: bytes) -> bool:
        return self.celery or routing_key_of(member, self.default_queue) == self.queue

    def pending_counts(self, delayed: bool) -> dict[str, int]:
        store = cast(SourceStore, self.store)
        pipe = self.client.pipeline(transaction=False)
        for key in store.lists:
            pipe.llen(key)
        counts = {"queue": sum(cast("list[int]", pipe.execute()))}
        if delayed:
            if self.celery:
                counts["delayed"] = int(self.client.zcard(store.delayed_key))
            else:
                counts["delayed (every queue)"] = int(self.client.zcard(store.delayed_key))
        if self.celery:
            counts["unacked (every queue)"] = int(self.client.zcard(
                self.broker.keys.key(self.broker.keys.unacked_index)))
        return counts

    # ------------------------------------------------------------ taking

    def claim(self, batch: int, delayed: bool) -> Iterator[tuple[str, list[Held]]]:
        store = cast(SourceStore, self.store)
        if delayed:
            start = 0
            limit = int(self.client.zcard(store.delayed_key))
            seen = 0
            while seen < limit:
                batch_id = store.new_batch()
                looked, taken = store.claim_delayed(batch_id, start, batch,
                                                    "" if self.celery else self.queue,
                                                    self.default_queue)
                seen += looked
                start += looked - len(taken)
                if taken:
                    yield batch_id, taken
                if looked < batch:
                    break
        limit = self.pending_counts(False)["queue"]
        taken_total = 0
        while taken_total < limit:
            batch_id = store.new_batch()
            taken = store.claim_lists(batch_id, min(batch, limit - taken_total))
            if not taken:
                break
            taken_total += len(taken)
            yield batch_id, taken

    def scan(self, batch: int, delayed: bool) -> Iterator[list[Held]]:
        store = cast(SourceStore, self.store)
        if delayed:
            start = 0
            while True:
                members = cast("list[tuple[bytes, float]]", self.client.zrange(
                    store.delayed_key, start, start + batch - 1, withscores=True))
                start += len(members)
                mine = [Held(raw, DELAYED, score) for raw, score in members if self._mine(raw)]
                if mine:
                    yield mine
                if len(members) < batch:
                    break
        for origin, key in enumerate(store.lists):
            start = 0
            while True:
                items: list[bytes]
                if self.celery:  # consumed from the tail: read backwards
                    items = cast("list[bytes]", self.client.lrange(
                        key, -(start + batch), -(start + 1)))[::-1]
                else:
                    items = cast("list[bytes]", self.client.lrange(key, start, start + batch - 1))
                start += len(items)
                if items:
                    yield [Held(raw, origin) for raw in items]
                if len(items) < batch:
                    break

    def finish(self, batch: str, published: Sequence[Held], aside: Sequence[Held],
               parked: Sequence[tuple[Held, str]]) -> None:
        dead = [(self.dead, make_envelope(self.queue, reason, held.raw))
                for held, reason in parked]
        cast(SourceStore, self.store).finish(batch, aside, dead)

    def restore_unacked(self, older_than: float | None) -> int:
        """Celery: kombu's restore_visible (entries older than the visibility timeout, every
        queue, as any Celery worker does at start); machinery: dead bridge workers' holdings."""
        if not self.celery:
            return int(self.broker.recover(self.queue))
        if older_than is not None:
            self.broker.visibility_timeout = older_than
        return int(self.broker.restore_visible())

    def close(self) -> None:
        self.broker.close()


class AmqpSource(Source):
    """Celery's or machinery's queue on RabbitMQ: fetched with acks; set-aside messages wait
    in ``Q.bridge.migrate.aside`` and go back to ``Q`` at the end. A killed run's unacked
    messages are redelivered by RabbitMQ. (machinery's own delay queues are not read:
    RabbitMQ gives them back to ``Q`` when due.)"""

    def __init__(self, endpoint: Endpoint, broker: Any) -> None:
        self.broker = broker
        self.queue = endpoint.queue
        self.aside_queue = self.queue + ASIDE_SUFFIX
        self.celery = endpoint.protocol == "celery"

    def translate(self, held: Held, translator: Translator) -> Translated:
        if not self.celery:
            return translator.from_machinery(held.raw)
        message = cast(Delivery, held.delivery).message
        if message is None:
            return Translated("?", "", reason="not a Celery message", wanted=not translator.tasks)
        return translator.from_celery(message)

    def _put_back(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        if self.celery:
            self.broker.publish_messages(queue, [d.message for d in deliveries])
        else:
            self.broker.publish_raw(queue, [d.body for d in deliveries])

    def pending_counts(self, delayed: bool) -> dict[str, int]:
        return {"queue": int(self.broker.queue_depth(self.queue))}

    def claim(self, batch: int, delayed: bool) -> Iterator[tuple[str, list[Held]]]:
        limit = int(self.broker.queue_depth(self.queue))
        taken = 0
        while taken < limit:
            deliveries = self.broker.fetch(self.queue, min(batch, limit - taken), 1.0)
            if not deliveries:
                break
            taken += len(deliveries)
            yield "", [Held(d.body, 0, delivery=d) for d in deliveries]

    def scan(self, batch: int, delayed: bool) -> Iterator[list[Held]]:
        raise NotImplementedError("RabbitMQ queues cannot be read without consuming them: "
                                  "--copy and --dry-run need a Redis source")

    def finish(self, batch: str, published: Sequence[Held], aside: Sequence[Held],
               parked: Sequence[tuple[Held, str]]) -> None:
        if aside:
            self._put_back(self.aside_queue, [cast(Delivery, h.delivery) for h in aside])
        for held, reason in parked:
            self.broker.dead_letter(held.delivery, reason)
        done = [cast(Delivery, h.delivery) for h in [*published, *aside]]
        if done:
            self.broker.ack(done)

    def restore_aside(self) -> int:
        total = 0
        limit = int(self.broker.queue_depth(self.aside_queue))
        while total < limit:
            deliveries = self.broker.fetch(self.aside_queue, min(500, limit - total), 1.0)
            if not deliveries:
                break
            self._put_back(self.queue, deliveries)
            self.broker.ack(deliveries)
            total += len(deliveries)
        return total

    def close(self) -> None:
        self.broker.close()


# ------------------------------------------------------------------------------ sinks


class Sink(ABC):
    """Where messages go."""

    done: DoneSet | None = None
    """Redis sinks: the record of published batches (written with the messages)."""

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
            sig = item.signature
            eta = unix_nano(sig.eta) if sig is not None and sig.eta is not None else 0
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


def open_source(endpoint: Endpoint, run: str) -> Source:
    """The source for ``endpoint``."""
    broker = endpoint.open_broker()
    if endpoint.is_amqp:
        return AmqpSource(endpoint, broker)
    return RedisSource(endpoint, broker, run)


def open_sink(endpoint: Endpoint, run: str) -> Sink:
    """The sink for ``endpoint``."""
    broker = endpoint.open_broker()
    if endpoint.protocol == "machinery":
        if endpoint.is_amqp:
            return MachineryAmqpSink(endpoint, broker)
        return MachinerySink(endpoint, broker, run)
    if endpoint.is_amqp:
        return AmqpSink(endpoint, broker)
    return CelerySink(endpoint, broker, run)


__all__ = ["AmqpSink", "AmqpSource", "CelerySink", "MachineryAmqpSink", "MachinerySink",
           "RedisSource", "Sink", "Source", "open_sink", "open_source"]
