"""What both AMQP brokers do with consumed messages: :class:`AmqpConsuming` (fetch with a
prefetch window, buffering, ack, requeue, dead letters and their replay) on the consume
channel of an :class:`~bridge.brokers.amqp_session.AmqpSession`.

Beside the queues shared with Go or Celery, two kinds of bookkeeping queues of ours:

* ``<queue>.bridge.delay.<ms>``: a delayed requeue waits here; ``x-message-ttl``
  dead-letters it back to exactly ``<queue>`` through the default exchange, ``x-expires``
  removes the queue when unused;
* ``<queue>.bridge.dead``: parked messages (body, headers and properties as received) with
  the reason in the ``x-bridge-dead-reason`` header, ready to be replayed.
"""

from __future__ import annotations

import base64
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.brokers.base import Delivery
from bridge.protocol.gotime import format_rfc3339

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "MAX_DELAY_MS", "QUEUE_HEADER", "REASON_HEADER",
           "TIME_HEADER", "AmqpConsuming", "AmqpTag", "body_bytes", "dead_queue_name",
           "delay_queue_arguments", "delay_queue_name", "without_delay_deaths"]

log = logging.getLogger("bridge.brokers.amqp")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20

REASON_HEADER = "x-bridge-dead-reason"
QUEUE_HEADER = "x-bridge-dead-queue"
TIME_HEADER = "x-bridge-dead-time"
_BRIDGE_HEADERS = (REASON_HEADER, QUEUE_HEADER, TIME_HEADER)
"""What a dead letter carries besides the message's own headers (a replay removes them)."""
_MAX_REASON = 4000
_REPLAY_BATCH = 100
MAX_DELAY_MS = (2**31 - 1 - 60_000) // 2
"""About 12 days: x-expires (2 x delay + 1 min) stays a valid signed 32-bit value."""


def dead_queue_name(queue: str) -> str:
    """Where messages of ``queue`` are parked."""
    return f"{queue}.bridge.dead"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    """Where a requeue of ``queue`` delayed by ``delay_ms`` waits."""
    return f"{queue}.bridge.delay.{delay_ms}"


def delay_queue_arguments(queue: str, delay_ms: int) -> dict[str, Any]:
    """``delay_queue_name(queue, delay_ms)``'s arguments: back to ``queue`` after the delay
    through the default exchange (whatever the bindings), gone when unused."""
    return {"x-message-ttl": delay_ms, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue, "x-expires": 2 * delay_ms + 60_000}


def body_bytes(raw: Any) -> bytes:
    """A py-amqp message's body as bytes, whatever py-amqp made of it."""
    body = raw.body
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    return bytes(body or b"")


def _get_many(channel: Any, queue: str, limit: int | None) -> list[Any]:
    """basic.get up to ``limit`` (None: all) messages without acking them."""
    raws: list[Any] = []
    while limit is None or len(raws) < limit:
        raw = channel.basic_get(queue)
        if raw is None:
            break
        raws.append(raw)
    return raws


