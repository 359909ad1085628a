"""bridge.heap: the loaded heap frozen out of the collector's sight (in a child process, so
pytest's own heap stays as it is), and collections paused for a batch only."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from bridge.heap import collector_paused

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
