"""Chains, groups and chords, built exactly as machinery's tasks/workflow.go builds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.protocol.machinery import Signature, new_uuid


@dataclass(slots=True)
class Chain:
    """``NewChain``: each task's OnSuccess holds the next one; only the first is sent."""

    tasks: list[Signature]


@dataclass(slots=True)
class Group:
    """``NewGroup``: members share GroupUUID and GroupTaskCount."""

    group_uuid: str
    tasks: list[Signature]


@dataclass(slots=True)
class Chord:
    """``NewChord``: a group whose every member carries the callback."""

    group: Group
    callback: Signature


def new_chain(*signatures: Signature) -> Chain:
    """Give missing UUIDs, then link ``s[i-1].OnSuccess = [s[i]]`` from the end backwards."""
    tasks = list(signatures)
    for sig in tasks:
        if not sig.uuid:
            sig.uuid = new_uuid("task_")
    for index in range(len(tasks) - 1, 0, -1):
        tasks[index - 1].on_success = [tasks[index]]
    return Chain(tasks)


def new_group(*signatures: Signature) -> Group:
    """A fresh ``group_`` UUID, missing task UUIDs, GroupUUID and GroupTaskCount on each."""
    group_uuid = new_uuid("group_")
    tasks = list(signatures)
    for sig in tasks:
        if not sig.uuid:
            sig.uuid = new_uuid("task_")
        sig.group_uuid = group_uuid
        sig.group_task_count = len(tasks)
    return Group(group_uuid, tasks)


def new_chord(group: Group | Sequence[Signature], callback: Signature) -> Chord:
    """A ``chord_`` UUID for the callback if it has none; the callback set on every member."""
    if not isinstance(group, Group):
        group = new_group(*group)
    if not callback.uuid:
        callback.uuid = new_uuid("chord_")
    for sig in group.tasks:
        sig.chord_callback = callback
    return Chord(group, callback)
