"""Celery's Redis broker: kombu's exact layout, shared with real Celery producers and workers.

Keys and scripts are in :mod:`bridge.brokers.celery_redis_layout`. What differs from kombu:

* **No loss window.** kombu BRPOPs an envelope and only then records it in ``unacked``; a
  worker dying in between loses it, and an item that is not an envelope kills the worker and
  is lost (reference §1.7, §3.8). Here one Lua call moves a batch from the lists straight into
  ``unacked`` / ``unacked_index`` (kombu's records, so Celery's ``restore_visible`` and ours
  treat them alike), after acking the deliveries passed along.
* **Blocking without a loss window.** When every list is empty, the fetch BLMOVEs from the
  bucket-0 list into a staging list of its own (under a short lease; the reply, the message
  itself, is skipped) and the Lua call in the same round trip moves it on into ``unacked``.
  A staged item of a worker whose lease expired goes back to the queue (``maintain`` / the
  first fetch of any bridge worker). Only bucket 0 wakes the wait at
  once; the other buckets are checked every ``block_slice`` seconds (1 s, kombu's BRPOP timeout).
  Measured (local redis-server, 2 shared cores): wake-up after a publish 1.5 ms median; a
  50 ms polling loop had the same median but a 53 ms tail and 20 idle calls/s per worker.
* **Bad input is parked.** Items that are not valid envelopes (not JSON, no properties, a null
  or duplicate delivery tag, bad base64, oversized) go to ``bridge:celery:dead:<queue>`` with
  the reason and a log line; ``replay_dead`` puts them back. An oversized one is sized and
  parked without being read (see :mod:`bridge.brokers.redis_dead`, also for the cap).
* **Throughput** (same machine): fetch + ack riding on the next fetch, 9-18k msg/s with
  batches of 10-500 (1.5k/s one at a time; kombu's ``SimpleQueue`` get + ack: 0.7k/s);
  ``publish_messages`` 17-32k msg/s in batches of 1000.
* **Delayed requeue.** ``requeue(delay>0)`` moves the envelope atomically into
  ``bridge:celery:delayed:<queue>``; ``maintain`` of a bridge broker moves it back when due.
  Celery workers do not know that key: with only Celery workers nobody moves it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import redis
import redis.cluster
from redis.exceptions import LockError

from bridge.brokers.base import CeleryBroker, Delivery
from bridge.brokers.celery_redis_inspect import (
    BATCH,
    CeleryRedisInspection,
    UnackedEntry,
    priority_of,
)
from bridge.brokers.celery_redis_layout import PRIORITY_STEPS, SEP, CeleryKeys, Scripts
from bridge.brokers.celery_redis_window import Taken, WindowTake
from bridge.brokers.dead_letters import now_rfc3339
from bridge.brokers.redis_dead import DROPS, default_max_dead_letters, gate_bytes
from bridge.config import RedisConfig, redact_url
from bridge.errors import DecodeError, clip
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.kombu_envelope import (
    DEFAULT_MAX_SIZE,
    decode_envelope,
    mark_redelivered,
    to_envelope,
)
from bridge.redisconn import RedisClient, connect
from bridge.redislane import Lane, run_script, run_script_later

__all__ = ["CeleryRedisBroker", "UnackedEntry"]

log = logging.getLogger(__name__)

YIELD_AFTER_WAKE = 0.0002
"""Seconds a fetch woken from its blocked wait sleeps before the messages are handed on.
Celery's worker records a message in kombu's unacked between receiving and running it, a
round trip in which the producing thread (in the same process: a test, an app that sends
and then reads a flag) runs on; ours records it in the same script as the take, so without
this it would take the GIL from that thread first. Only after an idle wait: a busy worker
never sleeps here."""


class CeleryRedisBroker(CeleryRedisInspection, CeleryBroker):
    """kombu's Redis transport layout with reliable batch fetch (see the module docstring).

    Options (kombu's transport options of the same name where there is one):
    ``global_keyprefix``, ``visibility_timeout`` (3600 s), ``priority_steps`` ([0, 3, 6, 9]),
    ``sep``, ``unacked_key`` / ``unacked_index_key`` / ``unacked_mutex_key``,
    ``unacked_mutex_expire`` (300 s); ours: ``restore_interval`` (how often ``maintain``
    restores timed-out entries, 10 s), ``block_slice`` (1 s), ``lease_ttl`` (10 s),
    ``delayed_poll`` (0.5 s), ``max_message_bytes``, ``max_dead_letters`` (the dead list's
    cap; None: ``$BRIDGE_MAX_DEAD_LETTERS`` or 100,000), ``worker_id``.
    """

    def __init__(self, client: RedisClient, *, url: str = "", global_keyprefix: str = "",
                 visibility_timeout: float = 3600.0,
                 priority_steps: Sequence[int] = PRIORITY_STEPS, sep: str = SEP,
                 unacked_key: str = "unacked", unacked_index_key: str = "unacked_index",
                 unacked_mutex_key: str = "unacked_mutex", unacked_mutex_expire: int = 300,
                 restore_interval: float = 10.0, block_slice: float = 1.0,
                 lease_ttl: float = 10.0, delayed_poll: float = 0.5,
                 max_message_bytes: int = DEFAULT_MAX_SIZE, worker_id: str | None = None,
                 default_queue: str = "celery", max_dead_letters: int | None = None) -> None:
        if isinstance(client, redis.cluster.RedisCluster):
            raise ValueError("kombu's Redis layout does not work on Redis Cluster")
        self.client: redis.Redis = client
        self.url = url
        self.keys = CeleryKeys(global_keyprefix, sep, tuple(sorted(priority_steps)),
                               unacked_key, unacked_index_key, unacked_mutex_key)
        self.scripts = Scripts(client)
        self.visibility_timeout = visibility_timeout
        self.unacked_mutex_expire = unacked_mutex_expire
        self.restore_interval = restore_interval
        self.block_slice = block_slice
        self.lease_ttl = lease_ttl
        self.delayed_poll = delayed_poll
        self.max_message_bytes = max_message_bytes
        self.gate = gate_bytes(max_message_bytes)  # 0 when the server refuses SORT/MEMORY
        self.max_dead_letters = (default_max_dead_letters() if max_dead_letters is None
                                 else max_dead_letters)
        self.lane = Lane(client)
        self.worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
        self.default_queue = default_queue
        self._window = WindowTake(client, self.lane, self.keys, self.worker_id,
                                  max_message_bytes, int((block_slice + lease_ttl) * 1000))
        self.window_take = False
        """True: a prefetched take copies its window unread and records it from here
        (:mod:`bridge.brokers.celery_redis_window`); False: the take script."""
        self._held: dict[str, Delivery] = {}
        self._queues: set[str] = set()
        self._bound: set[str] = set()
        self._lock = threading.Lock()
        self._next = {"delayed": 0.0, "staged": 0.0, "restore": 0.0}
        self.decode_on_fetch = True
        """False: fetched deliveries carry no ``message`` until :meth:`decode` reads it (a
        consumer that reads the raw envelope first, as the relay's quick path does)."""

    @classmethod
    def from_url(cls, url: str, redis_config: RedisConfig | None = None,
                 **options: Any) -> CeleryRedisBroker:
        """A broker on any URL :mod:`bridge.redisconn` accepts; ``options`` as for the class."""
        return cls(connect(url, redis_config), url=url, **options)

    def __repr__(self) -> str:
        return (f"CeleryRedisBroker({redact_url(self.url)!r}, "
                f"global_keyprefix={self.keys.prefix!r}, worker_id={self.worker_id!r})")

    # ------------------------------------------------------------ producing

    def declared(self, queue: str) -> None:
        """:meth:`declare_queue` unless this broker did already."""
        if queue not in self._bound:
            self.declare_queue(queue)

    def declare_queue(self, queue: str, pipe: Any = None) -> None:
        """Write the binding Celery writes for its queue ``queue`` (exchange and key alike)."""
        target = pipe if pipe is not None else self.client
        target.sadd(self.keys.binding(queue), self.keys.binding_member(queue, queue))
        self._bound.add(queue)

    def publish_messages(self, queue: str, messages: Sequence[CeleryMessage]) -> None:
        """LPUSH each message's envelope onto its priority list of ``queue``; one round trip."""
        self._push(queue, self._envelopes(queue, messages))

    def _envelopes(self, queue: str, messages: Sequence[CeleryMessage]
                   ) -> dict[str, list[bytes]]:
        by_list: dict[str, list[bytes]] = {}
        for msg in messages:
            raw = to_envelope(msg, routing_key=queue)
            by_list.setdefault(self.keys.list_for(queue, msg.priority), []).append(raw)
        return by_list

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """LPUSH already-encoded envelopes (their priority picks the list), one round trip."""
        by_list: dict[str, list[bytes]] = {}
        for raw in bodies:
            by_list.setdefault(self.keys.list_for(queue, priority_of(raw)), []).append(raw)
        self._push(queue, by_list)

    def _push(self, queue: str, by_list: dict[str, list[bytes]]) -> None:
        if not by_list:
            return
        pipe = self.client.pipeline(transaction=False)
        if queue not in self._bound:
            self.declare_queue(queue, pipe)
        for key, items in by_list.items():
            for start in range(0, len(items), 10_000):
                pipe.lpush(key, *items[start:start + 10_000])
        pipe.execute()

    # ------------------------------------------------------------ consuming

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` deliveries straight into kombu's ``unacked`` (one Lua call when
        messages wait), acking ``ack`` in the same call; waits up to ``timeout`` for the first.
        """
        if queue not in self._queues:
            self._start_consuming(queue)
        self._window.write()
        tags = [self._release(d) for d in ack]
        items = self._take(queue, max_count, tags) if max_count > 0 or tags else []
        if items or timeout <= 0 or max_count <= 0:
            return self._deliveries(queue, items)
        deadline = time.monotonic() + timeout
        while not items:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            items = self._wait(queue, max_count, max(min(left, self.block_slice), 0.01))
        if items:  # woken by a publish: let the thread that published go on first, as a
            time.sleep(YIELD_AFTER_WAKE)  # Celery worker does while it records the unacked
        return self._deliveries(queue, items)

    def fetch_later(self, queue: str, max_count: int, ack: Sequence[Delivery] = ()
                    ) -> Callable[[], list[Delivery]] | None:
        """The take sent now (the take script, or :class:`WindowTake` when ``window_take``),
        its deliveries read by the call returned."""
        if queue not in self._queues or max_count < 1:
            return None
        tags = [str(d.tag) for d in ack]  # released once the take's reply is read
        taking = (self._window.begin(queue, max_count, tags) if self.gate and self.window_take
                  else self._script_later(queue, max_count, tags))
        if taking is None:
            return None

        def read() -> list[Delivery]:
            try:
                items, acked = taking()  # None: the window take leaves it to the script
            except redis.ResponseError:  # an ACL refusing SORT/MEMORY: _take says so, ungated
                items, acked = None, False
            if items is None:
                items = self._take(queue, max_count, () if acked else tags)
            for delivery in ack:
                self._release(delivery)
            return self._deliveries(queue, items)
        return read

    def _script_later(self, queue: str, max_count: int, tags: list[str]
                      ) -> Callable[[], tuple[Taken, bool]] | None:
        """The take script sent now; the call returned reads what it took (acks done)."""
        keys, args = self._take_args(queue, max_count, tags)
        later = run_script_later(self.lane, self.scripts.take, keys, args)
        if later is None:
            return None
        return lambda: (self._taken(queue, later()), True)

    def unknown_held(self, queue: str, known: Sequence[Delivery]) -> list[Delivery]:
        """What this worker's last take of ``queue`` left in kombu's unacked beyond ``known``
        (a take whose reply an outage lost), as deliveries held from now on."""
        self._window.write()
        raw = self.client.get(self.keys.taken(queue, self.worker_id))
        taken = json.loads(raw) if raw else []
        seen = {str(d.tag) for d in known}
        lost = [t for t in taken if type(t) is str and t not in seen]
        if not lost:
            return []
        records = cast("list[bytes | None]",
                       self.client.hmget(self.keys.key(self.keys.unacked), lost))
        items = []
        for tag, record in zip(lost, records, strict=True):
            try:  # acked or restored meanwhile: None
                items.append((json.dumps(json.loads(record or b"null")[0]).encode(),
                              tag.encode()))
            except (ValueError, TypeError, IndexError, KeyError):
                continue
        return self._deliveries(queue, items)

    def _wait(self, queue: str, count: int, seconds: float) -> list[tuple[bytes, bytes]]:
        """One blocked wait: lease, BLMOVE into our staging list (its reply, the message,
        skipped) and the take script, in one round trip."""
        lease = ("SET", self.keys.lease(queue, self.worker_id), b"1",
                 "PX", int((self.block_slice + self.lease_ttl) * 1000))
        block = ("BLMOVE", self.keys.lists(queue)[0], self.keys.staging(queue, self.worker_id),
                 "RIGHT", "LEFT", seconds)
        keys, args = self._take_args(queue, count, ())
        replies = self.lane.run_quiet(
            [lease, block, ("EVALSHA", self.scripts.take.sha, len(keys), *keys, *args)],
            quiet={1})
        if replies is None or any(isinstance(r, redis.ResponseError) for r in replies):
            if replies is None:  # the lane is busy: the moved message comes back whole here
                pipe = self.client.pipeline(transaction=False)
                pipe.set(self.keys.lease(queue, self.worker_id), b"1",
                         px=int((self.block_slice + self.lease_ttl) * 1000))
                pipe.blmove(self.keys.lists(queue)[0], self.keys.staging(queue, self.worker_id),
                            seconds, "RIGHT", "LEFT")  # type: ignore[arg-type]
                pipe.execute()
            return self._take(queue, count, ())  # loads the script, or raises
        return self._taken(queue, replies[1])

    def _start_consuming(self, queue: str) -> None:
        with self._lock:
            self.client.sadd(self.keys.stagers(queue), self.worker_id)
            self._queues.add(queue)
        self.recover_staged(queue)

    def _take_args(self, queue: str, count: int, acks: Sequence[str]
                   ) -> tuple[list[str], list[Any]]:
        keys = [self.keys.key(self.keys.unacked), self.keys.key(self.keys.unacked_index),
                self.keys.dead(queue), self.keys.staging(queue, self.worker_id),
                self.keys.stage(queue, self.worker_id), self.keys.dead_seq(queue),
                self.keys.taken(queue, self.worker_id), *self.keys.lists(queue)]
        return keys, [max(count, 0), repr(time.time()), self.max_message_bytes, queue,
                      now_rfc3339(), self.gate, self.max_dead_letters,
                      self.keys.dead_body_prefix(queue), *acks]

    def _take(self, queue: str, count: int, acks: Sequence[str]) -> list[tuple[bytes, bytes]]:
        keys, args = self._take_args(queue, count, acks)
        try:
            reply = run_script(self.lane, self.scripts.take, keys, args)
        except redis.ResponseError as exc:
            text = str(exc).upper()
            if not (self.gate and "NOPERM" in text and ("SORT" in text or "MEMORY" in text)):
                raise
            log.warning("Redis refuses SORT or MEMORY to our scripts (%s): messages are read "
                        "before their size is checked", exc)
            self.gate = 0
            keys, args = self._take_args(queue, count, acks)
            reply = self.scripts.take(keys=keys, args=args)
        return self._taken(queue, reply)

    def _taken(self, queue: str, reply: Any) -> list[tuple[bytes, bytes]]:
        items, tags, reasons, dropped = reply
        for reason in reasons:
            log.warning("parked a message of %s in %s: %s", queue, self.keys.dead(queue),
                        reason.decode("utf-8", "replace"))
        DROPS.dropped(self.keys.dead(queue), int(dropped), self.max_dead_letters)
        return list(zip(items, tags, strict=True))

    def _deliveries(self, queue: str, items: Iterable[tuple[bytes, bytes]]) -> list[Delivery]:
        out = []
        for raw, tag_bytes in items:
            tag = tag_bytes.decode("utf-8", "replace")  # as the take recorded it in unacked
            delivery = (self._decoded(raw, queue, tag) if self.decode_on_fetch
                        else Delivery(raw, queue, tag))
            if delivery is None:
                continue
            self._held.pop(tag, None)  # a restored one: newest position
            self._held[tag] = delivery
            out.append(delivery)
        return out

    def decode(self, delivery: Delivery) -> Delivery | None:
        """A delivery fetched undecoded (``decode_on_fetch`` False) with its kombu message;
        None when it is not a kombu envelope of its tag: then it is parked, as a fetch
        that decodes parks it."""
        decoded = self._decoded(delivery.body, delivery.queue, delivery.tag)
        if decoded is None:  # parked: no longer held
            self._held.pop(delivery.tag, None)
        return decoded

    def _decoded(self, raw: bytes, queue: str, tag: str) -> Delivery | None:
        try:
            env = decode_envelope(raw, max_size=self.max_message_bytes)
        except DecodeError as exc:  # valid for the Lua check, not for kombu's reader
            self._park(Delivery(raw, queue, tag), str(exc))
            return None
        if env.delivery_tag != tag:  # the take read it from the envelope's end
            self._park(Delivery(raw, queue, tag),
                       f"properties.delivery_tag {env.delivery_tag!r} is not the tag at the "
                       "envelope's end (kombu writes properties last)")
            return None
        return Delivery(raw, queue, tag, env.message)

    def _release(self, delivery: Delivery) -> str:
        self._held.pop(delivery.tag, None)
        return str(delivery.tag)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """ZREM + HDEL from kombu's indices (MULTI, as kombu's ack), one round trip."""
        if not deliveries:
            return
        self._window.write()
        tags = [self._release(d) for d in deliveries]
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.key(self.keys.unacked_index), *tags)
        pipe.hdel(self.keys.key(self.keys.unacked), *tags)
        pipe.execute()

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """delay 0: LPUSH back (kombu's ``reject(requeue=True)``, flagged redelivered);
        delay > 0: into our delayed ZSET of the queue, due at now + ``delay``."""
        tag = self._release(delivery)
        payload = mark_redelivered(delivery.body)
        if delay > 0:
            self._queues.add(delivery.queue)
            self._move_unacked(tag, [self.keys.delayed(delivery.queue)], payload, "zadd",
                               score=time.time() + delay)
        else:
            target = self.keys.list_for(delivery.queue, priority_of(delivery.body))
            self._move_unacked(tag, [target], payload, "lpush")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Into ``bridge:celery:dead:<queue>`` with the reason (out of ``unacked``)."""
        self._release(delivery)
        self._park(delivery, reason)

    def _park(self, delivery: Delivery, reason: str) -> None:
        self._window.write()
        queue = delivery.queue
        log.warning("parked a message of %s in %s: %s", queue, self.keys.dead(queue), reason)
        dropped = int(self.scripts.park_unacked(
            keys=[self.keys.key(self.keys.unacked), self.keys.key(self.keys.unacked_index),
                  self.keys.dead(queue), self.keys.dead_seq(queue)],
            args=[str(delivery.tag), delivery.body, clip(reason), now_rfc3339(),
                  self.max_dead_letters, self.keys.dead_body_prefix(queue), queue]))
        if dropped < 0:
            log.debug("delivery %s is no longer unacked (acked or restored)", delivery.tag)
        DROPS.dropped(self.keys.dead(queue), dropped, self.max_dead_letters)

    def _move_unacked(self, tag: str, targets: Sequence[str], value: bytes, how: str, *,
                      expected: bytes = b"", score: float = 0.0) -> bool:
        self._window.write()
        keys = [self.keys.key(self.keys.unacked), self.keys.key(self.keys.unacked_index),
                *targets]
        done = self.scripts.move_unacked(keys=keys, args=[tag, expected, how, value,
                                                          repr(score)])
        if not done:
            log.debug("delivery %s is no longer unacked (acked or restored)", tag)
        return bool(done)

    # ------------------------------------------------------------ upkeep

    def maintain(self) -> None:
        """Move due delayed requeues, give back expired staged items, restore timed-out
        unacked entries (each when due; call as often as you like)."""
        now = time.monotonic()
        if self._due("delayed", now, self.delayed_poll):
            for queue in list(self._queues):
                self.move_delayed(queue)
        if self._due("staged", now, self.lease_ttl / 2):
            for queue in list(self._queues):
                self.recover_staged(queue)
        if self._due("restore", now, self.restore_interval):
            self.restore_visible()

    def _due(self, what: str, now: float, period: float) -> bool:
        if now < self._next[what]:
            return False
        self._next[what] = now + period
        return True

    def move_delayed(self, queue: str, now: float | None = None) -> int:
        """Move due delayed requeues of ``queue`` to the back of their lists; how many."""
        when = time.time() if now is None else now
        keys = [self.keys.delayed(queue), self.keys.dead(queue), self.keys.dead_seq(queue),
                *self.keys.lists(queue)]
        total = 0
        while True:
            moved, dropped = (int(n) for n in self.scripts.move_due(keys=keys, args=[
                repr(when), BATCH, queue, now_rfc3339(), self.keys.dead_body_prefix(queue),
                self.max_dead_letters, self.max_message_bytes, *self.keys.steps]))
            DROPS.dropped(self.keys.dead(queue), dropped, self.max_dead_letters)
            total += moved
            if moved < BATCH:
                return total

    def recover_staged(self, queue: str) -> int:
        """Give back what workers with an expired lease have staged for ``queue``."""
        members = cast("set[bytes]", self.client.smembers(self.keys.stagers(queue)))
        moved = 0
        for member in members:
            worker = member.decode("utf-8", "replace")
            if worker == self.worker_id:
                continue
            count = int(self.scripts.recover_staged(
                keys=[self.keys.staging(queue, worker), self.keys.lease(queue, worker),
                      self.keys.stagers(queue), self.keys.lists(queue)[0]],
                args=[worker, "0"]))
            moved += max(count, 0)
        if moved:
            log.warning("gave back %d staged message(s) of dead workers to %s", moved, queue)
        return moved

    def restore_visible(self, now: float | None = None) -> int:
        """kombu's ``restore_visible``: under ``unacked_mutex``, entries delivered more than
        ``visibility_timeout`` ago go back to the front of their queue (RPUSH, flagged
        redelivered). Skipped (0) while another process holds the mutex."""
        ceiling = (time.time() if now is None else now) - self.visibility_timeout
        lock = self.client.lock(self.keys.key(self.keys.unacked_mutex),
                                timeout=self.unacked_mutex_expire)
        if not lock.acquire(blocking=False):
            return 0
        restored = 0
        try:
            while True:
                tags = cast("list[bytes]", self.client.zrevrangebyscore(
                    self.keys.key(self.keys.unacked_index), ceiling, 0, start=0, num=BATCH))
                if not tags:
                    break
                records = cast("list[bytes | None]", self.client.hmget(
                    self.keys.key(self.keys.unacked), tags))
                for tag, record in zip(tags, records, strict=True):
                    restored += self._restore_record(tag.decode(), record)
                if len(tags) < BATCH:
                    break
        finally:
            with contextlib.suppress(LockError):  # expired meanwhile (kombu ignores it too)
                lock.release()
        if restored:
            log.warning("restored %d unacked message(s) older than %ss", restored,
                        self.visibility_timeout)
        return restored

    def _restore_record(self, tag: str, record: bytes | None) -> int:
        if record is None:  # kombu's restore_by_tag drops the stale index entry too
            self.client.zrem(self.keys.key(self.keys.unacked_index), tag)
            return 0
        try:
            envelope, exchange, routing_key = json.loads(record)
            raw = json.dumps(envelope).encode("utf-8")
            payload = mark_redelivered(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            delivery = Delivery(record, "unacked", tag)
            self._park(delivery, f"unreadable unacked record: {exc}")
            return 0
        queues = self._lookup(str(exchange or ""), str(routing_key or ""))
        if not queues:
            queue = str(routing_key or "unacked")
            self._park(Delivery(raw, queue, tag),
                       f"no queue bound to exchange {exchange!r} with key {routing_key!r}")
            return 0
        pri = priority_of(raw)
        targets = [self.keys.list_for(q, pri) for q in queues]
        return int(self._move_unacked(tag, targets, payload, "rpush", expected=record))

    def _lookup(self, exchange: str, routing_key: str) -> list[str]:
        """kombu's ``_lookup`` for direct and topic bindings (the default exchange: the key)."""
        if not exchange:
            return [routing_key] if routing_key else []
        members = cast("set[bytes]", self.client.smembers(self.keys.binding(exchange)))
        bindings = [m.decode("utf-8", "replace").split(self.keys.sep) for m in members]
        direct = sorted({b[2] for b in bindings if len(b) == 3 and b[0] == routing_key})
        if direct:
            return direct
        return sorted({b[2] for b in bindings if len(b) == 3 and _topic_match(b[0], routing_key)})

    def ping(self) -> None:
        """One PING (credentials and TLS are checked on connecting)."""
        self.client.ping()

    def close(self) -> None:
        """Put what this broker still holds back at the front of its queues (kombu's
        shutdown restore) and give back anything staged."""
        with contextlib.suppress(redis.RedisError):  # what it records stays staged
            self._window.write()
        for tag, delivery in reversed(self._held.items()):  # newest first, as kombu pops
            target = self.keys.list_for(delivery.queue, priority_of(delivery.body))
            self._move_unacked(tag, [target], mark_redelivered(delivery.body), "rpush")
        self._held.clear()
        for queue in list(self._queues):
            self.scripts.recover_staged(
                keys=[self.keys.staging(queue, self.worker_id),
                      self.keys.lease(queue, self.worker_id), self.keys.stagers(queue),
                      self.keys.lists(queue)[0]], args=[self.worker_id, "1"])
        self._queues.clear()
        self.lane.close()
        self.client.close()


def _topic_match(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching as kombu's topic exchange does (``*`` one word, ``#`` any)."""
    regex = "^" + re.escape(pattern).replace(r"\*", r"[^.]+").replace(r"\#", r".*?") + "$"
    return re.match(regex, routing_key) is not None
