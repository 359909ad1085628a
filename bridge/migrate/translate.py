"""Translation of one stored message for ``mbridge migrate``: source bytes → destination message.

Celery → machinery types the call for Go workers strictly: with the ``--schema`` types for
the tasks it names, else by inference, and refuses what a Go worker could not take (dicts,
``None``, mixed lists, out-of-range values): such messages are *untranslatable* and keep
their reason. machinery → Celery and same-protocol moves keep every field
(``bridge.protocol.celery_canvas``). gocraft/work jobs carry a map of named args: it is a
Celery call's kwargs, and machinery's Args by name (the schema's ``kwargs`` give names and
order to positional Args); gocraft takes no positional Celery args.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.errors import BridgeError, clip, describe
from bridge.gocraft.job import GocraftJob, now_epoch
from bridge.protocol.celery import (
    CeleryTask,
    decode_task,
    encode_task,
    new_task,
)
from bridge.protocol.celery_canvas import from_signature, to_signature
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.celery_quick import quick_message, quick_signature
from bridge.protocol.gojson import JSONNumber
from bridge.protocol.gotime import GoTime
from bridge.protocol.kombu_envelope import decode_envelope
from bridge.protocol.machinery import Signature
from bridge.schema import SchemaOrInference, TaskSchema

UNKNOWN = "?"
"""Task name reported for a message that cannot even be decoded."""


class TranslationError(BridgeError, ValueError):
    """A message the destination's protocol cannot express."""


@dataclass(slots=True)
class Translated:
    """One message read and re-encoded for the destination (or why it cannot be)."""

    task: str
    task_id: str
    signature: Signature | None = None
    """machinery destinations whose sink publishes Signatures (``Translator.keep_signatures``):
    the Signature to publish (RoutingKey = destination queue)."""
    body: bytes = b""
    """machinery destinations: ``signature.to_json()``."""
    message: CeleryMessage | None = None
    """Celery destinations: the message to publish."""
    job: GocraftJob | None = None
    """gocraft/work destinations: the job to enqueue (on the list of its name)."""
    reason: str = ""
    """Why it cannot be migrated ('' when it can)."""
    wanted: bool = True
    """False when ``--task`` filters it out."""
    eta: datetime | None = None
    """When it may run (an ETA or countdown, a delayed set's due time); None: at once.
    machinery destinations: the Signature's ETA, as published."""

    @property
    def ok(self) -> bool:
        return self.wanted and not self.reason

    @property
    def delayed(self) -> bool:
        """Whether it waits for an ETA still ahead (counted as delayed in the report)."""
        if self.eta is None:
            return False
        eta = self.eta if self.eta.tzinfo is not None else self.eta.replace(tzinfo=UTC)
        return eta > datetime.now(UTC)


