"""machinery's AMQP broker on RabbitMQ, through kombu's pyamqp transport.

Exchange, queues, bindings, delay queues and message properties are machinery's (see
:mod:`bridge.brokers.amqp_topology`), so Go producers and workers share every queue with us:
a Go producer's task reaches our consumer and ours reaches a Go worker, delayed ones included.

Reliability beyond machinery, with bookkeeping queues Go never looks at:

* messages are acknowledged after the task (a consumer that dies returns them to RabbitMQ);
* a delayed requeue waits in ``<queue>.bridge.delay.<ms>``, whose ``x-message-ttl``
  dead-letters it back to exactly ``<queue>`` through the default exchange; the original is
  acked only after RabbitMQ confirmed the copy;
* parked messages (undecodable, oversized, ...) wait in the durable ``<queue>.bridge.dead``
  with the reason in the ``x-bridge-dead-reason`` header; :meth:`AmqpBroker.replay_dead`
  puts them back byte for byte.

The connection (kombu's pyamqp transport, py-amqp channels) is :mod:`bridge.brokers.amqp_session`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import amqp

from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.brokers.amqp_topology import (
    CONTENT_TYPE,
    PERSISTENT,
    Binding,
    Topology,
    amqp_table,
)
from bridge.brokers.base import Broker, Delivery
from bridge.brokers.celery_amqp import (
    MAX_DELAY_MS,
    QUEUE_HEADER,
    REASON_HEADER,
    TIME_HEADER,
    dead_queue_name,
    delay_queue_name,
)
from bridge.config import Config, redact_url
from bridge.protocol.gotime import format_rfc3339, unix_nano
from bridge.protocol.machinery import Signature

__all__ = ["AmqpBroker", "AmqpDeliveryTag", "dead_queue_name", "delay_queue_name"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
_BRIDGE_HEADERS = (REASON_HEADER, QUEUE_HEADER, TIME_HEADER)
_MAX_REASON = 4000
_REPLAY_BATCH = 100
_KEPT_PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority",
                    "correlation_id", "reply_to", "message_id", "timestamp", "type", "user_id",
                    "app_id")
"""Properties a requeue, a dead letter and a replay carry over (never ``expiration``)."""


@dataclass(frozen=True, slots=True)
class AmqpDeliveryTag:
    """``Delivery.tag``: the delivery tag on the channel that received the message, and the
    message's properties (``application_headers`` included) for a requeue or dead letter."""

    delivery_tag: int
    channel: Any
    redelivered: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


