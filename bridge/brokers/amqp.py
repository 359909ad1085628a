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

The connection (kombu's pyamqp transport, py-amqp channels) is
:mod:`bridge.brokers.amqp_session`; fetch, ack, requeue and dead letters are
:mod:`bridge.brokers.amqp_consuming`, shared with the Celery broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import amqp

from bridge.brokers.amqp_consuming import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AmqpConsuming,
    AmqpTag,
    body_bytes,
    dead_queue_name,
    delay_queue_name,
)
from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.brokers.amqp_topology import (
    CONTENT_TYPE,
    PERSISTENT,
    Binding,
    Topology,
    amqp_table,
)
from bridge.brokers.base import Broker, Delivery
from bridge.config import Config, redact_url
from bridge.protocol.gotime import unix_nano
from bridge.protocol.machinery import Signature

__all__ = ["AmqpBroker", "AmqpDeliveryTag", "dead_queue_name", "delay_queue_name"]

_KEPT_PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority",
                    "correlation_id", "reply_to", "message_id", "timestamp", "type", "user_id",
                    "app_id")
"""Properties a requeue, a dead letter and a replay carry over (never ``expiration``)."""


@dataclass(frozen=True, slots=True)
class AmqpDeliveryTag(AmqpTag):
    """``Delivery.tag``: the delivery tag on the channel that received the message, and the
    message's properties (``application_headers`` included) for a requeue or dead letter."""

    properties: dict[str, Any] = field(default_factory=dict)


class AmqpBroker(AmqpConsuming, Broker):
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
        self._init_consuming()
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

    # ------------------------------------------------------------ consuming (AmqpConsuming)

    def _declare_queue(self, queue: str) -> None:
        """``queue`` declared and bound as machinery's worker does."""
        self._declare(self.topology.consumer(queue))

    def _delivery(self, queue: str, raw: Any) -> Delivery:
        info = getattr(raw, "delivery_info", None) or {}
        tag = AmqpDeliveryTag(info.get("delivery_tag", 0), getattr(raw, "channel", None),
                              bool(info.get("redelivered")),
                              dict(getattr(raw, "properties", None) or {}))
        return Delivery(body_bytes(raw), queue, tag)

    def _headers(self, delivery: Delivery) -> dict[str, Any]:
        """The AMQP headers as received (Go reads the body's Headers, never these)."""
        tag = delivery.tag
        headers = tag.properties.get("application_headers") \
            if isinstance(tag, AmqpDeliveryTag) else None
        return dict(headers) if isinstance(headers, dict) else {}

    def _copy(self, delivery: Delivery, headers: dict[str, Any], *,
              replay: bool = False) -> Any:
        """The message again, with its own properties and ``headers`` (never an expiration)."""
        tag = delivery.tag
        own = tag.properties if isinstance(tag, AmqpDeliveryTag) else {}
        properties = {k: own[k] for k in _KEPT_PROPERTIES if own.get(k) is not None}
        if headers:
            properties["application_headers"] = headers
        return amqp.Message(delivery.body, **properties)

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Parked messages ``start..stop`` (inclusive, -1: the last), left in place:
        ``{"queue", "reason", "time", "headers", "body" | "body_b64"}``."""
        entries = self._dead_entries(queue, None if stop < 0 else stop + 1)
        return entries[start:] if stop < 0 else entries[start:stop + 1]

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The first ``count`` waiting messages, left in place (they come back redelivered)."""
        return [body_bytes(raw) for raw in self._peek_raw(queue, count)]


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

