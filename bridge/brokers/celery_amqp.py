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
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import amqp
from kombu import Connection, Exchange, Queue

from bridge.brokers.base import CeleryBroker, Delivery
from bridge.config import redact_url
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.gotime import format_rfc3339

__all__ = ["AmqpTag", "CeleryAmqpBroker", "dead_queue_name", "delay_queue_name"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
REASON_HEADER = "x-bridge-dead-reason"
QUEUE_HEADER = "x-bridge-dead-queue"
TIME_HEADER = "x-bridge-dead-time"
_BRIDGE_HEADERS = (REASON_HEADER, QUEUE_HEADER, TIME_HEADER)
_MAX_REASON = 4000
_PROPERTIES = frozenset({"delivery_mode", "priority", "correlation_id", "reply_to", "expiration",
                         "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"})
"""AMQP basic properties besides content type/encoding and headers."""
_REPLAY_BATCH = 100
MAX_DELAY_MS = (2**31 - 1 - 60_000) // 2
"""About 12 days: x-expires (2 x delay + 1 min) stays a valid signed 32-bit value."""


def dead_queue_name(queue: str) -> str:
    """Where messages of ``queue`` are parked."""
    return f"{queue}.bridge.dead"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    """Where a requeue of ``queue`` delayed by ``delay_ms`` waits."""
    return f"{queue}.bridge.delay.{delay_ms}"


@dataclass(frozen=True, slots=True)
class AmqpTag:
    """``Delivery.tag``: the delivery tag on the channel that received the message."""

    delivery_tag: int
    channel: Any
    redelivered: bool = False


class CeleryAmqpBroker(CeleryBroker):
    """Celery's queues on RabbitMQ: fetch, ack, delayed requeue, dead letters, publish.

    Options: ``default_queue``; ``max_priority`` / ``queue_arguments`` (must match Celery's
    ``task_queue_max_priority`` / queue arguments, else RabbitMQ refuses the declaration with
    PRECONDITION_FAILED); ``prefetch_count`` (raised to ``max_count`` when a fetch asks for
    more); ``max_message_bytes`` (larger messages are parked); ``heartbeat`` (seconds, 0 off;
    call :meth:`maintain` at least every ``heartbeat / 2`` s while tasks run);
    ``confirm_timeout``; ``connect_timeout``; ``transport_options`` / ``ssl`` for kombu.

    Not thread-safe: one broker per consuming thread.
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
        self.confirm_timeout = confirm_timeout
        self._conn = Connection(url, heartbeat=heartbeat, connect_timeout=connect_timeout,
                                transport_options=dict(transport_options or {}),
                                ssl=ssl or False)
        if self._conn.transport.driver_type != "amqp":
            raise ValueError(f"not an AMQP URL: {redact_url(url)}")
        self._consume: Any = None
        self._publish: Any = None
        self._admin: Any = None
        self._qos = 0
        self._consumers: dict[str, str] = {}
        self._buffers: dict[str, deque[Delivery]] = {}
        self._oversized: list[Delivery] = []
        self._declared: set[str] = set()
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._seq = 0
        self._connect()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CeleryAmqpBroker:
        """``amqp://``, ``pyamqp://`` or ``amqps://`` URL plus the keyword options."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"CeleryAmqpBroker({redact_url(self.url)!r})"

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        """(Re)open the connection and the consume, publish (confirm mode) and admin channels."""
        self._conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        self._open_consume_channel()
        self._open_publish_channel()
        self._admin = self._open_channel()
        log.debug("connected to %s", redact_url(self.url))

    def _open_channel(self) -> Any:
        channel = self._conn.channel()
        channel.auto_decode = False  # bodies stay the bytes the producer sent
        return channel

    def _open_consume_channel(self) -> None:
        self._consumers.clear()
        self._buffers.clear()
        self._consume, self._qos = self._open_channel(), 0
        self._set_qos(self.prefetch_count)

    def _open_publish_channel(self) -> None:
        """A channel in confirm mode; its publish sequence numbers start again at 1."""
        self._publish = self._open_channel()
        self._publish.confirm_select()
        self._publish.events["basic_ack"].add(self._on_confirm)
        self._publish.events["basic_nack"].add(self._on_nack)
        self._unconfirmed.clear()
        self._nacked.clear()
        self._seq = 0

    def _reset(self, why: BaseException) -> None:
        """Forget the connection: RabbitMQ requeues whatever it still had unacked."""
        log.warning("AMQP connection to %s lost (%s); reconnecting", redact_url(self.url), why)
        self._consume = self._publish = self._admin = None
        self._consumers.clear()
        self._buffers.clear()  # never handed out: RabbitMQ redelivers them
        self._oversized.clear()
        self._declared.clear()
        try:
            self._conn.collect()
        except Exception:  # the socket is gone either way
            log.debug("collect after connection loss failed", exc_info=True)

    def _ready(self) -> None:
        """Connected, with open channels (a channel closed by a channel error is replaced)."""
        if self._consume is None or not self._conn.connected:
            if self._consume is not None:
                self._reset(ConnectionError("connection closed"))
            self._connect()
            return
        if not self._consume.is_open:  # held deliveries died with it (already requeued)
            self._open_consume_channel()
        if not self._publish.is_open:
            self._open_publish_channel()
        if not self._admin.is_open:
            self._admin = self._open_channel()
            self._declared.clear()

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        return (*self._conn.connection_errors, *self._conn.recoverable_connection_errors)

    def _retrying(self, operation: Callable[[], None]) -> None:
        """Run ``operation``; after a lost connection, once more on a new one."""
        self._ready()
        try:
            operation()
        except self._connection_errors() as exc:
            self._reset(exc)
            self._ready()
            operation()

    def _set_qos(self, count: int) -> None:
        if count > self._qos:
            self._consume.basic_qos(0, count, False)
            self._qos = count

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
        if queue not in self._declared:
            self.celery_queue(queue).bind(self._admin).declare()
            self._declared.add(queue)

    def _declare_plain(self, name: str, arguments: dict[str, Any] | None = None,
                       cache: bool = True) -> None:
        if name not in self._declared or not cache:
            self._admin.queue_declare(queue=name, durable=True, auto_delete=False,
                                      arguments=arguments or {})
            if cache:
                self._declared.add(name)

    # ------------------------------------------------------------ publishing

    def publish_messages(self, queue: str, messages: Sequence[CeleryMessage]) -> None:
        """Publish to the default exchange with routing key ``queue``, confirmed as a batch."""
        if not messages:
            return
        wire = [_to_amqp(m, m.headers) for m in messages]

        def run() -> None:
            self.declare(queue)
            self._publish_confirmed([(queue, w) for w in wire])

        self._retrying(run)

    def _publish_confirmed(self, items: Sequence[tuple[str, Any]]) -> None:
        """basic.publish every ``(routing_key, message)``, then wait for all the confirms."""
        first = self._seq + 1
        for routing_key, message in items:
            self._seq += 1
            self._unconfirmed.add(self._seq)
            self._publish.basic_publish(message, exchange="", routing_key=routing_key)
        batch = range(first, self._seq + 1)
        deadline = time.monotonic() + self.confirm_timeout
        while self._unconfirmed.intersection(batch):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"RabbitMQ did not confirm {len(batch)} messages in "
                                   f"{self.confirm_timeout} s")
            self._drain(min(remaining, 1.0))
        nacked = self._nacked.intersection(batch)
        if nacked:
            self._nacked.difference_update(nacked)
            raise amqp.exceptions.MessageNacked(f"RabbitMQ refused {len(nacked)} messages")

    def _on_confirm(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {seq for seq in self._unconfirmed if seq > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        done = {s for s in self._unconfirmed if s <= delivery_tag} if multiple else {delivery_tag}
        self._nacked |= done
        self._unconfirmed -= done

    # ------------------------------------------------------------ consuming

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` deliveries, waiting up to ``timeout`` s for the first.

        Oversized messages are parked, not returned. A lost connection (or a frame py-amqp
        cannot parse) is logged and gives ``[]``; the next call reconnects, and RabbitMQ
        redelivers what was held.
        """
        deadline = time.monotonic() + timeout
        with self._guard(f"fetch from {queue}"):
            self._ready()
            if ack:
                self._ack(ack)
            self._consumer(queue)
            self._set_qos(max_count)
            buffer = self._buffers[queue]
            while not buffer and self._drain(deadline - time.monotonic()):
                self._park_oversized()
            while len(buffer) < max_count and self._drain(0):
                pass
            self._park_oversized()
            return [buffer.popleft() for _ in range(min(max_count, len(buffer)))]
        time.sleep(max(0.0, min(deadline - time.monotonic(), 1.0)))  # no busy loop while down
        return []

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Survive a lost connection or an unparsable frame: log, forget the connection.

        Channel errors (a refused declaration...) are the caller's to see.
        """
        try:
            yield
        except self._conn.channel_errors:
            raise
        except self._connection_errors() as exc:
            self._reset(exc)
        except Exception as exc:  # py-amqp's frame state is lost after a parse error
            log.exception("cannot %s on %s", action, redact_url(self.url))
            self._reset(exc)

    def _consumer(self, queue: str) -> None:
        if queue in self._consumers:
            return
        self.declare(queue)
        self._buffers.setdefault(queue, deque())
        self._consumers[queue] = self._consume.basic_consume(
            queue=queue, callback=lambda raw: self._on_message(queue, raw),
            on_cancel=lambda _tag: self._on_cancel(queue))

    def _on_cancel(self, queue: str) -> None:
        """RabbitMQ cancelled the consumer (queue deleted): the next fetch declares again."""
        log.warning("RabbitMQ cancelled the consumer of %s", queue)
        self._consumers.pop(queue, None)
        self._declared.discard(queue)

    def _drain(self, timeout: float) -> bool:
        """Handle incoming frames for up to ``timeout`` s.

        True when a method arrived or the wait was cut short for a heartbeat check (call again
        with what remains); False when ``timeout`` passed without one.
        """
        self._conn.heartbeat_check()
        wait = max(timeout, 0.0)
        if self._conn.heartbeat:
            wait = min(wait, self._conn.heartbeat / 4)
        try:
            self._conn.drain_events(timeout=wait)
        except TimeoutError:  # socket.timeout
            return timeout > wait
        return True

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

    def _live(self, delivery: Delivery, action: str) -> AmqpTag | None:
        """The tag if its channel is still ours and open; else None (RabbitMQ requeued it)."""
        tag = delivery.tag
        if isinstance(tag, AmqpTag) and tag.channel is self._consume and tag.channel.is_open:
            return tag
        log.warning("cannot %s a message of %s: its channel is gone (RabbitMQ redelivers it)",
                    action, delivery.queue)
        return None

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """basic.ack each delivery (deliveries of a lost connection are skipped)."""
        with self._guard("ack"):
            self._ack(deliveries)

    def _ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            tag = self._live(delivery, "ack")
            if tag is not None:
                self._consume.basic_ack(tag.delivery_tag)

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Back at once (basic.reject requeue), or through a delay queue, then acked.

        The delay queue ``<queue>.bridge.delay.<ms>`` dead-letters the copy back to ``queue``
        through the default exchange; a lost connection leaves the original to RabbitMQ's
        redelivery (at least once, never lost).
        """
        with self._guard(f"requeue to {delivery.queue}"):
            self._requeue(delivery, delay)

    def _requeue(self, delivery: Delivery, delay: float) -> None:
        self._ready()
        tag = self._live(delivery, "requeue")
        if tag is None:
            return
        if delay <= 0:
            self._consume.basic_reject(tag.delivery_tag, requeue=True)
            return
        delay_ms = min(max(1, round(delay * 1000)), MAX_DELAY_MS)
        name = delay_queue_name(delivery.queue, delay_ms)
        self._declare_plain(name, {
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": delivery.queue,
            "x-expires": 2 * delay_ms + 60_000,
        }, cache=False)  # redeclaring renews x-expires: the queue outlives this message
        message = _message_of(delivery)
        self._publish_confirmed([(name, _to_amqp(message, message.headers, drop="expiration"))])
        self._consume.basic_ack(tag.delivery_tag)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park in ``<queue>.bridge.dead`` with the reason (confirmed), then ack."""
        with self._guard(f"dead-letter to {dead_queue_name(delivery.queue)}"):
            self._dead_letter(delivery, reason)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._ready()
        tag = self._live(delivery, "dead-letter")
        if tag is None:
            return
        log.warning("dead-lettering a message of %s: %s", delivery.queue, reason)
        message = _message_of(delivery)
        headers = {**message.headers, REASON_HEADER: reason[:_MAX_REASON],
                   QUEUE_HEADER: delivery.queue, TIME_HEADER: format_rfc3339(datetime.now(UTC))}
        name = dead_queue_name(delivery.queue)
        self._declare_plain(name)
        self._publish_confirmed([(name, _to_amqp(message, headers, drop="expiration"))])
        self._consume.basic_ack(tag.delivery_tag)

    # ------------------------------------------------------------ dead letters

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move ``count`` (0: all) parked messages back to ``queue``; returns how many."""
        moved = 0
        self._ready()
        self._declare_plain(dead_queue_name(queue))
        self.declare(queue)
        if count <= 0:  # what is parked now: a live worker may park a replayed one again
            count = self.queue_depth(dead_queue_name(queue))
        while moved < count:
            batch = min(_REPLAY_BATCH, count - moved)
            done = self._replay_batch(queue, batch)
            moved += done
            if done < batch:
                break
        return moved

    def _replay_batch(self, queue: str, limit: int) -> int:
        """basic.get up to ``limit`` dead letters, publish them to ``queue``, then ack."""
        channel = self._open_channel()
        try:
            raws: list[Any] = []
            while len(raws) < limit:
                raw = channel.basic_get(dead_queue_name(queue))
                if raw is None:
                    break
                raws.append(raw)
            items = []
            for raw in raws:
                message = _message_of(_delivery(queue, raw))
                headers = {k: v for k, v in message.headers.items() if k not in _BRIDGE_HEADERS}
                items.append((queue, _to_amqp(message, headers)))
            if items:
                self._publish_confirmed(items)
                channel.basic_ack(raws[-1].delivery_tag, multiple=True)
            return len(raws)
        finally:
            channel.close()  # anything not acked goes back to the dead queue

    def dead_letters(self, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """The first ``count`` parked messages, left in place:
        ``{"queue", "reason", "time", "headers", "body" | "body_b64"}``."""
        self._ready()
        self._declare_plain(dead_queue_name(queue))
        channel = self._open_channel()
        entries: list[dict[str, Any]] = []
        try:
            while len(entries) < count:
                raw = channel.basic_get(dead_queue_name(queue))
                if raw is None:
                    break
                message = _message_of(_delivery(queue, raw))
                headers = dict(message.headers)
                entry: dict[str, Any] = {"queue": headers.pop(QUEUE_HEADER, queue),
                                         "reason": headers.pop(REASON_HEADER, ""),
                                         "time": headers.pop(TIME_HEADER, ""),
                                         "headers": headers}
                try:
                    entry["body"] = message.body.decode("utf-8")
                except UnicodeDecodeError:
                    entry["body_b64"] = base64.b64encode(message.body).decode("ascii")
                entries.append(entry)
        finally:
            channel.close()  # unacked: all of them stay, in order
        return entries

    # ------------------------------------------------------------ upkeep and inspection

    def queue_depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (passive declare; 0 when it does not exist)."""
        self._ready()
        try:
            _, count, _ = self._admin.queue_declare(queue=queue, passive=True)
        except amqp.exceptions.NotFound:
            self._admin = self._open_channel()  # the 404 closed the channel
            self._declared.clear()
            return 0
        return int(count)

    def maintain(self) -> None:
        """Heartbeats (and frames waiting); reconnects after a lost connection."""
        with self._guard("maintain"):
            self._ready()
            self._drain(0)

    def close(self) -> None:
        """Close the connection: RabbitMQ requeues every message still unacked."""
        self._consume = self._publish = self._admin = None
        self._buffers.clear()
        try:
            self._conn.release()
        except self._connection_errors():  # already gone: RabbitMQ requeues anyway
            self._conn.collect()


# ------------------------------------------------------------------------------ conversions


def _delivery(queue: str, raw: Any) -> Delivery:
    """A py-amqp message as a Delivery; never raises on odd properties."""
    body = raw.body if isinstance(raw.body, bytes) else _as_bytes(raw.body)
    props = dict(getattr(raw, "properties", None) or {})
    headers = props.pop("application_headers", None)
    content_type = props.pop("content_type", None)
    content_encoding = props.pop("content_encoding", None)
    info = getattr(raw, "delivery_info", None) or {}
    message = CeleryMessage(
        body=body, content_type=content_type, content_encoding=content_encoding,
        headers=_without_delay_deaths(queue, headers) if isinstance(headers, dict) else {},
        properties=props)
    tag = AmqpTag(info.get("delivery_tag", 0), getattr(raw, "channel", None),
                  bool(info.get("redelivered")))
    return Delivery(body, queue, tag, message)


def _without_delay_deaths(queue: str, headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` without the ``x-death`` bookkeeping RabbitMQ added when one of our delay
    queues dead-lettered the message back (a user's own dead-lettering is kept)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return headers
    ours = f"{queue}.bridge.delay."
    kept = [d for d in deaths if not (isinstance(d, dict)
                                      and str(d.get("queue", "")).startswith(ours))]
    if len(kept) == len(deaths):
        return headers
    headers = dict(headers)
    if kept:
        headers["x-death"] = kept
    else:
        del headers["x-death"]
    for which in ("x-first-death-", "x-last-death-"):
        if str(headers.get(f"{which}queue", "")).startswith(ours):
            for field in ("queue", "reason", "exchange"):
                headers.pop(f"{which}{field}", None)
    return headers


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    return bytes(body or b"")


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
