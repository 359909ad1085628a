"""What several result backends share: ordered state batches, group lookups that find
nothing, and the one-line error of a server that cannot be reached."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config import redact_url
from bridge.errors import BridgeError, Unreachable
from bridge.protocol.machinery import TaskState

__all__ = ["GroupMetaMissing", "MemberStateMissing", "in_waves", "members_in_order",
           "unreachable"]


def in_waves(states: Sequence[TaskState]) -> list[list[TaskState]]:
    """``states`` in waves: wave k holds the k-th state of each task, in the given order.

    Writing the waves one after the other stores each task's states in order, each by a
    write of its own (a reader can see every one, as with Go's one write per state).
    """
    waves: list[list[TaskState]] = []
    depth: dict[str, int] = {}
    for state in states:
        level = depth.get(state.task_uuid, 0)
        depth[state.task_uuid] = level + 1
        if level == len(waves):
            waves.append([])
        waves[level].append(state)
    return waves


class GroupMetaMissing(BridgeError, LookupError):
    """No group meta under a group UUID."""

    def __init__(self, group_uuid: str, backend: str, go_error: str) -> None:
        super().__init__(
            f"group meta {group_uuid!r} not found in the {backend} result backend: never "
            f"initialised, purged, or expired (results_expire_in); Go reports {go_error!r}"
        )
        self.group_uuid = group_uuid


class MemberStateMissing(BridgeError, LookupError):
    """A group member has no stored state."""

    def __init__(self, task_uuid: str, group_uuid: str, backend: str) -> None:
        super().__init__(
            f"no state for task {task_uuid!r} of group {group_uuid!r} in the {backend} "
            f"result backend (never written or expired)"
        )
        self.task_uuid = task_uuid
        self.group_uuid = group_uuid


def members_in_order(group_uuid: str, task_uuids: Sequence[str],
                     states: Sequence[TaskState | None], backend: str) -> list[TaskState]:
    """A group's member states in TaskUUIDs order; a missing one raises MemberStateMissing."""
    found: list[TaskState] = []
    for uuid, state in zip(task_uuids, states, strict=True):
        if state is None:
            raise MemberStateMissing(uuid, group_uuid, backend)
        found.append(state)
    return found


def unreachable(url: str, reason: str, fix: str) -> Unreachable:
    """``result backend <url, password masked> is unreachable (<reason>): <fix>``."""
    text = " ".join(reason.split()) or "no reply"
    return Unreachable(f"result backend {redact_url(url)} is unreachable ({text}): {fix}")
