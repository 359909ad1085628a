"""The worker's view of its tasks (what inspect reserved / active / query_task and the
queue rates answer) follows a task's events: received, started, ended."""

from __future__ import annotations

import os
import time

import pytest

from bridge.control.view import RATE_WINDOW, TaskView
from bridge.observe import FAILED, RECEIVED, STARTED, SUCCEEDED, Observers, TaskEvent


def event(kind: str, task_id: str, queue: str = "q1") -> TaskEvent:
    return TaskEvent(kind, task_id, "tasks.add", queue, "celery", args=[1, 2],
                     kwargs={"z": 3})


def test_a_task_is_reserved_then_active_then_counted() -> None:
    view = TaskView("w1@host")
    view.task_event(event(RECEIVED, "a"))
    [reserved] = view.reserved()
    assert reserved == {
        "id": "a", "name": "tasks.add", "args": [1, 2], "kwargs": {"z": 3},
        "type": "tasks.add", "hostname": "w1@host", "time_start": None,
        "acknowledged": False, "worker_pid": None, "protocol": "celery",
        "delivery_info": {"exchange": "", "routing_key": "q1", "priority": None,
                          "redelivered": False}}
    assert view.active() == [] and view.find(["a"]) == {"a": ("reserved", reserved)}

    before = time.time()
    view.task_event(event(STARTED, "a"))
    [active] = view.active()
    assert view.reserved() == []
    assert before <= active["time_start"] <= time.time()
    assert active["worker_pid"] == os.getpid() and active["args"] == [1, 2]
    assert view.find(["a", "b"]) == {"a": ("active", active)} and view.is_active("a")

    view.task_event(event(SUCCEEDED, "a"))
    view.task_event(event(FAILED, "b", queue="q2"))  # never seen received: still counted
    assert view.active() == [] and view.reserved() == [] and not view.is_active("a")
    assert view.total == {"tasks.add": 2}
    assert view.queues() == {"q1": {"processed": 1, "per_second_1m": round(1 / RATE_WINDOW, 3)},
                             "q2": {"processed": 1, "per_second_1m": round(1 / RATE_WINDOW, 3)}}


def test_the_rate_counts_the_last_minute_only() -> None:
    view = TaskView("w1@host")
    for i in range(120):
        view.task_event(event(SUCCEEDED, f"t{i}"))
    assert view.queues()["q1"] == {"processed": 120, "per_second_1m": 2.0}
    for second in view._recent["q1"]:  # as if those tasks ended over a minute ago
        second[0] -= int(RATE_WINDOW) + 2
    assert view.queues()["q1"] == {"processed": 120, "per_second_1m": 0.0}


class Picky:
    """An observer of successes only, that fails on one task."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def wants(self, kind: str) -> bool:
        if kind == FAILED:
            raise RuntimeError("no opinion")
        return kind == SUCCEEDED

    def task_event(self, event: TaskEvent) -> None:
        if event.task_id == "bad":
            raise ValueError("cannot")
        self.seen.append(event.task_id)


def test_observers_get_the_kinds_they_want_and_a_failing_one_is_named_once(
        caplog: pytest.LogCaptureFixture) -> None:
    picky, view = Picky(), TaskView("w1@host")
    observers = Observers([picky])
    assert not observers.wants(RECEIVED) and observers.wants(SUCCEEDED)
    assert not observers.wants(FAILED)  # it cannot say: named (once), and left out
    observers.add(view)  # wants every kind
    assert observers.wants(RECEIVED)
    for kind, task_id in ((RECEIVED, "a"), (SUCCEEDED, "a"), (SUCCEEDED, "bad"),
                          (SUCCEEDED, "bad"), (FAILED, "c"), (SUCCEEDED, "b")):
        observers.task_event(event(kind, task_id))
    assert picky.seen == ["a", "b"]  # not the RECEIVED; the failing one did not stop it
    assert view.total == {"tasks.add": 5}  # the view saw every event, after the failures too
    said = [r.getMessage() for r in caplog.records if "could not take" in r.getMessage()]
    assert said == ["Picky could not take a task event: RuntimeError: no opinion",
                    "Picky could not take a task event: ValueError: cannot"]
