"""The heap of a long-running command: what it loaded at start leaves the cyclic collector's
sight, and a batch whose objects all die together is not walked while it is built."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["SparseCollector", "collector_paused", "freeze_loaded"]


def freeze_loaded() -> None:
    """Collect once, then freeze every object alive (modules, classes, the app and its
    configuration) into the collector's permanent generation. Called when a worker, relay
    or migration has loaded everything and starts its loop: the full collections its
    traffic triggers then skip the tens of thousands of objects of the imports.
    ``BRIDGE_NO_FREEZE=1`` leaves the heap alone (to measure what this saves)."""
    if os.environ.get("BRIDGE_NO_FREEZE"):
        return
    gc.collect()
    gc.freeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside: for a batch of messages whose objects live until
    the batch is published and then die together by reference counting. Collections
    while it is built would walk every one of them in vain (about 5% of a migration's
    CPU); the next allocation after it collects as usual, cycles included."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class SparseCollector:
    """The automatic collector off while a pipelined loop runs (a batch in flight outlives
    its turn, so a collection after each turn would walk it, and promote it to be walked
    again by the older generations' collections: 2.4 µs a message in the relay); the
    loop calls :meth:`tick` after each turn instead, which collects the young generation
    once ``young`` tracked objects have outlived the turns that made them (cycles among
    them included), and every ``full_every`` such collections all generations."""

    def __init__(self, young: int = 50_000, full_every: int = 20) -> None:
        self.young = young
        self.full_every = full_every
        self._collections = 0
        self._paused = False

    def __enter__(self) -> SparseCollector:
        self._paused = gc.isenabled()
        if self._paused:
            gc.disable()
        return self

    def tick(self) -> None:
        if self._paused and gc.get_count()[0] > self.young:
            self._collections += 1
            gc.collect(2 if self._collections % self.full_every == 0 else 0)

    def __exit__(self, *_exc: object) -> None:
        if self._paused:
            gc.enable()
