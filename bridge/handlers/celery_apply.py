"""Apply Celery signature dicts as Celery's worker does after a task ends.

Callbacks (``link``) get the result prepended unless immutable; the chain's next
task (its last element) gets the result and the rest of the chain; a chord body
gets the header results; errbacks get the failed task's id. Groups and chords
inside a link or chain are applied member by member, with the chord size
recorded before the last header task goes out, as Celery's ``group._apply_tasks``
does. Pure: returns the encoded messages to publish (and chord sizes to set); no I/O.

Signatures come from the message, so they may be anything: a signature that cannot be
applied (no task name, a priority that is not a number, a header the encoder refuses...)
raises :class:`MalformedSignature` naming its role and why, never a bare KeyError, and
a message is encoded here, not at publish time, so one bad follow-up cannot fail a batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError
from bridge.protocol.celery import CeleryTask, encode_task, new_task
from bridge.protocol.celery_message import CeleryMessage

PREVIEW = 200
"""Characters of a bad signature shown in its error."""


class MalformedSignature(BridgeError, ValueError):
    """A Celery signature dict from a message that cannot be applied (the text says why)."""


def preview(value: object) -> str:
    """A short repr of a value from a message, for error texts."""
    text = repr(value)
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "..."


def encoded(task: CeleryTask, role: str) -> CeleryMessage:
    """``encode_task(task)``, its refusal as a :class:`MalformedSignature` of ``role``."""
    try:
        return encode_task(task)
    except Exception as exc:
        raise MalformedSignature(f"{role} {task.name!r}: {exc}") from None


def _int_option(options: Mapping[str, Any], key: str) -> int:
    value = options.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"options.{key} {preview(value)} is not a number")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"options.{key} {preview(value)} is not a number") from None


@dataclass(slots=True)
class Applied:
    """What applying some signatures produced: messages by queue, chord sizes, child ids."""

    tasks: list[tuple[str, CeleryMessage]] = field(default_factory=list)
    chord_sizes: list[tuple[str, int]] = field(default_factory=list)
    children: list[Any] = field(default_factory=list)
    """Result tuples for the parent's ``children`` meta field."""


def _options(sig: Mapping[str, Any]) -> dict[str, Any]:
    options = sig.get("options")
    return dict(options) if isinstance(options, Mapping) else {}


def _queue(options: Mapping[str, Any], default_queue: str) -> str:
    queue = options.get("queue")
    if isinstance(queue, Mapping):
        queue = queue.get("name")
    if isinstance(queue, str) and queue:
        return queue
    routing_key = options.get("routing_key")
    return routing_key if isinstance(routing_key, str) and routing_key else default_queue


def _list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list | tuple) else [value]


