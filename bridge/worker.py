"""The worker: runs registered Python functions for machinery messages, as Go's worker does.

Lifecycle per message (machinery ``worker.go`` Process): decode → registered? →
RECEIVED → typed args → STARTED → pre-task hook → call → post-task hook →
SUCCESS (OnSuccess callbacks, chord) | RETRY (RetryCount, Fibonacci, ETA) |
RetryLater (ErrRetryTaskLater) | FAILURE (OnError callbacks). A message is
acknowledged only after all of that, so a crash re-runs it instead of losing it.

Beyond Go: undecodable or untranslatable messages are parked in the broker's
dead-letter list with the reason (and a FAILURE state where the UUID is known);
unregistered tasks go back with growing back-off, never in a hot loop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

from bridge.app import Bridge
from bridge.backends.base import new_state
from bridge.brokers.base import Delivery
from bridge.errors import BridgeError, DecodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import Pairs
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import (
    FAILURE,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Arg,
    Signature,
    TaskResult,
)
from bridge.retry import RetryLater, fibonacci_next
from bridge.task import RegisteredTask

log = logging.getLogger("bridge.worker")

Hook = Callable[[Signature], None]
ErrorHandler = Callable[[Signature, BaseException], None]


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


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _salvage_uuid(body: bytes) -> str:
    """The UUID of a message that does not decode as a Signature, when it can be read at all."""
    try:
        raw = gojson.loads_raw(body)
    except DecodeError:
        return ""
    if type(raw) is not Pairs:
        return ""
    for key, value in raw:
        if gojson.fold_key(key) == "uuid" and isinstance(value, str):
            return value
    return ""


_Job = tuple[Delivery, Signature, RegisteredTask, list[Any]]
_Outcome = tuple[Delivery, Signature, "list[TaskResult] | BaseException"]


class _TaskThreads:
    """N daemon threads running jobs from a queue (lighter than an executor's futures:
    outcomes go back through the worker's own queue)."""

    def __init__(self, size: int, run: Callable[[_Job], None]) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._run = run
        self._threads = [threading.Thread(target=self._loop, name=f"bridge-task-{n}", daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: _Job) -> None:
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
    """Consumes one queue and runs the app's registered tasks."""

    def __init__(self, app: Bridge, options: WorkerOptions | None = None, *,
                 pre_task: Hook | None = None, post_task: Hook | None = None,
                 error_handler: ErrorHandler | None = None) -> None:
        self.app = app
        self.options = options or WorkerOptions()
        self.queue = self.options.queue or app.config.default_queue
        self.pre_task = pre_task
        self.post_task = post_task
        self.error_handler = error_handler
        self._lock = threading.Lock()
        self._held: dict[int, Delivery] = {}  # fetched, not yet acked / requeued / parked
        self._running = 0  # in a pool thread right now
        self._stopping = threading.Event()
        self._signals = 0
        self._unregistered: OrderedDict[str, int] = OrderedDict()
        self._process_pool: Executor | None = None
        self._done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._acks: list[Delivery] = []  # done; acknowledged with the next fetch

    # ------------------------------------------------------------------ consuming
    # The loop owns every broker and backend call, in batches. Each turn: collect the tasks
    # that ended; fetch for the idle threads (the last turn's acks ride on that call); write
    # the ended ones' SUCCESS and the new ones' RECEIVED and STARTED in one pipeline; send
    # callbacks; hand the new functions to the task threads, which do nothing else.

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT, or ``stop()``); returns the exit status 0."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        opts = self.options
        if opts.pool == "processes":
            self._process_pool = ProcessPoolExecutor(opts.concurrency)
        broker = self.app.broker
        log.info("worker consuming %s with %d %s", self.queue, opts.concurrency, opts.pool)
        next_upkeep = 0.0
        pool = _TaskThreads(opts.concurrency, self._run)
        wait = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_upkeep:
                broker.maintain()
                next_upkeep = time.monotonic() + opts.maintain_interval
            finished = self._collect(wait)
            # fetch for idle threads only, so a task is STARTED when a thread runs it; the
            # last batch's acks ride along, and a finished batch is written with the new one
            free = opts.concurrency - self._running
            deliveries: list[Delivery] = []
            if free > 0:
                idle = not self._held and not finished
                deliveries = broker.fetch(self.queue, free, opts.poll_timeout if idle else 0.0,
                                          ack=self._take_acks())
            elif self._acks:
                broker.ack(self._take_acks())
            self._step(finished, deliveries, pool)
            busy = bool(deliveries or finished)
            wait = 0.0 if busy or not self._held else (0.1 if free <= 0 else 0.02)
        self._drain()
        # tasks still running past graceful_timeout were returned to the queue: don't wait
        pool.shutdown()
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=False, cancel_futures=True)
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
            self._step(self._collect(0.1), [], None)
        self._step(self._collect(0.0), [], None)
        if self._acks:
            self.app.broker.ack(self._take_acks())
        if self._held:
            log.warning("graceful timeout: returning %d unfinished messages", len(self._held))
            self._return_held()

    def _return_held(self) -> None:
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        broker = self.app.broker
        if self._acks:
            broker.ack(self._take_acks())
        for delivery in held:
            try:
                broker.requeue(delivery)
            except Exception:  # the heartbeat recovery will bring it back
                log.exception("could not return a message to %s", delivery.queue)

    def _hold(self, delivery: Delivery) -> None:
        with self._lock:
            self._held[id(delivery)] = delivery

    def _release(self, delivery: Delivery) -> bool:
        """Done with a message; False when a shutdown already returned it to the queue."""
        with self._lock:
            return self._held.pop(id(delivery), None) is not None

    # ------------------------------------------------------------------ starting a batch

    def _step(self, finished: list[_Outcome], deliveries: list[Delivery],
              pool: _TaskThreads | None) -> None:
        """One batch: finished tasks' SUCCESS states and the new tasks' RECEIVED/STARTED in
        one backend write; then callbacks and acks for the finished, and the new ones run."""
        states = [new_state(sig, SUCCESS, out) for _, sig, out in finished
                  if isinstance(out, list)]
        runnable: list[_Job] = []
        rejected: list[tuple[Delivery, Signature, BridgeError]] = []
        for delivery in deliveries:
            self._hold(delivery)
            try:
                prepared = self._prepare(delivery)
            except Exception:
                log.exception("could not prepare a message of %s", delivery.queue)
                self._park(delivery, "worker error (see worker log)")
                continue
            if prepared is None:
                continue
            sig, task, values = prepared
            if isinstance(values, BridgeError):
                error = f"Reflect task args error: {values}"
                states += [new_state(sig, RECEIVED), new_state(sig, FAILURE, error=error)]
                rejected.append((delivery, sig, values))
            else:
                states += [new_state(sig, RECEIVED), new_state(sig, STARTED)]
                runnable.append((delivery, sig, task, values))
        if states:
            try:
                self.app.backend.set_states(states)
            except Exception:
                log.exception("could not write %d states; the messages go back to the queue",
                              len(states))
                self._give_back([f[0] for f in finished if isinstance(f[2], list)]
                                + [r[0] for r in rejected] + [j[0] for j in runnable])
                finished = [f for f in finished if not isinstance(f[2], list)]
                rejected, runnable = [], []
        for delivery, sig, exc in rejected:
            error = f"Reflect task args error: {exc}"
            log.error("task %s (%s): %s; message parked", sig.uuid, sig.name, error)
            self._on_failure(sig, error, exc, state_written=True)
            self._park(delivery, error)
        for delivery, sig, outcome in finished:
            self._after(delivery, sig, outcome)
        for job in runnable:
            if pool is None:  # shutting down: nothing new starts
                self._give_back([job[0]])
                continue
            with self._lock:
                self._running += 1
            pool.submit(job)

    def _give_back(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if self._release(delivery):
                self._requeue_safely(delivery)

    def _take_acks(self) -> list[Delivery]:
        acks, self._acks = self._acks, []
        return acks

    def _prepare(self, delivery: Delivery) -> tuple[Signature, RegisteredTask,
                                                    list[Any] | BridgeError] | None:
        """The message's signature, task and typed args (or why the args are bad);
        None when the message was dealt with here (undecodable, unregistered)."""
        try:
            sig = Signature.from_json(delivery.body)
        except DecodeError as exc:
            self._park_undecodable(delivery, exc)
            return None
        task = self.app.tasks.get(sig.name)
        if task is None:
            self._unregistered_task(delivery, sig)
            return None
        self._unregistered.pop(sig.uuid, None)
        try:
            return sig, task, task.python_args(sig.args)
        except BridgeError as exc:
            return sig, task, exc

    def _run(self, job: _Job) -> None:
        """In a pool thread: the pre-task hook and the function, nothing else."""
        delivery, sig, task, values = job
        outcome: list[TaskResult] | BaseException
        try:
            if self.pre_task is not None:
                self.pre_task(sig)
            outcome = self._call(task, values)
        except BaseException as exc:  # reported, never lost: the loop decides what follows
            outcome = exc
        with self._lock:
            self._running -= 1
        self._done.put((delivery, sig, outcome))

    def _call(self, task: RegisteredTask, values: list[Any]) -> list[TaskResult]:
        if self._process_pool is not None and not task.is_async:
            returned = self._process_pool.submit(task.func, *values).result()
        else:
            returned = task.call(values)
        return task.results(returned)

    # ------------------------------------------------------------------ finishing

    def _collect(self, wait: float) -> list[_Outcome]:
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

    def _after(self, delivery: Delivery, sig: Signature,
               outcome: list[TaskResult] | BaseException) -> None:
        """Callbacks, chord, retry or failure once the outcome is known; then ack."""
        try:
            if isinstance(outcome, list):
                self._after_success(sig, outcome)
            else:
                self._after_error(sig, outcome)
            if self.post_task is not None:
                self.post_task(sig)
        except Exception:
            log.exception("task %s (%s): error after it ran; parking the message",
                          sig.uuid, sig.name)
            self._park(delivery, "worker error after the task ran (see worker log)")
            return
        if self._release(delivery):
            self._acks.append(delivery)

    def _after_error(self, sig: Signature, exc: BaseException) -> None:
        if isinstance(exc, RetryLater):
            self._retry_in(sig, exc.delay, str(exc))
        elif not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit in a task: not a task error
        elif sig.retry_count > 0:
            self._retry(sig, exc)
        else:
            self._on_failure(sig, _error_text(exc), exc)

    def _park(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter a held message (it stays held for recovery if even that fails)."""
        try:
            self.app.broker.dead_letter(delivery, reason)
        except Exception:
            log.exception("could not park a message of %s; it stays held", delivery.queue)
            return
        self._release(delivery)

    def _requeue_safely(self, delivery: Delivery, delay: float = 0.0) -> None:
        try:
            self.app.broker.requeue(delivery, delay)
        except Exception:
            log.exception("could not return a message to %s; recovery will", delivery.queue)

    def _park_undecodable(self, delivery: Delivery, exc: DecodeError) -> None:
        reason = f"undecodable message: {exc}"
        uuid = _salvage_uuid(delivery.body)
        if uuid:
            self.app.backend.set_state(
                new_state(Signature(uuid=uuid), FAILURE, error=reason))
        log.error("queue %s: %s (task %s); parked in dead letters", delivery.queue, reason,
                  uuid or "uuid unknown")
        self._park(delivery, reason)

    def _unregistered_task(self, delivery: Delivery, sig: Signature) -> None:
        if sig.ignore_when_task_not_registered:
            log.warning("task %s (%s) is not registered and asks to be ignored: dropped",
                        sig.uuid, sig.name)
            if self._release(delivery):
                self.app.broker.ack([delivery])
            return
        attempts = self._unregistered.pop(sig.uuid, 0) + 1
        self._unregistered[sig.uuid] = attempts
        while len(self._unregistered) > 10_000:
            self._unregistered.popitem(last=False)
        delay = min(self.options.max_unregistered_backoff, 2.0 ** (attempts - 1))
        log.warning("task %s (%s) is not registered with this worker: back to %s in %.0fs",
                    sig.uuid, sig.name, delivery.queue, delay)
        self._requeue_safely(delivery, delay)
        self._release(delivery)

    # ------------------------------------------------------------------ outcomes

    def _after_success(self, sig: Signature, results: list[TaskResult]) -> None:
        """Callbacks and the chord, once the SUCCESS state is stored."""
        log.debug("processed task %s; results = %s", sig.uuid, results)
        for callback in sig.on_success or ():
            if callback is None:
                continue
            if not sig.immutable:  # machinery appends the results after the callback's args
                callback.args = [*(callback.args or ()),
                                 *(Arg("", r.type, r.value) for r in results)]
            self._send_callback(callback)
        if sig.group_uuid and sig.chord_callback is not None:
            self._maybe_trigger_chord(sig)

    def _maybe_trigger_chord(self, sig: Signature) -> None:
        backend = self.app.backend
        callback = sig.chord_callback
        assert callback is not None
        try:
            if not backend.group_completed(sig.group_uuid, sig.group_task_count):
                return
            if not backend.trigger_chord(sig.group_uuid):
                return
            states = backend.group_task_states(sig.group_uuid, sig.group_task_count)
        except BridgeError as exc:
            log.error("chord of group %s: %s", sig.group_uuid, exc)
            return
        if any(state.state != SUCCESS for state in states):
            log.warning("chord of group %s not sent: a member did not succeed", sig.group_uuid)
            return
        if not callback.immutable:
            callback.args = [*(callback.args or ()), *(
                Arg("", r.type, r.value) for state in states for r in state.results or () if r)]
        self._send_callback(callback)

    def _on_failure(self, sig: Signature, error: str, exc: BaseException,
                    state_written: bool = False) -> None:
        if not state_written:
            self.app.backend.set_state(new_state(sig, FAILURE, error=error))
        if self.error_handler is not None:
            self.error_handler(sig, exc)
        else:
            log.error("failed processing task %s (%s): %s", sig.uuid, sig.name, error)
        for callback in sig.on_error or ():
            if callback is None:
                continue
            callback.args = [Arg("", "string", error), *(callback.args or ())]
            self._send_callback(callback)

    def _retry(self, sig: Signature, exc: BaseException) -> None:
        """machinery's taskRetry: RetryCount−1, RetryTimeout → next Fibonacci, resend at ETA."""
        sig.retry_count -= 1
        sig.retry_timeout = fibonacci_next(sig.retry_timeout)
        log.warning("task %s failed (%s). Going to retry in %d seconds.", sig.uuid,
                    _error_text(exc), sig.retry_timeout)
        self._resend_later(sig, sig.retry_timeout)

    def _retry_in(self, sig: Signature, delay: float, text: str) -> None:
        """machinery's retryTaskIn (ErrRetryTaskLater): RetryCount untouched."""
        log.info("task %s: %s", sig.uuid, text)
        self._resend_later(sig, delay)

    def _resend_later(self, sig: Signature, delay: float) -> None:
        self.app.backend.set_state(new_state(sig, RETRY))
        sig.eta = GoTime.from_unix_nano(time.time_ns() + int(delay * 1e9))
        self.app.send(sig)

    def _send_callback(self, callback: Signature) -> None:
        try:
            self.app.send(callback)
        except Exception:  # machinery ignores these errors; we at least say so
            log.exception("could not send callback %s (%s)", callback.uuid, callback.name)
