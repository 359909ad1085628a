"""The contract between the worker loop and a protocol handler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.app import Bridge
from bridge.brokers.base import Consumer, Delivery
from bridge.observe import Observers, TaskEvent
from bridge.outage import Endpoint, is_outage
from bridge.protocol.machinery import Signature
from bridge.task import RegisteredTask


@dataclass(slots=True, eq=False)
class Job:
    """One task to run in a pool thread: the function, its values and where it came from."""

    delivery: Delivery
    handler: Handler
    task: RegisteredTask
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    context: Any = None
    """The handler's own view of the message (a Signature, a CeleryTask)."""
    signature: Signature | None = None
    """For the pre/post task hooks (machinery's API), when the handler has one."""
    task_id: str = ""
    runtime: float | None = None
    """Seconds the function ran, set by the worker when it returned or raised."""


Outcome = tuple[Job, Any, BaseException | None]
"""A job, what its function returned, and the exception it raised (or None)."""


class Host(Protocol):
    """What a handler may ask of the worker loop that runs it."""

    app: Bridge
    post_task: Callable[[Signature], None] | None
    error_handler: Callable[[Signature, BaseException], None] | None

    def hold(self, handler: Handler, delivery: Delivery) -> None:
        """The worker owns the fetched message until done, given back or parked."""

    def done(self, handler: Handler, delivery: Delivery) -> None:
        """Acknowledge with the next fetch (unless a shutdown already gave it back)."""

    def give_back(self, handler: Handler, deliveries: list[Delivery]) -> None: ...

    def park(self, handler: Handler, delivery: Delivery, reason: str) -> None: ...

    def requeue_later(self, handler: Handler, delivery: Delivery, delay: float) -> None:
        """Back to the queue after ``delay`` s, released from this worker."""

    def unregistered(self, handler: Handler, delivery: Delivery, task_id: str,
                     name: str) -> None:
        """A task nobody here registered: back to the queue with growing back-off."""

    def registered(self, task_id: str) -> None:
        """Forget the back-off of a task that found its function."""

    observers: Observers
    """The worker's observers (task log, metrics, events, the remote control's view)."""

    def is_revoked(self, task_id: str) -> bool:
        """Whether a remote control revoked ``task_id`` (then it is not run)."""

    def stamp_revoked(self, stamped_headers: Any, stamps: Any) -> dict[str, Any] | None:
        """The stamp by which a remote control revoked a task so stamped, else None."""


class Handler(ABC):
    """One consumed queue in one protocol."""

    prefetch_multiplier = 1
    """Messages fetched per worker thread by default (see WorkerOptions)."""
    protocol = ""
    """``machinery`` or ``celery``: what the task events say the message spoke."""
    paused = False
    """Set by the remote control's cancel_consumer: fetch nothing, finish what is held."""

    def __init__(self, host: Host, consumer: Consumer, queue: str) -> None:
        self.host = host
        self.consumer = consumer
        self.queue = queue
        self._carried: tuple[list[Outcome], list[Delivery]] = ([], [])
        self._outage: BaseException | None = None

    def carry(self, finished: list[Outcome], deliveries: list[Delivery],
              cause: BaseException) -> None:
        """Keep a step's unfinished work for the next step, because of ``cause`` (an outage of
        the broker or backend): finished tasks are written then and never run again; fetched
        messages stay held and are prepared then. The worker backs off before that step."""
        self._carried = (self._carried[0] + finished, self._carried[1] + deliveries)
        self._outage = cause

    def with_carried(self, finished: list[Outcome], deliveries: list[Delivery]
                     ) -> tuple[list[Outcome], list[Delivery]]:
        """What a step works on: what the last step carried, then the new."""
        carried, self._carried = self._carried, ([], [])
        return carried[0] + finished, carried[1] + deliveries

    def step_carrying(self, finished: list[Outcome], deliveries: list[Delivery],
                      work: Callable[[list[Outcome], list[Delivery]], list[Job]]) -> list[Job]:
        """``work`` on what the last step carried, then the new. ``work`` empties
        ``finished`` and the pending deliveries as it is done with them; on an outage what is
        left is carried to the next step (see :meth:`carry`) and no job starts."""
        finished, deliveries = self.with_carried(finished, deliveries)
        pending = list(deliveries)
        try:
            return work(finished, pending)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.carry(finished, pending, exc)
            return []

    def take_outage(self) -> BaseException | None:
        """The outage the last step met (and carried work for), once."""
        cause, self._outage = self._outage, None
        return cause

    def report(self, kind: str, job: Job, **details: Any) -> None:
        """One step of ``job``'s life, for the worker's observers (see bridge.observe)."""
        observers = self.host.observers
        takers = observers.takers(kind)
        if takers:  # else none is built
            observers.deliver(takers, TaskEvent(
                kind, job.task_id, job.task.name, job.delivery.queue, self.protocol,
                runtime=job.runtime, args=job.args, kwargs=job.kwargs, **details))

    def report_unrun(self, kind: str, task_id: str, name: str, queue: str, reason: str) -> None:
        """A task that never became a job (bad args, expired, undecodable), for observers."""
        observers = self.host.observers
        takers = observers.takers(kind)
        if takers:
            observers.deliver(takers, TaskEvent(kind, task_id, name, queue, self.protocol,
                                                reason=reason))

    def endpoints(self) -> list[Endpoint]:
        """What this handler needs reachable (probed when the worker starts)."""
        return []

    @abstractmethod
    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """Finish ``finished`` (states, follow-ups, acks) and start ``deliveries``:
        write what both need in as few round trips as the backend allows, deal with
        bad input here, and return the jobs to run."""

    def call(self, job: Job, run: Callable[[Job], Any]) -> Any:
        """In a pool thread: ``run(job)`` runs the function; a handler may wrap it."""
        return run(job)

    def prepare_thread(self) -> None:  # noqa: B027 - optional hook
        """In each pool thread once, before its first job: per-thread state the handler's
        tasks need, made while the worker starts instead of by the first task."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the handler opened (not the consumer: the app owns it)."""