class Applier:
    """Builds the follow-up tasks of one finished task."""

    def __init__(self, default_queue: str, *, parent_id: str, root_id: str | None,
                 serializer: str = "json") -> None:
        self.default_queue = default_queue
        self.parent_id = parent_id
        self.root_id = root_id or parent_id
        self.serializer = serializer
        self.out = Applied()

    def apply(self, sig: Mapping[str, Any], args: Sequence[Any] = (), *, role: str = "signature",
              chain: list[Any] | None = None, group: str | None = None,
              group_index: int | None = None, chord: Mapping[str, Any] | None = None) -> str:
        """Apply one signature dict with ``args`` prepended (unless immutable); its id.
        Raises :class:`MalformedSignature` (naming ``role``) when it cannot be applied."""
        try:
            return self._apply(sig, args, role=role, chain=chain, group=group,
                               group_index=group_index, chord=chord)
        except MalformedSignature:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ValueError) and str(exc) else (
                f"{type(exc).__name__}: {exc}")
            if isinstance(exc, KeyError):
                reason = f"no {exc} key"
            raise MalformedSignature(f"{role} {preview(sig)}: {reason}") from None

    def _apply(self, sig: Mapping[str, Any], args: Sequence[Any], *, role: str,
               chain: list[Any] | None, group: str | None, group_index: int | None,
               chord: Mapping[str, Any] | None) -> str:
        if not isinstance(sig, Mapping):
            raise ValueError(f"a {type(sig).__name__}, not a signature dict")
        kind = sig.get("subtask_type")
        if kind == "chain":
            return self._chain(sig, args, role)
        if kind == "group":
            return self._group(sig, args, role, chord=chord)
        if kind == "chord":
            return self._chord(sig, args, role)
        if kind not in (None, ""):
            raise ValueError(f"cannot apply a Celery {kind!r} signature here")
        options = _options(sig)
        name = sig["task"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"task name {preview(name)} is not a non-empty string")
        own_args = list(sig.get("args") or ())
        call_args = own_args if sig.get("immutable") else [*args, *own_args]
        task_id = str(options.get("task_id") or uuid.uuid4())
        headers = options.get("headers")
        task = new_task(
            name, call_args, dict(sig.get("kwargs") or {}), task_id=task_id,
            countdown=options.get("countdown"), eta=options.get("eta"),
            expires=options.get("expires"), priority=_int_option(options, "priority"),
            group=group or options.get("group_id"),
            group_index=group_index if group_index is not None else options.get("group_index"),
            root_id=self.root_id, parent_id=self.parent_id,
            callbacks=_list(options.get("link")), errbacks=_list(options.get("link_error")),
            chain=chain or None, chord=dict(chord) if chord else options.get("chord"),
            headers=headers if isinstance(headers, Mapping) else None,
            shadow=options.get("shadow"), time_limit=options.get("time_limit"),
            soft_time_limit=options.get("soft_time_limit"), reply_to=options.get("reply_to"),
            serializer=self.serializer,
        )
        self.out.tasks.append((_queue(options, self.default_queue), encoded(task, role)))
        return task_id

    def _chain(self, sig: Mapping[str, Any], args: Sequence[Any], role: str) -> str:
        tasks = list((sig.get("kwargs") or {}).get("tasks") or ())
        if not tasks:
            raise ValueError("an empty Celery chain")
        first, rest = tasks[0], tasks[1:]
        return self.apply(first, args, role=role, chain=list(reversed(rest)) or None)

    def _group(self, sig: Mapping[str, Any], args: Sequence[Any], role: str, *,
               chord: Mapping[str, Any] | None = None) -> str:
        options = _options(sig)
        group_id = str(options.get("task_id") or uuid.uuid4())
        members = list((sig.get("kwargs") or {}).get("tasks") or ())
        ids = []
        for index, member in enumerate(members):
            if chord is not None and index == len(members) - 1:
                self.out.chord_sizes.append((group_id, len(members)))
            ids.append(self.apply(member, args, role=role, group=group_id, group_index=index,
                                  chord=chord))
        self.out.children.append([[group_id, None], [[[i, None], None] for i in ids]])
        return group_id

    def _chord(self, sig: Mapping[str, Any], args: Sequence[Any], role: str) -> str:
        kwargs = sig.get("kwargs") or {}
        body = dict(kwargs.get("body") or {})
        header = list(kwargs.get("header") or ())
        options = _options(sig)
        group_id = str(options.get("group_id") or options.get("task_id") or uuid.uuid4())
        body_options = _options(body)
        body_options.setdefault("task_id", str(uuid.uuid4()))
        body_options["group_id"] = group_id
        body["options"] = body_options
        group = {"task": "celery.group", "args": [], "kwargs": {"tasks": header},
                 "options": {"task_id": group_id}, "subtask_type": "group", "immutable": False}
        self._group(group, args, role, chord=body)
        return str(body_options["task_id"])

    def callbacks(self, links: Sequence[Any] | None, result: Any) -> None:
        """``link`` signatures: each gets ``(result,)`` unless immutable."""
        for link in links or ():
            task_id = self.apply(link, (result,), role="link")
            self.out.children.append([[task_id, None], None])

    def chain_next(self, chain: list[Any] | None, result: Any) -> None:
        """The next task of a chain (Celery keeps it last) with the rest of the chain."""
        if chain:
            rest = chain[:-1]
            task_id = self.apply(chain[-1], (result,), role="chain's next task",
                                 chain=rest or None)
            self.out.children.append([[task_id, None], None])

    def errbacks(self, links: Sequence[Any] | None, task_id: str) -> list[str]:
        """``link_error`` signatures, applied as tasks with ``(task_id,)``; each one that
        cannot be applied is skipped, and why is returned (the others still go out)."""
        errors = []
        for link in links or ():
            try:
                self.apply(link, (task_id,), role="errback")
            except MalformedSignature as exc:
                errors.append(str(exc))
        return errors

    def chord_body(self, body: Mapping[str, Any], results: list[Any]) -> None:
        """The chord body with the header results as its first argument."""
        self.apply(body, (results,), role="chord body", group=_options(body).get("group_id"))
