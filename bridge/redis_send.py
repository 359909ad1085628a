"""machinery's SendTask in one round trip when the broker and the result backend share a Redis.

Go's ``SendTask`` makes two: ``SetStatePending``, then ``Publish``. When both live in one
Redis server, one script does the same two writes in the same order (the PENDING state first,
then the RPUSH, and no RPUSH if the state could not be written), so nothing a Go worker or
reader sees changes, only the wait. Anything else (another server, a Cluster, a Sentinel
pool, an ETA in the future, a key that needs the careful write) goes the two-step way.
"""

from __future__ import annotations

import time

import redis
from redis.commands.core import Script

from bridge.backends.base import Backend, new_state
from bridge.backends.redis import PENDING_THEN_PUSH_SCRIPT, RedisBackend
from bridge.brokers.base import Broker
from bridge.brokers.redis import RedisBroker
from bridge.protocol.gotime import unix_nano
from bridge.protocol.machinery import PENDING, Signature
from bridge.redisconn import RedisClient
from bridge.redislane import run_script


def _server(client: RedisClient) -> tuple[object, ...] | None:
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

    @classmethod
    def between(cls, backend: Backend, broker: Broker) -> OneTripSend | None:
        """The one-trip sender when ``backend`` and ``broker`` share a Redis server."""
        if not isinstance(backend, RedisBackend) or type(broker) is not RedisBroker:
            return None
        here = _server(backend.client)
        if here is None or here != _server(broker.layout.client):
            return None
        return cls(backend, broker)

    def send(self, sig: Signature) -> bool:
        """Both writes done; False when nothing was written (send it the two-step way)."""
        if sig.eta is not None and unix_nano(sig.eta) > time.time_ns():
            return False
        if not sig.routing_key:
            sig.routing_key = self._broker.default_queue
        state = new_state(sig, PENDING)
        reply = run_script(self._backend.lane, self._script,
                           (sig.uuid, sig.routing_key),
                           (self._backend.ttl, "P", state.to_json(), b"", b"", sig.to_json()))
        if reply != 1:
            return False
        self._backend.written_in_redis(state)
        return True
