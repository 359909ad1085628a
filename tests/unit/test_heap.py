"""bridge.heap: the loaded heap frozen out of the collector's sight (in a child process, so
pytest's own heap stays as it is), collections paused for a batch only, and a pipelined
loop's sparse collections."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import pytest

from bridge.heap import SparseCollector, collector_paused

_FROZEN = ("import gc; from bridge.heap import freeze_loaded; freeze_loaded(); "
           "print(gc.get_freeze_count())")


@pytest.mark.parametrize(("env", "frozen"), [({}, True), ({"BRIDGE_NO_FREEZE": "1"}, False)])
def test_freeze_loaded_moves_the_loaded_objects_out_of_sight(env: dict[str, str],
                                                             frozen: bool) -> None:
    base = {k: v for k, v in os.environ.items() if k != "BRIDGE_NO_FREEZE"}
    out = subprocess.run([sys.executable, "-c", _FROZEN], env={**base, **env},
                         capture_output=True, text=True, check=True).stdout
    assert (int(out) > 1000) is frozen, out  # the imports alone are thousands of objects


def test_collector_paused_inside_and_back_after_even_on_an_error() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a batch that failed")
    assert gc.isenabled()


def test_collector_paused_leaves_a_collector_someone_turned_off_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_sparse_collector_frees_cycles_once_enough_outlived_their_turns() -> None:
    assert gc.isenabled()
    with SparseCollector(young=2_000, full_every=2) as collector:
        assert not gc.isenabled()
        probe = weakref.ref(_cycle())
        collector.tick()  # a few objects: no collection yet
        assert probe() is not None
        for _ in range(3_000):
            _cycle()  # two tracked objects each (the node and its __dict__)
        collector.tick()
        assert probe() is None
    assert gc.isenabled()


def _cycle() -> _Node:
    return _Node()


def test_sparse_collector_leaves_a_collector_someone_turned_off_off() -> None:
    gc.disable()
    try:
        with SparseCollector(young=0) as collector:
            probe = weakref.ref(_cycle())
            collector.tick()
            assert probe() is not None  # not ours to run
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.collect()
