"""machinery's retry rules: Fibonacci back-off and ErrRetryTaskLater."""

from __future__ import annotations

import time

from bridge.errors import BridgeError
from bridge.protocol.gotime import GoTime

LATEST_DELAY = 100 * 365 * 86400
"""Longest retry delay accepted (about a century): later ETAs are refused, not wrapped."""


class RetryImpossible(BridgeError):
    """A retry whose delay no ETA can hold (a RetryTimeout near 2^63, an absurd RetryLater)."""


def retry_eta(delay: float) -> GoTime:
    """The ETA ``delay`` seconds from now; :class:`RetryImpossible` beyond ``LATEST_DELAY``."""
    if not delay <= LATEST_DELAY:  # NaN too
        raise RetryImpossible(f"a retry in {delay:g} s is beyond the latest ETA accepted "
                              f"({LATEST_DELAY} s, about a century)")
    return GoTime.from_unix_nano(time.time_ns() + int(max(delay, 0.0) * 1e9))


def fibonacci_next(n: int) -> int:
    """The smallest Fibonacci number strictly greater than ``n`` (machinery's FibonacciNext).

    0→1, 1→2, 2→3, 3→5, 4→5, 5→8: with RetryTimeout 0 the delays are 1, 2, 3, 5, 8 … s.
    """
    a, b = 1, 1
    while b <= n:
        a, b = b, a + b
    return b


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()``: ``4h0m0s``, ``1.5s``, ``500ms``, ``0s``."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _fraction(nanos, size) + unit
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _fraction(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


class RetryLater(Exception):
    """Raise from a task to run it again after ``delay`` seconds (ErrRetryTaskLater).

    RetryCount is left alone, so this may repeat without limit, as in machinery.
    """

    def __init__(self, message: str = "", delay: float = 1.0) -> None:
        self.message = message
        self.delay = float(delay)
        super().__init__(f"Task error: {message} Will retry in: {go_duration(self.delay)}")
