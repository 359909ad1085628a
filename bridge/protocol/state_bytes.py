"""TaskStates as Go's bytes without TaskState objects: whether one is still running, read
without decoding it (the relay's reads of what is in flight, group checks: most states read
there are PENDING); PENDING states written for a batch sent together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bridge.protocol import machinery
from bridge.protocol.gojson import NEEDS_ESCAPE
from bridge.protocol.machinery import PENDING, TaskState

__all__ = ["completed_state", "pending_jsons", "still_running"]

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


def pending_jsons(tasks: Sequence[tuple[str, str]], created_at: datetime) -> list[bytes]:
    """The PENDING states of ``(uuid, name)`` pairs sent together (one CreatedAt), each as
    ``TaskState(uuid, name, PENDING, created_at=created_at).to_json()`` writes it, without
    making the states (names and ids that need no escaping: one format each)."""
    tail = TaskState("", "", PENDING, created_at=created_at).to_json()[_EMPTY_HEAD:]
    out: list[bytes] = []
    for uuid, name in tasks:
        if (machinery.FAST_WRITERS and type(uuid) is str and type(name) is str
                and NEEDS_ESCAPE(uuid + name) is None):
            out.append(b'{"TaskUUID":"%b","TaskName":"%b"%b' % (uuid.encode(), name.encode(),
                                                                 tail))
        else:
            out.append(TaskState(uuid, name, PENDING, created_at=created_at).to_json())
    return out


_EMPTY_HEAD = len(b'{"TaskUUID":"","TaskName":""')
