"""SIGTERM/SIGINT for a long-running loop (relay, beat): the handler sets a flag and
nothing else. Logging or ``Event.set`` in a signal handler can deadlock with the very lock
the interrupted thread holds; the loop asks :meth:`StopSignals.requested` each turn (which
says "signal received" once) and waits in short slices with :meth:`StopSignals.pause`. A
second signal calls ``on_second`` from the handler: give back what is held, then exit."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

SLICE = 0.25
"""Longest wait before a signal is noticed."""


class StopSignals:
    """A stop asked by a signal or by :meth:`stop`."""

    def __init__(self, log: logging.Logger, then: str,
                 on_second: Callable[[], None] | None = None) -> None:
        self._log = log
        self._then = then
        self._on_second = on_second
        self._signalled = ""
        self._count = 0
        self._said = False
        self._stop = threading.Event()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (from the main thread only, as Python allows)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def stop(self) -> None:
        """Ask the loop to stop (from code, any thread)."""
        self._stop.set()

    def requested(self) -> bool:
        """Whether to stop; the first time after a signal, says so in one line."""
        if self._signalled and not self._said:
            self._said = True
            self._log.warning("signal %s received: %s", self._signalled, self._then)
            self._stop.set()
        return self._stop.is_set()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when a stop is asked."""
        deadline = time.monotonic() + seconds
        while not self.requested() and (left := deadline - time.monotonic()) > 0:
            self._stop.wait(min(left, SLICE))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        if self._count == 1:
            self._signalled = signal.Signals(signum).name
            return
        if self._on_second is not None:
            self._on_second()
        raise KeyboardInterrupt
