"""Sources of ``mbridge migrate``: where messages are taken from.

machinery's Redis layout (the queue LIST and the shared ``delayed_tasks`` ZSET, members of
other queues left alone), kombu's Redis layout (the priority lists and our delayed set of the
queue), and Celery's or machinery's queue on RabbitMQ (consumed with acks) or on SQS (received,
deleted after the batch is published); a gocraft/work job's list and scheduled members.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from multiprocessing.context import BaseContext
from typing import Any, cast

import redis.cluster

from bridge.brokers.base import Delivery
from bridge.brokers.dead_letters import make_envelope
from bridge.brokers.redis_keys import QueueKeys, routing_key_of
from bridge.config import ConfigError
from bridge.endpoints import DEFAULT_QUEUES, Endpoint
from bridge.gocraft.job import GocraftJob, now_epoch
from bridge.migrate.bookkeeping import DELAYED, Held, SourceStore
from bridge.migrate.translate import Translated, Translator, due_from_seconds
from bridge.redisconn import RedisClient

ASIDE_SUFFIX = ".bridge.migrate.aside"
"""AMQP: the queue holding set-aside messages of queue Q is ``Q`` + this."""


class Allowance:
    """How many messages of a source's lists a run may still take: what waited when it
    began, never what arrives meanwhile. With ``context``, one count in shared memory for
    the run's processes, each taking a batch's worth at a time: a process that started late
    takes less, and none idles while another still has messages to take."""

    def __init__(self, count: int, context: BaseContext | None = None) -> None:
        self._left = count
        self._shared: Any = None if context is None else context.Value("q", count)

    def take(self, most: int) -> int:
        """Up to ``most`` of what is left (0 when nothing is)."""
        if self._shared is None:
            taken = min(most, self._left)
            self._left -= taken
            return taken
        with self._shared.get_lock():
            taken = min(most, self._shared.value)
            self._shared.value -= taken
        return int(taken)


class Source(ABC):
    """Where messages come from."""

    queue: str
    store: SourceStore | None = None
    """Redis sources: the bookkeeping of claimed batches (None: no crash recovery of ours)."""

    @abstractmethod
    def translate(self, held: Held, translator: Translator) -> Translated: ...

    @abstractmethod
    def claim(self, batch: int, delayed: bool, waiting: Allowance | None = None
              ) -> Iterator[tuple[str, list[Held]]]:
        """Take batches out of the source (into hold keys), delayed ones first; of the
        lists, what ``waiting`` allows (Redis; None: what waits now)."""

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

    def claim(self, batch: int, delayed: bool, waiting: Allowance | None = None
              ) -> Iterator[tuple[str, list[Held]]]:
        return claim_batches(cast(SourceStore, self.store), batch, delayed,
                             "" if self.celery else self.queue, self.default_queue,
                             waiting if waiting is not None
                             else Allowance(self.pending_counts(False)["queue"]))

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


def claim_batches(store: SourceStore, batch: int, delayed: bool, queue: str,
                  default_queue: str, waiting: Allowance, *, by_name: bool = False
                  ) -> Iterator[tuple[str, list[Held]]]:
    """Batches taken from a Redis source: its delayed members of ``queue`` first (every
    member for ''; ``by_name``: gocraft jobs so named), then what ``waiting`` allows of its
    lists."""
    if delayed:
        start = seen = 0
        limit = int(store.client.zcard(store.delayed_key))
        while seen < limit:
            batch_id = store.new_batch()
            looked, taken = store.claim_delayed(batch_id, start, batch, queue, default_queue,
                                                by_name=by_name)
            seen += looked
            start += looked - len(taken)
            if taken:
                yield batch_id, taken
            if looked < batch:
                break
    while count := waiting.take(batch):
        batch_id = store.new_batch()
        taken = store.claim_lists(batch_id, count)
        if not taken:
            break
        yield batch_id, taken


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

    def claim(self, batch: int, delayed: bool, waiting: Allowance | None = None
              ) -> Iterator[tuple[str, list[Held]]]:
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


class SqsSource(AmqpSource):
    """Celery's or machinery's queue on SQS: received (kept invisible by the broker's
    heartbeat) and deleted once the batch is published, so a killed run's messages come back
    after their visibility timeout (at least once). Set-aside messages stay held, invisible,
    until the end of the run, then are made visible again."""

    def __init__(self, endpoint: Endpoint, broker: Any) -> None:
        super().__init__(endpoint, broker)
        self._aside: list[Delivery] = []

    def claim(self, batch: int, delayed: bool, waiting: Allowance | None = None
              ) -> Iterator[tuple[str, list[Held]]]:
        idle = 0.0
        while idle < 2:  # two empty receives with nothing visible left (or twenty in all)
            deliveries: list[Delivery] = []
            while len(deliveries) < batch:  # fill the batch while messages keep coming
                more = self.broker.fetch(self.queue, batch - len(deliveries), 1.0)
                if not more:
                    break
                deliveries += more
            if not deliveries:
                visible = int(self.broker.queue_depth(self.queue))
                idle += 1 if visible == 0 else 0.1
                continue
            idle = 0.0
            yield "", [Held(d.body, 0, delivery=d) for d in deliveries]

    def scan(self, batch: int, delayed: bool) -> Iterator[list[Held]]:
        raise NotImplementedError("SQS queues cannot be read without receiving them: "
                                  "--copy and --dry-run need a Redis source")

    def finish(self, batch: str, published: Sequence[Held], aside: Sequence[Held],
               parked: Sequence[tuple[Held, str]]) -> None:
        self._aside += [cast(Delivery, h.delivery) for h in aside]
        for held, reason in parked:
            self.broker.dead_letter(held.delivery, reason)
        done = [cast(Delivery, h.delivery) for h in published]
        if done:
            self.broker.ack(done)

    def restore_aside(self) -> int:
        aside, self._aside = self._aside, []
        for delivery in aside:
            self.broker.requeue(delivery)
        return len(aside)


class GocraftSource(Source):
    """A gocraft/work job's list ``<ns>:jobs:<name>`` (consumed from the right, as Go's
    workers do) and its members of ``<ns>:scheduled``; untranslatable jobs are parked in
    gocraft's dead set with the reason as their error (workwebui shows them and can retry
    them), bytes that are no job in ``<ns>:bridge:unreadable``. Retry and dead sets stay:
    they are gocraft's failure history (retry them first to migrate them)."""

    def __init__(self, endpoint: Endpoint, side: Any, run: str) -> None:
        if not endpoint.queue:
            raise ConfigError(f"{endpoint}: a gocraft/work source names its job: add "
                              "?queue=<job name>", key="endpoint")
        self.side = side
        self.queue = endpoint.queue
        self.client: RedisClient = side.client
        self.keys = side.keys
        self.store = SourceStore(self.client, run, [self.keys.jobs(self.queue)], "R",
                                 self.keys.scheduled)

    def translate(self, held: Held, translator: Translator) -> Translated:
        due = due_from_seconds(held.score) if held.origin == DELAYED else None
        return translator.from_gocraft(held.raw, due)

    def pending_counts(self, delayed: bool) -> dict[str, int]:
        counts = {"queue": int(self.client.llen(self.keys.jobs(self.queue)))}
        if delayed:
            counts["scheduled (every job)"] = int(self.client.zcard(self.keys.scheduled))
        return counts

    def claim(self, batch: int, delayed: bool, waiting: Allowance | None = None
              ) -> Iterator[tuple[str, list[Held]]]:
        return claim_batches(cast(SourceStore, self.store), batch, delayed, self.queue, "",
                             waiting if waiting is not None
                             else Allowance(self.pending_counts(False)["queue"]),
                             by_name=True)

    def scan(self, batch: int, delayed: bool) -> Iterator[list[Held]]:
        if delayed:
            start = 0
            while True:
                members = cast("list[tuple[bytes, float]]", self.client.zrange(
                    self.keys.scheduled, start, start + batch - 1, withscores=True))
                start += len(members)
                mine = [Held(raw, DELAYED, score) for raw, score in members
                        if _job_name(raw) == self.queue]
                if mine:
                    yield mine
                if len(members) < batch:
                    break
        start = 0
        key = self.keys.jobs(self.queue)
        while True:  # consumed from the tail: read backwards
            items = cast("list[bytes]", self.client.lrange(key, -(start + batch),
                                                           -(start + 1)))[::-1]
            start += len(items)
            if items:
                yield [Held(raw, 0) for raw in items]
            if len(items) < batch:
                break

    def finish(self, batch: str, published: Sequence[Held], aside: Sequence[Held],
               parked: Sequence[tuple[Held, str]]) -> None:
        now = now_epoch()
        dead: list[tuple[str, bytes]] = []
        dead_set: list[tuple[str, bytes, float]] = []
        for held, reason in parked:
            try:
                job = GocraftJob.decode(held.raw)
            except ValueError:
                dead.append((self.keys.prefix + "bridge:unreadable", held.raw))
            else:
                dead_set.append((self.keys.dead, job.failed(reason, now).encode(), now))
        cast(SourceStore, self.store).finish(batch, aside, dead, dead_set)

    def close(self) -> None:
        self.side.close()


def _job_name(raw: bytes) -> str | None:
    try:
        return GocraftJob.decode(raw).name
    except ValueError:
        return None


def open_source(endpoint: Endpoint, run: str) -> Source:
    """The source for ``endpoint``."""
    broker = endpoint.open_broker()
    if endpoint.protocol == "gocraft":
        return GocraftSource(endpoint, broker, run)
    if endpoint.is_sqs:
        return SqsSource(endpoint, broker)
    if endpoint.is_amqp:
        return AmqpSource(endpoint, broker)
    return RedisSource(endpoint, broker, run)


__all__ = ["ASIDE_SUFFIX", "Allowance", "AmqpSource", "GocraftSource", "RedisSource", "Source",
           "SqsSource",
           "open_source"]
