"""The heap of a long-running command: what it loaded at start leaves the cyclic collector's
sight, so each full collection walks only what the run itself made."""

from __future__ import annotations

import gc
import os

__all__ = ["freeze_loaded"]


def freeze_loaded() -> None:
    """Collect once, then freeze every object alive (modules, classes, the app and its
    configuration) into the collector's permanent generation. Called when a worker, relay
    or migration has loaded everything and starts its loop: the full collections its
    traffic triggers then skip the tens of thousands of objects of the imports."""
    if os.environ.get("BRIDGE_NO_FREEZE"):
        return
    gc.collect()
    gc.freeze()
