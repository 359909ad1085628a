"""The worker's view of its own tasks, kept from its task events (an Observer of
bridge.observe): what is reserved (fetched, waiting for a thread), what is active (in a
thread), how many of each task ended. The remote-control commands answer from it, in the
shapes of Celery's ``Request.info()``."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from typing import Any

from bridge import observe
from bridge.observe import RECEIVED, STARTED, TaskEvent

ENDED = (observe.SUCCEEDED, observe.FAILED, observe.RETRIED, observe.REVOKED,
         observe.REJECTED)
RATE_WINDOW = 60.0
"""Seconds over which per-queue rates are counted."""


class TaskView:
    """Thread-safe: events come from the worker loop and its task threads."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._reserved: dict[str, dict[str, Any]] = {}
        self._active: dict[str, dict[str, Any]] = {}
        self.total: Counter[str] = Counter()
        """Tasks ended on this worker, by name (Celery's ``stats()['total']``)."""
        self.by_queue: Counter[str] = Counter()
        self._recent: dict[str, deque[float]] = {}  # queue: when tasks ended, last minute

    def task_event(self, event: TaskEvent) -> None:
        if not event.task_id:
            return
        with self._lock:
            if event.kind == RECEIVED:
                self._reserved[event.task_id] = self._info(event)
            elif event.kind == STARTED:
                info = self._reserved.pop(event.task_id, None) or self._info(event)
                info["time_start"] = time.time()
                info["acknowledged"] = False
                info["worker_pid"] = os.getpid()
                self._active[event.task_id] = info
            elif event.kind in ENDED:
                self._reserved.pop(event.task_id, None)
                self._active.pop(event.task_id, None)
                if event.name:
                    self.total[event.name] += 1
                self.by_queue[event.queue] += 1
                recent = self._recent.setdefault(event.queue, deque())
                recent.append(time.monotonic())
                self._forget_old(recent)

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(info) for info in self._active.values()]

    def reserved(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(info) for info in self._reserved.values()]

    def find(self, task_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """``query_task``: id → ("active" | "reserved", info) for the ids held here."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        with self._lock:
            for task_id in task_ids:
                if task_id in self._active:
                    found[task_id] = ("active", dict(self._active[task_id]))
                elif task_id in self._reserved:
                    found[task_id] = ("reserved", dict(self._reserved[task_id]))
        return found

    def queues(self) -> dict[str, dict[str, float]]:
        """Per queue: tasks ended here, and the rate over the last minute (tasks/s)."""
        with self._lock:
            for recent in self._recent.values():
                self._forget_old(recent)
            return {queue: {"processed": count,
                            "per_second_1m": round(len(self._recent.get(queue, ())) / RATE_WINDOW,
                                                   3)}
                    for queue, count in self.by_queue.items()}

    @staticmethod
    def _forget_old(recent: deque[float]) -> None:
        cutoff = time.monotonic() - RATE_WINDOW
        while recent and recent[0] < cutoff:
            recent.popleft()

    def is_active(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._active

    def _info(self, event: TaskEvent) -> dict[str, Any]:
        return {
            "id": event.task_id,
            "name": event.name,
            "args": list(event.args) if isinstance(event.args, (list, tuple)) else [],
            "kwargs": dict(event.kwargs) if isinstance(event.kwargs, dict) else {},
            "type": event.name,
            "hostname": self.hostname,
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {"exchange": "", "routing_key": event.queue, "priority": None,
                              "redelivered": False},
            "worker_pid": None,
            "protocol": event.protocol,
        }
