"""What the worker and producer need from a broker, whatever carries the bytes.

A broker moves raw message bytes in its system's layout. It knows routing keys
and ETAs (to decide where and when a message goes) but never task semantics:
decoding, running and state writing belong to the runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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

    def fetch_later(self, queue: str, max_count: int, ack: Sequence[Delivery] = ()
                    ) -> Callable[[], list[Delivery]] | None:
        """:meth:`fetch` without waiting, sent now, read by the call returned (once, before
        any other fetch), so the broker takes while the caller works; None where the broker
        cannot (then nothing was sent, nothing acknowledged). Calls other than fetches may
        come in between."""
        return None

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The messages are done: forget them."""

    @abstractmethod
    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Give the message back to its queue, after ``delay`` seconds if > 0."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park the raw message with the reason, where an operator can see and replay it."""

    def decoded(self, delivery: Delivery, signature: Signature) -> None:  # noqa: B027
        """A machinery message was decoded: set on it what only the broker knows (SQS: the
        SQSReceiptHandle of this delivery, as Go's consumeOne does)."""

    def failed(self, delivery: Delivery, signature: Signature) -> None:  # noqa: B027
        """The task failed for good (FAILURE stored); the message is acked next. SQS keeps
        it instead when StopTaskDeletionOnError asks (Go's ErrStopTaskDeletion)."""

    def unknown_held(self, queue: str, known: Sequence[Delivery]) -> list[Delivery]:
        """Messages of ``queue`` this consumer holds for the broker but not in ``known``:
        taken by a call whose reply was lost in an outage. They are returned as deliveries
        to run (brokers that give back a lost connection's messages themselves, such as
        RabbitMQ, have none)."""
        return []

    def recover_after(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """Treat a consumer silent for ``seconds`` as dead and return its messages (brokers
        that track their consumers themselves, such as RabbitMQ, ignore this)."""

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Reach the broker once (startup validation): raise :class:`~bridge.errors.Unreachable`
        naming the URL (password redacted) and the fix when it cannot be reached or refuses us."""

    def maintain(self) -> None:  # noqa: B027 - optional hook
        """Periodic upkeep (heartbeat, moving due delayed tasks, recovering orphans)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Broker(Consumer):
    """A machinery-compatible broker."""

    default_queue: str
    keeps_empty_routing_key: bool = False
    """Go's Publish encodes before AdjustRoutingKey (SQS): the app leaves an empty RoutingKey
    to the broker, so the body keeps it empty as Go's does."""

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
