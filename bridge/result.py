"""Waiting for results: machinery's AsyncResult, with a timeout that really ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from bridge.backends.base import Backend
from bridge.errors import BridgeError
from bridge.outage import Outage, is_outage, one_line
from bridge.protocol.machinery import TaskState
from bridge.types import result_to_python

log = logging.getLogger("bridge.result")


class TaskFailed(BridgeError):
    """The task ended in FAILURE; the message is the error text the worker stored."""

    def __init__(self, task_uuid: str, error: str) -> None:
        self.task_uuid = task_uuid
        self.error = error
        super().__init__(error)


class ResultTimeout(BridgeError, TimeoutError):
    """No completed state arrived in time; says what was (or was not) stored."""


def typed_results(state: TaskState) -> Any:
    """A SUCCESS state's results as Python: None for none, the value for one, a tuple for more."""
    values = [result_to_python(r) for r in state.results or () if r is not None]
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


FIRST_POLL = 0.0002
"""Seconds before ``AsyncResult.get`` reads a state the second time (doubling after)."""


class AsyncResult:
    """The result of one task, read from the backend (``backends/result.AsyncResult``)."""

    def __init__(self, task_uuid: str, backend: Backend) -> None:
        self.task_uuid = task_uuid
        self.backend = backend
        self._state: TaskState | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_uuid}>"

    def state(self) -> TaskState | None:
        """The latest stored state (kept once completed, as Go's GetState does)."""
        if self._state is None or not self._state.is_completed():
            self._state = self.backend.get_state(self.task_uuid)
        return self._state

    def ready(self) -> bool:
        state = self.state()
        return state is not None and state.is_completed()

    def get(self, timeout: float | None = 60.0, interval: float = 0.05) -> Any:
        """Wait for SUCCESS and return typed values; FAILURE raises TaskFailed.

        ``timeout=None`` waits without limit, as Go's ``Get`` does. Reads come every
        ``interval`` s, the first ones sooner (0.2 ms, doubling up to ``interval``): a
        quick task's result is seen when it is stored, not an interval later.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        outage = Outage(f"waiting for task {self.task_uuid}: the result backend", log)
        pause = min(FIRST_POLL, interval)
        while True:
            try:
                state = self.state()
            except Exception as exc:  # an outage: wait it out, up to the deadline
                if not is_outage(exc):
                    raise
                pause = outage.failed(exc)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise ResultTimeout(f"Timeout reached waiting for task {self.task_uuid}: "
                                        f"the result backend is unreachable ({one_line(exc)})"
                                        ) from None
                time.sleep(pause)
                continue
            outage.succeeded()
            if state is not None and state.is_success():
                return typed_results(state)
            if state is not None and state.is_failure():
                raise TaskFailed(self.task_uuid, state.error)
            if deadline is not None and time.monotonic() >= deadline:
                seen = "no state is stored (expired or never written)" if state is None \
                    else f"its state is still {state.state}"
                raise ResultTimeout(f"Timeout reached waiting for task {self.task_uuid}: {seen}")
            time.sleep(pause)
            pause = min(pause * 2, interval)


class GroupResult:
    """The results of a group's tasks, in order."""

    def __init__(self, group_uuid: str, results: Sequence[AsyncResult]) -> None:
        self.group_uuid = group_uuid
        self.results = list(results)

    def get(self, timeout: float | None = 60.0, interval: float = 0.05) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        return [r.get(None if deadline is None else max(0.0, deadline - time.monotonic()),
                      interval) for r in self.results]


class ChainResult(AsyncResult):
    """A chain's result: each task in order, returning the last one's (ChainAsyncResult)."""

    def __init__(self, results: Sequence[AsyncResult]) -> None:
        super().__init__(results[-1].task_uuid, results[-1].backend)
        self.results = list(results)

    def get(self, timeout: float | None = 60.0, interval: float = 0.05) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        value = None
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = result.get(remaining, interval)
        return value


class ChordResult(AsyncResult):
    """A chord's result: the callback's, after every member (ChordAsyncResult)."""

    def __init__(self, group: GroupResult, callback: AsyncResult) -> None:
        super().__init__(callback.task_uuid, callback.backend)
        self.group = group

    def get(self, timeout: float | None = 60.0, interval: float = 0.05) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.group.get(timeout, interval)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return super().get(remaining, interval)
