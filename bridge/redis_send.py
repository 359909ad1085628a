"""machinery's SendTask in one round trip when the broker and the result backend share a Redis.

Go's ``SendTask`` makes two: ``SetStatePending``, then ``Publish``. When both live in one
Redis server, one script does the same two writes in the same order (the PENDING state first,
then the RPUSH, and no RPUSH if the state could not be written), so nothing a Go worker or
reader sees changes, only the wait. Anything else (another server, a Cluster, a Sentinel
pool, an ETA in the future, a key that needs the careful write) goes the two-step way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import redis
from redis.commands.core import Script

from bridge.backends.base import Backend, new_state, now_utc
from bridge.backends.redis import PENDING_THEN_PUSH_SCRIPT, RedisBackend
from bridge.brokers.base import Broker
from bridge.brokers.redis import RedisBroker
from bridge.protocol.gotime import unix_nano
from bridge.protocol.machinery import PENDING, Signature
from bridge.protocol.state_bytes import pending_jsons
from bridge.redisconn import RedisClient
from bridge.redislane import run_script

__all__ = ["CHUNK", "OneTripSend", "Sendable", "server_of"]

CHUNK = 200
"""Tasks per script call of ``send_many``: small enough that Redis runs one while the next
is made, large enough that a call's overhead is shared."""


class Sendable(Protocol):
    """What :meth:`OneTripSend.begin_many` reads of a task: a Signature, or a task whose
    Signature JSON was written already (a quick translation's)."""

    @property
    def uuid(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def eta(self) -> datetime | None: ...

    def to_json(self) -> bytes: ...


T = TypeVar("T", bound=Sendable)


def server_of(client: RedisClient) -> tuple[object, ...] | None:
    """Where a plain client connects (host, port, socket, db, user); None when unknown."""
    if isinstance(client, redis.cluster.RedisCluster):
        return None
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return None
    kwargs = pool.connection_kwargs
    if kwargs.get("host") is None and kwargs.get("path") is None:
        return None
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0),
            kwargs.get("username"))


class OneTripSend:
    """PENDING + RPUSH in one script call, for a Redis backend and broker on one server."""

    def __init__(self, backend: RedisBackend, broker: RedisBroker) -> None:
        self._backend = backend
        self._broker = broker
        self._script: Script = backend.client.register_script(PENDING_THEN_PUSH_SCRIPT)
        self._script_loaded = False

    @classmethod
    def between(cls, backend: Backend, broker: Broker) -> OneTripSend | None:
        """The one-trip sender when ``backend`` and ``broker`` share a Redis server."""
        if not isinstance(backend, RedisBackend) or type(broker) is not RedisBroker:
            return None
        here = server_of(backend.client)
        if here is None or here != server_of(broker.layout.client):
            return None
        return cls(backend, broker)

    def send(self, sig: Signature) -> bool:
        """Both writes done; False when nothing was written (send it the two-step way)."""
        if sig.eta is not None and unix_nano(sig.eta) > time.time_ns():
            return False
        if not sig.routing_key:
            sig.routing_key = self._broker.default_queue
        state = new_state(sig, PENDING)
        (written,) = run_script(
            self._backend.lane, self._script, (sig.uuid, sig.routing_key),
            (self._backend.ttl, "P", state.to_json(), b"", b"", sig.to_json()))
        if written != 1:
            return False
        self._backend.written_in_redis(sig.uuid)
        return True

    def send_many(self, signatures: Sequence[T]) -> list[T]:
        """Each signature's PENDING state, then its message, by script calls of ``CHUNK``
        tasks a queue, each sent while Redis runs the one before; the signatures left for
        the two-step way (an ETA in the future, a key that needs the careful write, or
        all of them when the connection is busy), in order."""
        return self.begin_many(signatures)()

    def begin_many(self, signatures: Sequence[T]) -> Callable[[], list[T]]:
        """:meth:`send_many` with the script calls sent now and their replies read by the
        call returned (which gives the signatures left), so the caller works meanwhile.
        A task with no routing key that is not a Signature is left."""
        now = time.time_ns()
        left: list[T] = []
        queues: dict[str, list[T]] = {}
        for sig in signatures:
            if sig.eta is not None and unix_nano(sig.eta) > now:
                left.append(sig)
                continue
            if not sig.routing_key:
                if not isinstance(sig, Signature):
                    left.append(sig)
                    continue
                sig.routing_key = self._broker.default_queue
            queues.setdefault(sig.routing_key, []).append(sig)
        chunks = [(queue, tasks[start:start + CHUNK]) for queue, tasks in queues.items()
                  for start in range(0, len(tasks), CHUNK)]
        if not chunks:
            return lambda: left
        if not self._script_loaded:
            self._backend.client.script_load(PENDING_THEN_PUSH_SCRIPT)
            self._script_loaded = True
        pending = self._backend.lane.begin(self._commands(chunks))
        if pending is None:
            return lambda: list(signatures)
        return lambda: self._sent(chunks, pending.read(), left)

    def _sent(self, chunks: list[tuple[str, list[T]]], replies: list[Any], left: list[T]
              ) -> list[T]:
        for (_queue, chunk), reply in zip(chunks, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):  # nothing ran
                self._script_loaded = False
                left += chunk
            elif isinstance(reply, Exception):
                raise reply
            else:
                for sig, written in zip(chunk, reply, strict=True):
                    if written == 1:
                        self._backend.written_in_redis(sig.uuid)
                    else:
                        left.append(sig)
        return left

    def _commands(self, chunks: Sequence[tuple[str, Sequence[Sendable]]]
                  ) -> Iterator[tuple[Any, ...]]:
        sha, ttl = self._script.sha, self._backend.ttl
        for queue, chunk in chunks:
            args: list[Any] = [ttl]
            states = pending_jsons([(sig.uuid, sig.name) for sig in chunk], now_utc())
            for state in states:  # one CreatedAt a chunk
                args += ("P", state, b"", b"")
            yield ("EVALSHA", sha, len(chunk) + 1, *(sig.uuid for sig in chunk), queue, *args,
                   *(sig.to_json() for sig in chunk))