def without_delay_deaths(queue: str, headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` without the ``x-death`` bookkeeping RabbitMQ added when one of our delay
    queues dead-lettered the message back to ``queue`` (a user's own dead-lettering is kept)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return headers
    ours = f"{queue}.bridge.delay."
    kept = [d for d in deaths
            if not (isinstance(d, dict) and str(d.get("queue", "")).startswith(ours))]
    if len(kept) == len(deaths):
        return headers
    headers = dict(headers)
    if kept:
        headers["x-death"] = kept
    else:
        del headers["x-death"]
    for which in ("x-first-death-", "x-last-death-"):
        if str(headers.get(f"{which}queue", "")).startswith(ours):
            for name in ("queue", "reason", "exchange"):
                headers.pop(f"{which}{name}", None)
    return headers


@dataclass(frozen=True, slots=True)
class AmqpTag:
    """``Delivery.tag``: the delivery tag on the channel that received the message."""

    delivery_tag: int
    channel: Any
    redelivered: bool = False


class AmqpConsuming(ABC):
    """fetch / ack / requeue / dead_letter / replay_dead on ``self.session``.

    Mixed into both AMQP brokers, which set ``session``, ``prefetch_count`` and
    ``max_message_bytes``, call :meth:`_init_consuming` before opening the session (with
    ``on_consume_lost=self._forget_consumers``) and say how their queues are declared and
    their messages read and copied.

    A consumer per queue on the consume channel, with a prefetch window of
    ``prefetch_count``, raised to what a fetch asks for (0 keeps RabbitMQ's "unlimited");
    its deliveries wait in a buffer per queue until a fetch takes them.
    """

    session: AmqpSession
    prefetch_count: int
    max_message_bytes: int

    def ping(self) -> None:
        """Connected, with open channels (the connection checks credentials and TLS)."""
        with self.session.lock:
            self.session.ready()

    def _init_consuming(self) -> None:
        self._qos = -1
        self._consumers: dict[str, str] = {}
        self._windows: dict[str, int] = {}
        self._buffers: dict[str, deque[Delivery]] = {}
        self._oversized: list[Delivery] = []

    # ------------------------------------------------------------ what each broker says

    @abstractmethod
    def _declare_queue(self, queue: str) -> None:
        """Declare ``queue`` (consumed or replayed to) as its system does; the session is
        ready and its lock held."""

    @abstractmethod
    def _delivery(self, queue: str, raw: Any) -> Delivery:
        """A py-amqp message of ``queue`` as a Delivery (tag an :class:`AmqpTag`); never
        raises on odd properties."""

    @abstractmethod
    def _headers(self, delivery: Delivery) -> dict[str, Any]:
        """A new dict of the headers a copy of ``delivery`` starts from."""

    @abstractmethod
    def _copy(self, delivery: Delivery, headers: dict[str, Any], *,
              replay: bool = False) -> Any:
        """``delivery``'s message again (an ``amqp.Message``) with ``headers``: for a delay
        queue or the dead queue, or (``replay``) back to its queue."""

    # ------------------------------------------------------------ consuming

    def _forget_consumers(self) -> None:
        """The consume channel was replaced: its consumers and undelivered buffers are gone
        (RabbitMQ redelivers those messages)."""
        self._qos = -1
        self._consumers.clear()
        self._windows.clear()
        self._buffers.clear()
        self._oversized.clear()

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` deliveries, waiting up to ``timeout`` s for the first.

        The queue is declared first. Oversized messages are parked, not returned. A lost
        connection (or a frame py-amqp cannot parse) is logged and gives ``[]``; the next
        call reconnects, and RabbitMQ redelivers what was held.
        """
        deadline = time.monotonic() + timeout
        with self.session.guard(f"fetch from {queue}"):
            self.session.ready()
            if ack:
                self._ack(ack)
            self._consumer(queue, max_count)
            buffer = self._buffers[queue]
            while not buffer and self.session.drain(deadline - time.monotonic()):
                self._park_oversized()
            while len(buffer) < max_count and self.session.drain(0):
                pass
            self._park_oversized()
            return [buffer.popleft() for _ in range(min(max_count, len(buffer)))]
        time.sleep(max(0.0, min(deadline - time.monotonic(), 1.0)))  # no busy loop while down
        return []

    def _consumer(self, queue: str, wanted: int) -> None:
        """Consume ``queue`` with a prefetch window of ``prefetch_count``, at least
        ``wanted`` (0, RabbitMQ's unlimited, stays 0).

        RabbitMQ applies basic.qos to new consumers only: a wider window restarts the
        consumer (what it delivered stays ours, on the same channel).
        """
        consume = self.session.consume
        window = 0 if self.prefetch_count == 0 else max(wanted, self.prefetch_count)
        if queue in self._consumers:
            current = self._windows.get(queue, 0)
            if current == 0 or window <= current:
                return
            consume.basic_cancel(self._consumers.pop(queue))
        if window != self._qos:
            consume.basic_qos(0, window, False)
            self._qos = window
        self._windows[queue] = window
        self._declare_queue(queue)
        self._buffers.setdefault(queue, deque())
        self._consumers[queue] = consume.basic_consume(
            queue=queue, callback=lambda raw: self._on_message(queue, raw),
            on_cancel=lambda _tag: self._on_cancel(queue))

    def _on_cancel(self, queue: str) -> None:
        """RabbitMQ cancelled the consumer (queue deleted): the next fetch declares again."""
        log.warning("RabbitMQ cancelled the consumer of %s", queue)
        self._consumers.pop(queue, None)
        self.session.declared = {d for d in self.session.declared if d[0] == "exchange"}

    def _on_message(self, queue: str, raw: Any) -> None:
        """A basic.deliver: into the queue's buffer (oversized ones into the parking lot)."""
        delivery = self._delivery(queue, raw)
        if len(delivery.body) > self.max_message_bytes:
            self._oversized.append(delivery)
        else:
            self._buffers.setdefault(queue, deque()).append(delivery)

    def _park_oversized(self) -> None:
        while self._oversized:
            delivery = self._oversized.pop()
            self._dead_letter(delivery, f"message of {len(delivery.body)} bytes exceeds "
                                       f"max_message_bytes={self.max_message_bytes}")

    # ------------------------------------------------------------ ack, requeue, park

    def _live(self, delivery: Delivery, action: str) -> AmqpTag | None:
        """The tag if its channel is still ours and open; else None (RabbitMQ requeued it)."""
        tag = delivery.tag
        if isinstance(tag, AmqpTag) and tag.channel is self.session.consume \
                and tag.channel.is_open:
            return tag
        log.warning("cannot %s a message of %s: its channel is gone (RabbitMQ redelivers it)",
                    action, delivery.queue)
        return None

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """basic.ack each delivery (deliveries of a lost connection are skipped)."""
        with self.session.guard("ack"):
            self._ack(deliveries)

    def _ack(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            tag = self._live(delivery, "ack")
            if tag is not None:
                self.session.consume.basic_ack(tag.delivery_tag)

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Back at once (basic.reject requeue), or through a delay queue, then acked.

        ``<queue>.bridge.delay.<ms>`` dead-letters the copy to ``queue`` through the default
        exchange (whatever the bindings); a lost connection leaves the original to RabbitMQ's
        redelivery (at least once, never lost).
        """
        with self.session.guard(f"requeue to {delivery.queue}"):
            self.session.ready()
            tag = self._live(delivery, "requeue")
            if tag is None:
                return
            if delay <= 0:
                self.session.consume.basic_reject(tag.delivery_tag, requeue=True)
                return
            delay_ms = min(max(1, round(delay * 1000)), MAX_DELAY_MS)
            name = delay_queue_name(delivery.queue, delay_ms)
            # redeclaring renews x-expires: the queue outlives this message
            self.session.declare_plain(name, delay_queue_arguments(delivery.queue, delay_ms),
                                       cache=False)
            headers = without_delay_deaths(delivery.queue, self._headers(delivery))
            self._move(delivery, tag, name, headers)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park in ``<queue>.bridge.dead`` with the reason (confirmed), then ack."""
        with self.session.guard(f"dead-letter to {dead_queue_name(delivery.queue)}"):
            self.session.ready()
            self._dead_letter(delivery, reason)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        tag = self._live(delivery, "dead-letter")
        if tag is None:
            return
        log.warning("dead-lettering a message of %s: %s", delivery.queue, reason)
        headers = {**self._headers(delivery), REASON_HEADER: reason[:_MAX_REASON],
                   QUEUE_HEADER: delivery.queue, TIME_HEADER: format_rfc3339(datetime.now(UTC))}
        name = dead_queue_name(delivery.queue)
        self.session.declare_plain(name)
        self._move(delivery, tag, name, headers)

    def _move(self, delivery: Delivery, tag: AmqpTag, queue: str,
              headers: dict[str, Any]) -> None:
        """A copy into ``queue`` (confirmed by RabbitMQ), then the original acked."""
        self.session.publish_confirmed([Outgoing("", queue, self._copy(delivery, headers))])
        self.session.consume.basic_ack(tag.delivery_tag)

    # ------------------------------------------------------------ dead letters

    def dead_count(self, queue: str) -> int:
        """Messages parked in ``<queue>.bridge.dead``."""
        with self.session.lock:
            self.session.ready()
            return self.session.depth(dead_queue_name(queue))

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move ``count`` (0: all) parked messages back to ``queue``, byte for byte; returns
        how many."""
        moved = 0
        with self.session.lock:
            self.session.ready()
            self.session.declare_plain(dead_queue_name(queue))
            self._declare_queue(queue)
            if count <= 0:  # what is parked now: a live worker may park a replayed one again
                count = self.session.depth(dead_queue_name(queue))
            while moved < count:
                batch = min(_REPLAY_BATCH, count - moved)
                done = self._replay_batch(queue, batch)
                moved += done
                if done < batch:
                    break
        return moved

    def _replay_batch(self, queue: str, limit: int) -> int:
        """basic.get up to ``limit`` dead letters, publish them to ``queue``, then ack."""
        channel = self.session.open_channel()
        try:
            raws = _get_many(channel, dead_queue_name(queue), limit)
            items = []
            for raw in raws:
                delivery = self._delivery(queue, raw)
                headers = {k: v for k, v in self._headers(delivery).items()
                           if k not in _BRIDGE_HEADERS}
                items.append(Outgoing("", queue, self._copy(delivery, headers, replay=True)))
            if items:
                self.session.publish_confirmed(items)
                channel.basic_ack(raws[-1].delivery_tag, multiple=True)
            return len(raws)
        finally:
            channel.close()  # anything not acked goes back to the dead queue

    def _dead_entries(self, queue: str, limit: int | None) -> list[dict[str, Any]]:
        """The first ``limit`` (None: all) parked messages of ``queue``, left in place:
        ``{"queue", "reason", "time", "headers", "body" | "body_b64"}``."""
        entries = []
        for raw in self._peek_raw(dead_queue_name(queue), limit):
            delivery = self._delivery(queue, raw)
            headers = self._headers(delivery)
            entry: dict[str, Any] = {"queue": headers.pop(QUEUE_HEADER, queue),
                                     "reason": headers.pop(REASON_HEADER, ""),
                                     "time": headers.pop(TIME_HEADER, ""), "headers": headers}
            try:
                entry["body"] = delivery.body.decode("utf-8")
            except UnicodeDecodeError:
                entry["body_b64"] = base64.b64encode(delivery.body).decode("ascii")
            entries.append(entry)
        return entries

    def _peek_raw(self, queue: str, limit: int | None) -> list[Any]:
        """basic.get up to ``limit`` (None: all) messages of ``queue`` on a channel closed
        without acking them: all of them stay, in order (marked redelivered)."""
        with self.session.lock:
            self.session.ready()
            if queue.endswith(".bridge.dead"):
                self.session.declare_plain(queue)
            elif self.session.depth(queue) == 0:
                return []
            channel = self.session.open_channel()
            try:
                return _get_many(channel, queue, limit)
            finally:
                channel.close()

    # ------------------------------------------------------------ upkeep and inspection

    def queue_depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (0 when it does not exist)."""
        with self.session.lock:
            self.session.ready()
            return self.session.depth(queue)

    def maintain(self) -> None:
        """Heartbeats (and frames waiting); reconnects after a lost connection."""
        with self.session.guard("maintain"):
            self.session.ready()
            self.session.drain(0)

    def close(self) -> None:
        """Close the connection: RabbitMQ requeues every message still unacked."""
        self.session.close()
