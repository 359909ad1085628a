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

from bridge.protocol.machinery import Signature


@dataclass(frozen=True, slots=True)
class Delivery:
    """One fetched message, held by this worker until acked, requeued or dead-lettered."""

    body: bytes
    queue: str
    tag: Any = field(default=None, compare=False)
    """Broker-specific handle (processing-list entry, AMQP delivery tag, SQS receipt...)."""


class Broker(ABC):
    """A machinery-compatible broker."""

    default_queue: str

    @abstractmethod
    def publish(self, signatures: Sequence[Signature]) -> None:
        """Publish as machinery's Publish does, batched where the broker can.

        An empty RoutingKey becomes the default queue (AdjustRoutingKey) before
        encoding; an ETA in the future goes to the broker's delay mechanism.
        """

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
