"""The exceptions machinery-bridge raises on purpose.

Every error a codec or the type translator raises for bad input is one of these,
so callers can catch exactly "the message was bad" and nothing else.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base class of every error machinery-bridge raises on purpose."""


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
