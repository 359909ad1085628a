"""Celery tasks run by Celery's own tracer, as Celery's worker runs them.

When the worker serves a Celery app (``--celery-app``), a message for one of that app's
tasks runs through ``celery.app.trace`` with the request a Celery worker would build from
the same message: ``self.request``, ``Task.replace``, ``retry``, ``ignore_result``,
chains, links, chord joins, errbacks, stamping, signals, ``track_started`` and the trace
log lines are Celery's. The bridge worker keeps what a worker is around the tracer:
fetching, the ETA wait, expiry and revocation, acknowledging after the task (acks late),
parking what cannot run, and the task events.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

from bridge.brokers.base import Delivery
from bridge.handlers.celery_defer import Deferred, SuccessDeferral
from bridge.protocol.celery import CeleryTask

log = logging.getLogger("bridge.worker")
received_log = logging.getLogger("celery.worker.strategy")
"""Where Celery's worker says "Task add[…] received" (handlers and tests read it there)."""

SUCCESS, FAILURE, RETRY, REJECTED, IGNORED, REVOKED = (
    "SUCCESS", "FAILURE", "RETRY", "REJECTED", "IGNORED", "REVOKED")


@dataclass(slots=True)
class Traced:
    """What Celery's tracer made of one task: the state it stored (or IGNORED / REJECTED,
    which it does not store), the value returned, the exception raised."""

    state: str
    result: Any = None
    exception: BaseException | None = None
    deferred: Deferred | None = None
    """The SUCCESS meta the worker writes before the ack (:mod:`.celery_defer`)."""

    @property
    def requeue(self) -> bool:
        """A ``Reject(requeue=True)``: the message goes back to its queue."""
        return self.state == REJECTED and bool(getattr(self.exception, "requeue", False))


def celery_request(ctask: CeleryTask, delivery: Delivery, hostname: str) -> dict[str, Any]:
    """The request dict a Celery worker passes to the tracer for this message: every
    header, the message properties, delivery info, args, kwargs and the embedded canvas
    (lists copied: the tracer pops the chain)."""
    properties = dict(ctask.properties)
    request: dict[str, Any] = dict(ctask.headers)
    request.update({
        "id": ctask.id, "task": ctask.name, "properties": properties,
        "reply_to": properties.get("reply_to"),
        "correlation_id": properties.get("correlation_id") or ctask.id,
        "hostname": hostname, "is_eager": False,
        "delivery_info": {"exchange": "", "routing_key": delivery.queue,
                          "priority": ctask.priority, "redelivered": False},
        "args": list(ctask.args), "kwargs": dict(ctask.kwargs),
        "callbacks": list(ctask.callbacks) if ctask.callbacks else None,
        "errbacks": list(ctask.errbacks) if ctask.errbacks else None,
        "chain": list(ctask.chain) if ctask.chain else None,
        "chord": ctask.chord,
    })
    return request


