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
from types import FrameType
from typing import TYPE_CHECKING, Any

from bridge.app import Bridge
from bridge.brokers.base import Delivery
from bridge.control.revoked import RevokedIds
from bridge.handlers.base import Handler, Job, Outcome
from bridge.handlers.machinery import MachineryHandler
from bridge.observe import STARTED, Observer, Observers
from bridge.outage import Backoff, Outage, is_outage, one_line, probe
from bridge.process_slots import ProcessSlots
from bridge.protocol.machinery import Signature
from bridge.queuestats import queue_stats
from bridge.stop_watch import StopWatch
from bridge.task_threads import TaskThreads
from bridge.tasklog import TaskLog
from bridge.worker_options import ACK_HOLD, WorkerOptions, unregistered_delay

if TYPE_CHECKING:
    from bridge.metrics import WorkerMetrics

__all__ = ["ACK_HOLD", "HandlerFactory", "Worker", "WorkerOptions", "unregistered_delay"]

log = logging.getLogger("bridge.worker")

PREPARE_TIMEOUT = 30.0
"""Seconds the loop waits for the task threads' per-thread state before consuming."""

Hook = Callable[[Signature], None]
ErrorHandler = Callable[[Signature, BaseException], None]
HandlerFactory = Callable[["Worker"], Handler]


