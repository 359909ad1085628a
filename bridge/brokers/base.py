"""What the worker and producer need from a broker, whatever carries the bytes.

A broker moves raw message bytes in its system's layout. It knows routing keys
and ETAs (to decide where and when a message goes) but never task semantics:
decoding, running and state writing belong to the runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.machinery import Signature


@dataclass(frozen=True, slots=True)
class Delivery:
    """One fetched message, held by this worker until acked, requeued or dead-lettered."""

    body: bytes
    """The raw bytes as the broker stores them (what a dead letter parks and replays)."""
    queue: str
    tag: Any = field(default=None, compare=False)
    """Broker-specific handle (processing-list entry, AMQP delivery tag, SQS receipt...)."""
    message: CeleryMessage | None = field(default=None, compare=False)
    """Celery brokers: the kombu message read from the transport's layout."""


class Consumer(ABC):
    """What the worker loop needs from any broker: fetch, ack, requeue, park."""

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Put already-encoded bodies at the tail of ``queue`` (replays, requeues)."""
        raise NotImplementedError

    @abstractmethod
    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Take up to ``max_count`` messages, waiting up to ``timeout`` s for the first.

        ``ack`` are acknowledged first (in the same round trip where the broker can).
        Fetched messages stay owned by this worker (a crash returns them to the
        queue) until ``ack``, ``requeue`` or ``dead_letter``.
        """

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The messages are done: forget them."""

    @abstractmethod
    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Give the message back to its queue, after ``delay`` seconds if > 0."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park the raw message with the reason, where an operator can see and replay it."""

    def maintain(self) -> None:  # noqa: B027 - optional hook
        """Periodic upkeep (heartbeat, moving due delayed tasks, recovering orphans)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Broker(Consumer):
    """A machinery-compatible broker."""

    default_queue: str

    @abstractmethod
    def publish(self, signatures: Sequence[Signature]) -> None:
        """Publish as machinery's Publish does, batched where the broker can.

        An empty RoutingKey becomes the default queue (AdjustRoutingKey) before
        encoding; an ETA in the future goes to the broker's delay mechanism.
        """


class CeleryBroker(Consumer):
    """A broker in kombu's layout, as Celery producers and workers use it.

    Fetched deliveries carry the kombu message in ``Delivery.message``.
    """

    default_queue: str = "celery"

    @abstractmethod
    def publish_messages(self, queue: str, messages: Sequence[CeleryMessage]) -> None:
        """Publish as ``kombu.Producer.publish`` to Celery's direct queue ``queue``
        (the default exchange, routing key = queue), batched where the broker can."""

    @abstractmethod
    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (every priority)."""
