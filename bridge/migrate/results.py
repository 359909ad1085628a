"""``mbridge migrate --results``: carry the result states of migrated ids to the other backend.

machinery ``TaskState`` ⇄ Celery task meta, by state:

==========  ==============================================================
machinery   Celery
==========  ==============================================================
PENDING     (nothing stored: Celery reads a missing meta as PENDING)
RECEIVED    RECEIVED
STARTED     STARTED
RETRY       RETRY, the error as a ``GoError`` exception
SUCCESS     SUCCESS: None, the value, or a list for several results
FAILURE     FAILURE, the error as a ``GoError`` exception
==========  ==============================================================

and back: Celery's exception dicts become ``"<exc_type>: <message>"`` error strings, REVOKED
becomes FAILURE ``"REVOKED"``, a SUCCESS value becomes one TaskResult typed by the schema's
``results`` or by inference (dicts and lists of mixed values as Go's
``map[string]interface {}`` / ``[]interface {}``). A machinery destination without a stored
state gets PENDING with the task name, as machinery's ``SendTask`` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from bridge.backends.base import now_utc
from bridge.backends.celery_redis import CeleryRedisBackend, TaskMeta, go_error
from bridge.endpoints import Endpoint
from bridge.errors import BridgeError, StatesRefused
from bridge.migrate.report import MigrationReport
from bridge.migrate.translate import Translated
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RETRY,
    SUCCESS,
    TaskResult,
    TaskState,
)
from bridge.result import typed_results
from bridge.schema import TaskSchema
from bridge.types import to_result, to_wire

CELERY_ONLY = {"REVOKED": FAILURE}


def celery_meta(state: TaskState) -> TaskMeta | None:
    """The Celery meta for a machinery state (None for PENDING: nothing to store)."""
    if state.state == PENDING:
        return None
    if state.state == SUCCESS:
        value = typed_results(state)
        return TaskMeta(state.task_uuid, SUCCESS, list(value) if isinstance(value, tuple)
                        else value)
    if state.state in (FAILURE, RETRY):
        return TaskMeta(state.task_uuid, state.state, go_error(state.error))
    return TaskMeta(state.task_uuid, state.state)


def _error_text(result: Any) -> str:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(m) for m in message)
        return f"{result['exc_type']}: {message}"
    return "" if result is None else str(result)


def _result(value: Any, go_type: str | None) -> TaskResult:
    try:
        return to_result(value, go_type)
    except (BridgeError, ValueError, TypeError):
        if isinstance(value, dict):
            return TaskResult("map[string]interface {}", to_wire_plain(value))
        if isinstance(value, list | tuple):
            return TaskResult("[]interface {}", to_wire_plain(list(value)))
        return TaskResult("string", str(value))


def to_wire_plain(value: Any) -> Any:
    """Plain JSON data as Go's decoder would hand it on (bytes as base64 via to_wire)."""
    if isinstance(value, bytes | bytearray):
        return to_wire("[]byte", bytes(value))
    if isinstance(value, dict):
        return {str(k): to_wire_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire_plain(v) for v in value]
    return value


def machinery_state(task_id: str, name: str, meta: dict[str, Any],
                    schema: TaskSchema | None = None) -> TaskState:
    """The machinery state for a Celery meta (``{"status": ..., "result": ...}``)."""
    status = str(meta.get("status") or PENDING)
    result = meta.get("result")
    if status == SUCCESS:
        types = schema.result_types(name) if schema is not None else None
        if result is None:
            results: list[TaskResult | None] = []
        else:
            results = [_result(result, types[0] if types else None)]
        return TaskState(task_id, name, SUCCESS, results=results)
    if status in CELERY_ONLY:
        return TaskState(task_id, name, CELERY_ONLY[status], error=status)
    if status in (FAILURE, RETRY):
        return TaskState(task_id, name, status, error=_error_text(result))
    return TaskState(task_id, name, status)


def read_celery_metas(backend: CeleryRedisBackend, ids: Sequence[str]
                      ) -> list[dict[str, Any] | None]:
    """Stored metas of ``ids`` in one MGET (None where there is none)."""
    return [None if raw is None else cast("dict[str, Any]", backend.decode(raw))
            for raw in backend.get_raw_many(ids)]


def pending_state(task_id: str, name: str) -> TaskState:
    """machinery's PENDING state as SendTask writes it."""
    return TaskState(task_id, name, PENDING, created_at=now_utc())


class ResultCarrier:
    """Carries result states of migrated ids from the source's backend to the destination's."""

    def __init__(self, src: Endpoint, dst: Endpoint, schema: TaskSchema | None) -> None:
        self.src_protocol, self.dst_protocol = src.protocol, dst.protocol
        self.src = src.open_backend()
        self.dst = dst.open_backend()
        self.schema = schema

    def carry(self, items: Sequence[Translated], report: MigrationReport) -> dict[str, str]:
        """Write the destination's states (or metas) of ``items``; the task ids whose state
        the destination refused (its key holds something else), with why."""
        items = [i for i in items if i.task_id]
        if not items:
            return {}
        ids = [i.task_id for i in items]
        if self.src_protocol == "machinery":
            found: list[Any] = self.src.get_states(ids)
        else:
            found = read_celery_metas(self.src, ids)
        if self.dst_protocol == "celery":
            metas = []
            for state in found:
                meta = None
                if isinstance(state, TaskState):
                    meta = celery_meta(state)
                elif isinstance(state, dict) and state.get("status") != PENDING:
                    meta = _celery_copy(state)
                if meta is not None:
                    metas.append(meta)
            refused: dict[str, str] = {}
            report.results_carried += sum(self.dst.store_many(metas, refused))
            return refused
        states: list[TaskState] = []
        for item, state in zip(items, found, strict=True):
            if isinstance(state, dict):
                state = machinery_state(item.task_id, item.task, state, self.schema)
            pending = pending_state(item.task_id, item.task)
            if state is not None and state.created_at.year > 1:
                pending.created_at = state.created_at
            states.append(pending)
            report.results_pending += 1
            if state is not None and state.state != PENDING:
                states.append(state)
                report.results_carried += 1
        try:
            self.dst.set_states(states)
        except StatesRefused as exc:  # the others are written
            return exc.refused
        return {}

    def close(self) -> None:
        for backend in (self.src, self.dst):
            backend.close()


def _celery_copy(meta: dict[str, Any]) -> TaskMeta:
    return TaskMeta(str(meta.get("task_id")), str(meta.get("status")), meta.get("result"),
                    traceback=meta.get("traceback"), children=list(meta.get("children") or []),
                    group_id=meta.get("group_id"), parent_id=meta.get("parent_id"),
                    date_done=meta.get("date_done"))


__all__ = ["ResultCarrier", "celery_meta", "machinery_state", "pending_state",
           "read_celery_metas"]
