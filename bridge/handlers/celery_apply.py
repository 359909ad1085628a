"""Apply Celery signature dicts as Celery's worker does after a task ends.

Callbacks (``link``) get the result prepended unless immutable; the chain's next
task (its last element) gets the result and the rest of the chain; a chord body
gets the header results; errbacks get the failed task's id. Groups and chords
inside a link or chain are applied member by member, with the chord size
recorded before the last header task goes out, as Celery's ``group._apply_tasks``
does. Pure: returns the tasks to publish (and chord sizes to set); no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.protocol.celery import CeleryTask, new_task


@dataclass(slots=True)
class Applied:
    """What applying some signatures produced: tasks by queue, chord sizes, child ids."""

    tasks: list[tuple[str, CeleryTask]] = field(default_factory=list)
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

    def apply(self, sig: Mapping[str, Any], args: Sequence[Any] = (), *,
              chain: list[Any] | None = None, group: str | None = None,
              group_index: int | None = None, chord: Mapping[str, Any] | None = None) -> str:
        """Apply one signature dict with ``args`` prepended (unless immutable); its id."""
        kind = sig.get("subtask_type")
        if kind == "chain":
            return self._chain(sig, args)
        if kind == "group":
            return self._group(sig, args, chord=chord)
        if kind == "chord":
            return self._chord(sig, args)
        if kind not in (None, ""):
            raise ValueError(f"cannot apply a Celery {kind!r} signature here")
        options = _options(sig)
        own_args = list(sig.get("args") or ())
        call_args = own_args if sig.get("immutable") else [*args, *own_args]
        task_id = str(options.get("task_id") or uuid.uuid4())
        headers = options.get("headers")
        task = new_task(
            str(sig["task"]), call_args, dict(sig.get("kwargs") or {}), task_id=task_id,
            countdown=options.get("countdown"), eta=options.get("eta"),
            expires=options.get("expires"), priority=int(options.get("priority") or 0),
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
        self.out.tasks.append((_queue(options, self.default_queue), task))
        return task_id

    def _chain(self, sig: Mapping[str, Any], args: Sequence[Any]) -> str:
        tasks = list((sig.get("kwargs") or {}).get("tasks") or ())
        if not tasks:
            raise ValueError("an empty Celery chain")
        first, rest = tasks[0], tasks[1:]
        return self.apply(first, args, chain=list(reversed(rest)) or None)

    def _group(self, sig: Mapping[str, Any], args: Sequence[Any], *,
               chord: Mapping[str, Any] | None = None) -> str:
        options = _options(sig)
        group_id = str(options.get("task_id") or uuid.uuid4())
        members = list((sig.get("kwargs") or {}).get("tasks") or ())
        ids = []
        for index, member in enumerate(members):
            if chord is not None and index == len(members) - 1:
                self.out.chord_sizes.append((group_id, len(members)))
            ids.append(self.apply(member, args, group=group_id, group_index=index, chord=chord))
        self.out.children.append([[group_id, None], [[[i, None], None] for i in ids]])
        return group_id

    def _chord(self, sig: Mapping[str, Any], args: Sequence[Any]) -> str:
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
        self._group(group, args, chord=body)
        return str(body_options["task_id"])

    def callbacks(self, links: Sequence[Any] | None, result: Any) -> None:
        """``link`` signatures: each gets ``(result,)`` unless immutable."""
        for link in links or ():
            task_id = self.apply(link, (result,))
            self.out.children.append([[task_id, None], None])

    def chain_next(self, chain: list[Any] | None, result: Any) -> None:
        """The next task of a chain (Celery keeps it last) with the rest of the chain."""
        if chain:
            rest = chain[:-1]
            task_id = self.apply(chain[-1], (result,), chain=rest or None)
            self.out.children.append([[task_id, None], None])

    def errbacks(self, links: Sequence[Any] | None, task_id: str) -> None:
        """``link_error`` signatures, applied as tasks with ``(task_id,)``."""
        for link in links or ():
            self.apply(link, (task_id,))

    def chord_body(self, body: Mapping[str, Any], results: list[Any]) -> None:
        """The chord body with the header results as its first argument."""
        self.apply(body, (results,), group=_options(body).get("group_id"))
