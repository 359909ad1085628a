"""Celery's task lifecycle for messages of a Celery queue, served by bridge workers.

A Celery producer's message runs the registered function (a plain function or
an imported Celery task) with Celery's semantics: expired → REVOKED; a future
ETA waits in the broker's delayed set; the result meta goes to Celery's result
backend (SUCCESS / FAILURE with exc_type, exc_message, exc_module and the
traceback / RETRY), so a Celery client's ``AsyncResult.get()`` works; then the
chain's next task, link callbacks, the chord join and errbacks, as Celery's
worker applies them; the message is acknowledged after all of that (acks_late).
Follow-ups are published before the meta is stored (Celery's order), so a crash
duplicates at most and loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bridge.backends.celery_redis import (
    CeleryRedisBackend,
    ChordPartFailed,
    Extended,
    TaskMeta,
)
from bridge.brokers.base import CeleryBroker, Delivery
from bridge.config import ConfigError, redact_url
from bridge.errors import DecodeError
from bridge.handlers.base import Handler, Host, Job, Outcome
from bridge.handlers.celery_apply import Applier, MalformedSignature, encoded
from bridge.handlers.celery_defer import Deferred, store_deferred
from bridge.handlers.celery_trace import REJECTED, CeleryTracer, Traced
from bridge.observe import FAILED, RECEIVED, RETRIED, SUCCEEDED
from bridge.observe import REJECTED as REJECTED_EVENT
from bridge.observe import REVOKED as REVOKED_EVENT
from bridge.outage import Endpoint, is_outage, one_line
from bridge.protocol.celery import PROTOCOL_2_HEADERS, CeleryTask, decode_task
from bridge.protocol.celery_message import CeleryMessage
from bridge.retry import RetryLater

log = logging.getLogger("bridge.worker")

SUCCESS, FAILURE, RETRY, REVOKED, STARTED = "SUCCESS", "FAILURE", "RETRY", "REVOKED", "STARTED"


@dataclass(frozen=True, slots=True)
class CeleryOptions:
    """How Celery-protocol messages are served (from the Celery app's settings)."""

    default_queue: str = ""
    """Where follow-ups without a queue go (Celery's task_default_queue); "" = the
    consumed queue."""
    track_started: bool = False
    result_extended: bool = False
    serializer: str = "json"
    accept: tuple[str, ...] = ("json", "msgpack")
    hostname: str = ""
    prefetch_multiplier: int = 4
    """Celery's worker_prefetch_multiplier."""


def _exception(exc_type: str, message: str, module: str) -> dict[str, Any]:
    return {"exc_type": exc_type, "exc_message": [message], "exc_module": module}


def _is_celery_retry(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__name__ == "Retry" and kind.__module__ == "celery.exceptions"


class CeleryHandler(Handler):
    """Runs registered tasks for Celery messages, writing Celery result metas."""

    protocol = "celery"
    owns_broker = False
    """The broker was opened for this handler (:func:`celery_handler_factory`): closed with
    it (SQS: what its receiver holds is visible again at once, not after the timeout)."""

    def __init__(self, host: Host, consumer: CeleryBroker, queue: str,
                 backend: CeleryRedisBackend, options: CeleryOptions | None = None,
                 tracer: CeleryTracer | None = None) -> None:
        super().__init__(host, consumer, queue)
        self.tracer = tracer
        """Set when the worker serves a Celery app: its tasks run in Celery's tracer."""
        self.broker = consumer
        self.backend = backend
        self.options = options or CeleryOptions()
        self.hostname = self.options.hostname or f"bridge@{socket.gethostname()}"
        self.default_queue = self.options.default_queue or queue
        self.prefetch_multiplier = self.options.prefetch_multiplier
        self._joins: list[tuple[Job, str, Any]] = []  # stored, chord join and ack to do
        self._park_after: dict[int, str] = {}  # id(delivery): why it is parked, not acked
        self._retries: dict[int, BaseException] = {}  # id(delivery): what asked to retry

    # ------------------------------------------------------------------ one batch

    def endpoints(self) -> list[Endpoint]:
        return [("Celery broker", getattr(self.broker, "url", "?"),
                 "--celery-broker (or the Celery app's broker_url)", self.broker.ping),
                ("Celery result backend", self.backend.url,
                 "--celery-backend (or the Celery app's result_backend)", self.backend.ping)]

    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """Store the finished tasks' metas, then publish their follow-ups (chain, links,
        retries: as Celery's worker, results first), prepare the new messages; then the
        chord joins and the acks. On an outage what is not done yet is carried to the next
        step (a finished task never runs again) and the worker backs off."""
        return self.step_carrying(finished, deliveries, self._join_then_step)

    def _join_then_step(self, finished: list[Outcome], pending: list[Delivery]) -> list[Job]:
        self._join_waiting()
        return self._step(finished, pending)

    def _step(self, finished: list[Outcome], pending: list[Delivery]) -> list[Job]:
        metas: list[TaskMeta] = []
        publish: list[tuple[str, CeleryMessage]] = []
        chord_sizes: list[tuple[str, int]] = []
        ended: list[tuple[Job, str, Any]] = []
        deferred: list[tuple[Job, Deferred]] = []
        for job, returned, raised in finished:
            if isinstance(returned, Traced):  # Celery stored it and sent its follow-ups
                if returned.deferred is not None:  # ... or left its SUCCESS meta to us
                    deferred.append((job, returned.deferred))
                ended.append((job, returned.state, returned))
                continue
            meta, applied = self._outcome(job, returned, raised)
            if meta is None:
                continue
            metas.append(meta)
            publish += applied.tasks
            chord_sizes += applied.chord_sizes
            ended.append((job, meta.state, meta.result))
        jobs: list[Job] = []
        for delivery in list(pending):
            prepared = self._prepare(delivery, metas)
            if prepared is not None:
                jobs.append(prepared)
            else:
                pending.remove(delivery)
        refused = self._store(metas)
        if deferred:
            refused.update(self._store_deferred(deferred))
        for task_id, why in refused.items():  # a key of another application:
            for job, _, _ in ended:  # the task ran, its result cannot be stored: parked
                if job.context.id == task_id:
                    self._park_after[id(job.delivery)] = f"its result cannot be stored: {why}"
        self._publish(publish, chord_sizes)
        pending.clear()
        finished.clear()  # stored and published: from here on the joins wait in _joins
        for job in jobs:
            if self.tracer is not None and self._traced(job.task.celery_task):
                self.tracer.received(job.context, job.delivery)
            self.report(RECEIVED, job, extra=_received_fields(job.context))
        self._joins += ended
        self._join_waiting()
        return jobs

    def _join_waiting(self) -> None:
        """The chord joins (then acks) of stored tasks, in order; on an outage the rest wait
        for the next step."""
        while self._joins:
            self._after(*self._joins[0])
            self._joins.pop(0)

    def _prepare(self, delivery: Delivery, metas: list[TaskMeta]) -> Job | None:
        self.host.hold(self, delivery)
        message = delivery.message
        if message is None:
            self.host.park(self, delivery, "not a kombu message")
            return None
        try:
            ctask = decode_task(message, accept=self.options.accept)
        except DecodeError as exc:
            self._undecodable(delivery, message, exc, metas)
            return None
        task = self.host.app.tasks.get(ctask.name)
        if task is None:
            self.host.unregistered(self, delivery, ctask.id, ctask.name)
            return None
        self.host.registered(ctask.id)
        now = datetime.now(UTC)
        try:
            expires, eta = ctask.expires, ctask.eta
        except DecodeError as exc:
            self._undecodable(delivery, message, exc, metas)
            return None
        if self.host.is_revoked(ctask.id):  # as Celery: REVOKED stored, the message acked
            log.info("task %s (%s) revoked: discarded", ctask.id, ctask.name)
            metas.append(self._meta(ctask, REVOKED, _exception(
                "TaskRevokedError", "revoked", "celery.exceptions"), delivery=delivery))
            self.report_unrun(REVOKED_EVENT, ctask.id, ctask.name, delivery.queue, "revoked")
            self.host.done(self, delivery)
            return None
        if expires is not None and now > expires:
            log.info("task %s (%s) expired at %s: REVOKED", ctask.id, ctask.name, expires)
            self.report_unrun(REVOKED_EVENT, ctask.id, ctask.name, delivery.queue,
                              f"expired at {expires.isoformat()}")
            metas.append(self._meta(ctask, REVOKED, _exception(
                "TaskRevokedError", "expired", "celery.exceptions"), delivery=delivery))
            self.host.done(self, delivery)
            return None
        if eta is not None and eta > now:
            self.host.requeue_later(self, delivery, (eta - now).total_seconds())
            return None
        if self.options.track_started and not self._traced(task.celery_task):
            metas.append(self._meta(ctask, STARTED, {"pid": os.getpid(),
                                                     "hostname": self.hostname}))
        return Job(delivery, self, task, list(ctask.args), dict(ctask.kwargs), context=ctask,
                   task_id=ctask.id)

    def _undecodable(self, delivery: Delivery, message: CeleryMessage, exc: DecodeError,
                     metas: list[TaskMeta]) -> None:
        reason = f"undecodable Celery message: {exc}"
        task_id = message.headers.get("id") if isinstance(message.headers, dict) else None
        if isinstance(task_id, str) and task_id:
            metas.append(TaskMeta(task_id, FAILURE, _exception("DecodeError", reason,
                                                               "bridge.errors")))
        log.error("queue %s: %s (task %s); parked in dead letters", delivery.queue, reason,
                  task_id or "id unknown")
        self.host.park(self, delivery, reason)
        self.report_unrun(REJECTED_EVENT, task_id if isinstance(task_id, str) else "", "",
                          delivery.queue, reason)

    # ------------------------------------------------------------------ running

    def prepare_thread(self) -> None:
        if self.tracer is not None:
            self.tracer.prepare_thread()

    def call(self, job: Job, run: Callable[[Job], Any]) -> Any:
        """A Celery task's ``self.request`` is this message's, as in a Celery worker."""
        celery_task = job.task.celery_task
        if celery_task is None:
            return run(job)
        ctask: CeleryTask = job.context
        if self.tracer is not None and self._traced(celery_task):
            # as Celery's worker, checked again when a thread takes it
            reason = self._unrunnable(ctask)
            if reason is not None:
                return self.tracer.revoke(celery_task, ctask, job.delivery, reason)
            return self.tracer.run(celery_task, ctask, job.delivery)
        celery_task.push_request(
            id=ctask.id, args=ctask.args, kwargs=ctask.kwargs, retries=ctask.retries,
            called_directly=False, is_eager=False, hostname=self.hostname,
            delivery_info={"exchange": "", "routing_key": job.delivery.queue,
                           "priority": ctask.priority, "redelivered": False},
            reply_to=ctask.properties.get("reply_to"),
            correlation_id=ctask.properties.get("correlation_id"),
            root_id=ctask.root_id, parent_id=ctask.parent_id, group=ctask.group,
            group_index=ctask.group_index, chord=ctask.chord, chain=ctask.chain,
            callbacks=ctask.callbacks, errbacks=ctask.errbacks,
            eta=ctask.headers.get("eta"), expires=ctask.headers.get("expires"),
            timelimit=ctask.headers.get("timelimit"), origin=ctask.headers.get("origin"),
            shadow=ctask.headers.get("shadow"), properties=ctask.properties,
            headers=_custom_headers(ctask),
        )
        try:
            return run(job)
        finally:
            celery_task.pop_request()

    # ------------------------------------------------------------------ outcomes

    def _outcome(self, job: Job, returned: Any, raised: BaseException | None
                 ) -> tuple[TaskMeta | None, Any]:
        """The meta to store and the follow-ups to publish for one finished job."""
        ctask: CeleryTask = job.context
        applier = Applier(self.default_queue, parent_id=ctask.id, root_id=ctask.root_id,
                          serializer=ctask.serializer)
        if raised is None:
            try:
                applier.chain_next(ctask.chain, returned)
                applier.callbacks(ctask.callbacks, returned)
            except MalformedSignature as exc:  # as Celery: the task fails; the message parks
                log.error("task %s (%s): cannot apply its %s", ctask.id, ctask.name, exc)
                self._park_after[id(job.delivery)] = f"task ran, but cannot apply its {exc}"
                return self._failure(ctask, job, exc, applier), applier.out
            return self._meta(ctask, SUCCESS, returned, delivery=job.delivery,
                              children=applier.out.children), applier.out
        if _is_celery_retry(raised) or isinstance(raised, RetryLater):
            self._retries[id(job.delivery)] = raised  # for the task event
        if _is_celery_retry(raised):  # Task.retry() already sent the new message
            cause = getattr(raised, "exc", None) or raised
            return self._meta(ctask, RETRY, cause, traceback=_trace(cause)), applier.out
        if isinstance(raised, RetryLater):
            try:
                again = encoded(_retried(ctask, raised.delay), "retry")
            except MalformedSignature as exc:
                self._park_after[id(job.delivery)] = f"cannot retry the task: {exc}"
                return self._failure(ctask, job, exc, applier), applier.out
            applier.out.tasks.append((job.delivery.queue, again))
            return self._meta(ctask, RETRY, raised, traceback=_trace(raised)), applier.out
        if not isinstance(raised, Exception):
            log.error("task %s (%s) raised %r: message parked", ctask.id, ctask.name, raised)
            self.host.park(self, job.delivery, f"task raised {type(raised).__name__}")
            self.report(FAILED, job, exception=raised, reason="message parked")
            return None, applier.out
        return self._failure(ctask, job, raised, applier), applier.out

    def _failure(self, ctask: CeleryTask, job: Job, exc: BaseException,
                 applier: Applier) -> TaskMeta:
        applier.out.tasks.clear()
        applier.out.chord_sizes.clear()
        refused = applier.errbacks(ctask.errbacks, ctask.id)
        if refused:
            log.error("task %s (%s): cannot apply %s", ctask.id, ctask.name, "; ".join(refused))
            self._park_after.setdefault(id(job.delivery), "task failed, and cannot apply its "
                                        + "; ".join(refused))
        return self._meta(ctask, FAILURE, exc, delivery=job.delivery, traceback=_trace(exc))

    def _meta(self, ctask: CeleryTask, state: str, result: Any, *,
              delivery: Delivery | None = None, traceback: str | None = None,
              children: list[Any] | None = None) -> TaskMeta:
        extended = None
        if self.options.result_extended and state != STARTED:
            extended = Extended(ctask.name, ctask.args, ctask.kwargs, self.hostname,
                                ctask.retries, delivery.queue if delivery else self.queue)
        return TaskMeta(ctask.id, state, result, traceback=traceback,
                        children=children or [], group_id=ctask.group,
                        parent_id=ctask.parent_id, extended=extended)

    def _publish(self, tasks: list[tuple[str, CeleryMessage]],
                 chord_sizes: list[tuple[str, int]]) -> None:
        for group_id, size in chord_sizes:
            self.backend.set_chord_size(group_id, size)
        by_queue: dict[str, list[CeleryMessage]] = {}
        for queue, message in tasks:
            by_queue.setdefault(queue, []).append(message)
        for queue, messages in by_queue.items():
            self.broker.publish_messages(queue, messages)

    def _store(self, metas: list[TaskMeta]) -> dict[str, str]:
        """One round trip; a result the serializer refuses fails its task (as in Celery).
        The task ids whose meta key holds something else (not written over), with why."""
        refused: dict[str, str] = {}
        try:
            self.backend.store_many(metas, refused)
            return refused
        except (TypeError, ValueError):
            pass
        for meta in metas:
            try:
                self.backend.store_many([meta], refused)
            except (TypeError, ValueError) as exc:
                log.error("task %s: result not serializable: %s", meta.task_id, exc)
                self.backend.store_many([TaskMeta(
                    meta.task_id, FAILURE, _exception("EncodeError", str(exc),
                                                      "kombu.exceptions"),
                    group_id=meta.group_id, parent_id=meta.parent_id)])
        return refused

    def _store_deferred(self, deferred: list[tuple[Job, Deferred]]) -> dict[str, str]:
        """The SUCCESS metas Celery's tracer left to the batch; as :meth:`_store`, the task
        ids whose key holds another type than a string (not written over), with why."""
        refused: dict[str, str] = {}
        for (job, item), done in zip(deferred, store_deferred([d for _, d in deferred]),
                                     strict=True):
            if done == -1:
                why = f"the result backend's key {item.key!r} holds another type than a string"
                log.warning("task %s: %s: no meta is written over it", job.context.id, why)
                refused[job.context.id] = why
        return refused

    def _unrunnable(self, ctask: CeleryTask) -> str | None:
        """"expired" or "revoked" when the task must not run now, else None."""
        expires = ctask.expires
        if expires is not None and datetime.now(UTC) > expires:
            return "expired"
        if self.host.is_revoked(ctask.id):
            return "revoked"
        stamp = self.host.stamp_revoked(ctask.headers.get("stamped_headers"),
                                        ctask.headers.get("stamps"))
        return None if stamp is None else "revoked"

    def _traced(self, celery_task: Any) -> bool:
        return self.tracer is not None and self.tracer.serves(celery_task)

    def _after_traced(self, job: Job, traced: Traced) -> None:
        """Ack (or requeue, or park, for a Reject) and tell the observers (the task log,
        metrics, Celery events)."""
        parked = self._park_after.pop(id(job.delivery), None)
        if parked is not None:  # its deferred meta could not be written
            self.host.park(self, job.delivery, parked)
            self.report(FAILED, job, reason=parked)
            return
        if traced.state == REJECTED:
            reason = f"rejected by the task: {traced.exception!r}"
            if traced.requeue:
                self.host.give_back(self, [job.delivery])
            else:
                self.host.park(self, job.delivery, reason)
            self.report(REJECTED_EVENT, job, reason=reason)
            return
        if traced.state == REVOKED:
            self.report(REVOKED_EVENT, job, reason=str(traced.exception))
        elif traced.state == SUCCESS:
            self.report(SUCCEEDED, job, result=traced.result)
        elif traced.state == RETRY:
            self.report(RETRIED, job, exception=traced.exception,
                        retry_in=_retry_delay(traced.exception))
        elif traced.state == FAILURE:
            self.report(FAILED, job, exception=traced.exception,
                        reason=f"{type(traced.exception).__name__}: {traced.exception}")
        self.host.done(self, job.delivery)

    def _after(self, job: Job, state: str, result: Any) -> None:
        """The chord join once the member's meta is stored; then ack."""
        if isinstance(result, Traced):
            self._after_traced(job, result)
            return
        ctask: CeleryTask = job.context
        try:
            if ctask.group and ctask.chord and state in (SUCCESS, FAILURE):
                self._chord_part(ctask, state, result)
        except Exception as exc:
            if is_outage(exc):
                raise  # joined again at the next step
            log.exception("task %s (%s): chord join failed; parking the message",
                          ctask.id, ctask.name)
            self._park_after.pop(id(job.delivery), None)
            self.host.park(self, job.delivery, f"chord join failed: {one_line(exc)}")
            self.report(FAILED, job, exception=exc, reason="chord join failed")
            return
        reason = self._park_after.pop(id(job.delivery), None)
        if reason is not None:
            self.host.park(self, job.delivery, reason)
        self._report_outcome(job, state, result, reason)
        if reason is None:
            self.host.done(self, job.delivery)

    def _report_outcome(self, job: Job, state: str, result: Any, parked: str | None) -> None:
        """The task event of a stored outcome (the task log, metrics, Celery events)."""
        raised = self._retries.pop(id(job.delivery), None)
        if state == SUCCESS and parked is None:
            self.report(SUCCEEDED, job, result=result)
        elif state == RETRY:
            self.report(RETRIED, job, exception=raised, retry_in=_retry_delay(raised))
        else:
            exc = result if isinstance(result, BaseException) else None
            self.report(FAILED, job, exception=exc, reason=parked or (
                f"{type(exc).__name__}: {exc}" if exc is not None else str(result)))

    def _chord_part(self, ctask: CeleryTask, state: str, result: Any) -> None:
        group_id = ctask.group
        body = ctask.chord
        assert group_id is not None and body is not None
        applier = Applier(self.default_queue, parent_id=ctask.id,
                          root_id=ctask.root_id, serializer=ctask.serializer)
        try:
            results = self.backend.on_chord_part_return(group_id, ctask.group_index, ctask.id,
                                                        state, result)
        except ChordPartFailed as exc:
            body_id = str((body.get("options") or {}).get("task_id") or "")
            log.error("chord %s: %s", group_id, exc)
            if body_id:
                for refused in applier.errbacks((body.get("options") or {}).get("link_error"),
                                                body_id):
                    log.error("chord %s: cannot apply %s", group_id, refused)
                self.backend.store_many([TaskMeta(body_id, FAILURE, _exception(
                    "ChordError", f"Dependency {exc.task_id} raised {exc.result!r}",
                    "celery.exceptions"), group_id=group_id)])
            self._publish(applier.out.tasks, [])
            self.backend.chord_cleanup(group_id)
            return
        if results is None:
            return
        applier.chord_body(body, results)
        self._publish(applier.out.tasks, applier.out.chord_sizes)
        self.backend.chord_cleanup(group_id)

    def close(self) -> None:
        """Close the broker when this handler opened it."""
        if self.owns_broker:
            self.broker.close()


def _received_fields(ctask: CeleryTask) -> dict[str, Any]:
    """What Celery's task-received event tells besides the name and args."""
    return {"root_id": ctask.root_id, "parent_id": ctask.parent_id,
            "retries": ctask.retries, "eta": ctask.headers.get("eta"),
            "expires": ctask.headers.get("expires")}


def _retry_delay(raised: BaseException | None) -> float | None:
    """Seconds until a retry: RetryLater's delay, Celery Retry's ``when`` (seconds or a
    datetime); None when unknown."""
    if isinstance(raised, RetryLater):
        return raised.delay
    when = getattr(raised, "when", None)
    if isinstance(when, (int, float)):
        return float(when)
    if isinstance(when, datetime):
        aware = when if when.tzinfo else when.replace(tzinfo=UTC)
        return max(0.0, (aware - datetime.now(UTC)).total_seconds())
    return None


def _custom_headers(ctask: CeleryTask) -> dict[str, Any] | None:
    custom = {k: v for k, v in ctask.headers.items()
              if k not in PROTOCOL_2_HEADERS and k != "compression"}
    return custom or None


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _retried(ctask: CeleryTask, delay: float) -> CeleryTask:
    """The same task again, as ``Task.retry`` sends it: retries + 1, an ETA, parent = self."""
    eta = datetime.fromtimestamp(time.time() + delay, UTC).isoformat()
    headers = {**ctask.headers, "retries": ctask.retries + 1, "eta": eta,
               "parent_id": ctask.id}
    return replace(ctask, headers=headers)



def celery_handler_factory(broker_url: str, backend_url: str, queue: str,
                           options: CeleryOptions | None = None,
                           transport_options: dict[str, Any] | None = None,
                           celery_app: Any = None) -> Callable[[Host], CeleryHandler]:
    """A worker handler factory consuming Celery queue ``queue`` on ``broker_url``
    (redis://…, amqp://… or sqs://…) with results in Celery's Redis backend at
    ``backend_url``; ``transport_options``: the Celery app's broker_transport_options
    (SQS: region, queue_name_prefix, wait_time_seconds, visibility_timeout);
    ``celery_app``: the Celery app whose tasks run in Celery's own tracer."""
    from bridge.brokers.celery_redis import CeleryRedisBroker

    broker: CeleryBroker
    if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        from bridge.brokers.celery_amqp import CeleryAmqpBroker

        broker = CeleryAmqpBroker.from_url(broker_url)
    elif broker_url.startswith("sqs://"):
        from bridge.brokers.celery_sqs import CelerySqsBroker, transport_settings

        broker = CelerySqsBroker.from_url(broker_url, default_queue=queue,
                                          **transport_settings(transport_options or {}))
    else:
        broker = CeleryRedisBroker.from_url(broker_url)
    if not backend_url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        raise ConfigError(f"Celery result backend {redact_url(backend_url)}: this version "
                          "writes Celery results to Redis only", key="celery_result_backend")
    backend = CeleryRedisBackend.from_url(backend_url)

    def make(host: Host) -> CeleryHandler:
        tracer = None
        if celery_app is not None:
            tracer = CeleryTracer(celery_app, (options or CeleryOptions()).hostname
                                  or f"bridge@{socket.gethostname()}")
        handler = CeleryHandler(host, broker, queue, backend, options, tracer)
        handler.owns_broker = True
        return handler

    return make
