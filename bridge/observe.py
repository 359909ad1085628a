"""What a worker tells its observers (the task log, metrics, Celery events): one
:class:`TaskEvent` per step of a task's life, sent once, after the step is final (a
finished task's event goes out when its message is acknowledged or parked, so a step
carried over an outage is not reported twice)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("bridge.worker")

RECEIVED = "received"
STARTED = "started"
SUCCEEDED = "succeeded"
FAILED = "failed"
RETRIED = "retried"
REVOKED = "revoked"
REJECTED = "rejected"
"""Parked in dead letters without running (bad input)."""

KINDS = (RECEIVED, STARTED, SUCCEEDED, FAILED, RETRIED, REVOKED, REJECTED)


@dataclass(slots=True)
class TaskEvent:
    """One step of one task on this worker; observers read it and never change it (not
    frozen: a frozen dataclass costs three times as much to build, three times a task)."""

    kind: str
    task_id: str
    name: str
    queue: str
    protocol: str  # "machinery" or "celery"
    runtime: float | None = None
    """Seconds in the function (succeeded, failed, retried)."""
    result: Any = None
    exception: BaseException | None = None
    reason: str = ""
    """Why it failed, was revoked or rejected, in words."""
    retry_in: float | None = None
    args: Any = None
    kwargs: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    """The protocol's own fields (Celery: eta, expires, retries, root_id, parent_id)."""
    timestamp: float = field(default_factory=time.time)


class Observer(Protocol):
    """Anything that wants to know what the worker does. It may also have ``wants(kind)``:
    False for kinds it ignores, so that the worker builds no event nobody reads."""

    def task_event(self, event: TaskEvent) -> None: ...


class Observers:
    """Fans events out; an observer that raises is logged once per kind of error and never
    stops a worker."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = []
        self._routes: list[tuple[Callable[[TaskEvent], None], Callable[[str], bool] | None]] = []
        """Each observer's ``task_event`` and ``wants`` (None: it wants every kind)."""
        self._complained: set[tuple[int, str]] = set()
        for observer in observers:
            self.add(observer)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)
        self._routes.append((observer.task_event, getattr(observer, "wants", None)))

    def wants(self, kind: str) -> bool:
        """Whether any observer reads events of ``kind`` (the hot path asks before it builds
        one: with only the task log at WARNING, a success costs nothing)."""
        return bool(self.takers(kind))

    def takers(self, kind: str) -> list[Callable[[TaskEvent], None]]:
        """The ``task_event`` of each observer that reads events of ``kind`` now (asked once
        an event: the hot path builds none when this is empty). One whose ``wants`` raises
        is named once a kind of error, and left out."""
        out = []
        for take, wants in self._routes:
            try:
                if wants is None or wants(kind):
                    out.append(take)
            except Exception as exc:
                self._complain(take, exc)
        return out

    def __bool__(self) -> bool:
        return bool(self._observers)

    def task_event(self, event: TaskEvent) -> None:
        """To each observer that wants its kind."""
        self.deliver(self.takers(event.kind), event)

    def deliver(self, takers: list[Callable[[TaskEvent], None]], event: TaskEvent) -> None:
        """``event`` to ``takers`` (from :meth:`takers`); one that raises is named once a
        kind of error, and stops neither the others nor the worker."""
        for take in takers:
            try:
                take(event)
            except Exception as exc:
                self._complain(take, exc)

    def _complain(self, take: Callable[[TaskEvent], None], exc: Exception) -> None:
        owner = getattr(take, "__self__", take)
        key = (id(owner), type(exc).__name__)
        if key not in self._complained:
            self._complained.add(key)
            log.warning("%s could not take a task event: %s: %s",
                        type(owner).__name__, type(exc).__name__, exc)
