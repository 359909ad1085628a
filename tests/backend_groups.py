"""Groups and chords on a result backend: the completion check every backend passes, chord
trigger races among many Python callers, and machinery's own ``TriggerChord`` of the
Memcache and MongoDB backends step by step in Python, to race ours deterministically (the
live tests race the real Go workers).

The Go models follow the Go source line by line (v1.10.8 == v2.0.16), with a hook where
Go's goroutine could be preempted, so a test can put our trigger exactly there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from pymemcache.client.base import Client as MemcacheClient

from bridge.backends.base import Backend, new_state
from bridge.backends.common import GroupMetaMissing, MemberStateMissing
from bridge.protocol.machinery import FAILURE, SUCCESS, GroupMeta, Signature
from bridge.types import to_result


def check_group_completion(backend: Backend, group_uuid: str, members: list[str],
                           go_missing_error: str) -> None:
    """An initialised group of three without states: completed once all three are SUCCESS
    or FAILURE, states in TaskUUIDs order, then purged (Go's error text when missing)."""
    assert not backend.group_completed(group_uuid, 3)
    for uuid in reversed(members[:2]):
        backend.set_state(new_state(Signature(uuid=uuid), SUCCESS, [to_result(1, "int64")]))
    assert not backend.group_completed(group_uuid, 3)
    with pytest.raises(MemberStateMissing):
        backend.group_task_states(group_uuid, 3)
    backend.set_state(new_state(Signature(uuid=members[2]), FAILURE, error="x"))
    assert backend.group_completed(group_uuid, 3)
    assert [s.task_uuid for s in backend.group_task_states(group_uuid, 3)] == members
    backend.purge_group_meta(group_uuid)
    with pytest.raises(GroupMetaMissing, match=go_missing_error):
        backend.group_completed(group_uuid, 3)


def go_memcache_trigger_chord(client: MemcacheClient, group_uuid: str, expiration: int,
                              after_read: Callable[[], None] = lambda: None,
                              after_lock: Callable[[], None] = lambda: None) -> bool:
    """``backends/memcache/memcache.go`` TriggerChord: read, check, spin while Lock, Set
    Lock, Replace ChordTriggered, Set unlock (deferred). True means Go fires the callback."""
    meta = GroupMeta.from_json(client.get(group_uuid))
    if meta.chord_triggered:
        return False
    after_read()
    while meta.lock:
        meta = GroupMeta.from_json(client.get(group_uuid))
        time.sleep(0.005)
    meta.lock = True
    client.set(group_uuid, meta.to_json(), expire=expiration, noreply=False)  # lockGroupMeta
    after_lock()
    try:
        meta.chord_triggered = True
        if not client.replace(group_uuid, meta.to_json(), expire=expiration, noreply=False):
            raise LookupError("memcache: cache miss")
        return True
    finally:
        meta.lock = False
        client.set(group_uuid, meta.to_json(), expire=expiration, noreply=False)  # unlock


def go_mongo_trigger_chord(group_metas: Any, group_uuid: str) -> bool:
    """``backends/mongo/mongodb.go`` TriggerChord: a conditional UpdateOne whose result is
    never looked at (``UpdateOne`` does not return ErrNoDocuments): always True."""
    group_metas.update_one({"_id": group_uuid, "chord_triggered": False},
                           {"$set": {"chord_triggered": True}})
    return True


def python_callers_race(trigger: Callable[[str], bool], group_uuid: str,
                        callers: int = 8) -> list[bool]:
    """``trigger(group_uuid)`` from ``callers`` threads released at once: what each got."""
    wins: list[bool] = []
    barrier = threading.Barrier(callers)

    def call() -> None:
        barrier.wait()
        wins.append(trigger(group_uuid))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wins


def _stamp(stamps: list[float]) -> None:
    stamps.append(time.monotonic())


def ours_when_go_wrote_in_time(grace: float, race: Callable[[Callable[[], None]], bool],
                               rounds: int = 3) -> bool:
    """What our trigger returned in the first round of ``race`` where Go's model wrote
    within ``grace`` of the round's start. ``race(after_lock)`` runs one round: a fresh
    group, our trigger started inside a Go model given ``after_lock`` as its hook; it
    returns our trigger's result. A round where the machine stalled Go's model past the
    grace is the documented limit (Go fires too) and shows nothing: it is run again."""
    for _ in range(rounds):
        locked: list[float] = []
        started = time.monotonic()  # ours starts watching after this
        won = race(partial(_stamp, locked))
        if locked[0] - started < grace:
            return won
    pytest.fail(f"Go's model never wrote within the grace in {rounds} rounds")


class Ours:
    """Our trigger in a thread of its own, started at a chosen moment of a Go model."""

    def __init__(self, trigger: Callable[[str], bool], group_uuid: str) -> None:
        self._got: list[bool] = []
        self._thread = threading.Thread(target=lambda: self._got.append(trigger(group_uuid)))

    def start(self, run_for: float = 0.0) -> None:
        """Start it and let it run ``run_for`` seconds before the caller goes on."""
        self._thread.start()
        time.sleep(run_for)

    def result(self) -> bool:
        self._thread.join(timeout=10)
        [got] = self._got
        return got