class AmqpBroker(Broker):
    """machinery's AMQP broker: publish, delay, fetch with prefetch, ack, requeue, park.

    ``config`` supplies ``default_queue``, ``multiple_broker_separator`` and the ``amqp``
    section. Options: ``max_message_bytes`` (larger deliveries are parked, not returned);
    ``heartbeat`` (seconds, 0 off; :meth:`maintain` or :meth:`fetch` at least every
    ``heartbeat / 2`` s keeps the connection); ``confirm_timeout``; ``connect_timeout``;
    ``ssl`` / ``transport_options`` for kombu.

    The prefetch window is ``amqp.prefetch_count``, raised to what a fetch asks for (0 keeps
    RabbitMQ's "unlimited"). Calls are serialised by a lock: a task thread may publish while
    the worker loop fetches.
    """

    def __init__(self, url: str, config: Config | None = None, *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, heartbeat: float = 60.0,
                 confirm_timeout: float = 30.0, connect_timeout: float = 10.0,
                 ssl: bool | dict[str, Any] | None = None,
                 transport_options: dict[str, Any] | None = None) -> None:
        self.config = config or Config(broker=url)
        self.url = url
        self.default_queue = self.config.default_queue
        self.topology = Topology.from_config(self.config)
        self.prefetch_count = self.config.amqp.prefetch_count if self.config.amqp else 3
        self.max_message_bytes = max_message_bytes
        self._qos = -1
        self._consumers: dict[str, str] = {}
        self._windows: dict[str, int] = {}
        self._buffers: dict[str, deque[Delivery]] = {}
        self._oversized: list[Delivery] = []
        separator = self.config.multiple_broker_separator
        urls = [u for u in url.split(separator) if u] if separator else [url]
        self.session = AmqpSession(urls, on_consume_lost=self._forget_consumers,
                                   heartbeat=heartbeat, connect_timeout=connect_timeout,
                                   confirm_timeout=confirm_timeout, ssl=ssl,
                                   transport_options=transport_options)

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> AmqpBroker:
        """The broker of ``config.broker``."""
        return cls(config.broker, config, **options)

    def __repr__(self) -> str:
        return f"AmqpBroker({redact_url(self.url)!r})"

    def _forget_consumers(self) -> None:
        """The consume channel was replaced: its consumers and undelivered buffers are gone
        (RabbitMQ redelivers those messages)."""
        self._qos = -1
        self._consumers.clear()
        self._windows.clear()
        self._buffers.clear()
        self._oversized.clear()

    # ------------------------------------------------------------ declarations

    def _declare(self, binding: Binding, *, renew: bool = False) -> None:
        """The exchange, then ``binding``'s queue and binding, as AMQPConnector.Connect does.

        Cached per connection; ``renew`` declares again (a delay queue's x-expires restarts).
        """
        admin, declared = self.session.admin, self.session.declared
        exchange = self.topology.exchange
        if exchange and ("exchange", exchange) not in declared:
            admin.exchange_declare(exchange, self.topology.exchange_type, durable=True,
                                   auto_delete=False)
            declared.add(("exchange", exchange))
        if renew or ("queue", binding.queue) not in declared:
            admin.queue_declare(queue=binding.queue, durable=True, auto_delete=binding.auto_delete,
                                arguments=dict(binding.arguments))
            declared.add(("queue", binding.queue))
        bound = ("bind", f"{binding.queue}\0{binding.key}")
        if exchange and bound not in declared:
            admin.queue_bind(binding.queue, exchange, binding.key,
                             arguments=dict(self.topology.binding_arguments))
            declared.add(bound)

    def declare(self, queue: str | None = None) -> None:
        """Declare ``queue`` (default: the default queue) as a machinery worker does."""
        binding = self.topology.consumer(queue or self.default_queue)
        self.session.retrying(lambda: self._declare(binding))

    # ------------------------------------------------------------ publishing

    def publish(self, signatures: Sequence[Signature]) -> None:
        """machinery's Publish for each signature, confirmed by RabbitMQ as one batch.

        An empty RoutingKey is set first, on the signature itself (AdjustRoutingKey); an ETA
        at least 1 ms ahead goes through machinery's delay queue (declared anew each time, as
        Go does). Unlike Go the delayed copy keeps its priority (machinery #824).
        """
        if not signatures:
            return
        now = time.time_ns()
        ready: list[Outgoing] = []
        delayed: list[tuple[Binding, Outgoing]] = []
        for sig in signatures:
            sig.routing_key = self.topology.routing_key(sig.routing_key)
            body = sig.to_json()
            delay_ms = (unix_nano(sig.eta) - now) // 1_000_000 if sig.eta is not None else 0
            if delay_ms > 0:
                plan = self.topology.delay(sig.routing_key, delay_ms)
                message = _go_message(body, sig, plan.expiration)
                delayed.append((plan.binding,
                                Outgoing(self.topology.exchange, plan.binding.queue, message)))
            else:
                ready.append(Outgoing(self.topology.exchange, sig.routing_key,
                                      _go_message(body, sig)))

        def run() -> None:
            for out in ready:
                self._declare(self.topology.publisher(out.routing_key))
            renewed: set[str] = set()
            for binding, _ in delayed:
                if binding.queue not in renewed:
                    self._declare(binding, renew=True)
                    renewed.add(binding.queue)
            self.session.publish_confirmed([*ready, *(out for _, out in delayed)])

        self.session.retrying(run)

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Put already-encoded bodies at the tail of ``queue`` (machinery's properties)."""
        if not bodies:
            return
        outgoing = [Outgoing("", queue, amqp.Message(bytes(body), content_type=CONTENT_TYPE,
                                                     delivery_mode=PERSISTENT))
                    for body in bodies]

        def run() -> None:
            self._declare(self.topology.consumer(queue))
            self.session.publish_confirmed(outgoing)

        self.session.retrying(run)

    # ------------------------------------------------------------ consuming

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` deliveries, waiting up to ``timeout`` s for the first.

        The queue is declared and bound as machinery's worker does. Oversized messages are
        parked, not returned. A lost connection is logged and gives ``[]``; the next call
        reconnects, and RabbitMQ redelivers what was held.
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
        """Consume ``queue`` with a prefetch window of ``amqp.prefetch_count``, at least
        ``wanted`` (0, RabbitMQ's unlimited, stays 0).

        RabbitMQ applies basic.qos to new consumers only: a wider window restarts the
        consumer (what it delivered stays ours, on the same channel).
        """
        window = 0 if self.prefetch_count == 0 else max(wanted, self.prefetch_count)
        if queue in self._consumers:
            current = self._windows.get(queue, 0)
            if current == 0 or window <= current:
                return
            self.session.consume.basic_cancel(self._consumers.pop(queue))
        if window != self._qos:
            self.session.consume.basic_qos(0, window, False)
            self._qos = window
        self._windows[queue] = window
        self._declare(self.topology.consumer(queue))
        self._buffers.setdefault(queue, deque())
        self._consumers[queue] = self.session.consume.basic_consume(
            queue=queue, callback=lambda raw: self._on_message(queue, raw),
            on_cancel=lambda _tag: self._on_cancel(queue))

    def _on_cancel(self, queue: str) -> None:
        """RabbitMQ cancelled the consumer (queue deleted): the next fetch declares again."""
        log.warning("RabbitMQ cancelled the consumer of %s", queue)
        self._consumers.pop(queue, None)
        self.session.declared = {d for d in self.session.declared if d[0] == "exchange"}

    def _on_message(self, queue: str, raw: Any) -> None:
        """A basic.deliver: into the queue's buffer (oversized ones into the parking lot)."""
        delivery = _delivery(queue, raw)
        if len(delivery.body) > self.max_message_bytes:
            self._oversized.append(delivery)
        else:
            self._buffers.setdefault(queue, deque()).append(delivery)

    def _park_oversized(self) -> None:
        while self._oversized:
            delivery = self._oversized.pop()
            self._dead_letter(delivery, f"message of {len(delivery.body)} bytes exceeds "
                                       f"max_message_bytes={self.max_message_bytes}")

    def _live(self, delivery: Delivery, action: str) -> AmqpDeliveryTag | None:
        """The tag if its channel is still ours and open; else None (RabbitMQ requeued it)."""
        tag = delivery.tag
        if isinstance(tag, AmqpDeliveryTag) and tag.channel is self.session.consume \
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
            self.session.declare_plain(name, {
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": delivery.queue,
                "x-expires": 2 * delay_ms + 60_000,
            }, cache=False)  # redeclaring renews x-expires: the queue outlives this message
            headers = _without_delay_deaths(delivery.queue, _headers(tag))
            self.session.publish_confirmed([Outgoing("", name, _copy(delivery, tag, headers))])
            self.session.consume.basic_ack(tag.delivery_tag)

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
        headers = {**_headers(tag), REASON_HEADER: reason[:_MAX_REASON],
                   QUEUE_HEADER: delivery.queue, TIME_HEADER: format_rfc3339(datetime.now(UTC))}
        name = dead_queue_name(delivery.queue)
        self.session.declare_plain(name)
        self.session.publish_confirmed([Outgoing("", name, _copy(delivery, tag, headers))])
        self.session.consume.basic_ack(tag.delivery_tag)

    # ------------------------------------------------------------ dead letters

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move ``count`` (0: all) parked messages back to ``queue``, byte for byte."""
        moved = 0
        with self.session.lock:
            self.session.ready()
            self.session.declare_plain(dead_queue_name(queue))
            self._declare(self.topology.consumer(queue))
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
                delivery = _delivery(queue, raw)
                assert isinstance(delivery.tag, AmqpDeliveryTag)
                headers = {k: v for k, v in _headers(delivery.tag).items()
                           if k not in _BRIDGE_HEADERS}
                items.append(Outgoing("", queue, _copy(delivery, delivery.tag, headers)))
            if items:
                self.session.publish_confirmed(items)
                channel.basic_ack(raws[-1].delivery_tag, multiple=True)
            return len(raws)
        finally:
            channel.close()  # anything not acked goes back to the dead queue

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Parked messages ``start..stop`` (inclusive, -1: the last), left in place:
        ``{"queue", "reason", "time", "headers", "body" | "body_b64"}``."""
        entries = []
        for raw in self._peek_raw(dead_queue_name(queue), None if stop < 0 else stop + 1):
            delivery = _delivery(queue, raw)
            assert isinstance(delivery.tag, AmqpDeliveryTag)
            headers = _headers(delivery.tag)
            entry: dict[str, Any] = {"queue": headers.pop(QUEUE_HEADER, queue),
                                     "reason": headers.pop(REASON_HEADER, ""),
                                     "time": headers.pop(TIME_HEADER, ""), "headers": headers}
            try:
                entry["body"] = delivery.body.decode("utf-8")
            except UnicodeDecodeError:
                entry["body_b64"] = base64.b64encode(delivery.body).decode("ascii")
            entries.append(entry)
        return entries[start:] if stop < 0 else entries[start:stop + 1]

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The first ``count`` waiting messages, left in place (they come back redelivered)."""
        return [_delivery(queue, raw).body for raw in self._peek_raw(queue, count)]

    def _peek_raw(self, queue: str, limit: int | None) -> list[Any]:
        with self.session.lock:
            self.session.ready()
            if queue.endswith(".bridge.dead"):
                self.session.declare_plain(queue)
            elif self.queue_depth(queue) == 0:
                return []
            channel = self.session.open_channel()
            try:
                return _get_many(channel, queue, limit)
            finally:
                channel.close()  # unacked: all of them stay, in order

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


# ------------------------------------------------------------------------------ messages


def _go_message(body: bytes, sig: Signature, expiration: str | None = None) -> Any:
    """The properties machinery's Publish sets (amqp091 leaves out zero priority and
    empty headers); ``expiration`` only for ``amqp.delayed_queue``."""
    properties: dict[str, Any] = {"content_type": CONTENT_TYPE, "delivery_mode": PERSISTENT}
    headers = amqp_table(sig.headers)
    if headers is not None:
        properties["application_headers"] = headers
    if sig.priority:
        properties["priority"] = sig.priority
    if expiration is not None:
        properties["expiration"] = expiration
    return amqp.Message(body, **properties)


def _delivery(queue: str, raw: Any) -> Delivery:
    """A py-amqp message as a Delivery; never raises on odd properties."""
    body = raw.body
    if not isinstance(body, bytes):
        body = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else \
            bytes(body or b"")
    info = getattr(raw, "delivery_info", None) or {}
    tag = AmqpDeliveryTag(info.get("delivery_tag", 0), getattr(raw, "channel", None),
                          bool(info.get("redelivered")),
                          dict(getattr(raw, "properties", None) or {}))
    return Delivery(body, queue, tag)


def _headers(tag: AmqpDeliveryTag) -> dict[str, Any]:
    headers = tag.properties.get("application_headers")
    return dict(headers) if isinstance(headers, dict) else {}


def _copy(delivery: Delivery, tag: AmqpDeliveryTag, headers: dict[str, Any]) -> Any:
    """The message again, with its own properties and ``headers`` (never an expiration)."""
    properties = {k: tag.properties[k] for k in _KEPT_PROPERTIES
                  if tag.properties.get(k) is not None}
    if headers:
        properties["application_headers"] = headers
    return amqp.Message(delivery.body, **properties)


def _get_many(channel: Any, queue: str, limit: int | None) -> list[Any]:
    """basic.get up to ``limit`` (None: all) messages without acking them."""
    raws: list[Any] = []
    while limit is None or len(raws) < limit:
        raw = channel.basic_get(queue)
        if raw is None:
            break
        raws.append(raw)
    return raws


def _without_delay_deaths(queue: str, headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` without the ``x-death`` bookkeeping of our delay queues for ``queue``
    (a user's own dead-lettering is kept)."""
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
