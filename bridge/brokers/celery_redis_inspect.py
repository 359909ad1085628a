"""The Celery Redis broker's read-only views and dead-letter tools (``mbridge`` inspect,
dead-letter list, replay and delete), kept apart from its hot path: a mixin of
:class:`bridge.brokers.celery_redis.CeleryRedisBroker`, on kombu's layout
(:mod:`bridge.brokers.celery_redis_layout`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from bridge.brokers.celery_redis_layout import CeleryKeys, Scripts
from bridge.brokers.dead_letters import envelope_parts, read_envelope

__all__ = ["BATCH", "CeleryRedisInspection", "UnackedEntry", "priority_of"]

BATCH = 500
"""Entries per round trip when restoring, moving delayed ones and replaying."""


@dataclass(frozen=True, slots=True)
class UnackedEntry:
    """One record of kombu's ``unacked`` hash."""

    tag: str
    delivered_at: float
    envelope: bytes | None
    exchange: str
    routing_key: str


def priority_of(raw: bytes) -> object:
    """An envelope's ``properties.priority`` (0 when it is not one)."""
    try:
        return json.loads(raw)["properties"]["priority"]
    except Exception:  # not an envelope, nested too deeply...: the first bucket
        return 0


class CeleryRedisInspection:
    """Queue depths, peeks, kombu's unacked records and the dead letters of a queue."""

    client: redis.Redis
    keys: CeleryKeys
    scripts: Scripts

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, every priority list."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.lists(queue):
            pipe.llen(key)
        return sum(cast("list[int]", pipe.execute()))

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The next ``count`` envelopes in consumption order, left in place."""
        out: list[bytes] = []
        for key in self.keys.lists(queue):
            if len(out) >= count:
                break
            items = cast("list[bytes]", self.client.lrange(key, -(count - len(out)), -1))
            out.extend(reversed(items))
        return out

    def unacked(self, limit: int = 100) -> list[UnackedEntry]:
        """The oldest ``limit`` records of kombu's unacked hash (Celery's and ours)."""
        index = cast("list[tuple[bytes, float]]", self.client.zrange(
            self.keys.key(self.keys.unacked_index), 0, limit - 1, withscores=True))
        if not index:
            return []
        records = cast("list[bytes | None]", self.client.hmget(
            self.keys.key(self.keys.unacked), [tag for tag, _ in index]))
        out = []
        for (tag, score), record in zip(index, records, strict=True):
            envelope, exchange, routing_key = None, "", ""
            if record is not None:
                try:
                    parsed, exchange, routing_key = json.loads(record)
                    envelope = json.dumps(parsed).encode("utf-8")
                except (ValueError, TypeError):
                    envelope = record
            out.append(UnackedEntry(tag.decode(), score, envelope, str(exchange),
                                    str(routing_key)))
        return out

    def dead_count(self, queue: str) -> int:
        """Dead letters parked for ``queue``."""
        return int(self.client.llen(self.keys.dead(queue)))

    def delayed_count(self, queue: str) -> int:
        """Envelopes waiting in ``queue``'s delayed ZSET."""
        return int(self.client.zcard(self.keys.delayed(queue)))

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries of ``queue`` (LRANGE semantics)."""
        raw = cast("list[bytes]", self.client.lrange(self.keys.dead(queue), start, stop))
        return [read_envelope(entry) for entry in raw]

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move up to ``count`` (0: all) dead letters back to the back of ``queue``, raw."""
        return self._take_dead(queue, count, drop=False)

    def delete_dead(self, queue: str, count: int = 0) -> int:
        """Delete the oldest ``count`` (0: all) dead letters of ``queue`` (and kept bodies)."""
        return self._take_dead(queue, count, drop=True)

    def _take_dead(self, queue: str, count: int, *, drop: bool) -> int:
        dead = self.keys.dead(queue)
        total = 0
        if count <= 0:  # what is parked now: a live worker may park a replayed one again
            count = int(self.client.llen(dead))
        while total < count:
            size = min(BATCH, count - total)
            entries = cast("list[bytes]", self.client.lrange(dead, 0, size - 1))
            if not entries:
                break
            args: list[bytes | str] = []
            for entry in entries:
                body, ref = envelope_parts(entry)
                target = "" if drop else self.keys.list_for(queue, priority_of(body))
                args += [entry, body, target, ref]
            moved = int(self.scripts.replay(keys=[dead], args=args))
            total += moved
            if moved == 0:
                break
        return total