class Translator:
    """Reads messages of ``src_protocol`` and writes them for ``dst_protocol`` / ``dst_queue``."""

    def __init__(self, src_protocol: str, dst_protocol: str, dst_queue: str, *,
                 schema: TaskSchema | None = None, tasks: Collection[str] = (),
                 accept: Sequence[str] = ("json", "msgpack")) -> None:
        self.src = src_protocol
        self.dst = dst_protocol
        self.queue = dst_queue
        self.types = SchemaOrInference(schema, always_strict=True)
        self.tasks = frozenset(tasks)
        self.accept = tuple(accept)
        """Serializers taken from Celery messages (a Celery app's accept_content)."""
        self.keep_signatures = False
        """machinery destinations: keep each Signature on its Translated (a sink on RabbitMQ
        publishes them; on Redis the bytes and the ETA are enough, and a batch's Signatures
        freed as soon as they are written cost less)."""
        self.quick = True
        """Plain calls translated by ``bridge.protocol.celery_quick`` (the same bytes and
        Signature in a fraction of the time; not where a schema types the task's args)."""

    def wants(self, name: str) -> bool:
        return not self.tasks or name in self.tasks

    # ------------------------------------------------------------ entry points

    def from_envelope(self, raw: bytes, due: datetime | None = None) -> Translated:
        """A kombu Redis envelope (``due``: when our delayed set would have released it)."""
        quick = (self._quick(raw) if self.quick and due is None and self.dst == "machinery"
                 else None)
        if quick is not None:
            return quick
        try:
            message = decode_envelope(raw).message
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        return self.from_celery(message, due)

    def from_celery(self, message: CeleryMessage, due: datetime | None = None) -> Translated:
        """A Celery message (protocol 1 or 2, json or msgpack)."""
        try:
            task = decode_task(message, accept=self.accept)
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        out = Translated(task.name, task.id, wanted=self.wants(task.name))
        if not out.wanted:
            return out
        out.eta = due or _eta(task)
        try:
            if self.dst == "machinery":
                sig = to_signature(task, types=self.types, queue=self.queue, strict=True)
                sig.routing_key = self.queue
                if due is not None and (sig.eta is None or sig.eta < due):
                    sig.eta = GoTime.from_datetime(due)
                self._encode_signature(out, sig)
            elif self.dst == "gocraft":
                out.job = job_of_celery(task)
            else:
                out.message = message if due is None else _with_eta(task, message, due)
        except Exception as exc:  # whatever the message holds, it is this message's reason
            out.reason = clip(str(exc)) if isinstance(exc, BridgeError) else describe(exc)
        return out

    def from_machinery(self, raw: bytes) -> Translated:
        """A machinery Signature's JSON."""
        try:
            sig = Signature.from_json(raw)
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        out = Translated(sig.name, sig.uuid, wanted=self.wants(sig.name), eta=sig.eta)
        if not out.wanted:
            return out
        try:
            if self.dst == "machinery":
                sig.routing_key = self.queue
                self._encode_signature(out, sig)
            elif self.dst == "gocraft":
                out.job = job_of_signature(sig, self.types.schema)
            else:
                out.message = quick_message(sig) if self.quick else None
                if out.message is None:
                    task = from_signature(sig)
                    if sig.eta is not None and task.eta != sig.eta:  # set or moved here
                        task.headers["eta"] = sig.eta.astimezone(UTC).isoformat()
                    out.message = encode_task(task)
        except Exception as exc:  # whatever the message holds, it is this message's reason
            out.reason = clip(str(exc)) if isinstance(exc, BridgeError) else describe(exc)
        return out

    def from_gocraft(self, raw: bytes, due: datetime | None = None) -> Translated:
        """A gocraft/work job (``due``: its run-at in the scheduled set). Its args map becomes
        a Celery call's kwargs, or machinery's typed Args in the schema's ``kwargs`` order
        (else in the map's order, typed by inference)."""
        try:
            job = GocraftJob.decode(raw)
        except BridgeError as exc:
            return Translated(UNKNOWN, "", reason=str(exc), wanted=not self.tasks)
        out = Translated(job.name, job.id, wanted=self.wants(job.name), eta=due)
        if not out.wanted:
            return out
        try:
            if self.dst == "gocraft":
                out.job = job
                return out
            kwargs = {key: float(v) if isinstance(v, JSONNumber) else v
                      for key, v in (job.args or {}).items()}
            task = new_task(job.name, [], kwargs, task_id=job.id, eta=due)
            if self.dst == "celery":
                out.message = encode_task(task)
                return out
            sig = Signature(uuid=f"task_{job.id}", name=job.name, routing_key=self.queue,
                            eta=GoTime.from_datetime(due) if due is not None else None,
                            args=self.types.type_args(job.name, [], kwargs, strict=True))
            self._encode_signature(out, sig)
        except Exception as exc:  # whatever the job holds, it is this job's reason
            out.reason = clip(str(exc)) if isinstance(exc, BridgeError) else describe(exc)
        return out

    def _quick(self, raw: bytes) -> Translated | None:
        quick = quick_signature(raw, self.queue, self.accept, self.types.schema)
        if quick is None:
            return None
        if not self.wants(quick.name):
            return Translated(quick.name, quick.id, wanted=False)
        out = Translated(quick.name, quick.id, body=quick.body)
        if self.keep_signatures:  # a plain one: such a sink's broker may rewrite a field
            out.signature = quick.signature(encoded=False)
        return out

    def _encode_signature(self, out: Translated, sig: Signature) -> None:
        out.body = sig.to_json()
        out.eta = sig.eta
        if self.keep_signatures:
            out.signature = sig


def _with_eta(task: CeleryTask, message: CeleryMessage, due: datetime) -> CeleryMessage:
    """The message with its ETA moved to ``due`` when that is later (a delayed requeue of
    ours becomes an ETA a Celery worker honours)."""
    eta = task.eta
    if eta is not None and eta >= due:
        return message
    task.headers["eta"] = due.astimezone(UTC).isoformat()
    return encode_task(task)


def _eta(task: CeleryTask) -> datetime | None:
    """The task's ETA, None when it has none or one that does not parse (the translation
    says what is wrong with it)."""
    try:
        return task.eta
    except (BridgeError, ValueError, TypeError):
        return None


def job_of_celery(task: CeleryTask) -> GocraftJob:
    """A gocraft/work job for a Celery call: its kwargs are the job's args map (gocraft has
    no positional args: a call with some is refused), its id kept."""
    if task.args:
        raise TranslationError(f"task {task.name}: gocraft/work jobs take named args only; "
                               f"this call has {len(task.args)} positional args")
    return GocraftJob(name=task.name, id=task.id, t=now_epoch(), args=dict(task.kwargs))


def job_of_signature(sig: Signature, schema: TaskSchema | None) -> GocraftJob:
    """A gocraft/work job for a machinery Signature: each Arg under its ``Name``, or the name
    the schema's ``kwargs`` give its position; values as the wire holds them."""
    names: list[str] = []
    spec = schema.tasks.get(sig.name) if schema is not None else None
    if spec is not None:
        names = [""] * len(spec.args) + [name for name, _ in spec.kwargs]
    args: dict[str, Any] = {}
    for position, arg in enumerate(sig.args or []):
        name = arg.name or (names[position] if position < len(names) else "")
        if not name:
            raise TranslationError(f"task {sig.name}: arg {position} has no name; gocraft/work "
                                   "jobs take named args: name it in the schema's kwargs")
        args[name] = arg.value
    return GocraftJob(name=sig.name, id=sig.uuid.removeprefix("task_") or sig.uuid,
                      t=now_epoch(), args=args or None)


def due_from_seconds(score: float) -> datetime:
    """Our Celery delayed set's score (Unix seconds) as an aware datetime."""
    return datetime.fromtimestamp(score, UTC)


__all__ = ["UNKNOWN", "Translated", "Translator", "due_from_seconds"]
