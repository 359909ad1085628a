"""The task log: one line per received, succeeded, retried, failed, revoked or rejected
task, in Celery's words (``Task add[…] succeeded in 0.0012s: 3``), on the logger
``bridge.task``. A failure carries its exception type and, at DEBUG, its traceback."""

from __future__ import annotations

import logging
import reprlib

from bridge.observe import (
    FAILED,
    RECEIVED,
    REJECTED,
    RETRIED,
    REVOKED,
    SUCCEEDED,
    TaskEvent,
)

log = logging.getLogger("bridge.task")

LEVELS = {RECEIVED: logging.DEBUG, SUCCEEDED: logging.INFO, RETRIED: logging.INFO,
          FAILED: logging.ERROR, REVOKED: logging.WARNING, REJECTED: logging.WARNING}
"""The level of each kind's line (STARTED has none)."""

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxdict = 20


def short_repr(value: object) -> str:
    """``repr`` cut to a readable size (a task may return megabytes)."""
    return _repr.repr(value)


class TaskLog:
    """Logs each task's outcome (an Observer of :mod:`bridge.observe`)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger

    def wants(self, kind: str) -> bool:
        level = LEVELS.get(kind)
        return level is not None and self.log.isEnabledFor(level)

    def task_event(self, event: TaskEvent) -> None:
        if not self.wants(event.kind):
            return
        who = f"Task {event.name or '?'}[{event.task_id or '?'}]"
        extra: dict[str, object] = {"task_id": event.task_id, "task_name": event.name,
                                    "queue": event.queue, "event": event.kind,
                                    "runtime": event.runtime}
        if event.kind == RECEIVED:
            self.log.debug("%s received", who, extra=extra)
        elif event.kind == SUCCEEDED:
            self.log.info("%s succeeded in %.6fs: %s", who, event.runtime or 0.0,
                          short_repr(event.result), extra=extra)
        elif event.kind == RETRIED:
            self.log.info("%s retry: %s", who, _retry_text(event), extra=extra)
        elif event.kind == FAILED:
            self._failed(who, event, extra)
        elif event.kind in (REVOKED, REJECTED):
            self.log.warning("%s %s: %s", who, event.kind, event.reason, extra=extra)

    def _failed(self, who: str, event: TaskEvent, extra: dict[str, object]) -> None:
        exc = event.exception
        runtime = f" in {event.runtime:.6f}s" if event.runtime is not None else ""
        if exc is None:
            self.log.error("%s failed%s: %s", who, runtime, event.reason, extra=extra)
            return
        # the traceback at DEBUG: one line per failure at INFO, the whole story when asked
        trace = (type(exc), exc, exc.__traceback__) if self.log.isEnabledFor(logging.DEBUG) \
            else None
        self.log.error("%s raised unexpected%s: %s", who, runtime, _exception(exc),
                       exc_info=trace, extra=extra)


def _retry_text(event: TaskEvent) -> str:
    """``Retry in 2s: ValueError('x')``; a Celery Retry says it itself (the same words)."""
    exc = event.exception
    if exc is not None and hasattr(exc, "when") and hasattr(exc, "exc"):  # celery's Retry
        return str(exc)
    delay = f"Retry in {event.retry_in:g}s" if event.retry_in is not None else "Retry"
    return f"{delay}: {_exception(exc)}" if exc is not None else delay


def _exception(exc: BaseException | None) -> str:
    """``ValueError('boom')``: the type and the message, as Celery's trace log has it."""
    return short_repr(exc)
