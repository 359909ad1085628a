"""machinery's task lifecycle (``worker.go`` Process) for messages of a machinery queue.

decode → registered? → RECEIVED → typed args → STARTED → call → SUCCESS
(OnSuccess callbacks, chord) | RETRY (RetryCount, Fibonacci, ETA) | RetryLater
(ErrRetryTaskLater) | FAILURE (OnError callbacks). States of a batch go out in one
backend write; a message is acknowledged only after all of that.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bridge.backends.base import new_state
from bridge.brokers.base import Delivery
from bridge.errors import BridgeError, DecodeError
from bridge.handlers.base import Handler, Job, Outcome
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
    TaskState,
)
from bridge.retry import RetryLater, fibonacci_next

log = logging.getLogger("bridge.worker")


def error_text(exc: BaseException) -> str:
    """The error string machinery stores (Go's ``err.Error()``)."""
    return str(exc) or type(exc).__name__


def salvage_uuid(body: bytes) -> str:
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


class MachineryHandler(Handler):
    """Runs registered tasks for machinery Signatures, writing machinery TaskStates."""

    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """The finished tasks' SUCCESS and the new tasks' RECEIVED/STARTED in one write."""
        app = self.host.app
        done: list[tuple[Job, list[TaskResult] | BaseException]] = []
        states: list[TaskState] = []
        for job, returned, raised in finished:
            outcome = raised if raised is not None else self._results(job, returned)
            done.append((job, outcome))
            if isinstance(outcome, list):
                states.append(new_state(job.context, SUCCESS, outcome))
        jobs: list[Job] = []
        rejected: list[tuple[Delivery, Signature, BridgeError]] = []
        for delivery in deliveries:
            prepared = self._prepare(delivery)
            if prepared is None:
                continue
            if isinstance(prepared, tuple):
                sig, exc = prepared
                error = f"Reflect task args error: {exc}"
                states += [new_state(sig, RECEIVED), new_state(sig, FAILURE, error=error)]
                rejected.append((delivery, sig, exc))
            else:
                states += [new_state(prepared.context, RECEIVED),
                           new_state(prepared.context, STARTED)]
                jobs.append(prepared)
        if states:
            try:
                app.backend.set_states(states)
            except Exception:
                log.exception("could not write %d states; the messages go back to the queue",
                              len(states))
                self.host.give_back(self, [j.delivery for j, o in done if isinstance(o, list)]
                                    + [r[0] for r in rejected] + [j.delivery for j in jobs])
                done = [(j, o) for j, o in done if not isinstance(o, list)]
                rejected, jobs = [], []
        for delivery, sig, exc in rejected:
            error = f"Reflect task args error: {exc}"
            log.error("task %s (%s): %s; message parked", sig.uuid, sig.name, error)
            self._on_failure(sig, error, exc, state_written=True)
            self.host.park(self, delivery, error)
        for job, outcome in done:
            self._after(job, outcome)
        return jobs

    @staticmethod
    def _results(job: Job, returned: Any) -> list[TaskResult] | BaseException:
        try:
            return job.task.results(returned)
        except Exception as exc:  # a result with no Go type fails the task, as in Go
            return exc

    def _prepare(self, delivery: Delivery) -> Job | tuple[Signature, BridgeError] | None:
        """A job, or the signature and why its args are bad; None when the message was
        dealt with here (undecodable, unregistered, or a worker error)."""
        self.host.hold(self, delivery)
        try:
            sig = Signature.from_json(delivery.body)
        except DecodeError as exc:
            self._park_undecodable(delivery, exc)
            return None
        except Exception:
            log.exception("could not prepare a message of %s", delivery.queue)
            self.host.park(self, delivery, "worker error (see worker log)")
            return None
        task = self.host.app.tasks.get(sig.name)
        if task is None:
            if sig.ignore_when_task_not_registered:
                log.warning("task %s (%s) is not registered and asks to be ignored: dropped",
                            sig.uuid, sig.name)
                self.host.done(self, delivery)
            else:
                self.host.unregistered(self, delivery, sig.uuid, sig.name)
            return None
        self.host.registered(sig.uuid)
        try:
            values = task.python_args(sig.args)
        except BridgeError as exc:
            return sig, exc
        return Job(delivery, self, task, values, context=sig, signature=sig)

    def _park_undecodable(self, delivery: Delivery, exc: DecodeError) -> None:
        reason = f"undecodable message: {exc}"
        uuid = salvage_uuid(delivery.body)
        if uuid:
            self.host.app.backend.set_state(
                new_state(Signature(uuid=uuid), FAILURE, error=reason))
        log.error("queue %s: %s (task %s); parked in dead letters", delivery.queue, reason,
                  uuid or "uuid unknown")
        self.host.park(self, delivery, reason)

    # ------------------------------------------------------------------ outcomes

    def _after(self, job: Job, outcome: list[TaskResult] | BaseException) -> None:
        """Callbacks, chord, retry or failure once the outcome is known; then ack."""
        sig: Signature = job.context
        try:
            if isinstance(outcome, list):
                self._after_success(sig, outcome)
            else:
                self._after_error(sig, outcome)
            if self.host.post_task is not None:
                self.host.post_task(sig)
        except Exception:
            log.exception("task %s (%s): error after it ran; parking the message",
                          sig.uuid, sig.name)
            self.host.park(self, job.delivery, "worker error after the task ran (see worker log)")
            return
        self.host.done(self, job.delivery)

    def _after_error(self, sig: Signature, exc: BaseException) -> None:
        if isinstance(exc, RetryLater):
            self._retry_in(sig, exc.delay, str(exc))
        elif not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit in a task: not a task error
        elif sig.retry_count > 0:
            self._retry(sig, exc)
        else:
            self._on_failure(sig, error_text(exc), exc)

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
        backend = self.host.app.backend
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
            self.host.app.backend.set_state(new_state(sig, FAILURE, error=error))
        if self.host.error_handler is not None:
            self.host.error_handler(sig, exc)
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
                    error_text(exc), sig.retry_timeout)
        self._resend_later(sig, sig.retry_timeout)

    def _retry_in(self, sig: Signature, delay: float, text: str) -> None:
        """machinery's retryTaskIn (ErrRetryTaskLater): RetryCount untouched."""
        log.info("task %s: %s", sig.uuid, text)
        self._resend_later(sig, delay)

    def _resend_later(self, sig: Signature, delay: float) -> None:
        self.host.app.backend.set_state(new_state(sig, RETRY))
        sig.eta = GoTime.from_unix_nano(time.time_ns() + int(delay * 1e9))
        self.host.app.send(sig)

    def _send_callback(self, callback: Signature) -> None:
        try:
            self.host.app.send(callback)
        except Exception:  # machinery ignores these errors; we at least say so
            log.exception("could not send callback %s (%s)", callback.uuid, callback.name)
