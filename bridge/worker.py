"""The worker loop: fetch in batches, run task functions in threads, acknowledge.

One loop owns every broker and backend call. Each turn it collects the tasks that
ended, fetches for the idle threads from each consumed queue (the last turn's acks
ride on that fetch), and hands both to the queue's protocol handler
(``bridge.handlers``), which writes states in one batch, sends follow-ups and
returns the new jobs; the task threads only run functions. A message is
acknowledged only after its outcome is stored, so a crash re-runs it instead of
losing it. Unregistered tasks go back with growing back-off, never in a hot loop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

from bridge.app import Bridge
from bridge.brokers.base import Delivery
from bridge.handlers.base import Handler, Job, Outcome
from bridge.handlers.machinery import MachineryHandler
from bridge.protocol.machinery import Signature

log = logging.getLogger("bridge.worker")

Hook = Callable[[Signature], None]
ErrorHandler = Callable[[Signature, BaseException], None]
HandlerFactory = Callable[["Worker"], Handler]


@dataclass(slots=True)
class WorkerOptions:
    """How a worker runs (``mbridge worker`` flags)."""

    queue: str = ""
    concurrency: int = 4
    pool: str = "threads"  # or "processes" for CPU-bound tasks
    graceful_timeout: float = 30.0
    poll_timeout: float = 0.5  # longest wait on an empty queue (machinery polls every 1 s)
    maintain_interval: float = 0.25  # heartbeat/delayed-mover checks (each runs when due)
    max_unregistered_backoff: float = 60.0
    prefetch_multiplier: int | None = None
    """Messages held per thread (fetched ahead of the threads); None: each handler's own
    default (machinery 1, so a task is STARTED when a thread runs it; Celery 4, as
    Celery's worker_prefetch_multiplier)."""


class _TaskThreads:
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


class Worker:
    """Consumes the app's machinery queue (and any extra handlers' queues) and runs the
    app's registered tasks."""

    def __init__(self, app: Bridge, options: WorkerOptions | None = None, *,
                 pre_task: Hook | None = None, post_task: Hook | None = None,
                 error_handler: ErrorHandler | None = None,
                 handlers: Sequence[HandlerFactory] = (), machinery: bool = True) -> None:
        self.app = app
        self.options = options or WorkerOptions()
        self.queue = self.options.queue or app.config.default_queue
        self.pre_task = pre_task
        self.post_task = post_task
        self.error_handler = error_handler
        self.handlers: list[Handler] = []
        if machinery:
            self.handlers.append(MachineryHandler(self, app.broker, self.queue))
        self.handlers += [make(self) for make in handlers]
        if not self.handlers:
            raise ValueError("a worker needs at least one queue to consume")
        self._lock = threading.Lock()
        self._held: dict[int, tuple[Handler, Delivery]] = {}  # fetched, not yet done
        self._running = 0  # in a pool thread right now
        self._stopping = threading.Event()
        self._signals = 0
        self._unregistered: OrderedDict[str, int] = OrderedDict()
        self._process_pool: Executor | None = None
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._acks: dict[int, list[Delivery]] = {id(h): [] for h in self.handlers}

    # ------------------------------------------------------------------ consuming

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT, or ``stop()``); returns the exit status 0."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        opts = self.options
        if opts.pool == "processes":
            self._process_pool = ProcessPoolExecutor(opts.concurrency)
        log.info("worker consuming %s with %d %s",
                 ", ".join(f"{h.queue} ({type(h).__name__})" for h in self.handlers),
                 opts.concurrency, opts.pool)
        next_upkeep = 0.0
        pool = _TaskThreads(opts.concurrency, self._run)
        wait = 0.0
        turn = 0
        while not self._stopping.is_set():
            if time.monotonic() >= next_upkeep:
                self._maintain()
                next_upkeep = time.monotonic() + opts.maintain_interval
            finished = self._collect(wait)
            by_handler = self._split(finished)
            busy = bool(finished)
            turn += 1
            for index in range(len(self.handlers)):  # rotate: no queue starves another
                handler = self.handlers[(turn + index) % len(self.handlers)]
                # fetch for idle threads only, so a task is STARTED when a thread runs it;
                # the last batch's acks ride along, and a finished batch is written with
                # the new one
                multiplier = opts.prefetch_multiplier or handler.prefetch_multiplier
                free = opts.concurrency * multiplier - self._running
                deliveries: list[Delivery] = []
                acks = self._take_acks(handler)
                if free > 0:
                    idle = not self._held and not busy
                    timeout = opts.poll_timeout / len(self.handlers) if idle else 0.0
                    deliveries = handler.consumer.fetch(handler.queue, free, timeout, ack=acks)
                elif len(acks) >= 256:  # all threads busy for long: don't hold acks back
                    handler.consumer.ack(acks)
                elif acks:  # they ride on the next fetch, when a thread is free
                    self._acks[id(handler)] = acks + self._acks[id(handler)]
                jobs = handler.step(by_handler.pop(id(handler), []), deliveries)
                self._start(jobs, pool)
                busy = busy or bool(deliveries)
            wait = 0.0 if busy or not self._held else (0.1 if self._running else 0.02)
        self._drain()
        # tasks still running past graceful_timeout were returned to the queue: don't wait
        pool.shutdown()
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=False, cancel_futures=True)
        for handler in self.handlers:
            handler.close()
        log.info("worker stopped")
        return 0

    @property
    def busy(self) -> int:
        """Tasks still running in a thread (after a graceful timeout their messages are
        back in the queue, and the process may exit without waiting for them)."""
        return self._running

    def stop(self) -> None:
        """Stop fetching; in-flight tasks finish (up to graceful_timeout)."""
        self._stopping.set()

    def _maintain(self) -> None:
        seen: set[int] = set()
        for handler in self.handlers:
            if id(handler.consumer) not in seen:
                seen.add(id(handler.consumer))
                handler.consumer.maintain()

    def _split(self, finished: list[Outcome]) -> dict[int, list[Outcome]]:
        by_handler: dict[int, list[Outcome]] = {}
        for outcome in finished:
            by_handler.setdefault(id(outcome[0].handler), []).append(outcome)
        return by_handler

    def _start(self, jobs: list[Job], pool: _TaskThreads | None) -> None:
        for job in jobs:
            if pool is None:  # shutting down: nothing new starts
                self.give_back(job.handler, [job.delivery])
                continue
            with self._lock:
                self._running += 1
            pool.submit(job)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("signal %s received: finishing running tasks (%d), then exiting",
                        signal.Signals(signum).name, self._running)
            self.stop()
            return
        log.warning("second signal: returning %d held messages and exiting now", len(self._held))
        self._return_held()
        os._exit(0)

    def _drain(self) -> None:
        """After stop: finish running tasks up to graceful_timeout, then return the rest."""
        deadline = time.monotonic() + self.options.graceful_timeout
        while self._running and time.monotonic() < deadline:
            self._finish_only(self._collect(0.1))
        self._finish_only(self._collect(0.0))
        self._flush_acks()
        if self._held:
            log.warning("graceful timeout: returning %d unfinished messages", len(self._held))
            self._return_held()

    def _finish_only(self, finished: list[Outcome]) -> None:
        for handler_id, outcomes in self._split(finished).items():
            handler = outcomes[0][0].handler
            assert id(handler) == handler_id
            self._start(handler.step(outcomes, []), None)

    def _flush_acks(self) -> None:
        for handler in self.handlers:
            acks = self._take_acks(handler)
            if acks:
                try:
                    handler.consumer.ack(acks)
                except Exception:
                    log.exception("could not acknowledge %d messages of %s", len(acks),
                                  handler.queue)

    def _return_held(self) -> None:
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        self._flush_acks()
        for handler, delivery in held:
            try:
                handler.consumer.requeue(delivery)
            except Exception:  # the broker's recovery will bring it back
                log.exception("could not return a message to %s", delivery.queue)

    # ------------------------------------------------------------------ the Host protocol

    def hold(self, handler: Handler, delivery: Delivery) -> None:
        with self._lock:
            self._held[id(delivery)] = (handler, delivery)

    def _release(self, delivery: Delivery) -> bool:
        """Done with a message; False when a shutdown already returned it to the queue."""
        with self._lock:
            return self._held.pop(id(delivery), None) is not None

    def done(self, handler: Handler, delivery: Delivery) -> None:
        if self._release(delivery):
            self._acks[id(handler)].append(delivery)

    def give_back(self, handler: Handler, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if self._release(delivery):
                self._requeue_safely(handler, delivery)

    def park(self, handler: Handler, delivery: Delivery, reason: str) -> None:
        """Dead-letter a held message (it stays held for recovery if even that fails)."""
        try:
            handler.consumer.dead_letter(delivery, reason)
        except Exception:
            log.exception("could not park a message of %s; it stays held", delivery.queue)
            return
        self._release(delivery)

    def requeue_later(self, handler: Handler, delivery: Delivery, delay: float) -> None:
        self._requeue_safely(handler, delivery, delay)
        self._release(delivery)

    def unregistered(self, handler: Handler, delivery: Delivery, task_id: str,
                     name: str) -> None:
        attempts = self._unregistered.pop(task_id, 0) + 1
        self._unregistered[task_id] = attempts
        while len(self._unregistered) > 10_000:
            self._unregistered.popitem(last=False)
        delay = min(self.options.max_unregistered_backoff, 2.0 ** (attempts - 1))
        log.warning("task %s (%s) is not registered with this worker: back to %s in %.0fs",
                    task_id, name, delivery.queue, delay)
        self.requeue_later(handler, delivery, delay)

    def registered(self, task_id: str) -> None:
        if self._unregistered:
            self._unregistered.pop(task_id, None)

    def _requeue_safely(self, handler: Handler, delivery: Delivery, delay: float = 0.0) -> None:
        try:
            handler.consumer.requeue(delivery, delay)
        except Exception:
            log.exception("could not return a message to %s; recovery will", delivery.queue)

    def _take_acks(self, handler: Handler) -> list[Delivery]:
        acks = self._acks[id(handler)]
        if acks:
            self._acks[id(handler)] = []
        return acks

    # ------------------------------------------------------------------ the task threads

    def _run(self, job: Job) -> None:
        """In a pool thread: the pre-task hook and the function, nothing else."""
        returned: Any = None
        error: BaseException | None = None
        try:
            if self.pre_task is not None and job.signature is not None:
                self.pre_task(job.signature)
            returned = job.handler.call(job, self._call)
        except BaseException as exc:  # reported, never lost: the handler decides what follows
            error = exc
        with self._lock:
            self._running -= 1
        self._done.put((job, returned, error))

    def _call(self, job: Job) -> Any:
        task = job.task
        if self._process_pool is not None and not task.is_async:
            return self._process_pool.submit(task.func, *job.args, **job.kwargs).result()
        return task.call(job.args, job.kwargs)

    def _collect(self, wait: float) -> list[Outcome]:
        """Outcomes of tasks that ended, waiting up to ``wait`` s for the first."""
        try:
            first = self._done.get(timeout=wait) if wait else self._done.get_nowait()
        except queue.Empty:
            return []
        finished = [first]
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return finished
