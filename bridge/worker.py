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
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
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
    poll_timeout: float = 1.0
    maintain_interval: float = 1.0
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
        self._lock = threading.Condition()
        self._held: dict[int, Delivery] = {}  # fetched, not yet acked / requeued / parked
        self._to_ack: list[Delivery] = []
        self._inflight = 0
        self._stopping = threading.Event()
        self._signals = 0
        self._unregistered: OrderedDict[str, int] = OrderedDict()
        self._process_pool: Executor | None = None

    # ------------------------------------------------------------------ consuming

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
        pool = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="bridge-task")
        while not self._stopping.is_set():
            if time.monotonic() >= next_upkeep:
                broker.maintain()
                next_upkeep = time.monotonic() + opts.maintain_interval
            self._flush_acks()
            free = self._wait_for_slot()
            if not free:
                continue
            for delivery in broker.fetch(self.queue, free, opts.poll_timeout):
                self._hold(delivery)
                pool.submit(self._handle, delivery)
        self._drain()
        # tasks still running past graceful_timeout were returned to the queue: don't wait
        pool.shutdown(wait=False, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped")
        return 0

    @property
    def busy(self) -> int:
        """Tasks still running (after a graceful timeout they are abandoned to the queue)."""
        return self._inflight

    def stop(self) -> None:
        """Stop fetching; in-flight tasks finish (up to graceful_timeout)."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("signal %s received: finishing running tasks (%d), then exiting",
                        signal.Signals(signum).name, self._inflight)
            self.stop()
            return
        log.warning("second signal: returning %d held messages and exiting now", len(self._held))
        self._return_held()
        os._exit(0)

    def _wait_for_slot(self) -> int:
        with self._lock:
            free = self.options.concurrency - self._inflight
            if free <= 0:
                self._lock.wait(0.1)
                free = self.options.concurrency - self._inflight
            return max(free, 0) if not self._stopping.is_set() else 0

    def _hold(self, delivery: Delivery) -> None:
        with self._lock:
            self._held[id(delivery)] = delivery
            self._inflight += 1

    def _release(self, delivery: Delivery, ack: bool) -> None:
        with self._lock:
            held = self._held.pop(id(delivery), None)
            if ack and held is not None:  # None: already returned to the queue on shutdown
                self._to_ack.append(delivery)
            self._inflight -= 1
            self._lock.notify_all()

    def _flush_acks(self) -> None:
        with self._lock:
            batch, self._to_ack = self._to_ack, []
        if batch:
            self.app.broker.ack(batch)

    def _drain(self) -> None:
        """After stop: wait for running tasks up to graceful_timeout, then return the rest."""
        deadline = time.monotonic() + self.options.graceful_timeout
        with self._lock:
            while self._inflight and time.monotonic() < deadline:
                self._lock.wait(0.1)
        self._flush_acks()
        if self._held:
            log.warning("graceful timeout: returning %d unfinished messages", len(self._held))
            self._return_held()

    def _return_held(self) -> None:
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
            batch, self._to_ack = self._to_ack, []
        broker = self.app.broker
        if batch:
            broker.ack(batch)
        for delivery in held:
            try:
                broker.requeue(delivery)
            except Exception:  # the heartbeat recovery will bring it back
                log.exception("could not return a message to %s", delivery.queue)

    def _handle(self, delivery: Delivery) -> None:
        ack = True
        try:
            ack = self.process(delivery)
        except Exception:
            log.exception("unexpected error processing a message from %s; parking it",
                          delivery.queue)
            try:
                self.app.broker.dead_letter(delivery, "worker error (see worker log)")
            except Exception:
                log.exception("could not park the message; it stays held for recovery")
            ack = False
        finally:
            self._release(delivery, ack)

    # ------------------------------------------------------------------ one message

    def process(self, delivery: Delivery) -> bool:
        """Run one message through machinery's lifecycle; True when it should be acked."""
        app, backend, broker = self.app, self.app.backend, self.app.broker
        try:
            sig = Signature.from_json(delivery.body)
        except DecodeError as exc:
            self._park_undecodable(delivery, exc)
            return False
        task = app.tasks.get(sig.name)
        if task is None:
            return self._unregistered_task(delivery, sig)
        self._unregistered.pop(sig.uuid, None)
        try:
            values = task.python_args(sig.args)
        except BridgeError as exc:
            error = f"Reflect task args error: {exc}"
            backend.set_states([new_state(sig, RECEIVED), new_state(sig, FAILURE, error=error)])
            log.error("task %s (%s): %s; message parked", sig.uuid, sig.name, error)
            self._on_failure(sig, error, exc, state_written=True)
            broker.dead_letter(delivery, error)
            return False
        backend.set_states([new_state(sig, RECEIVED), new_state(sig, STARTED)])
        if self.pre_task is not None:
            self.pre_task(sig)
        try:
            results = self._call(task, values)
        except RetryLater as exc:
            self._retry_in(sig, exc.delay, str(exc))
        except Exception as exc:
            if sig.retry_count > 0:
                self._retry(sig, exc)
            else:
                self._on_failure(sig, _error_text(exc), exc)
        else:
            self._on_success(sig, results)
        finally:
            if self.post_task is not None:
                self.post_task(sig)
        return True

    def _call(self, task: RegisteredTask, values: list[Any]) -> list[TaskResult]:
        if self._process_pool is not None and not task.is_async:
            returned = self._process_pool.submit(task.func, *values).result()
        else:
            returned = task.call(values)
        return task.results(returned)

    def _park_undecodable(self, delivery: Delivery, exc: DecodeError) -> None:
        reason = f"undecodable message: {exc}"
        uuid = _salvage_uuid(delivery.body)
        if uuid:
            self.app.backend.set_state(
                new_state(Signature(uuid=uuid), FAILURE, error=reason))
        log.error("queue %s: %s (task %s); parked in dead letters", delivery.queue, reason,
                  uuid or "uuid unknown")
        self.app.broker.dead_letter(delivery, reason)

    def _unregistered_task(self, delivery: Delivery, sig: Signature) -> bool:
        if sig.ignore_when_task_not_registered:
            log.warning("task %s (%s) is not registered and asks to be ignored: dropped",
                        sig.uuid, sig.name)
            return True
        attempts = self._unregistered.pop(sig.uuid, 0) + 1
        self._unregistered[sig.uuid] = attempts
        while len(self._unregistered) > 10_000:
            self._unregistered.popitem(last=False)
        delay = min(self.options.max_unregistered_backoff, 2.0 ** (attempts - 1))
        log.warning("task %s (%s) is not registered with this worker: back to %s in %.0fs",
                    sig.uuid, sig.name, delivery.queue, delay)
        self.app.broker.requeue(delivery, delay)
        return False

    # ------------------------------------------------------------------ outcomes

    def _on_success(self, sig: Signature, results: list[TaskResult]) -> None:
        backend = self.app.backend
        backend.set_state(new_state(sig, SUCCESS, results))
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
        self.app.backend.set_state(new_state(sig, "RETRY"))
        sig.eta = GoTime.from_unix_nano(time.time_ns() + int(delay * 1e9))
        self.app.send(sig)

    def _send_callback(self, callback: Signature) -> None:
        try:
            self.app.send(callback)
        except Exception:  # machinery ignores these errors; we at least say so
            log.exception("could not send callback %s (%s)", callback.uuid, callback.name)
