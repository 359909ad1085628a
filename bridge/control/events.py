"""Celery's events from our worker, in Celery's format on its ``celeryev`` exchange (topic;
fanout on Redis, as Celery switches it), so ``celery events`` and Flower follow it:
worker-online, worker-heartbeat (every 2 s) and worker-offline always; task-received,
-started, -succeeded, -failed, -retried, -revoked and -rejected when task events are on
(``-E``, ``worker_send_task_events``, or ``celery control enable_events``).

Task events come from any thread (an Observer of bridge.observe) into a queue; the remote
control's thread publishes them on its connection (``flush``), so no kombu object is shared
between threads."""

from __future__ import annotations

import logging
import os
import platform
import queue
import time
import traceback
from typing import Any

from kombu import Connection, Exchange, Producer

from bridge.observe import (
    FAILED,
    RECEIVED,
    REJECTED,
    RETRIED,
    REVOKED,
    STARTED,
    SUCCEEDED,
    TaskEvent,
)
from bridge.tasklog import short_repr

log = logging.getLogger("bridge.control")

HEARTBEAT_INTERVAL = 2.0
"""Celery's worker heartbeat frequency (seconds)."""
MAX_BUFFERED = 10_000
"""Events kept while the broker is away; older ones are dropped first (as Celery's
dispatcher buffers while offline, bounded here)."""
SOFTWARE = {"sw_ident": "machinery-bridge", "sw_ver": "0.1.0", "sw_sys": platform.system()}


def utcoffset() -> int:
    """Hours behind UTC, as Celery's ``celery.utils.time.utcoffset``."""
    return (time.altzone if time.localtime().tm_isdst else time.timezone) // 3600


class CeleryEvents:
    """Builds Celery events and publishes them from the remote control's thread."""

    def __init__(self, hostname: str, *, task_events: bool, exchange: str = "celeryev",
                 active: Any = None) -> None:
        self.hostname = hostname
        self.enabled = task_events
        """Task events on (worker events are always sent)."""
        self.exchange_name = exchange
        self.active = active
        """A callable giving the number of tasks running (worker-heartbeat's ``active``)."""
        self.processed = 0
        self._clock = 0
        self._outbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._queued = 0
        self._producer: Producer | None = None
        self._exchange: Exchange | None = None
        self._next_heartbeat = 0.0
        self._online = False

    # ------------------------------------------------------------------ from any thread

    def task_event(self, event: TaskEvent) -> None:
        if event.kind in (SUCCEEDED, FAILED):
            self.processed += 1
        if not self.enabled or not event.task_id:
            return
        fields = _task_fields(event)
        if fields is not None:
            self._queue(fields)

    def heartbeat_now(self) -> None:
        self._next_heartbeat = 0.0

    def _queue(self, event: dict[str, Any]) -> None:
        event.setdefault("timestamp", time.time())
        self._outbox.put(event)
        self._queued += 1
        while self._queued > MAX_BUFFERED:
            try:
                self._outbox.get_nowait()
                self._queued -= 1
            except queue.Empty:
                break

    # ------------------------------------------------------------------ the control thread

    def attach(self, connection: Connection) -> None:
        """Publish on ``connection`` from now on; say worker-online."""
        exchange_type = "fanout" if connection.transport.driver_type == "redis" else "topic"
        self._exchange = Exchange(self.exchange_name, type=exchange_type)
        self._producer = Producer(connection.channel(), exchange=self._exchange,
                                  serializer="json", auto_declare=False)
        if not self._online:
            self._publish({"type": "worker-online", "freq": HEARTBEAT_INTERVAL, **SOFTWARE})
            self._online = True
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL

    def detach(self) -> None:
        self._producer = None

    def flush(self) -> None:
        """Publish what the task threads queued, and the heartbeat when it is due. An outage
        raises (the control thread reconnects); the event being sent is kept."""
        if self._producer is None:
            return
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
            self._publish(self._heartbeat("worker-heartbeat"))
        while True:
            try:
                event = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._queued -= 1
            try:
                self._publish(event)
            except Exception:
                self._outbox.put(event)  # order may change after an outage: events carry time
                self._queued += 1
                raise

    def offline(self) -> None:
        """worker-offline, best effort, at shutdown."""
        if self._producer is None or not self._online:
            return
        try:
            self._publish(self._heartbeat("worker-offline"))
        except Exception as exc:
            log.debug("could not send worker-offline: %s", exc)

    def _heartbeat(self, kind: str) -> dict[str, Any]:
        return {"type": kind, "freq": HEARTBEAT_INTERVAL, "active": int(self.active())
                if self.active else 0, "processed": self.processed,
                "loadavg": [round(x, 2) for x in os.getloadavg()], **SOFTWARE}

    def _publish(self, fields: dict[str, Any]) -> None:
        assert self._producer is not None and self._exchange is not None
        self._clock += 1
        event = {"hostname": self.hostname, "utcoffset": utcoffset(), "pid": os.getpid(),
                 "clock": self._clock, "timestamp": time.time(), **fields}
        self._producer.publish(event, routing_key=event["type"].replace("-", "."),
                               exchange=self._exchange.name, declare=[self._exchange],
                               serializer="json", headers={"hostname": self.hostname},
                               delivery_mode=1)


def _task_fields(event: TaskEvent) -> dict[str, Any] | None:
    """A task event's fields as Celery's worker sends them."""
    base: dict[str, Any] = {"uuid": event.task_id, "timestamp": event.timestamp}
    if event.kind == RECEIVED:
        return {"type": "task-received", **base, "name": event.name,
                "args": short_repr(tuple(event.args or ())),
                "kwargs": short_repr(dict(event.kwargs or {})),
                "root_id": event.extra.get("root_id"), "parent_id": event.extra.get("parent_id"),
                "retries": event.extra.get("retries", 0), "eta": event.extra.get("eta"),
                "expires": event.extra.get("expires")}
    if event.kind == STARTED:
        return {"type": "task-started", **base, "pid": os.getpid()}
    if event.kind == SUCCEEDED:
        return {"type": "task-succeeded", **base, "result": short_repr(event.result),
                "runtime": event.runtime or 0.0}
    if event.kind in (FAILED, RETRIED):
        exc = event.exception
        cause = getattr(exc, "exc", None)  # Celery's Retry: the error that asked for it
        shown = cause if event.kind == RETRIED and isinstance(cause, BaseException) else exc
        return {"type": "task-failed" if event.kind == FAILED else "task-retried", **base,
                "exception": short_repr(shown) if shown is not None else event.reason,
                "traceback": "".join(traceback.format_exception(type(exc), exc,
                                                                exc.__traceback__))
                if exc is not None else ""}
    if event.kind == REVOKED:
        return {"type": "task-revoked", **base, "terminated": False, "signum": None,
                "expired": event.reason.startswith("expired")}
    if event.kind == REJECTED:
        return {"type": "task-rejected", **base, "requeue": False}
    return None
