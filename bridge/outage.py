"""Outages of a broker or result backend: recognising them, backing off, saying so once.

A long-running command (worker, relay, migrate) that meets a connection error keeps what
it holds, waits with capped, jittered exponential back-off and tries again; it logs
"unreachable, retrying in N s" once per outage and "reconnected" once when it is over.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable

from bridge.config import ConfigError, redact_url
from bridge.errors import BridgeError, Unreachable

_OUTAGE_NAMES = frozenset({
    # redis-py (ConnectionError covers BusyLoadingError, AuthenticationError; ClusterDown...)
    "redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError",
    "redis.exceptions.ClusterDownError", "redis.exceptions.TryAgainError",
    "redis.exceptions.ReadOnlyError", "redis.exceptions.MasterNotFoundError",
    # kombu / py-amqp
    "kombu.exceptions.OperationalError", "amqp.exceptions.RecoverableConnectionError",
    "amqp.exceptions.ConnectionForced", "amqp.exceptions.IrrecoverableConnectionError",
    # botocore (SQS, DynamoDB)
    "botocore.exceptions.EndpointConnectionError", "botocore.exceptions.ConnectionClosedError",
    "botocore.exceptions.ReadTimeoutError", "botocore.exceptions.ConnectTimeoutError",
    # pymongo, pymemcache
    "pymongo.errors.ConnectionFailure", "pymongo.errors.ServerSelectionTimeoutError",
    "pymemcache.exceptions.MemcacheUnexpectedCloseError",
})


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says a server cannot be reached right now (worth waiting for), as
    opposed to a refused command or bad data (worth a clear error)."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | socket.gaierror):
        return True
    for cls in type(exc).__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" in _OUTAGE_NAMES:
            return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and _wrapped_outage(cause)


def _wrapped_outage(exc: BaseException, depth: int = 0) -> bool:
    if depth > 5:
        return False
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and _wrapped_outage(cause, depth + 1)


Endpoint = tuple[str, str, str, Callable[[], object]]
"""What a command needs reachable: (role, URL, where the URL is set, a probe that reaches it)."""


def probe(endpoints: list[Endpoint]) -> None:
    """Reach each endpoint once, at start-up: a server that cannot be reached or refuses us
    is one :class:`Unreachable` line naming the role, the URL (password redacted), why, and
    where to fix it. Errors we raise on purpose (a ConfigError for a URL we cannot serve)
    go up as they are."""
    for role, url, setting, reach in endpoints:
        try:
            reach()
        except BridgeError:
            raise
        except Exception as exc:
            if refused_login(exc):
                raise ConfigError(f"{role} {redact_url(url)} refused the login "
                                  f"({one_line(exc)}): fix the user and password in "
                                  f"{setting}") from exc
            raise Unreachable(f"{role} {redact_url(url)} cannot be reached ({one_line(exc)}): "
                              f"start it, or fix {setting}") from exc


_LOGIN_REFUSED_NAMES = frozenset({
    "amqp.exceptions.AccessRefused", "redis.exceptions.AuthenticationError",
    "redis.exceptions.AuthenticationWrongNumberOfArgsError",
})
_LOGIN_REFUSED_TEXT = ("WRONGPASS", "NOAUTH", "ACCESS_REFUSED", "invalid username-password")
_LOGIN_REFUSED_AWS = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch",
                                "UnrecognizedClientException", "InvalidAccessKeyId"})


def refused_login(exc: BaseException, depth: int = 0) -> bool:
    """Whether ``exc`` (or what it wraps) says the server refused our credentials: a
    configuration to fix, not an outage to wait for."""
    if depth > 5:
        return False
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
    if names & _LOGIN_REFUSED_NAMES or (getattr(exc, "code", None) == 18 and any(
            n.startswith("pymongo.") for n in names)):  # MongoDB AuthenticationFailed
        return True
    error = getattr(exc, "response", None)
    if isinstance(error, dict) and error.get("Error", {}).get("Code") in _LOGIN_REFUSED_AWS:
        return True
    text = str(exc)
    if any(marker in text for marker in _LOGIN_REFUSED_TEXT):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and refused_login(cause, depth + 1)


def one_line(exc: BaseException) -> str:
    """The exception as one line (its type when it has no text)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class Backoff:
    """Capped exponential back-off with full jitter over the upper half: ``first``,
    ``2 × first`` … up to ``cap`` seconds, each scaled by a random factor in [0.5, 1]."""

    def __init__(self, first: float = 0.5, cap: float = 30.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self._rand = rand
        self.attempts = 0

    def next(self) -> float:
        """The wait before the next attempt."""
        ceiling = min(self.cap, self.first * 2.0 ** self.attempts)
        self.attempts += 1
        return ceiling * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        self.attempts = 0


class Outage:
    """One component's view of an outage: when it began, the back-off, the two log lines.

    ``failed(exc)`` returns how long to wait (logging "unreachable" on the first failure
    only); ``succeeded()`` logs "reconnected" once when an outage was going on.
    """

    def __init__(self, what: str, log: logging.Logger, backoff: Backoff | None = None, *,
                 level: int = logging.WARNING) -> None:
        self.what = what
        self.log = log
        self.backoff = backoff or Backoff()
        self.level = level
        """Of the "unreachable" and "reconnected" lines: DEBUG for a helper whose outage the
        worker loop already reports (the remote control on a broker the worker consumes)."""
        self.since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        delay = self.backoff.next()
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            if is_outage(exc):
                self.log.log(self.level, "%s unreachable (%s): retrying in %.1f s, with back-off "
                             "up to %.0f s; nothing is lost meanwhile", self.what,
                             one_line(exc), delay, self.backoff.cap)
            else:
                self.log.error("%s failed (%s: %s): retrying in %.1f s, with back-off up to "
                               "%.0f s", self.what, type(exc).__name__, one_line(exc), delay,
                               self.backoff.cap, exc_info=self.log.isEnabledFor(logging.DEBUG))
        else:
            self.log.debug("%s still failing (%s): next try in %.1f s", self.what,
                           one_line(exc), delay)
        return delay

    def succeeded(self) -> None:
        if self.since is None:
            return
        self.log.log(self.level, "%s reconnected after %.1f s (%d failed attempt%s)",
                     self.what, time.monotonic() - self.since, self.failures,
                     "" if self.failures == 1 else "s")
        self.since = None
        self.failures = 0
        self.backoff.reset()
