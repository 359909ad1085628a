"""What a tick sends, per system, behind its once-per-tick lock.

machinery: a Signature with the entry's typed args, through :class:`~bridge.app.Bridge`
(PENDING state, then publish, as Go's ``SendTask``). Celery: a protocol-2 message as Celery
5's ``send_task`` writes it, its task id derived from (entry, tick). Connections are opened
once per URL and shared by the entries that name it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from bridge.app import Bridge
from bridge.beat.locks import CeleryTickLock, MachineryLock, read_last, record_last
from bridge.beat.model import Entry
from bridge.config import Config
from bridge.endpoints import Endpoint
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.machinery import Signature
from bridge.redisconn import connect

__all__ = ["CelerySender", "Connections", "MachinerySender", "Sender", "celery_task_id"]

log = logging.getLogger("bridge.beat")
TASK_ID_NAMESPACE = uuid.UUID("5f0c1b8e-6d2a-4c57-9a51-1b0e8b7d6a10")
"""uuid5 namespace of the Celery task ids ``mbridge beat`` derives from (entry, tick)."""


class Connections:
    """Redis clients, machinery apps and Celery brokers, one per URL."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._redis: dict[str, Any] = {}
        self._apps: dict[str, Bridge] = {}
        self._celery: dict[str, Any] = {}

    def redis(self, url: str) -> Any:
        if url not in self._redis:
            self._redis[url] = connect(url, self.config.redis)
        return self._redis[url]

    def app(self, broker: str) -> Bridge:
        if broker not in self._apps:
            config = self.config if broker == self.config.broker else \
                dataclasses.replace(self.config, broker=broker)
            self._apps[broker] = Bridge(config)
        return self._apps[broker]

    def celery_broker(self, url: str, queue: str) -> Any:
        if url not in self._celery:
            self._celery[url] = Endpoint("celery", url, queue or "celery").open_broker()
        return self._celery[url]

    def ping(self, url: str) -> None:
        """Reach the server at ``url`` once (a Redis, or a broker)."""
        if url.startswith(("redis://", "rediss://", "redis+socket://")):
            self.redis(url).ping()
        elif url in self._apps:
            self._apps[url].broker.ping()
        else:
            self.celery_broker(url, "").ping()

    def close(self) -> None:
        for app in self._apps.values():
            app.close()
        for broker in self._celery.values():
            broker.close()
        for client in self._redis.values():
            client.close()


def celery_task_id(entry: Entry, tick: float) -> str:
    """The Celery task id of ``entry``'s send at ``tick``: the same in every beat."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{entry.name}\0{tick:.3f}"))


class Sender(ABC):
    """One machinery or Celery entry's sends."""

    def __init__(self, entry: Entry, connections: Connections) -> None:
        self.entry = entry
        self.connections = connections
        self.lock_client = connections.redis(entry.lock)

    @abstractmethod
    def check(self) -> None:
        """Build one message without sending it: a bad arg is a start-up error."""

    @abstractmethod
    def fire(self, tick: float, now: float) -> bool:
        """Send the tick unless another beat (or a Go server) has; True when this did."""

    def last_sent(self) -> float | None:
        return read_last(self.lock_client, self.entry)

    def _sent(self, tick: float) -> None:
        record_last(self.lock_client, self.entry, tick)


class MachinerySender(Sender):
    """machinery entries: machinery's lock, then ``SendTask``."""

    def __init__(self, entry: Entry, connections: Connections) -> None:
        super().__init__(entry, connections)
        self.lock = MachineryLock(self.lock_client, entry)
        self.app = connections.app(entry.broker)

    def signature(self) -> Signature:
        entry = self.entry
        return self.app.signature(entry.task, *entry.args, queue=entry.queue,
                                  arg_types=list(entry.arg_types) if entry.arg_types else None,
                                  retry_count=entry.retry_count)

    def check(self) -> None:
        self.signature()

    def fire(self, tick: float, now: float) -> bool:
        next_run = self.entry.schedule.robfig_next(now)
        if not self.lock.acquire(next_run):
            log.debug("%s: tick %s already sent (lock %s held)", self.entry, _utc(tick),
                      self.lock.key)
            return False
        result = self.app.send(self.signature())
        self._sent(tick)
        log.info("%s: sent %s %s for tick %s", self.entry, self.entry.task, result.task_uuid,
                 _utc(tick))
        return True


class CelerySender(Sender):
    """Celery entries: our per-tick lock, then the message, as Celery beat's apply_async."""

    def __init__(self, entry: Entry, connections: Connections) -> None:
        super().__init__(entry, connections)
        self.lock = CeleryTickLock(self.lock_client, entry)
        self.queue = entry.queue or "celery"
        self.broker = connections.celery_broker(entry.broker, self.queue)

    def message(self, tick: float) -> CeleryMessage:
        entry = self.entry
        return encode_task(new_task(entry.task, entry.args, entry.kwargs,
                                    task_id=celery_task_id(entry, tick)))

    def check(self) -> None:
        self.message(time.time())

    def fire(self, tick: float, now: float) -> bool:
        if not self.lock.acquire(tick, self.entry.schedule.next_after(tick)):
            log.debug("%s: tick %s already sent (lock %s held)", self.entry, _utc(tick),
                      self.lock.key(tick))
            return False
        message = self.message(tick)
        self.broker.publish_messages(self.queue, [message])
        self._sent(tick)
        log.info("%s: sent %s %s for tick %s", self.entry, self.entry.task,
                 celery_task_id(self.entry, tick), _utc(tick))
        return True


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
