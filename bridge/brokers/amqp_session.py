"""One RabbitMQ connection for both AMQP brokers (:class:`~bridge.brokers.amqp.AmqpBroker`,
:class:`~bridge.brokers.celery_amqp.CeleryAmqpBroker`): its channels, publisher confirms,
reconnects.

kombu opens the connection (URL parsing, ``amqps://`` TLS, heartbeats, failover between
several URLs); the channels are py-amqp's own, used directly so declarations carry exactly
the arguments given and bodies stay raw bytes. Three channels: ``consume`` (prefetch window,
consumers, acks), ``publish`` (confirm mode) and ``admin`` (declarations, basic.get), so a
refused declaration never takes the deliveries of the consume channel with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import amqp
from kombu import Connection

from bridge.config import redact_url

__all__ = ["AmqpSession", "Outgoing"]

log = logging.getLogger("bridge.brokers.amqp")


@dataclass(slots=True)
class Outgoing:
    """One basic.publish."""

    exchange: str
    routing_key: str
    message: Any  # amqp.Message


class AmqpSession:
    """The connection and its channels; reconnects on the next call after a loss.

    ``on_consume_lost`` runs whenever the consume channel is replaced (its consumers are gone
    and RabbitMQ requeued what it delivered). ``lock`` serialises every use.
    """

    def __init__(self, urls: Sequence[str], *, on_consume_lost: Callable[[], None],
                 heartbeat: float = 60.0, connect_timeout: float = 10.0,
                 confirm_timeout: float = 30.0, ssl: bool | dict[str, Any] | None = None,
                 transport_options: dict[str, Any] | None = None) -> None:
        self.url = urls[0]
        self.confirm_timeout = confirm_timeout
        self.conn = Connection(list(urls) if len(urls) > 1 else urls[0], heartbeat=heartbeat,
                               connect_timeout=connect_timeout, ssl=ssl or False,
                               transport_options=dict(transport_options or {}))
        if self.conn.transport.driver_type != "amqp":
            raise ValueError(f"not an AMQP URL: {redact_url(self.url)}")
        self.lock = threading.RLock()
        self.consume: Any = None
        self.publish: Any = None
        self.admin: Any = None
        self.declared: set[tuple[str, str]] = set()
        """What was declared on this connection (``("queue", name)``...)."""
        self._failover = len(urls) - 1
        self._lost_since: float | None = None  # when the connection was lost, until back
        self._on_consume_lost = on_consume_lost
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._seq = 0
        self._connect()

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        """(Re)open the connection and the consume, publish (confirm mode) and admin channels."""
        self.conn.ensure_connection(max_retries=self._failover, interval_start=0,
                                    reraise_as_library_errors=False)
        self._open_consume_channel()
        self._open_publish_channel()
        self.admin = self.open_channel()
        self.declared.clear()
        if self._lost_since is not None:
            log.warning("AMQP connection to %s reconnected after %.1f s", redact_url(self.url),
                        time.monotonic() - self._lost_since)
            self._lost_since = None
        log.debug("connected to %s", redact_url(self.conn.as_uri()))

    def open_channel(self) -> Any:
        """A new py-amqp channel that leaves bodies as bytes."""
        channel = self.conn.channel()
        channel.auto_decode = False
        return channel

    def _open_consume_channel(self) -> None:
        self.consume = self.open_channel()
        self._on_consume_lost()

    def _open_publish_channel(self) -> None:
        """A channel in confirm mode; its publish sequence numbers start again at 1."""
        self.publish = self.open_channel()
        self.publish.confirm_select()
        self.publish.events["basic_ack"].add(self._on_confirm)
        self.publish.events["basic_nack"].add(self._on_nack)
        self._unconfirmed.clear()
        self._nacked.clear()
        self._seq = 0

    def reset(self, why: BaseException) -> None:
        """Forget the connection: RabbitMQ requeues whatever it still had unacked."""
        if self._lost_since is None:  # once per outage, however many tries it takes
            self._lost_since = time.monotonic()
            log.warning("AMQP connection to %s lost (%s); reconnecting", redact_url(self.url),
                        why)
        else:
            log.debug("AMQP connection to %s still lost (%s)", redact_url(self.url), why)
        self.consume = self.publish = self.admin = None
        self.declared.clear()
        self._on_consume_lost()
        try:
            self.conn.collect()
        except Exception:  # the socket is gone either way
            log.debug("collect after connection loss failed", exc_info=True)

    def ready(self) -> None:
        """Connected, with open channels (a channel closed by a channel error is replaced)."""
        if self.consume is None or not self.conn.connected:
            if self.consume is not None:
                self.reset(ConnectionError("connection closed"))
            self._connect()
            return
        if not self.consume.is_open:
            self._open_consume_channel()
        if not self.publish.is_open:
            self._open_publish_channel()
        if not self.admin.is_open:
            self.reopen_admin()

    def reopen_admin(self) -> None:
        """A new admin channel (a refused or passive declaration closed the old one)."""
        self.admin = self.open_channel()
        self.declared.clear()

    def connection_errors(self) -> tuple[type[BaseException], ...]:
        return (*self.conn.connection_errors, *self.conn.recoverable_connection_errors)

    def retrying(self, operation: Callable[[], None]) -> None:
        """Run ``operation``; after a lost connection, once more on a new one."""
        with self.lock:
            self.ready()
            try:
                operation()
            except self.connection_errors() as exc:
                self.reset(exc)
                self.ready()
                operation()

    @contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Survive a lost connection or an unparsable frame: log, forget the connection.

        Channel errors (a refused declaration...) are the caller's to see.
        """
        with self.lock:
            try:
                yield
            except self.conn.channel_errors:
                raise
            except self.connection_errors() as exc:
                self.reset(exc)
            except Exception as exc:  # py-amqp's frame state is lost after a parse error
                log.exception("cannot %s on %s", action, redact_url(self.url))
                self.reset(exc)

    def drain(self, timeout: float) -> bool:
        """Handle incoming frames for up to ``timeout`` s.

        True when a method arrived or the wait was cut short for a heartbeat check (call again
        with what remains); False when ``timeout`` passed without one.
        """
        self.conn.heartbeat_check()
        wait = max(timeout, 0.0)
        if self.conn.heartbeat:
            wait = min(wait, self.conn.heartbeat / 4)
        try:
            self.conn.drain_events(timeout=wait)
        except TimeoutError:  # socket.timeout
            return timeout > wait
        return True

    def close(self) -> None:
        """Close the connection: RabbitMQ requeues every message still unacked."""
        with self.lock:
            self.consume = self.publish = self.admin = None
            self._on_consume_lost()
            try:
                self.conn.release()
            except self.connection_errors():  # already gone: RabbitMQ requeues anyway
                self.conn.collect()

    # ------------------------------------------------------------ declarations and publishing

    def declare_plain(self, name: str, arguments: dict[str, Any] | None = None,
                      cache: bool = True) -> None:
        """A durable queue reached through the default exchange (``cache=False``: declare
        again, which restarts its ``x-expires`` clock)."""
        if cache and ("queue", name) in self.declared:
            return
        self.admin.queue_declare(queue=name, durable=True, auto_delete=False,
                                 arguments=arguments or {})
        if cache:
            self.declared.add(("queue", name))

    def depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (passive declare; 0 when it does not exist)."""
        try:
            _, count, _ = self.admin.queue_declare(queue=queue, passive=True)
        except amqp.exceptions.NotFound:
            self.reopen_admin()  # the 404 closed the channel
            return 0
        return int(count)

    def publish_confirmed(self, items: Sequence[Outgoing]) -> None:
        """basic.publish every message, then wait until RabbitMQ confirmed them all."""
        first = self._seq + 1
        for out in items:
            self._seq += 1
            self._unconfirmed.add(self._seq)
            self.publish.basic_publish(out.message, exchange=out.exchange,
                                       routing_key=out.routing_key)
        batch = range(first, self._seq + 1)
        deadline = time.monotonic() + self.confirm_timeout
        while self._unconfirmed.intersection(batch):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"RabbitMQ did not confirm {len(batch)} messages in "
                                   f"{self.confirm_timeout} s")
            self.drain(min(remaining, 1.0))
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
