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
    """Thread-safe: events come from the worker loop and its task threads. An event is kept
    as it came; the shapes the commands answer with are built when one asks."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._reserved: dict[str, TaskEvent] = {}
        self._active: dict[str, tuple[TaskEvent, float]] = {}  # its RECEIVED, when it started
        self.total: Counter[str] = Counter()
        """Tasks ended on this worker, by name (Celery's ``stats()['total']``)."""
        self.by_queue: Counter[str] = Counter()
        self._recent: dict[str, deque[list[int]]] = {}
        """Per queue: [second, tasks ended in it] for the last minute's seconds."""

    def task_event(self, event: TaskEvent) -> None:
        task_id = event.task_id
        if not task_id:
            return
        kind = event.kind
        with self._lock:
            if kind == RECEIVED:
                self._reserved[task_id] = event
            elif kind == STARTED:
                self._active[task_id] = (self._reserved.pop(task_id, event), event.timestamp)
            elif kind in ENDED:
                self._reserved.pop(task_id, None)
                self._active.pop(task_id, None)
                if event.name:
                    self.total[event.name] += 1
                self.by_queue[event.queue] += 1
                self._count_recent(event.queue)

    def _count_recent(self, queue: str) -> None:
        second = int(time.monotonic())
        recent = self._recent.get(queue)
        if recent is None:
            recent = self._recent[queue] = deque()
        if recent and recent[-1][0] == second:
            recent[-1][1] += 1
        else:
            recent.append([second, 1])
            self._forget_old(recent)

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._started_info(*item) for item in self._active.values()]

    def reserved(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._info(event) for event in self._reserved.values()]

    def find(self, task_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """``query_task``: id → ("active" | "reserved", info) for the ids held here."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        with self._lock:
            for task_id in task_ids:
                if task_id in self._active:
                    found[task_id] = ("active", self._started_info(*self._active[task_id]))
                elif task_id in self._reserved:
                    found[task_id] = ("reserved", self._info(self._reserved[task_id]))
        return found

    def queues(self) -> dict[str, dict[str, float]]:
        """Per queue: tasks ended here, and the rate over the last minute (tasks/s)."""
        with self._lock:
            for recent in self._recent.values():
                self._forget_old(recent)
            return {queue: {"processed": count,
                            "per_second_1m": round(sum(n for _, n in self._recent.get(queue, ()))
                                                   / RATE_WINDOW, 3)}
                    for queue, count in self.by_queue.items()}

    @staticmethod
    def _forget_old(recent: deque[list[int]]) -> None:
        cutoff = time.monotonic() - RATE_WINDOW
        while recent and recent[0][0] < cutoff:
            recent.popleft()

    def is_active(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._active

    def _started_info(self, event: TaskEvent, since: float) -> dict[str, Any]:
        info = self._info(event)
        info["time_start"] = since
        info["worker_pid"] = os.getpid()
        return info

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
