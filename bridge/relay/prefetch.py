"""The relay's next batch, taken by the broker while the relay translates the one in hand.

A relay turn used to wait for Redis twice in a row: for the take (which also acknowledges
what the turn before published), then for the publish. When a full batch arrives the next
take is now sent at once, without waiting for its reply (``Consumer.fetch_later``: the Redis
brokers send it on their lane), so Redis runs it while Python translates the batch in hand,
and the next turn reads its reply. No thread: the one connection is busy until then, and
the broker's other calls in between take pooled connections.

A prefetched batch is held by the broker like any fetched one (kombu's ``unacked``,
machinery's processing list or a window, ``bridge.brokers.redis_window``): a stop reads it
and the broker's ``close`` gives it back; a crash leaves it to recovery, as any held
message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.brokers.base import Consumer, Delivery

__all__ = ["Prefetch"]


class Prefetch:
    """At most one take in flight for one queue (see the module docstring)."""

    def __init__(self, consumer: Consumer, queue: str, batch: int) -> None:
        self.consumer = consumer
        self.queue = queue
        self.batch = batch
        self._read: Callable[[], list[Delivery]] | None = None
        self._acks: list[Delivery] = []

    @property
    def in_flight(self) -> bool:
        return self._read is not None

    def start(self, acks: Sequence[Delivery]) -> bool:
        """Send the next take now, acknowledging ``acks`` with it; False when the broker
        cannot (nothing sent, ``acks`` not acknowledged)."""
        if self._read is not None:
            raise RuntimeError("a prefetch is already in flight")
        self._read = self.consumer.fetch_later(self.queue, self.batch, acks)
        if self._read is None:
            return False
        self._acks = list(acks)
        return True

    def collect(self) -> list[Delivery] | None:
        """The prefetched batch (None when none is in flight). When reading it fails, the
        error is raised and :meth:`unacknowledged` gives back the acks it carried."""
        read, self._read = self._read, None
        if read is None:
            return None
        deliveries = read()
        self._acks = []
        return deliveries

    def unacknowledged(self) -> list[Delivery]:
        """The acks a failed prefetch carried (acknowledging twice is harmless)."""
        acks, self._acks = self._acks, []
        return acks
