"""The worker's task threads: N daemon threads taking jobs from one queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from bridge.handlers.base import Job


class TaskThreads:
    """N daemon threads running jobs from a queue (lighter than an executor's futures:
    outcomes go back through the worker's own queue)."""

    def __init__(self, size: int, run: Callable[[Job], None]) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._run = run
        self._threads = [threading.Thread(target=self._loop, name=f"bridge-task-{n}", daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def _loop(self) -> None:
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
