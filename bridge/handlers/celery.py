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
from bridge.handlers.celery_apply import Applier
from bridge.protocol.celery import PROTOCOL_2_HEADERS, CeleryTask, decode_task, encode_task
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

    def __init__(self, host: Host, consumer: CeleryBroker, queue: str,
                 backend: CeleryRedisBackend, options: CeleryOptions | None = None) -> None:
        super().__init__(host, consumer, queue)
        self.broker = consumer
        self.backend = backend
        self.options = options or CeleryOptions()
        self.hostname = self.options.hostname or f"bridge@{socket.gethostname()}"
        self.default_queue = self.options.default_queue or queue
        self.prefetch_multiplier = self.options.prefetch_multiplier

    # ------------------------------------------------------------------ one batch

    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        metas: list[TaskMeta] = []
        publish: list[tuple[str, CeleryTask]] = []
        chord_sizes: list[tuple[str, int]] = []
        ended: list[tuple[Job, str, Any]] = []
        for job, returned, raised in finished:
            meta, applied = self._outcome(job, returned, raised)
            if meta is None:
                continue
            metas.append(meta)
            publish += applied.tasks
            chord_sizes += applied.chord_sizes
            ended.append((job, meta.state, meta.result))
        jobs: list[Job] = []
        for delivery in deliveries:
            prepared = self._prepare(delivery, metas)
            if prepared is not None:
                jobs.append(prepared)
        try:
            self._publish(publish, chord_sizes)
            self._store(metas)
        except Exception:
            log.exception("could not publish follow-ups or store %d results; the messages "
                          "go back to the queue", len(metas))
            self.host.give_back(self, [job.delivery for job, _, _ in ended]
                                + [job.delivery for job in jobs])
            return []
        for job, state, result in ended:
            self._after(job, state, result)
        return jobs

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
        if expires is not None and now > expires:
            log.info("task %s (%s) expired at %s: REVOKED", ctask.id, ctask.name, expires)
            metas.append(self._meta(ctask, REVOKED, _exception(
                "TaskRevokedError", "expired", "celery.exceptions"), delivery=delivery))
            self.host.done(self, delivery)
            return None
        if eta is not None and eta > now:
            self.host.requeue_later(self, delivery, (eta - now).total_seconds())
            return None
        if self.options.track_started:
            metas.append(self._meta(ctask, STARTED, {"pid": os.getpid(),
                                                     "hostname": self.hostname}))
        return Job(delivery, self, task, list(ctask.args), dict(ctask.kwargs), context=ctask)

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

    # ------------------------------------------------------------------ running

    def call(self, job: Job, run: Callable[[Job], Any]) -> Any:
        """A Celery task's ``self.request`` is this message's, as in a Celery worker."""
        celery_task = job.task.celery_task
        if celery_task is None:
            return run(job)
        ctask: CeleryTask = job.context
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
            except Exception as exc:
                log.exception("task %s (%s): cannot apply its callbacks", ctask.id, ctask.name)
                return self._failure(ctask, job, exc, applier), applier.out
            return self._meta(ctask, SUCCESS, returned, delivery=job.delivery,
                              children=applier.out.children), applier.out
        if _is_celery_retry(raised):  # Task.retry() already sent the new message
            cause = getattr(raised, "exc", None) or raised
            return self._meta(ctask, RETRY, cause, traceback=_trace(cause)), applier.out
        if isinstance(raised, RetryLater):
            applier.out.tasks.append((job.delivery.queue, _retried(ctask, raised.delay)))
            log.info("task %s (%s): %s", ctask.id, ctask.name, raised)
            return self._meta(ctask, RETRY, raised, traceback=_trace(raised)), applier.out
        if not isinstance(raised, Exception):
            log.error("task %s (%s) raised %r: message parked", ctask.id, ctask.name, raised)
            self.host.park(self, job.delivery, f"task raised {type(raised).__name__}")
            return None, applier.out
        return self._failure(ctask, job, raised, applier), applier.out

    def _failure(self, ctask: CeleryTask, job: Job, exc: BaseException,
                 applier: Applier) -> TaskMeta:
        log.error("task %s (%s) failed: %s: %s", ctask.id, ctask.name, type(exc).__name__, exc)
        applier.out.tasks.clear()
        applier.out.chord_sizes.clear()
        applier.errbacks(ctask.errbacks, ctask.id)
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

    def _publish(self, tasks: list[tuple[str, CeleryTask]],
                 chord_sizes: list[tuple[str, int]]) -> None:
        for group_id, size in chord_sizes:
            self.backend.set_chord_size(group_id, size)
        by_queue: dict[str, list[CeleryMessage]] = {}
        for queue, task in tasks:
            by_queue.setdefault(queue, []).append(encode_task(task))
        for queue, messages in by_queue.items():
            self.broker.publish_messages(queue, messages)

    def _store(self, metas: list[TaskMeta]) -> None:
        """One round trip; a result the serializer refuses fails its task (as in Celery)."""
        try:
            self.backend.store_many(metas)
            return
        except (TypeError, ValueError):
            pass
        for meta in metas:
            try:
                self.backend.store_many([meta])
            except (TypeError, ValueError) as exc:
                log.error("task %s: result not serializable: %s", meta.task_id, exc)
                self.backend.store_many([TaskMeta(
                    meta.task_id, FAILURE, _exception("EncodeError", str(exc),
                                                      "kombu.exceptions"),
                    group_id=meta.group_id, parent_id=meta.parent_id)])

    def _after(self, job: Job, state: str, result: Any) -> None:
        """The chord join once the member's meta is stored; then ack."""
        ctask: CeleryTask = job.context
        try:
            if ctask.group and ctask.chord and state in (SUCCESS, FAILURE):
                self._chord_part(ctask, state, result)
        except Exception:
            log.exception("task %s (%s): chord join failed; parking the message",
                          ctask.id, ctask.name)
            self.host.park(self, job.delivery, "chord join failed (see worker log)")
            return
        self.host.done(self, job.delivery)

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
                applier.errbacks((body.get("options") or {}).get("link_error"), body_id)
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
                           ) -> Callable[[Host], CeleryHandler]:
    """A worker handler factory consuming Celery queue ``queue`` on ``broker_url``
    (redis://… or amqp://…) with results in Celery's Redis backend at ``backend_url``."""
    from bridge.brokers.celery_redis import CeleryRedisBroker

    broker: CeleryBroker
    if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        from bridge.brokers.celery_amqp import CeleryAmqpBroker

        broker = CeleryAmqpBroker.from_url(broker_url)
    else:
        broker = CeleryRedisBroker.from_url(broker_url)
    if not backend_url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        raise ConfigError(f"Celery result backend {redact_url(backend_url)}: this version "
                          "writes Celery results to Redis only", key="celery_result_backend")
    backend = CeleryRedisBackend.from_url(backend_url)

    def make(host: Host) -> CeleryHandler:
        return CeleryHandler(host, broker, queue, backend, options)

    return make
