"""A bridge worker running in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bridge.app import Bridge
from bridge.worker import HandlerFactory, Worker, WorkerOptions


@contextmanager
def worker_thread(app: Bridge, concurrency: int = 8, *, handlers: Sequence[HandlerFactory] = (),
                  machinery: bool = True, **options: Any) -> Iterator[Worker]:
    """Run ``Worker(app)`` until the block ends; then stop it, join it and close the app.
    ``options`` are more :class:`WorkerOptions`."""
    worker = Worker(app, WorkerOptions(concurrency=concurrency, poll_timeout=0.1, **options),
                    handlers=handlers, machinery=machinery)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        app.close()
