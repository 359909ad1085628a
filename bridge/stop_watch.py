"""A worker asked to stop stops: if its loop has not answered a signal within a bound, or
has not finished stopping within its graceful timeout and that bound again, a watcher
thread logs every thread's stack (the main thread first), hands back what the worker holds
and ends the process. A stuck loop is then a diagnosable error line, never a hang that an
init system must SIGKILL (losing the held messages until recovery)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("bridge.worker")

ANSWER_WITHIN = 20.0
"""Seconds the loop has to say it saw a signal (a turn takes well under a second, or a
broker call's retries, a few seconds)."""


class StopWatch:
    """Watches one worker from a daemon thread, once a second.

    ``signalled()`` says whether a stop signal came, ``answered()`` whether the loop saw
    it, ``stopped()`` whether ``run()`` finished; ``give_back()`` returns held messages.
    """

    def __init__(self, *, signalled: Callable[[], bool], answered: Callable[[], bool],
                 stopped: Callable[[], bool], give_back: Callable[[], None],
                 graceful_timeout: float, answer_within: float | None = None,
                 exit: Callable[[int], None] = os._exit) -> None:
        self._signalled = signalled
        self._answered = answered
        self._stopped = stopped
        self._give_back = give_back
        self._answer_within = ANSWER_WITHIN if answer_within is None else answer_within
        self._finish_within = graceful_timeout + self._answer_within
        self._exit = exit
        self._thread = threading.Thread(target=self._watch, name="bridge-stop-watch",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        since = answered_at = 0.0
        while not self._stopped():
            time.sleep(1.0)
            now = time.monotonic()
            if not self._signalled():
                continue
            since = since or now
            if not self._answered():
                if now - since > self._answer_within:
                    return self._escape(f"did not answer the stop signal in "
                                        f"{self._answer_within:.0f} s")
                continue
            answered_at = answered_at or now
            if now - answered_at > self._finish_within:
                return self._escape(f"did not finish stopping in {self._finish_within:.0f} s "
                                    f"(graceful timeout + {self._answer_within:.0f} s)")
        return None

    def _escape(self, what: str) -> None:
        log.error("the worker loop %s: a bug; returning held messages and exiting now. Its "
                  "threads, the main one first:\n%s", what, thread_stacks())
        try:
            self._give_back()
        except Exception:  # the broker's recovery brings them back: never stay alive for it
            log.exception("could not return the held messages")
        for stream in (sys.stderr, sys.stdout):
            with contextlib.suppress(Exception):  # a closed stream: nothing left to flush
                stream.flush()
        self._exit(0)


def thread_stacks() -> str:
    """Every thread's Python stack, the main thread first."""
    frames = sys._current_frames()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    main = threading.main_thread().ident
    parts = []
    for ident in sorted(frames, key=lambda ident: ident != main):
        parts.append(f"thread {names.get(ident, ident)}:\n"
                     + "".join(traceback.format_stack(frames[ident])))
    return "\n".join(parts)
