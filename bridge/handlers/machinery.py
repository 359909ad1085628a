"""machinery's task lifecycle (``worker.go`` Process) for messages of a machinery queue.

decode → registered? → RECEIVED → typed args → STARTED → call → SUCCESS
(OnSuccess callbacks, chord) | RETRY (RetryCount, Fibonacci, ETA) | RetryLater
(ErrRetryTaskLater) | FAILURE (OnError callbacks). States of a batch go out in one
backend write; a message is acknowledged only after all of that.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bridge.backends.base import new_state
from bridge.brokers.base import Consumer, Delivery
from bridge.errors import BridgeError, DecodeError, StatesRefused, clip, describe
from bridge.handlers.base import Handler, Host, Job, Outcome
from bridge.observe import FAILED, REJECTED, RETRIED, SUCCEEDED
from bridge.observe import RECEIVED as RECEIVED_EVENT
from bridge.observe import REVOKED as REVOKED_EVENT
from bridge.outage import Endpoint, is_outage, one_line
from bridge.protocol import gojson
from bridge.protocol.gojson import Pairs
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
from bridge.retry import RetryImpossible, RetryLater, fibonacci_next, retry_eta

log = logging.getLogger("bridge.worker")

REVOKED_ERROR = "task revoked (remote control): not run"
"""The FAILURE error of a machinery task revoked before it ran (machinery has no REVOKED)."""


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

    protocol = "machinery"

    def __init__(self, host: Host, consumer: Consumer, queue: str) -> None:
        super().__init__(host, consumer, queue)
        self._unsent: list[Signature] = []  # follow-ups that met an outage, sent first next step
        self._chords: list[Signature] = []  # members whose chord we triggered, callback not sent
        self._to_park: list[tuple[Delivery, str]] = []

    def endpoints(self) -> list[Endpoint]:
        config = self.host.app.config
        return [("broker", config.broker, "`broker` in the config (or BROKER)",
                 self.consumer.ping),
                ("result backend", config.result_backend,
                 "`result_backend` in the config (or RESULT_BACKEND)",
                 self.host.app.backend.ping)]

    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """The finished tasks' SUCCESS and the new tasks' RECEIVED/STARTED in one write.

        When the broker or backend is unreachable, what is not done yet is carried to the
        next step (see :meth:`Handler.carry`) and the error goes up to the worker, which
        backs off: a finished task is never run again, a fetched one stays held.
        """
        return self.step_carrying(finished, deliveries, self._send_then_step)

    def _send_then_step(self, finished: list[Outcome], pending: list[Delivery]) -> list[Job]:
        self._send_unsent()
        return self._step(finished, pending)

    def _step(self, finished: list[Outcome], pending: list[Delivery]) -> list[Job]:
        """``pending`` shrinks as messages are dealt with (the rest is carried on an outage);
        ``finished`` is carried whole until the states are stored, then job by job."""
        done: list[tuple[Outcome, list[TaskResult] | BaseException]] = []
        states: list[TaskState] = []
        for outcome in finished:
            job, returned, raised = outcome
            result = raised if raised is not None else self._results(job, returned)
            done.append((outcome, result))
            if isinstance(result, list):
                states.append(new_state(job.context, SUCCESS, result))
        jobs: list[Job] = []
        rejected: list[tuple[Delivery, Signature, BridgeError]] = []
        for delivery in list(pending):
            prepared = self._prepare(delivery)
            if prepared is None:
                pending.remove(delivery)
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
        unstored = self._store(states)
        pending.clear()  # the states are stored: from here on nothing new is carried
        for job in jobs:
            self.report(RECEIVED_EVENT, job)
        for delivery, sig, exc in rejected:
            error = f"Reflect task args error: {exc}"
            log.error("task %s (%s): %s; message parked", sig.uuid, sig.name, error)
            self.report_unrun(REJECTED, sig.uuid, sig.name, delivery.queue, error)
            if sig.uuid not in unstored:
                self._on_failure(sig, error, exc, state_written=True)
            self._park(delivery, unstored.get(sig.uuid, error))
        for job in [j for j in jobs if j.context.uuid in unstored]:
            jobs.remove(job)
            self._park(job.delivery, unstored[job.context.uuid])
            self.report(REJECTED, job, reason=unstored[job.context.uuid])
        for index, (outcome, result) in enumerate(done):
            job = outcome[0]
            if job.context.uuid in unstored and isinstance(result, list):
                log.error("task %s (%s) ran, but %s; message parked", job.context.uuid,
                          job.context.name, unstored[job.context.uuid])
                self._park(job.delivery, unstored[job.context.uuid])
                self.report(FAILED, job, reason=unstored[job.context.uuid])
                continue
            try:
                self._after(job, result)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # this job and the ones after it wait for the next step; the new ones run
                self.carry([o for o, _ in done[index:]], [], exc)
                break
        return jobs

    def _store(self, states: list[TaskState]) -> dict[str, str]:
        """Write ``states`` in one batch; when the batch is refused (not an outage), one by
        one, so one bad key cannot stop the others. The uuids whose state could not be
        stored, with why."""
        if not states:
            return {}
        backend = self.host.app.backend
        try:
            backend.set_states(states)
            return {}
        except StatesRefused as exc:  # the others are written
            return {uuid: f"its state could not be stored: {clip(why)}"
                    for uuid, why in exc.refused.items()}
        except Exception as exc:
            if is_outage(exc):
                raise
            log.warning("could not store %d states in one batch (%s): storing them one by one",
                        len(states), one_line(exc))
        unstored: dict[str, str] = {}
        for state in states:
            if state.task_uuid in unstored:
                continue
            try:
                backend.set_state(state)
            except Exception as exc:
                if is_outage(exc):
                    raise
                unstored[state.task_uuid] = f"its state could not be stored: {clip(str(exc))}"
        return unstored

    def _park(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter a held message; on an outage, at the start of the next step."""
        if not self._to_park:
            try:
                self.host.park(self, delivery, reason)
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
        self._to_park.append((delivery, reason))

    def _send_unsent(self) -> None:
        """What earlier steps could not send or park because of an outage, in order."""
        while self._to_park:
            delivery, reason = self._to_park[0]
            self.host.park(self, delivery, reason)
            self._to_park.pop(0)
        self._send_chords()
        while self._unsent:
            self.host.app.send(self._unsent[0])
            self._unsent.pop(0)

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
            self.consumer.decoded(delivery, sig)  # SQS: SQSReceiptHandle
        except DecodeError as exc:
            self._park_undecodable(delivery, exc)
            return None
        except Exception as exc:
            log.exception("could not prepare a message of %s", delivery.queue)
            self.host.park(self, delivery, f"cannot prepare the message: {describe(exc)}")
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
        if self.host.is_revoked(sig.uuid):  # `mbridge control revoke`: FAILURE, never run
            log.info("task %s (%s) revoked: discarded", sig.uuid, sig.name)
            self.host.app.backend.set_state(new_state(sig, FAILURE, error=REVOKED_ERROR))
            self.report_unrun(REVOKED_EVENT, sig.uuid, sig.name, delivery.queue, "revoked")
            self.host.done(self, delivery)
            return None
        try:
            values = task.python_args(sig.args)
        except BridgeError as exc:
            return sig, exc
        return Job(delivery, self, task, values, context=sig, signature=sig, task_id=sig.uuid)

    def _park_undecodable(self, delivery: Delivery, exc: DecodeError) -> None:
        reason = f"undecodable message: {exc}"
        uuid = salvage_uuid(delivery.body)
        if uuid:
            try:
                self.host.app.backend.set_state(
                    new_state(Signature(uuid=uuid), FAILURE, error=reason))
            except Exception as failed:
                if is_outage(failed):
                    raise
                reason += f" (its FAILURE state could not be stored: {describe(failed)})"
        log.error("queue %s: %s (task %s); parked in dead letters", delivery.queue, reason,
                  uuid or "uuid unknown")
        self.host.park(self, delivery, reason)
        self.report_unrun(REJECTED, uuid, "", delivery.queue, reason)

    # ------------------------------------------------------------------ outcomes

    def _after(self, job: Job, outcome: list[TaskResult] | BaseException) -> None:
        """Callbacks, chord, retry or failure once the outcome is known; then ack."""
        sig: Signature = job.context
        try:
            if isinstance(outcome, list):
                self._after_success(sig, outcome)
                event: dict[str, Any] = {"result": _returned(outcome)}
            elif self._after_error(sig, outcome):
                self.consumer.failed(job.delivery, sig)  # SQS: StopTaskDeletionOnError
                event = {"exception": outcome, "reason": error_text(outcome)}
            else:
                event = {"exception": outcome, "retry_in": _retry_delay(sig, outcome)}
            if self.host.post_task is not None:
                self.host.post_task(sig)
        except RetryImpossible as exc:  # FAILURE stored: the message is parked
            self._park(job.delivery, f"task failed and cannot be retried: {exc}")
            self.report(FAILED, job, exception=outcome if isinstance(outcome, BaseException)
                        else exc, reason=f"not retried: {exc}")
            return
        except Exception as exc:
            if is_outage(exc):
                raise  # the step carries this outcome to the next step
            log.exception("task %s (%s): error after it ran; parking the message",
                          sig.uuid, sig.name)
            self._park(job.delivery, f"error after the task ran: {describe(exc)}")
            self.report(FAILED, job, exception=exc, reason="error after the task ran")
            return
        kind = SUCCEEDED if "result" in event else RETRIED if "retry_in" in event else FAILED
        self.report(kind, job, **event)
        self.host.done(self, job.delivery)

    def _after_error(self, sig: Signature, exc: BaseException) -> bool:
        """Retry or fail; True when the task failed for good."""
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit in a task: not a task error
        if isinstance(exc, RetryLater) or sig.retry_count > 0:
            try:
                if isinstance(exc, RetryLater):
                    self._retry_in(sig, exc.delay)
                else:
                    self._retry(sig, exc)
            except RetryImpossible as why:
                self._on_failure(sig, f"{error_text(exc)} (not retried: {why})", exc)
                raise
        else:
            self._on_failure(sig, error_text(exc), exc)
            return True
        return False

    def _after_success(self, sig: Signature, results: list[TaskResult]) -> None:
        """The chord and the callbacks, once the SUCCESS state is stored (the chord first: its
        reads may meet an outage, and then this runs again, so nothing may be sent before)."""
        log.debug("processed task %s; results = %s", sig.uuid, results)
        if sig.group_uuid and sig.chord_callback is not None:
            self._maybe_trigger_chord(sig)
        for callback in sig.on_success or ():
            if callback is None:
                continue
            if not sig.immutable:  # machinery appends the results after the callback's args
                callback = replace(callback, args=[
                    *(callback.args or ()), *(Arg("", r.type, r.value) for r in results)])
            self._send_callback(callback)

    def _maybe_trigger_chord(self, sig: Signature) -> None:
        backend = self.host.app.backend
        try:
            if not backend.group_completed(sig.group_uuid, sig.group_task_count):
                return
            if not backend.trigger_chord(sig.group_uuid):
                return
        except BridgeError as exc:
            log.error("chord of group %s: %s", sig.group_uuid, exc)
            return
        self._chords.append(sig)  # triggered by us: its callback must go out, outage or not
        try:
            self._send_chords()
        except Exception as exc:
            if not is_outage(exc):
                raise  # else it stays in _chords, sent at the start of the next step

    def _send_chords(self) -> None:
        """The callbacks of the chords we triggered, in order; on an outage they stay."""
        while self._chords:
            sig = self._chords[0]
            try:
                self._send_chord_callback(sig)
            except BridgeError as exc:
                log.error("chord of group %s: %s", sig.group_uuid, exc)
            self._chords.pop(0)

    def _send_chord_callback(self, sig: Signature) -> None:
        backend = self.host.app.backend
        callback = sig.chord_callback
        assert callback is not None
        states = backend.group_task_states(sig.group_uuid, sig.group_task_count)
        if any(state.state != SUCCESS for state in states):
            log.warning("chord of group %s not sent: a member did not succeed", sig.group_uuid)
            return
        if not callback.immutable:
            callback = replace(callback, args=[*(callback.args or ()), *(
                Arg("", r.type, r.value) for state in states for r in state.results or () if r)])
        self._send_callback(callback)

    def _on_failure(self, sig: Signature, error: str, exc: BaseException,
                    state_written: bool = False) -> None:
        if not state_written:
            self.host.app.backend.set_state(new_state(sig, FAILURE, error=error))
        if self.host.error_handler is not None:  # else the task log says it (bridge.tasklog)
            self.host.error_handler(sig, exc)
        for callback in sig.on_error or ():
            if callback is None:
                continue
            self._send_callback(replace(callback, args=[Arg("", "string", error),
                                                        *(callback.args or ())]))

    def _retry(self, sig: Signature, exc: BaseException) -> None:
        """machinery's taskRetry: RetryCount−1, RetryTimeout → next Fibonacci, resend at ETA."""
        sig = replace(sig, retry_count=sig.retry_count - 1,
                      retry_timeout=fibonacci_next(sig.retry_timeout))
        self._resend_later(sig, sig.retry_timeout)

    def _retry_in(self, sig: Signature, delay: float) -> None:
        """machinery's retryTaskIn (ErrRetryTaskLater): RetryCount untouched."""
        self._resend_later(sig, delay)

    def _resend_later(self, sig: Signature, delay: float) -> None:
        eta = retry_eta(delay)  # before any write: an impossible retry changes nothing
        self.host.app.backend.set_state(new_state(sig, RETRY))
        self.host.app.send(replace(sig, eta=eta))

    def _send_callback(self, callback: Signature) -> None:
        if self._unsent:  # keep the order: behind the ones waiting for the broker
            self._unsent.append(callback)
            return
        try:
            self.host.app.send(callback)
        except Exception as exc:
            if is_outage(exc):  # sent at the start of the next step, once reachable
                self._unsent.append(callback)
                return
            # machinery ignores these errors; we at least say so
            log.exception("could not send callback %s (%s)", callback.uuid, callback.name)


def _returned(results: list[TaskResult]) -> Any:
    """What the task returned, as machinery's results say it: one value, or a list."""
    values = [result.value for result in results]
    return values[0] if len(values) == 1 else values


def _retry_delay(sig: Signature, exc: BaseException) -> float:
    """Seconds until the retry of a task that raised ``exc`` (as _retry/_retry_in chose)."""
    return exc.delay if isinstance(exc, RetryLater) else float(fibonacci_next(sig.retry_timeout))
