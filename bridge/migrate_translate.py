"""Translation of one stored message for ``mbridge migrate``: source bytes → destination message.

Celery → machinery types the call for Go workers strictly: with the ``--schema`` types for
the tasks it names, else by inference, and refuses what a Go worker could not take (dicts,
``None``, mixed lists, out-of-range values): such messages are *untranslatable* and keep
their reason. machinery → Celery and same-protocol moves keep every field
(``bridge.protocol.celery_canvas``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.errors import BridgeError
from bridge.protocol.celery import (
    CeleryTask,
    decode_task,
    encode_task,
    from_signature,
    to_signature,
)
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.gotime import GoTime
from bridge.protocol.kombu_envelope import decode_envelope
from bridge.protocol.machinery import Arg, Signature
from bridge.schema import TaskSchema, infer_args

UNKNOWN = "?"
"""Task name reported for a message that cannot even be decoded."""


class StrictTypes:
    """Go types for a Celery call: the schema's where it names the task, else inference;
    always strict (a value a Go worker cannot take is an error, never an untyped Arg)."""

    def __init__(self, schema: TaskSchema | None = None) -> None:
        self.schema = schema

    def type_args(self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                  strict: bool = False) -> list[Arg]:
        if self.schema is not None and task_name in self.schema.tasks:
            return self.schema.type_args(task_name, args, kwargs, strict=True)
        return infer_args(task_name, args, kwargs, strict=True)


@dataclass(slots=True)
class Translated:
    """One message read and re-encoded for the destination (or why it cannot be)."""

    task: str
    task_id: str
    signature: Signature | None = None
    """machinery destinations: the Signature to publish (RoutingKey = destination queue)."""
    body: bytes = b""
    """machinery destinations: ``signature.to_json()``."""
    message: CeleryMessage | None = None
    """Celery destinations: the message to publish."""
    reason: str = ""
    """Why it cannot be migrated ('' when it can)."""
    wanted: bool = True
    """False when ``--task`` filters it out."""

    @property
    def ok(self) -> bool:
        return self.wanted and not self.reason


class Translator:
    """Reads messages of ``src_protocol`` and writes them for ``dst_protocol`` / ``dst_queue``."""

    def __init__(self, src_protocol: str, dst_protocol: str, dst_queue: str, *,
                 schema: TaskSchema | None = None, tasks: Collection[str] = ()) -> None:
        self.src = src_protocol
        self.dst = dst_protocol
        self.queue = dst_queue
        self.types = StrictTypes(schema)
        self.tasks = frozenset(tasks)

    def wants(self, name: str) -> bool:
        return not self.tasks or name in self.tasks

    # ------------------------------------------------------------ entry points

    def from_envelope(self, raw: bytes, due: datetime | None = None) -> Translated:
        """A kombu Redis envelope (``due``: when our delayed set would have released it)."""
        try:
            message = decode_envelope(raw).message
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        return self.from_celery(message, due)

    def from_celery(self, message: CeleryMessage, due: datetime | None = None) -> Translated:
        """A Celery message (protocol 1 or 2, json or msgpack)."""
        try:
            task = decode_task(message)
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        out = Translated(task.name, task.id, wanted=self.wants(task.name))
        if not out.wanted:
            return out
        try:
            if self.dst == "machinery":
                sig = to_signature(task, types=self.types, queue=self.queue, strict=True)
                sig.routing_key = self.queue
                if due is not None and (sig.eta is None or sig.eta < due):
                    sig.eta = GoTime.from_datetime(due)
                self._encode_signature(out, sig)
            else:
                out.message = message if due is None else _with_eta(task, message, due)
        except (BridgeError, ValueError, TypeError) as exc:
            out.reason = str(exc) or type(exc).__name__
        return out

    def from_machinery(self, raw: bytes) -> Translated:
        """A machinery Signature's JSON."""
        try:
            sig = Signature.from_json(raw)
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        out = Translated(sig.name, sig.uuid, wanted=self.wants(sig.name))
        if not out.wanted:
            return out
        try:
            if self.dst == "machinery":
                sig.routing_key = self.queue
                self._encode_signature(out, sig)
            else:
                task = from_signature(sig)
                if sig.eta is not None and task.eta != sig.eta:  # set or moved on this side
                    task.headers["eta"] = sig.eta.astimezone(UTC).isoformat()
                out.message = encode_task(task)
        except (BridgeError, ValueError, TypeError) as exc:
            out.reason = str(exc) or type(exc).__name__
        return out

    @staticmethod
    def _encode_signature(out: Translated, sig: Signature) -> None:
        out.body = sig.to_json()
        out.signature = sig


def _with_eta(task: CeleryTask, message: CeleryMessage, due: datetime) -> CeleryMessage:
    """The message with its ETA moved to ``due`` when that is later (a delayed requeue of
    ours becomes an ETA a Celery worker honours)."""
    eta = task.eta
    if eta is not None and eta >= due:
        return message
    task.headers["eta"] = due.astimezone(UTC).isoformat()
    return encode_task(task)


def due_from_seconds(score: float) -> datetime:
    """Our Celery delayed set's score (Unix seconds) as an aware datetime."""
    return datetime.fromtimestamp(score, UTC)


__all__ = ["UNKNOWN", "StrictTypes", "Translated", "Translator", "due_from_seconds"]
