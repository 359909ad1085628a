"""The contract between the worker loop and a protocol handler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.app import Bridge
from bridge.brokers.base import Consumer, Delivery
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


class Handler(ABC):
    """One consumed queue in one protocol."""

    prefetch_multiplier = 1
    """Messages fetched per worker thread by default (see WorkerOptions)."""

    def __init__(self, host: Host, consumer: Consumer, queue: str) -> None:
        self.host = host
        self.consumer = consumer
        self.queue = queue

    @abstractmethod
    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """Finish ``finished`` (states, follow-ups, acks) and start ``deliveries``:
        write what both need in as few round trips as the backend allows, deal with
        bad input here, and return the jobs to run."""

    def call(self, job: Job, run: Callable[[Job], Any]) -> Any:
        """In a pool thread: ``run(job)`` runs the function; a handler may wrap it."""
        return run(job)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the handler opened (not the consumer: the app owns it)."""
