"""The worker's task threads: each prepares once before its first job."""

from __future__ import annotations

import threading
from typing import Any

from bridge.task_threads import TaskThreads


def test_each_thread_prepares_once_before_its_jobs() -> None:
    prepared: list[int] = []
    ran: list[tuple[int, bool]] = []
    done = threading.Semaphore(0)

    def prepare() -> None:
        prepared.append(threading.get_ident())

    def run(job: Any) -> None:
        ran.append((threading.get_ident(), threading.get_ident() in prepared))
        done.release()

    pool = TaskThreads(4, run, prepare=prepare)
    assert pool.wait_prepared(10)
    assert len(prepared) == len(set(prepared)) == 4
    for n in range(20):
        pool.submit(n)  # type: ignore[arg-type]
    for _ in range(20):
        assert done.acquire(timeout=10)
    assert len(ran) == 20 and all(ok for _, ok in ran)
    pool.shutdown()


def test_a_failed_preparation_leaves_the_thread_working() -> None:
    ran = threading.Event()

    def prepare() -> None:
        raise RuntimeError("backend unreachable")

    pool = TaskThreads(2, lambda job: ran.set(), prepare=prepare)
    assert pool.wait_prepared(10)
    pool.submit(object())  # type: ignore[arg-type]
    assert ran.wait(10)
    pool.shutdown()


def test_celery_threads_get_their_result_backend_at_start() -> None:
    """Celery keeps a Redis result backend per thread; the handler makes it at start."""
    from celery import Celery

    from bridge.handlers.celery_trace import CeleryTracer

    app = Celery("prep", broker="memory://", backend="redis://127.0.0.1:1/0")
    tracer = CeleryTracer(app, "prep@host")
    seen: list[bool] = []

    def prepare() -> None:
        tracer.prepare_thread()
        seen.append(getattr(app._local, "backend", None) is not None)

    pool = TaskThreads(3, lambda job: None, prepare=prepare)
    assert pool.wait_prepared(10)
    assert seen == [True, True, True]
    assert getattr(app._local, "backend", None) is None  # this thread made none
    pool.shutdown()
