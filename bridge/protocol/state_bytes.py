"""Telling from a TaskState's bytes whether it is still running, without decoding it (the
relay's reads of what is in flight, group checks: most states read there are PENDING)."""

from __future__ import annotations

from bridge.protocol.machinery import TaskState

__all__ = ["completed_state", "still_running"]

_STATE_KEY = b'"State":"'
_RUNNING = (b'PENDING"', b'RECEIVED"', b'STARTED"', b'RETRY"')


def still_running(raw: bytes) -> bool:
    """Whether a TaskState in Go's bytes (ours are the same) is before SUCCESS or FAILURE,
    read without decoding it: in Go's field order the first ``"State":"`` follows only
    TaskUUID and TaskName, strings in which a quote is escaped. False when unsure (another
    writer's layout): then decode."""
    if not raw.startswith(b'{"TaskUUID":'):
        return False
    at = raw.find(_STATE_KEY)
    return at > 0 and raw.startswith(_RUNNING, at + len(_STATE_KEY))


def completed_state(raw: bytes) -> TaskState | None:
    """The TaskState in ``raw`` when it is SUCCESS or FAILURE, else None (a state still
    running is not decoded)."""
    if still_running(raw):
        return None
    state = TaskState.from_json(raw)
    return state if state.is_completed() else None