class CeleryTracer:
    """Runs a Celery app's tasks with ``celery.app.trace`` (one tracer per task, built once,
    as Celery's worker caches it on the task)."""

    def __init__(self, celery_app: Any, hostname: str) -> None:
        from celery import signals
        from celery.app.trace import build_tracer
        from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

        # imported once: an import statement costs ~0.6 us at every task
        self._build_tracer = build_tracer
        self._limits_exceeded = (SoftTimeLimitExceeded, TimeLimitExceeded)
        self.app = celery_app
        self.hostname = hostname
        self.deferral = SuccessDeferral(celery_app)
        self._received = signals.task_received
        self._registry: Any = None

    def prepare_thread(self) -> None:
        """This thread's result backend, made now: Celery keeps one a thread for a backend
        that is not thread-safe (Redis's), and making one reads every installed package's
        entry points (4-5 ms of CPU; 32 threads' worth would land on the first tasks)."""
        self.app.backend  # noqa: B018 - the property makes and keeps it

    def serves(self, celery_task: Any) -> bool:
        """Whether ``celery_task`` belongs to this app (its tasks run through the tracer)."""
        if celery_task is None:
            return False
        # the registry, kept: ``app.tasks`` is a kombu ``cached_property``, whose every read
        # takes a lock shared by all instances; the registry object never changes
        registry = self._registry
        if registry is None:
            registry = self._registry = self.app.tasks
        return registry.get(celery_task.name) is celery_task

    def received(self, ctask: CeleryTask, delivery: Delivery) -> None:
        """Celery's "received" line (with its ``data`` for custom log handlers) and its
        ``task_received`` signal, whose ``request`` carries the message's request fields."""
        if received_log.isEnabledFor(logging.INFO):
            from celery.app.trace import LOG_RECEIVED
            from celery.utils.saferepr import saferepr

            context = {"id": ctask.id, "name": ctask.name,
                       "args": ctask.headers.get("argsrepr") or saferepr(ctask.args),
                       "kwargs": ctask.headers.get("kwargsrepr") or saferepr(ctask.kwargs),
                       "eta": ctask.headers.get("eta")}
            received_log.info(LOG_RECEIVED, context, extra={"data": context})
        if self._received.receivers:
            self._received.send(sender=self, request=self.worker_request(ctask, delivery))

    def worker_request(self, ctask: CeleryTask, delivery: Delivery) -> Any:
        """The ``celery.worker.request.Request`` Celery's worker makes of this message (what
        its signals carry: receivers read ``request.stamps``, its payload...)."""
        from types import SimpleNamespace

        from celery.worker.request import Request

        request = celery_request(ctask, delivery, self.hostname)
        embed = {key: request[key] for key in ("callbacks", "errbacks", "chain", "chord")}
        headers = {key: value for key, value in request.items()
                   if key not in ("args", "kwargs", *embed)}
        message = SimpleNamespace(headers=headers, body=None, properties=request["properties"],
                                  delivery_info=request["delivery_info"])
        return Request(message, app=self.app, hostname=self.hostname, decoded=True,
                       body=(request["args"], request["kwargs"], embed),
                       task=self.app.tasks.get(ctask.name))

    def run(self, celery_task: Any, ctask: CeleryTask, delivery: Delivery) -> Traced:
        """Trace one task in this thread; Celery stores its states and sends its follow-ups."""
        if celery_task.__trace__ is None:
            celery_task.__trace__ = self._build_tracer(celery_task.name, celery_task,
                                                       app=self.app, hostname=self.hostname)
        request = celery_request(ctask, delivery, self.hostname)
        hard, soft = _time_limits(request.get("timelimit"), celery_task)
        traced = None
        # a leaf task only: what follows a chain link, a callback or a group member may
        # read its stored result the moment it exists
        defer = (not (ctask.chain or ctask.callbacks or ctask.chord or ctask.group)
                 and self.deferral.eligible(celery_task))
        if defer:
            self.deferral.begin(celery_task, ctask.id)
        try:
            if hard or soft:
                with TimeLimits(hard, soft):
                    traced = celery_task.__trace__(ctask.id, request["args"],
                                                   request["kwargs"], request)
            else:
                traced = celery_task.__trace__(ctask.id, request["args"], request["kwargs"],
                                               request)
        except self._limits_exceeded:
            if traced is None:  # the tracer catches what comes in time: not ours to hide
                raise
        finally:
            deferred = self.deferral.end() if defer else None
        retval, info, _runtime, _text = traced
        if info is None:
            return Traced(SUCCESS, retval, deferred=deferred)
        exc = info.retval if isinstance(info.retval, BaseException) else None
        return Traced(str(info.state), None, exc, deferred)

    def revoke(self, celery_task: Any, ctask: CeleryTask, delivery: Delivery, reason: str
               ) -> Traced:
        """Not run: expired or revoked. REVOKED stored as Celery's worker stores it (a chord
        it belongs to fails with it)."""
        from celery.app.task import Context
        from celery.exceptions import TaskRevokedError

        request = Context(celery_request(ctask, delivery, self.hostname))
        celery_task.backend.mark_as_revoked(
            ctask.id, reason, request=request,
            store_result=not celery_task.ignore_result
            or celery_task.store_errors_even_if_ignored)
        log.info("Discarding revoked task: %s[%s]", ctask.name, ctask.id)
        return Traced(REVOKED, None, TaskRevokedError(reason))


def _time_limits(header: Any, celery_task: Any) -> tuple[float | None, float | None]:
    """(hard, soft) seconds: the message's ``timelimit`` header, else the task's own."""
    hard = soft = None
    if isinstance(header, (list, tuple)) and len(header) == 2:
        hard, soft = header
    return (hard or celery_task.time_limit or None), (soft or celery_task.soft_time_limit
                                                     or None)


class TimeLimits:
    """Celery's time limits for a task running in this thread. A thread cannot be killed
    or interrupted inside a blocking C call, so both limits raise in the task at its next
    Python instruction: the soft one ``SoftTimeLimitExceeded`` (the task may catch it),
    the hard one ``TimeLimitExceeded`` (a FAILURE, as in Celery). A ``sleep`` or a socket
    read in progress finishes first; ``--pool processes`` does not change that."""

    def __init__(self, hard: float | None, soft: float | None) -> None:
        self.limits = [(when, kind) for when, kind in ((soft, "soft"), (hard, "hard"))
                       if when]
        self._lock = threading.Lock()
        self._inside = False
        self._timers: list[threading.Timer] = []
        self._thread = 0

    def __enter__(self) -> TimeLimits:
        if not self.limits:
            return self
        self._thread = threading.get_ident()
        self._inside = True
        for when, kind in self.limits:
            timer = threading.Timer(float(when), self._expire, (kind,))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
        return self

    def _expire(self, kind: str) -> None:
        from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

        exc = SoftTimeLimitExceeded if kind == "soft" else TimeLimitExceeded
        with self._lock:
            if self._inside:
                _raise_in(self._thread, exc)

    def __exit__(self, *_: object) -> None:
        if not self.limits:
            return
        with self._lock:
            self._inside = False
            _raise_in(self._thread, None)  # one raised too late must not hit the worker
        for timer in self._timers:
            timer.cancel()


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else None)
