"""Celery's layout on RabbitMQ, through kombu's pyamqp transport.

Queues are declared exactly as Celery 5.6.2 declares them, so either side may come first:
queue ``Q`` durable, bound to the durable direct exchange ``Q`` with routing key ``Q`` (the
default queue ``celery`` is bound to exchange ``celery``), with ``x-max-priority`` or other
arguments only when configured on both sides. Messages go to the default exchange with
routing key = queue, as Celery's ``send_task`` does, and are confirmed by RabbitMQ in batches.

Fetching uses a consumer with a prefetch window on its own channel; bodies stay raw bytes.
Bookkeeping queues of ours, beside the Celery queue ``Q``:

* ``Q.bridge.delay.<ms>``: a delayed requeue waits here; ``x-message-ttl`` dead-letters it back
  to ``Q`` through the default exchange; ``x-expires`` removes the queue when unused.
* ``Q.bridge.dead``: parked messages (body, headers and properties as received) with the reason
  in the ``x-bridge-dead-reason`` header; :meth:`CeleryAmqpBroker.replay_dead` moves them back.

The connection is :mod:`bridge.brokers.amqp_session`; fetch, ack, requeue and dead letters
are :mod:`bridge.brokers.amqp_consuming`, shared with machinery's AMQP broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import amqp
from kombu import Exchange, Queue

from bridge.brokers.amqp_consuming import (
    DEFAULT_MAX_MESSAGE_BYTES,
    REASON_HEADER,
    AmqpConsuming,
    AmqpTag,
    body_bytes,
    dead_queue_name,
    delay_queue_name,
    without_delay_deaths,
)
from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.brokers.base import CeleryBroker, Delivery
from bridge.config import redact_url
from bridge.protocol.celery_message import CeleryMessage

__all__ = ["REASON_HEADER", "AmqpTag", "CeleryAmqpBroker", "dead_queue_name",
           "delay_queue_name"]

_PROPERTIES = frozenset({"delivery_mode", "priority", "correlation_id", "reply_to", "expiration",
                         "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"})
"""AMQP basic properties besides content type/encoding and headers."""


class CeleryAmqpBroker(AmqpConsuming, CeleryBroker):
    """Celery's queues on RabbitMQ: fetch, ack, delayed requeue, dead letters, publish.

    Options: ``default_queue``; ``max_priority`` / ``queue_arguments`` (must match Celery's
    ``task_queue_max_priority`` / queue arguments, else RabbitMQ refuses the declaration with
    PRECONDITION_FAILED); ``prefetch_count`` (raised to ``max_count`` when a fetch asks for
    more, 0: RabbitMQ's "unlimited"); ``max_message_bytes`` (larger messages are parked);
    ``heartbeat`` (seconds, 0 off; call :meth:`maintain` at least every ``heartbeat / 2`` s
    while tasks run); ``confirm_timeout``; ``connect_timeout``; ``transport_options`` /
    ``ssl`` for kombu.

    Calls are serialised by a lock (the session's).
    """

    def __init__(self, url: str, *, default_queue: str = "celery", max_priority: int | None = None,
                 queue_arguments: dict[str, Any] | None = None, prefetch_count: int = 32,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, heartbeat: float = 60.0,
                 confirm_timeout: float = 30.0, connect_timeout: float = 10.0,
                 transport_options: dict[str, Any] | None = None,
                 ssl: bool | dict[str, Any] | None = None) -> None:
        self.url = url
        self.default_queue = default_queue
        self.max_priority = max_priority
        self.queue_arguments = dict(queue_arguments or {})
        self.prefetch_count = prefetch_count
        self.max_message_bytes = max_message_bytes
        self._init_consuming()
        self.session = AmqpSession([url], on_consume_lost=self._forget_consumers,
                                   heartbeat=heartbeat, connect_timeout=connect_timeout,
                                   confirm_timeout=confirm_timeout, ssl=ssl,
                                   transport_options=transport_options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CeleryAmqpBroker:
        """``amqp://``, ``pyamqp://`` or ``amqps://`` URL plus the keyword options."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"CeleryAmqpBroker({redact_url(self.url)!r})"

    # ------------------------------------------------------------ declarations

    def celery_queue(self, queue: str) -> Any:
        """``queue`` as Celery declares it: a kombu Queue on the direct exchange of its name."""
        arguments = dict(self.queue_arguments)
        if self.max_priority is not None:
            arguments.setdefault("x-max-priority", self.max_priority)
        return Queue(queue, Exchange(queue, "direct"), routing_key=queue,
                     queue_arguments=arguments or None)

    def declare(self, queue: str) -> None:
        """Declare ``queue``, its exchange and binding (once per connection)."""
        self.session.retrying(lambda: self._declare_queue(queue))

    def _declare_queue(self, queue: str) -> None:
        if ("queue", queue) not in self.session.declared:
            self.celery_queue(queue).bind(self.session.admin).declare()
            self.session.declared.add(("queue", queue))

    # ------------------------------------------------------------ publishing

    def publish_messages(self, queue: str, messages: Sequence[CeleryMessage]) -> None:
        """Publish to the default exchange with routing key ``queue``, confirmed as a batch."""
        if not messages:
            return
        wire = [_to_amqp(m, m.headers) for m in messages]

        def run() -> None:
            self._declare_queue(queue)
            self.session.publish_confirmed([Outgoing("", queue, w) for w in wire])

        self.session.retrying(run)

    # ------------------------------------------------------------ messages (AmqpConsuming)

    def _delivery(self, queue: str, raw: Any) -> Delivery:
        """The kombu message in ``Delivery.message``, without our delay queues' x-death."""
        body = body_bytes(raw)
        props = dict(getattr(raw, "properties", None) or {})
        headers = props.pop("application_headers", None)
        content_type = props.pop("content_type", None)
        content_encoding = props.pop("content_encoding", None)
        info = getattr(raw, "delivery_info", None) or {}
        message = CeleryMessage(
            body=body, content_type=content_type, content_encoding=content_encoding,
            headers=without_delay_deaths(queue, headers) if isinstance(headers, dict) else {},
            properties=props)
        tag = AmqpTag(info.get("delivery_tag", 0), getattr(raw, "channel", None),
                      bool(info.get("redelivered")))
        return Delivery(body, queue, tag, message)

    def _headers(self, delivery: Delivery) -> dict[str, Any]:
        return dict(_message_of(delivery).headers)

    def _copy(self, delivery: Delivery, headers: dict[str, Any], *,
              replay: bool = False) -> Any:
        """The message with ``headers``; a replay keeps its ``expiration``, a delayed or
        parked copy does not (it would expire while it waits)."""
        return _to_amqp(_message_of(delivery), headers, drop="" if replay else "expiration")

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """The first ``count`` parked messages, left in place:
        ``{"queue", "reason", "time", "headers", "body" | "body_b64"}``."""
        return self._dead_entries(queue, count)


# ------------------------------------------------------------------------------ conversions


def _message_of(delivery: Delivery) -> CeleryMessage:
    return delivery.message or CeleryMessage(body=delivery.body, content_type=None,
                                             content_encoding=None)


def _to_amqp(message: CeleryMessage, headers: dict[str, Any], drop: str = "") -> Any:
    """An ``amqp.Message`` with the properties kombu's Producer.publish would set."""
    props = {k: v for k, v in message.properties.items()
             if k in _PROPERTIES and k != drop and v is not None}
    props.setdefault("delivery_mode", 2)
    props.setdefault("priority", 0)
    if "expiration" in props:
        props["expiration"] = str(props["expiration"])
    return amqp.Message(message.body, content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        application_headers=headers, **props)