class Worker:
    """Consumes the app's machinery queue (and any extra handlers' queues) and runs the
    app's registered tasks."""

    def __init__(self, app: Bridge, options: WorkerOptions | None = None, *,
                 pre_task: Hook | None = None, post_task: Hook | None = None,
                 error_handler: ErrorHandler | None = None,
                 handlers: Sequence[HandlerFactory] = (), machinery: bool = True,
                 observers: Sequence[Observer] = ()) -> None:
        self.app = app
        self.observers = Observers([TaskLog(), *observers])
        """Told of every step of every task (from the loop and the task threads: an observer
        must be thread-safe)."""
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
        self._signalled = ""  # the signal's name, set by its handler: a plain flag, no lock
        self._finished = False  # run() returned (the stop watch's end)
        self._unregistered: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._process_slots: ProcessSlots | None = None
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._acks: dict[int, list[Delivery]] = {id(h): [] for h in self.handlers}
        self._ack_by: dict[int, float] = {}  # handler: when its pending acks must go out
        self._next_upkeep = 0.0
        self._reached = False  # whether this turn reached the broker (proof it is back)
        self._fetched = False  # whether the last turn fetched anything
        self._drained: set[int] = set()  # handlers whose last fetch got less than it asked
        self._handed_back = 0  # unknown tasks put straight back this turn
        self._reconcile = False  # a turn failed: compare what the broker holds for us
        self._adopted: dict[int, list[Delivery]] = {}  # held for us, never received: to run
        self.outage = Outage("broker or result backend", log,
                             Backoff(first=self.options.outage_backoff_first,
                                     cap=self.options.outage_backoff_cap))
        self.last_turn = time.monotonic()
        """When the loop last finished a turn (the health endpoint's proof of life)."""
        self.metrics: WorkerMetrics | None = None
        """Set by ``attach_metrics``: then queue depths are sampled by the loop."""
        self._next_sample = 0.0
        self.revoked = RevokedIds()
        """Task ids refused when they come (Celery's revoke, from the remote control)."""
        self.queue_factory: Callable[[str], HandlerFactory] | None = None
        """Makes the handler of a queue added at run time (Celery's add_consumer)."""
        self._soon: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    # ------------------------------------------------------------------ consuming

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT, or ``stop()``); returns the exit status 0."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            StopWatch(signalled=lambda: bool(self._signalled), answered=self._stopping.is_set,
                      stopped=lambda: self._finished, give_back=self._return_held,
                      graceful_timeout=self.options.graceful_timeout).start()
        opts = self.options
        if opts.pool == "processes":
            self._process_slots = ProcessSlots()
        log.info("worker consuming %s with %d %s",
                 ", ".join(f"{h.queue} ({type(h).__name__})" for h in self.handlers),
                 opts.concurrency, opts.pool)
        pool = TaskThreads(opts.concurrency, self._run, prepare=self._prepare_thread)
        if not pool.wait_prepared(PREPARE_TIMEOUT):
            log.warning("task threads still preparing after %.0f s: consuming anyway",
                        PREPARE_TIMEOUT)
        outage = self.outage
        wait = 0.0
        turn = 0
        while not self._stop_requested():
            turn += 1
            self._reached = False
            try:
                wait = self._turn(turn, wait, pool)
            except Exception as exc:  # an outage, or a bug: say so once, back off, go on
                if self.metrics is not None and not outage.ongoing:
                    self.metrics.outage_began()
                delay = outage.failed(exc)
                self.last_turn = time.monotonic()
                self._reconcile = True  # a reply may have been lost: check what we hold
                self._pause(delay)
                wait = 0.0
                continue
            self.last_turn = time.monotonic()
            if self._reached and outage.ongoing:  # a turn that called nothing proves nothing
                outage.succeeded()
                if self.metrics is not None:
                    self.metrics.outage_ended()
        self._drain()
        # tasks still running past graceful_timeout were returned to the queue: don't wait
        pool.shutdown()
        if self._process_slots is not None:
            self._process_slots.shutdown()
        for handler in self.handlers:
            handler.close()
        log.info("worker stopped")
        self._finished = True
        return 0

    def _turn(self, turn: int, wait: float, pool: TaskThreads) -> float:
        """One turn: upkeep when due, collect what ended, fetch and step each handler.
        Returns how long the next turn may wait for outcomes. Raises what the broker or
        backend raised, with nothing lost: outcomes not yet handed to a handler go back to
        the worker's queue, acks that did not go out are kept, a handler carries its step."""
        opts = self.options
        self._run_soon()
        if time.monotonic() >= self._next_upkeep:
            self._maintain()  # it may have had nothing due: it proves nothing
            self._next_upkeep = time.monotonic() + opts.maintain_interval
        if self._reconcile:
            self._adopt_unknown()
            self._reconcile = False
        finished = self._collect(wait)
        by_handler = self._split(finished)
        # a turn after one that fetched never blocks on an empty queue: messages parked or
        # sent back at once (bad input) leave nothing held, and must not cost a wait each
        busy = bool(finished) or self._fetched
        self._fetched = False
        self._handed_back = started = 0
        try:
            for index in range(len(self.handlers)):  # rotate: no queue starves another
                handler = self.handlers[(turn + index) % len(self.handlers)]
                # its queue was empty a moment ago: store what ended first (the waiting
                # client's result) and fetch next turn, its acks riding along then
                fetch = not (by_handler.get(id(handler)) and id(handler) in self._drained)
                if not fetch:  # once: the next turn fetches, however busy it is
                    self._drained.discard(id(handler))
                deliveries = self._adopted.get(id(handler), []) + (
                    self._fetch(handler, busy) if fetch else [])
                # fetched: from here the step owns them (a failed fetch left both in place)
                self._adopted.pop(id(handler), None)
                outcomes = by_handler.pop(id(handler), [])
                try:
                    jobs = handler.step(outcomes, deliveries)
                except Exception:  # a bug, not an outage: give the batch back, never strand it
                    log.exception("%s failed on a batch of %s; its %d messages go back to the "
                                  "queue", type(handler).__name__, handler.queue,
                                  len(deliveries) + len(outcomes))
                    self.give_back(handler, deliveries + [job.delivery for job, _, _ in outcomes])
                    raise
                self._start(jobs, pool)
                started += len(jobs)
                busy = busy or bool(deliveries)
                self._fetched = self._fetched or bool(deliveries)
                cause = handler.take_outage()
                if cause is not None:
                    raise cause
        finally:
            for outcomes in by_handler.values():  # not handed over: next turn
                for outcome in outcomes:
                    self._done.put(outcome)
        if self._handed_back and not started:
            return 0.02  # only tasks we do not know came: do not spin on them
        full = all(self._free(handler) <= 0 for handler in self.handlers)
        if not self._held or (busy and not full and len(self._drained) < len(self.handlers)):
            return 0.0
        # every queue was empty at its last fetch, or no thread is free to take more: wait
        # for what runs to end (new messages are fetched within 0.1 s, as while long tasks
        # run), or until held-back acks are due
        wait = 0.1 if self._running else 0.02
        if self._ack_by:
            wait = min(wait, max(0.0, min(self._ack_by.values()) - time.monotonic()))
        return wait

    def _adopt_unknown(self) -> None:
        """After a failed turn: messages the broker holds for us that we never received (a
        take whose reply was lost) are run now, instead of waiting in our processing list
        until this worker dies."""
        for handler in self.handlers:
            with self._lock:
                known = [d for h, d in self._held.values() if h is handler]
            known += self._acks[id(handler)] + self._adopted.get(id(handler), [])
            found = handler.consumer.unknown_held(handler.queue, known)
            if found:
                log.warning("%d message(s) of %s were taken by a call whose reply was lost: "
                            "running them now", len(found), handler.queue)
                self._adopted[id(handler)] = self._adopted.get(id(handler), []) + found

    def _fetch(self, handler: Handler, busy: bool) -> list[Delivery]:
        """Fetch for idle threads only, so a task is STARTED when a thread runs it; the
        last batch's acks ride along (and stay for the next try if the fetch fails)."""
        free = self._free(handler)
        acks = self._take_acks(handler)
        try:
            if free > 0:
                idle = not self._held and not busy
                timeout = self.options.poll_timeout / len(self.handlers) if idle else 0.0
                deliveries = handler.consumer.fetch(handler.queue, free, timeout, ack=acks)
                self._ack_by.pop(id(handler), None)
                self._reached = True
                if len(deliveries) < free:
                    self._drained.add(id(handler))
                else:
                    self._drained.discard(id(handler))
                return deliveries
            if acks:  # every thread busy: the next fetch carries them, if it comes soon
                if (time.monotonic() < self._ack_by.get(id(handler), 0.0)
                        and not self._stopping.is_set()):
                    self._acks[id(handler)] = acks + self._acks[id(handler)]
                    return []
                handler.consumer.ack(acks)
                self._ack_by.pop(id(handler), None)
                self._reached = True
        except BaseException:
            self._acks[id(handler)] = acks + self._acks[id(handler)]
            raise
        return []

    def _free(self, handler: Handler) -> int:
        """How many more messages ``handler`` may fetch now (0 or less: none)."""
        if handler.paused:
            return 0
        multiplier = self.options.prefetch_multiplier or handler.prefetch_multiplier
        return self.options.concurrency * multiplier - self._running

    @property
    def busy(self) -> int:
        """Tasks still running in a thread (after a graceful timeout their messages are
        back in the queue, and the process may exit without waiting for them)."""
        return self._running

    def check(self) -> None:
        """Reach every broker and backend the handlers use, once (start-up validation): a
        failure is one :class:`~bridge.errors.Unreachable` line."""
        seen: set[tuple[str, str]] = set()
        endpoints = []
        for handler in self.handlers:
            for endpoint in handler.endpoints():
                if endpoint[:2] not in seen:
                    seen.add(endpoint[:2])
                    endpoints.append(endpoint)
        probe(endpoints)

    def stop(self) -> None:
        """Stop fetching; in-flight tasks finish (up to graceful_timeout)."""
        self._stopping.set()

    def _stop_requested(self) -> bool:
        if self._signalled and not self._stopping.is_set():
            log.warning("signal %s received: finishing running tasks (%d), then exiting",
                        self._signalled, self._running)
            self._stopping.set()
        return self._stopping.is_set()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (an outage's back-off), in short slices: a signal handler only
        sets a flag (an Event.set there could deadlock with this very wait's lock)."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested() and (left := deadline - time.monotonic()) > 0:
            self._stopping.wait(min(left, 0.25))

    def _maintain(self) -> None:
        seen: set[int] = set()
        for handler in self.handlers:
            if id(handler.consumer) not in seen:
                seen.add(id(handler.consumer))
                handler.consumer.maintain()
        if self.metrics is not None and time.monotonic() >= self._next_sample:
            self._next_sample = time.monotonic() + self.options.metrics_interval
            self._sample(self.metrics)

    def attach_metrics(self, metrics: WorkerMetrics) -> None:
        """Count tasks into ``metrics`` and sample the queues every metrics_interval."""
        self.metrics = metrics
        self.observers.add(metrics)

    def _sample(self, metrics: WorkerMetrics) -> None:
        metrics.running.set(self._running)
        for handler in self.handlers:
            try:
                stats = queue_stats(handler.consumer, handler.queue)
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.debug("could not sample %s for the metrics: %s", handler.queue, exc)
                continue
            metrics.sample_queue(handler.queue, handler.protocol, stats)

    def _split(self, finished: list[Outcome]) -> dict[int, list[Outcome]]:
        by_handler: dict[int, list[Outcome]] = {}
        for outcome in finished:
            by_handler.setdefault(id(outcome[0].handler), []).append(outcome)
        return by_handler

    def _start(self, jobs: list[Job], pool: TaskThreads | None) -> None:
        for job in jobs:
            if pool is None:  # shutting down: nothing new starts
                self.give_back(job.handler, [job.delivery])
                continue
            with self._lock:
                self._running += 1
            pool.submit(job)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # nothing here takes a lock the interrupted loop may hold (logging, Event.set):
        # the loop sees the flag within a turn and says so
        self._signals += 1
        if self._signals == 1:
            self._signalled = signal.Signals(signum).name
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
            log.warning("%s: returning %d messages to their queues",
                        "graceful timeout" if self._running else "results not stored",
                        len(self._held))
            self._return_held()

    def _finish_only(self, finished: list[Outcome]) -> None:
        for handler_id, outcomes in self._split(finished).items():
            handler = outcomes[0][0].handler
            assert id(handler) == handler_id
            try:
                self._start(handler.step(outcomes, []), None)
            except Exception as exc:  # their messages stay held: returned below, or recovered
                self._at_shutdown(exc, f"could not store {len(outcomes)} results")

    def _flush_acks(self) -> bool:
        """Send the acks still pending; False when the broker could not be reached."""
        for handler in self.handlers:
            acks = self._take_acks(handler)
            if acks:
                try:
                    handler.consumer.ack(acks)
                except Exception as exc:
                    self._at_shutdown(exc, f"could not acknowledge {len(acks)} messages")
                    return False
                self._ack_by.pop(id(handler), None)
        return True

    def _return_held(self) -> None:
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        if not self._flush_acks():
            return
        for index, (handler, delivery) in enumerate(held):
            try:
                handler.consumer.requeue(delivery)
            except Exception as exc:  # the broker's recovery will bring it back
                self._at_shutdown(exc, f"could not return {len(held) - index} messages")
                return

    @staticmethod
    def _at_shutdown(exc: Exception, what: str) -> None:
        """One line for a broker or backend that fails us while we stop; a bug's traceback."""
        if not is_outage(exc):
            log.exception("%s", what)
            return
        log.warning("%s (%s): unreachable while stopping; the broker gives back what this "
                    "worker held once it is back (Redis: after --recover-after)", what,
                    one_line(exc))

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
            self._ack_by.setdefault(id(handler), time.monotonic() + ACK_HOLD)

    def give_back(self, handler: Handler, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if self._release(delivery):
                self._requeue_safely(handler, delivery)

    def park(self, handler: Handler, delivery: Delivery, reason: str) -> None:
        """Dead-letter a held message. An outage is raised (the handler tries again at its
        next step); any other failure leaves it held, logged, for recovery."""
        try:
            handler.consumer.dead_letter(delivery, reason)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("could not park a message of %s; it stays held", delivery.queue)
            return
        self._release(delivery)

    def requeue_later(self, handler: Handler, delivery: Delivery, delay: float) -> None:
        """Back to the queue after ``delay`` s; an outage is raised (the handler tries again
        at its next step, the message still held)."""
        try:
            handler.consumer.requeue(delivery, delay)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("could not return a message to %s; recovery will", delivery.queue)
        self._release(delivery)

    def unregistered(self, handler: Handler, delivery: Delivery, task_id: str,
                     name: str) -> None:
        """Hand a task this worker does not know back to its queue: at once during the
        hand-off window (a delayed return would hide it from a worker that knows it too,
        and whose delayed mover brings it back is a coin toss), then with back-off."""
        now = time.monotonic()
        seen = self._unregistered.pop(task_id, None)
        first_seen, returns = seen if seen is not None else (now, 0)
        if seen is not None and now - first_seen >= self.options.handoff_window:
            returns += 1
        self._unregistered[task_id] = (first_seen, returns)
        while len(self._unregistered) > 10_000:
            self._unregistered.popitem(last=False)
        if returns == 0:
            (log.warning if seen is None else log.debug)(
                "task %s (%s) is not registered with this worker: back to %s, for a worker "
                "that knows it", task_id, name, delivery.queue)
            self._handed_back += 1
            self.requeue_later(handler, delivery, 0.0)
            return
        delay = unregistered_delay(returns, self.options.max_unregistered_backoff)
        log.warning("task %s (%s) is still not taken by a worker that knows it: back to %s "
                    "in %.1f s", task_id, name, delivery.queue, delay)
        self.requeue_later(handler, delivery, delay)

    def registered(self, task_id: str) -> None:
        if self._unregistered:
            self._unregistered.pop(task_id, None)

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self.revoked

    def stamp_revoked(self, stamped_headers: Any, stamps: Any) -> dict[str, Any] | None:
        return self.revoked.stamp_revoked(stamped_headers, stamps)

    # ------------------------------------------------------------------ remote control

    def call_soon(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the loop at its next turn (from another thread)."""
        self._soon.put(action)

    def _run_soon(self) -> None:
        while True:
            try:
                action = self._soon.get_nowait()
            except queue.Empty:
                return
            try:
                action()
            except Exception:
                log.exception("a remote-control action failed")

    def consumed_queues(self, all_protocols: bool = False) -> list[str]:
        """The Celery queues this worker fetches from (Celery's active_queues); with
        ``all_protocols``, machinery's too."""
        return [h.queue for h in self.handlers
                if (all_protocols or h.protocol == "celery") and not h.paused]

    def add_queue(self, name: str) -> None:
        """Consume the Celery queue ``name`` too (or again, after cancel_queue)."""
        for handler in self.handlers:
            if handler.queue == name and handler.protocol == "celery":
                if handler.paused:
                    handler.paused = False
                    log.info("consuming from %s again", name)
                return
        if self.queue_factory is None:
            log.warning("add_consumer %s: this worker serves no Celery broker", name)
            return
        handler = self.queue_factory(name)(self)
        self._acks[id(handler)] = []
        self.handlers.append(handler)
        log.info("consuming from %s (add_consumer)", name)

    def cancel_queue(self, name: str) -> None:
        """Stop fetching from the Celery queue ``name``; what it holds still finishes."""
        for handler in self.handlers:
            if handler.queue == name and handler.protocol == "celery" and not handler.paused:
                handler.paused = True
                log.info("no longer consuming from %s (cancel_consumer)", name)

    def _requeue_safely(self, handler: Handler, delivery: Delivery, delay: float = 0.0) -> None:
        try:
            handler.consumer.requeue(delivery, delay)
        except Exception:
            log.exception("could not return a message to %s; recovery will", delivery.queue)

    def _take_acks(self, handler: Handler) -> list[Delivery]:
        """The acks waiting for ``handler``'s consumer (put back if they do not go out)."""
        acks = self._acks[id(handler)]
        if acks:
            self._acks[id(handler)] = []
        return acks

    # ------------------------------------------------------------------ the task threads

    def _prepare_thread(self) -> None:
        """In each task thread once, before its first job: what each handler needs there."""
        for handler in self.handlers:
            handler.prepare_thread()

    def _run(self, job: Job) -> None:
        """In a pool thread: the pre-task hook and the function, nothing else."""
        returned: Any = None
        error: BaseException | None = None
        job.handler.report(STARTED, job)
        began = time.perf_counter()
        try:
            if self.pre_task is not None and job.signature is not None:
                self.pre_task(job.signature)
            returned = job.handler.call(job, self._call)
        except BaseException as exc:  # reported, never lost: the handler decides what follows
            error = exc
        job.runtime = time.perf_counter() - began
        with self._lock:
            self._running -= 1
        self._done.put((job, returned, error))

    def _call(self, job: Job) -> Any:
        task = job.task
        if self._process_slots is not None and not task.is_async:
            return self._process_slots.call(task.func, job.args, job.kwargs)
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
