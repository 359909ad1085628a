"""The exceptions machinery-bridge raises on purpose.

Every error a codec or the type translator raises for bad input is one of these,
so callers can catch exactly "the message was bad" and nothing else.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base class of every error machinery-bridge raises on purpose."""


REASON_LIMIT = 1000
"""Longest reason kept in a dead letter or a log line (the message itself is kept whole)."""


def clip(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters (with how long it was)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def describe(exc: BaseException) -> str:
    """``Type: message`` of an unexpected error, clipped, for a reason or a log line."""
    return clip(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class DecodeError(BridgeError, ValueError):
    """Bytes that are not a valid message of the expected kind."""


class EncodeError(BridgeError, ValueError):
    """A value that Go's encoding/json could not write either (NaN, out of range...)."""


class ArgTranslationError(BridgeError, ValueError):
    """A value that cannot be carried as (or read from) the given Go type.

    The message names the arg position, the arg name, the Go type and the
    offending value, e.g. ``arg 2 ('count', int8): 300 is out of range for int8``.
    """

    def __init__(
        self,
        reason: str,
        *,
        go_type: str | None,
        value: Any,
        position: int | None = None,
        name: str = "",
    ) -> None:
        self.reason = reason
        self.go_type = go_type
        self.value = value
        self.position = position
        self.name = name
        super().__init__(self._render())

    def _render(self) -> str:
        where = "value" if self.position is None else f"arg {self.position}"
        label = f"{self.name!r}, " if self.name else ""
        return f"{where} ({label}{self.go_type or '?'}): {self.reason}"

    def at(self, position: int | None, name: str = "") -> ArgTranslationError:
        """The same error, located at an arg position (and name)."""
        return ArgTranslationError(
            self.reason, go_type=self.go_type, value=self.value, position=position, name=name
        )


class Unreachable(BridgeError, ConnectionError):
    """A broker or result backend cannot be reached, or refuses us (credentials, TLS).

    The message is one line naming the URL (password redacted) and the fix, e.g.
    ``result backend memcache://127.0.0.1:11211 is unreachable (connection refused):
    start memcached or fix result_backend``.
    """


class ForeignKeyError(BridgeError):
    """A task state write refused: the key holds something that is not a task state (another
    type, or a value that is not this task's state). Nothing is written over it."""


class StatesRefused(BridgeError):
    """Some states of a batch were refused (the others are written): ``refused`` maps each
    refused task UUID to why."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        first = next(iter(refused.items()), ("", ""))
        super().__init__(f"{len(refused)} state(s) refused, e.g. {first[0]}: {first[1]}")
