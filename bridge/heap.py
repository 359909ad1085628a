"""The heap of a long-running command: what it loaded at start leaves the cyclic collector's
sight, and a batch whose objects all die together is not walked while it is built."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused", "freeze_loaded"]


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
