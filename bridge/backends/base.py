"""What the runtime needs from a result backend (machinery's iface.Backend).

State writes build the TaskState as machinery's constructors do
(``tasks.New*TaskState``); each backend stores it in its own layout, merging
where machinery's backend merges.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields

from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Signature,
    TaskResult,
    TaskState,
)


def now_utc() -> GoTime:
    """``time.Now().UTC()`` with nanoseconds, as machinery stamps CreatedAt."""
    return GoTime.from_unix_nano(time.time_ns())


def new_state(sig: Signature, state: str, results: Sequence[TaskResult] | None = None,
              error: str = "", *, now: GoTime | None = None) -> TaskState:
    """A TaskState as machinery's constructors build it.

    PENDING carries TaskName and CreatedAt = now (``now``: one stamp for a batch sent
    together); the others only the UUID, the state and their results or error (a merging
    backend fills the rest in). SUCCESS always has a (possibly empty) results list.
    """
    if state == PENDING:
        return TaskState(sig.uuid, sig.name, PENDING, created_at=now or now_utc())
    if state in (SUCCESS, FAILURE) and sig.group_uuid and sig.group_task_count:
        return MemberState(sig.uuid, state=state, results=list(results or ()) if state == SUCCESS
                           else None, error=error, group_uuid=sig.group_uuid,
                           group_task_count=sig.group_task_count)
    if state == SUCCESS:
        return TaskState(sig.uuid, state=SUCCESS, results=list(results or ()))
    return TaskState(sig.uuid, state=state, error=error)


@dataclass(slots=True, eq=False)
class MemberState(TaskState):
    """A group member's SUCCESS or FAILURE, knowing its group (not part of the JSON).

    Go's AMQP backend also publishes these to the group's queue, reading the Signature's
    GroupUUID and GroupTaskCount (``markTaskCompleted``); other backends store the TaskState.
    Equal to a TaskState with the same fields.
    """

    group_uuid: str = ""
    group_task_count: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskState):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(TaskState))

    __hash__ = None  # type: ignore[assignment]


class Backend(ABC):
    """A machinery-compatible result backend."""

    @abstractmethod
    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        """Record a group's members (machinery's InitGroup)."""

    @abstractmethod
    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """Whether every member is SUCCESS or FAILURE."""

    @abstractmethod
    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """Member states in the group's TaskUUIDs order."""

    @abstractmethod
    def trigger_chord(self, group_uuid: str) -> bool:
        """Mark the chord triggered; True for exactly one caller, Go workers included."""

    @abstractmethod
    def set_state(self, state: TaskState) -> None:
        """Store a state as this backend stores it (merging where machinery merges)."""

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Store several states (a backend may batch them)."""
        for state in states:
            self.set_state(state)

    @abstractmethod
    def get_state(self, task_uuid: str) -> TaskState | None:
        """The stored state, or None when there is none (expired or never written)."""

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """Several stored states, in order (a backend may batch the reads)."""
        return [self.get_state(uuid) for uuid in task_uuids]

    def get_completed_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """Several states, in order; None for one missing or not SUCCESS or FAILURE yet (a
        backend may skip decoding those)."""
        return [state if state is not None and state.is_completed() else None
                for state in self.get_states(task_uuids)]

    @abstractmethod
    def purge_state(self, task_uuid: str) -> None:
        """Delete a task's state."""

    @abstractmethod
    def purge_group_meta(self, group_uuid: str) -> None:
        """Delete a group's meta."""

    # machinery's SetState* helpers, for readability at call sites
    def set_state_pending(self, sig: Signature) -> None:
        self.set_state(new_state(sig, PENDING))

    def set_state_received(self, sig: Signature) -> None:
        self.set_state(new_state(sig, RECEIVED))

    def set_state_started(self, sig: Signature) -> None:
        self.set_state(new_state(sig, STARTED))

    def set_state_retry(self, sig: Signature) -> None:
        self.set_state(new_state(sig, RETRY))

    def set_state_success(self, sig: Signature, results: Sequence[TaskResult]) -> None:
        self.set_state(new_state(sig, SUCCESS, results))

    def set_state_failure(self, sig: Signature, error: str) -> None:
        self.set_state(new_state(sig, FAILURE, error=error))

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Reach the server once (startup validation): raise :class:`~bridge.errors.Unreachable`
        naming the URL (password redacted) and the fix when it cannot be reached or refuses us,
        :class:`~bridge.config.ConfigError` when the URL itself cannot be served."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
