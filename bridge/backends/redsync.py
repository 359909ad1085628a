"""redsync's mutex, as machinery's ``TriggerChord`` takes it (``SET key value NX PX``, the same
tries and delays, a compare-and-delete release), so Python and Go callers queue on one lock."""

from __future__ import annotations

import base64
import logging
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from redis.commands.core import Script

from bridge.errors import BridgeError
from bridge.redisconn import RedisClient

__all__ = ["ChordLockError", "MutexPolicy", "RedsyncMutex"]

log = logging.getLogger("bridge.backends.redis")

# redsync's deleteScript: delete the lock only if it still holds our value.
_UNLOCK_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
else
  return 0
end
"""


class ChordLockError(BridgeError):
    """The chord mutex could not be taken within redsync's tries."""


@dataclass(frozen=True, slots=True)
class MutexPolicy:
    """redsync v4.8.1 ``NewMutex`` defaults (what machinery's ``TriggerChord`` uses)."""

    expiry_ms: int = 8000  # SET … NX PX 8000
    tries: int = 32
    min_delay_ms: int = 50  # delay before each retry: rand.Intn(250-50)+50 ms
    max_delay_ms: int = 250  # exclusive
    drift_factor: float = 0.01  # the lock counts only if taken within expiry*(1-drift)


class RedsyncMutex:
    """A single-node redsync mutex: the same commands and retry policy as Go's."""

    def __init__(self, client: RedisClient, name: str, policy: MutexPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or MutexPolicy()
        self._client = client
        self._unlock: Script = client.register_script(_UNLOCK_SCRIPT)

    def acquire(self) -> str:
        """Take the lock; the random value that holds it. Raises ChordLockError."""
        policy = self.policy
        value = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        valid_ms = policy.expiry_ms - policy.expiry_ms * policy.drift_factor
        error: redis.RedisError | None = None
        for attempt in range(policy.tries):
            if attempt:
                time.sleep(random.randrange(policy.min_delay_ms, policy.max_delay_ms) / 1000)
            start = time.monotonic()
            try:
                taken = bool(self._client.set(self.name, value, nx=True, px=policy.expiry_ms))
            except redis.RedisError as exc:
                taken, error = False, exc
            if taken and (time.monotonic() - start) * 1000 < valid_ms:
                return value
            self.release(value)  # redsync releases after every failed try
        raise ChordLockError(
            f"could not take the {self.name!r} lock after {policy.tries} tries"
            + (f" (last error: {error})" if error else " (held by another worker)")
        ) from error

    def release(self, value: str) -> bool:
        """Delete the lock if it still holds ``value``; errors are logged, not raised."""
        try:
            return bool(self._unlock(keys=[self.name], args=[value]))
        except redis.RedisError as exc:
            log.warning("could not release the %r lock: %s", self.name, exc)
            return False

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block (released even when the block raises)."""
        value = self.acquire()
        try:
            yield
        finally:
            self.release(value)
