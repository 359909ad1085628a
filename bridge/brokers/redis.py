"""machinery's Redis broker, carried by a kombu transport of ours (alias ``machinery+redis``).

The transport speaks machinery's layout instead of kombu's envelope: publishing a body to
queue Q RPUSHes the raw bytes onto the LIST ``Q``; consuming hands back the raw bytes as
``message.body``; a fetched message moves atomically into a processing list of this worker and
ack / reject / requeue map to the reliable-fetch operations of
:mod:`bridge.brokers.redis_layout` (keys, scripts and what works on Cluster are described
there)::

    with Connection("machinery+redis://127.0.0.1:6379/0") as conn:
        queue = conn.SimpleQueue("machinery_tasks")
        queue.put(signature.to_json(), serializer="raw")
        message = queue.get(timeout=1)   # message.body == the raw bytes
        message.ack()

kombu maps ``X+Y://`` URLs to the transport alias ``X``, so the alias ``machinery`` is ours too;
``machinery+redis://``, ``machinery+rediss://`` and ``machinery+redis+socket://`` carry every
URL :mod:`bridge.redisconn` accepts (Sentinel and Cluster through ``transport_options``
``redis_config``). :class:`RedisBroker` uses the channel's batch operations directly.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import kombu.exceptions
import redis
from kombu.connection import Connection
from kombu.transport import virtual

from bridge.brokers.base import Broker, Delivery
from bridge.brokers.redis_keys import QueueKeys, default_worker_id
from bridge.brokers.redis_layout import RedisLayout
from bridge.brokers.redis_window import Windows
from bridge.config import Config, RedisConfig, redact_url
from bridge.protocol.gotime import unix_nano
from bridge.protocol.machinery import Signature
from bridge.redisconn import connect

__all__ = ["Channel", "RedisBroker", "Transport"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
KOMBU_BATCH = 100
"""Messages fetched per round trip for a kombu consumer without a prefetch limit."""


def _as_bytes(body: bytes | str | memoryview) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


class QoS(virtual.QoS):
    """kombu's per-channel unacked bookkeeping, with ack/reject done in Redis."""

    channel: Channel

    def ack(self, delivery_tag: Any) -> None:
        """LREM the message from the processing list."""
        message = self._delivered.get(delivery_tag)
        if message is not None:
            self.channel.layout.ack([(self.channel.held_in(message), message.body)])
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Back to the head of the queue, or parked in the dead-letter list."""
        message = self._delivered.get(delivery_tag)
        if message is not None:
            if requeue:
                self.channel._restore(message)
            else:
                self.channel.park(message, "rejected by a kombu consumer")
        self._quick_ack(delivery_tag)


class Channel(virtual.Channel):
    """A kombu channel over machinery's Redis layout.

    ``transport_options``: ``machinery_url`` (else the connection's hostname), ``redis_config``
    (a :class:`RedisConfig`), ``default_queue``, ``worker_id``, ``heartbeat_ttl`` (seconds),
    ``max_message_bytes`` (larger messages are parked unread), ``max_dead_letters`` (the cap).
    Unacked messages of a consumer that stops draining for longer than ``heartbeat_ttl`` are
    given back to the queue by other consumers; on close they go back at once.
    """

    QoS = QoS
    body_encoding = None  # type: ignore[assignment]  # the raw bytes, never kombu's base64 envelope
    do_restore = True

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]
        options = connection.client.transport_options
        config: RedisConfig = options.get("redis_config") or RedisConfig()
        url = options.get("machinery_url") or self._url_from(connection.client)
        worker_id = options.get("worker_id") or default_worker_id()
        if self.channel_id > 1:
            worker_id = f"{worker_id}.{self.channel_id}"
        poll = config.delayed_tasks_poll_period
        self.layout = RedisLayout(
            connect(url, config),
            default_queue=options.get("default_queue", "machinery_tasks"),
            delayed_key=config.delayed_tasks_key,
            worker_id=worker_id,
            heartbeat_ttl=float(options.get("heartbeat_ttl", 10.0)),
            delayed_poll=(poll if poll > 0 else 500) / 1000,
            max_block=max(config.read_timeout - 1, 0.5) if config.read_timeout else None,
            max_message_bytes=int(options.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)),
            max_dead_letters=options.get("max_dead_letters"),
        )
        self._tags = itertools.count(1)
        self._no_ack: set[str] = set()
        log.debug("machinery redis channel on %s as worker %s", redact_url(url), worker_id)

    @staticmethod
    def _url_from(client: Any) -> str:
        host = client.hostname or "localhost"
        if "://" in host:
            return str(host)
        auth = f"{client.userid or ''}:{client.password}@" if client.password else ""
        vhost = str(client.virtual_host or "0").strip("/") or "0"
        return f"redis://{auth}{host}:{client.port or 6379}/{vhost}"

    # ------------------------------------------------------------ kombu virtual API

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """RPUSH the raw body (kombu's properties and headers are not kept)."""
        self.layout.push({queue: [_as_bytes(message["body"])]})

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """One message, moved to this worker's processing list; Empty when none."""
        self.layout.maintain()
        bodies = self.layout.take(queue, 1, 0)
        if not bodies:
            raise virtual.Empty()
        return self._payload(queue, bodies[0])

    def _get_many(self, queues: Sequence[str], timeout: float | None = None) -> None:
        """Deliver a batch to the consumers: blocking for one queue, a sweep for several."""
        self.layout.maintain()
        estimate = self.qos.can_consume_max_estimate()
        count = KOMBU_BATCH if estimate is None else max(estimate, 1)
        wait = 1.0 if timeout is None else timeout
        for queue in queues:
            bodies = self.layout.take(queue, count, wait if len(queues) == 1 else 0)
            if bodies:
                self._deliver(queue, bodies)
                return
        raise virtual.Empty()

    def _deliver(self, queue: str, bodies: list[bytes]) -> None:
        """Hand each message to kombu; what is left after a failing callback goes back."""
        processing = self.layout.processing_key(queue)
        if queue in self._no_ack:
            self.layout.ack([(processing, body) for body in bodies])
        for done, body in enumerate(bodies):
            try:
                self.connection._deliver(self._payload(queue, body), queue)
            except BaseException:
                if queue not in self._no_ack:
                    for rest in reversed(bodies[done + 1:]):
                        self.layout.put_back(processing, queue, rest, head=True)
                raise

    def _payload(self, queue: str, body: bytes) -> dict[str, Any]:
        return {
            "body": body,
            "content-type": "application/data",  # kombu hands the raw bytes on undecoded
            "content-encoding": "binary",
            "headers": {},
            "properties": {
                "delivery_tag": next(self._tags),
                "body_encoding": None,
                "priority": 0,
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Remember no_ack consumers: their messages are acked as they are fetched."""
        (self._no_ack.add if no_ack else self._no_ack.discard)(queue)
        return super().basic_consume(  # type: ignore[no-untyped-call]
            queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """kombu's basic_get; with no_ack the message is forgotten at once."""
        message = super().basic_get(queue, no_ack, **kwargs)  # type: ignore[no-untyped-call]
        if message is not None and no_ack:
            self.layout.ack([(self.held_in(message), message.body)])
        return message

    def _restore(self, message: Any) -> None:
        """An unacked message goes back to the head of its queue."""
        queue = message.delivery_info["routing_key"]
        self.layout.put_back(self.held_in(message), queue, message.body, head=True)

    def _restore_at_beginning(self, message: Any) -> None:
        self._restore(message)

    def _size(self, queue: str) -> int:
        return self.layout.depth(queue)

    def _purge(self, queue: str) -> int:
        pipe = self.layout.client.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.delete(queue)
        return int(pipe.execute()[0])

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.layout.client.delete(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True  # machinery's queues are implicit: an empty LIST does not exist

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        pass

    # ------------------------------------------------------------ helpers

    def held_in(self, message: Any) -> str:
        """The processing list holding a kombu message."""
        return self.layout.processing_key(message.delivery_info["routing_key"])

    def park(self, message: Any, reason: str) -> None:
        """A kombu message into its queue's dead-letter list."""
        queue = message.delivery_info["routing_key"]
        self.layout.park(self.held_in(message), queue, message.body, reason)

    def close(self) -> None:
        """Restore unacked messages, give back whatever else is held, close the client."""
        if self.closed:
            return
        super().close()  # type: ignore[no-untyped-call]
        try:
            self.layout.release()
        except redis.RedisError as exc:  # the heartbeat recovery will give them back
            log.warning("could not give back held messages on close: %s", exc)
        finally:
            self.layout.lane.close()
            self.layout.client.close()


class Transport(virtual.Transport):
    """kombu transport ``machinery+redis``: machinery's raw Redis layout."""

    Channel = Channel
    driver_type = "redis"
    driver_name = "redis"
    default_port = 6379  # type: ignore[assignment]
    can_parse_url = True  # the URL goes to bridge.redisconn untouched
    polling_interval = 0.05
    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors, redis.ConnectionError, redis.TimeoutError)
    channel_errors = (  # type: ignore[assignment]
        *virtual.Transport.channel_errors, redis.ResponseError)

    def driver_version(self) -> str:
        """redis-py's version."""
        return str(redis.__version__)


class RedisBroker(Broker):
    """machinery's Redis broker with reliable fetch, beside Go producers and workers.

    Publishes exactly as Go does (RPUSH to the routing key, ZADD to the delayed ZSET scored by
    the ETA in Unix nanoseconds). Fetches move messages atomically into a processing list of
    this worker; a heartbeat lets other workers give back what a dead one held. Call
    :meth:`maintain` at least every ``heartbeat_ttl / 3`` seconds while consuming.

    Works with every URL :mod:`bridge.redisconn` accepts: single node, TLS, unix socket,
    Sentinel (``redis.master_name``) and Cluster (several addresses or ``cluster_mode``). On
    Cluster the queue's bookkeeping keys share its slot (hash tags) so fetch, ack, requeue,
    dead-letter, recovery and replay stay atomic; the delayed mover and a delayed requeue
    cross slots and are done in two steps (see :class:`RedisLayout`).
    """

    def __init__(self, url: str, config: Config | None = None, *, worker_id: str | None = None,
                 heartbeat_ttl: float = 10.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_dead_letters: int | None = None) -> None:
        self.config = config or Config(broker=url)
        self.url = url
        self.default_queue = self.config.default_queue
        self.max_message_bytes = max_message_bytes
        self._connection = Connection(  # type: ignore[no-untyped-call]
            transport=Transport, transport_options={
            "machinery_url": url,
            "redis_config": self.config.redis or RedisConfig(),
            "default_queue": self.default_queue,
            "worker_id": worker_id,
            "heartbeat_ttl": heartbeat_ttl,
            "max_message_bytes": max_message_bytes,
            "max_dead_letters": max_dead_letters,  # None: $BRIDGE_MAX_DEAD_LETTERS or 100,000
            "max_retries": 0,  # redisconn decides what to retry; a bad password fails at once
        })
        try:
            self.channel = cast(Channel, self._connection.default_channel)
        except kombu.exceptions.OperationalError as exc:  # kombu's wrapper: show the cause
            if isinstance(exc.__cause__, redis.RedisError):
                raise exc.__cause__ from None
            raise
        self.layout = self.channel.layout
        self.worker_id = self.layout.worker_id
        self.window_take = False
        """Whether :meth:`fetch_later` takes windows (:mod:`bridge.brokers.redis_window`):
        for a consumer that acknowledges its batches whole (the relay)."""
        self._windows = Windows(self.layout.client, self.layout.lane, self.worker_id)
        self.layout.window_order = self._windows.ordered

    def ping(self) -> None:
        """One PING (credentials and TLS are checked on connecting)."""
        self.layout.client.ping()

    def recover_after(self, seconds: float) -> None:
        """Heartbeat TTL: a worker silent this long is dead; its messages go back."""
        self.layout.heartbeat_ttl = max(seconds, 0.5)

    @classmethod
    def from_config(cls, config: Config) -> RedisBroker:
        """The broker of ``config.broker``."""
        return cls(config.broker, config)

    def __repr__(self) -> str:
        return f"RedisBroker({redact_url(self.url)!r}, worker_id={self.worker_id!r})"

    @property
    def delayed_tasks_key(self) -> str:
        """The delayed ZSET's key."""
        return self.layout.delayed_key

    # ------------------------------------------------------------ producing

    def publish(self, signatures: Sequence[Signature]) -> None:
        """RPUSH (or ZADD when the ETA is in the future) every signature, one pipeline.

        An empty RoutingKey is set to the default queue first, on the signature itself, as
        machinery's AdjustRoutingKey does.
        """
        now = time.time_ns()
        lists: dict[str, list[bytes]] = {}
        delayed: list[tuple[int, bytes]] = []
        for sig in signatures:
            if not sig.routing_key:
                sig.routing_key = self.default_queue
            body = sig.to_json()
            eta = unix_nano(sig.eta) if sig.eta is not None else 0
            if eta > now:
                delayed.append((eta, body))
            else:
                lists.setdefault(sig.routing_key, []).append(body)
        self.layout.push(lists, delayed)

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """RPUSH already-encoded bodies onto ``queue``."""
        if bodies:
            self.layout.push({queue: list(bodies)})

    # ------------------------------------------------------------ consuming

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` messages; oversized ones are dead-lettered, not returned.

        ``ack`` is acknowledged first, in the same round trip for messages of this queue.
        """
        processing = self.layout.processing_key(queue)
        ack = self._settle(ack)
        same = [d.body for d in ack if self._held_in(d) == processing]
        if len(same) < len(ack):
            self.layout.ack((self._held_in(d), d.body) for d in ack
                            if self._held_in(d) != processing)
        return self._deliveries(queue, processing,
                                self.layout.take(queue, max_count, timeout, same))

    def fetch_later(self, queue: str, max_count: int, ack: Sequence[Delivery] = ()
                    ) -> Callable[[], list[Delivery]] | None:
        """The take sent now (a window when ``window_take``, else the take script), its
        deliveries read by the call returned."""
        processing = self.layout.processing_key(queue)
        if self.window_take and max_count > 0 and self.layout.consumes(queue):
            return self._window_later(queue, max_count, ack)
        if any(self._held_in(d) != processing for d in ack):
            return None
        taken = self.layout.take_later(queue, max_count, [d.body for d in ack])
        if taken is None:
            return None
        return lambda: self._deliveries(queue, processing, taken())

    def _window_later(self, queue: str, max_count: int, ack: Sequence[Delivery]
                      ) -> Callable[[], list[Delivery]] | None:
        """:meth:`fetch_later` by a window; the acks of windows acked whole go with it, the
        others first, by body. The take script takes where the window take cannot."""
        drop, rest = self._windows.settle(ack)
        if rest:
            self.layout.ack((self._held_in(d), d.body) for d in rest)
        begun = self._windows.begin(queue, max_count, self.layout.gate)
        if begun is None:
            self._drop_windows(drop)
            taken = self.layout.take_later(queue, max_count)
            processing = self.layout.processing_key(queue)
            return None if taken is None else lambda: self._deliveries(queue, processing,
                                                                       taken())
        window, read = begun

        def later() -> list[Delivery]:
            try:
                bodies = read()
            except redis.ResponseError as exc:  # SORT or MEMORY refused (an ACL), a queue
                log.info("window take of %s refused (%s): the take script takes", queue, exc)
                self.window_take = False  # that is not a list...: the script says why
                bodies = None
            if bodies is None:
                return self._deliveries(queue, self.layout.processing_key(queue),
                                        self.layout.take(queue, max_count, 0))
            deliveries = self._deliveries(queue, window, bodies)
            self._windows.hold(window, deliveries)
            return deliveries
        return later

    def _settle(self, acks: Sequence[Delivery]) -> list[Delivery]:
        """Delete the windows ``acks`` acknowledge whole; the acks left to go by body."""
        drop, rest = self._windows.settle(acks)
        self._drop_windows(drop)
        return rest

    def _drop_windows(self, windows: Sequence[str]) -> None:
        if windows:
            self.layout.client.delete(*windows)
            self._windows.dropped(windows)

    def _deliveries(self, queue: str, processing: str, bodies: Sequence[bytes]
                    ) -> list[Delivery]:
        """Deliveries of taken ``bodies``; oversized ones are dead-lettered instead."""
        deliveries = []
        for body in bodies:
            if len(body) > self.max_message_bytes:
                self._park(processing, queue, body, f"message of {len(body)} bytes exceeds "
                           f"max_message_bytes={self.max_message_bytes}")
            else:
                deliveries.append(Delivery(body, queue, processing))
        return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages from the processing lists (windows acked whole: deleted)."""
        rest = self._settle(deliveries)
        if rest:
            self.layout.ack((self._held_in(d), d.body) for d in rest)

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Back to the queue's tail, or into the delayed ZSET at now + ``delay``."""
        if delay > 0:
            eta = time.time_ns() + int(delay * 1e9)
            self.layout.delay(self._held_in(delivery), delivery.body, eta)
        else:
            self.layout.put_back(self._held_in(delivery), delivery.queue, delivery.body,
                                 head=False)
        self._windows.forget(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Into ``bridge:dead:{queue}`` with the reason."""
        self._park(self._held_in(delivery), delivery.queue, delivery.body, reason)
        self._windows.forget(delivery)

    def _park(self, processing: str, queue: str, body: bytes, reason: str) -> None:
        log.warning("dead-lettering a message of %s: %s", queue, reason)
        self.layout.park(processing, queue, body, reason)

    def unknown_held(self, queue: str, known: Sequence[Delivery]) -> list[Delivery]:
        """What this worker's processing list and windows of ``queue`` hold beyond
        ``known`` (a take whose reply an outage lost), read in one round trip; what a window
        holds is held by it from now on."""
        processing = self.layout.processing_key(queue)
        lists = [processing, *QueueKeys.of(queue).windows(self.worker_id)]
        pipe = self.layout.client.pipeline(transaction=False)
        for key in lists:
            pipe.lrange(key, 0, -1)
        found: list[Delivery] = []
        for key, bodies in zip(lists, cast("list[list[bytes]]", pipe.execute()), strict=True):
            left = Counter(d.body for d in known if self._held_in(d) == key)
            unknown = []
            for body in bodies:
                if left[body]:
                    left[body] -= 1
                else:
                    unknown.append(body)
            deliveries = self._deliveries(queue, key, unknown)
            if key != processing:
                self._windows.hold(key, deliveries)
            found += deliveries
        return found

    def _held_in(self, delivery: Delivery) -> str:
        if isinstance(delivery.tag, str):
            return delivery.tag
        return self.layout.processing_key(delivery.queue)

    # ------------------------------------------------------------ upkeep

    def maintain(self) -> None:
        """Heartbeat, move due delayed tasks, recover dead workers' messages (each when due)."""
        self.layout.maintain()

    def move_delayed(self) -> int:
        """Move due delayed tasks to their queues now; returns how many."""
        return self.layout.move_due()

    def recover(self, queue: str | None = None) -> int:
        """Give back to ``queue`` what its dead workers held; returns how many."""
        return self.layout.recover(queue or self.default_queue)

    def close(self) -> None:
        """Give back what this worker still holds and close the connection (windows acked
        whole are deleted first, when Redis answers)."""
        try:
            self._drop_windows(self._windows.unconfirmed())
        except redis.RedisError as exc:  # given back below, or by recovery: twice, not lost
            log.warning("could not delete acknowledged windows on close: %s", exc)
        self._connection.release()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------ inspection

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        return self.layout.depth(queue)

    def delayed_count(self) -> int:
        """Tasks in the delayed ZSET."""
        return self.layout.delayed_count()

    def processing(self, queue: str) -> dict[str, int]:
        """Messages held per worker of ``queue``."""
        return self.layout.processing(queue)

    def worker_health(self, queue: str) -> dict[str, tuple[int, bool]]:
        """Per worker of ``queue``: messages held, and whether it is alive."""
        return self.layout.worker_health(queue)

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The first ``count`` waiting messages, left in place."""
        return self.layout.peek(queue, count)

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries ``{"queue", "reason", "time", "body" | "body_b64" |
        "body_ref"}`` (LRANGE semantics: page them)."""
        return self.layout.dead_letters(queue, start, stop)

    def dead_count(self, queue: str) -> int:
        """Dead letters parked for ``queue``."""
        return self.layout.dead_count(queue)

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move ``count`` (0: all) dead letters back to ``queue``, raw bytes restored."""
        return self.layout.replay_dead(queue, count)

    def delete_dead(self, queue: str, count: int = 0) -> int:
        """Delete the oldest ``count`` (0: all) dead letters of ``queue``."""
        return self.layout.delete_dead(queue, count)
