"""The worker's task threads: N daemon threads taking jobs from one queue."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from bridge.handlers.base import Job

log = logging.getLogger(__name__)


class TaskThreads:
    """N daemon threads running jobs from a queue (lighter than an executor's futures:
    outcomes go back through the worker's own queue). Each thread first runs ``prepare``
    (per-thread state made at start, not by the first task it runs)."""

    def __init__(self, size: int, run: Callable[[Job], None],
                 prepare: Callable[[], None] | None = None) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._run = run
        self._prepare = prepare
        self._unprepared = size
        self._lock = threading.Lock()
        self._prepared = threading.Event()
        if not size:
            self._prepared.set()
        self._threads = [threading.Thread(target=self._loop, name=f"bridge-task-{n}", daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def wait_prepared(self, timeout: float) -> bool:
        """Until every thread ran ``prepare`` (or ``timeout`` s passed); whether they did."""
        return self._prepared.wait(timeout)

    def _loop(self) -> None:
        if self._prepare is not None:
            try:
                self._prepare()
            except Exception as exc:  # the first task meets it again, and reports it
                log.debug("task thread preparation failed: %r", exc)
        with self._lock:
            self._unprepared -= 1
            if not self._unprepared:
                self._prepared.set()
        while (job := self._jobs.get()) is not None:
            self._run(job)

    def shutdown(self) -> None:
        """Stop taking jobs; threads still in a task are left to finish on their own."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)
