"""The app our gocraft/work pool runs in the live tests (``mbridge worker -A
tests.interop.gocraft_app --gocraft NS --no-machinery``, or in a thread).

A middleware appends one JSON line per run to $BRIDGE_GOCRAFT_RECORD, as the Go harness's
pool does: ``{"pool": "py", "name", "id", "args", "fails", "t", "end", "outcome"}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from bridge.app import Bridge
from bridge.config import Config
from bridge.gocraft import GocraftJob, middleware

URL = os.environ.get("BRIDGE_GOCRAFT_REDIS", "redis://127.0.0.1:6379/0")
app = Bridge(Config(broker=URL, result_backend=URL))


@middleware(app)
def record(job: GocraftJob, following: Callable[[], Any]) -> Any:
    """Note each run, its time span and its outcome (one O_APPEND write per line)."""
    start = time.time()
    outcome = "ok"
    try:
        return following()
    except Exception:
        outcome = "fail"
        raise
    finally:
        line = json.dumps({"pool": "py", "name": job.name, "id": job.id, "args": job.args,
                           "fails": job.fails, "t": start, "end": time.time(),
                           "outcome": outcome}) + "\n"
        fd = os.open(os.environ.get("BRIDGE_GOCRAFT_RECORD", os.devnull),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@app.task("greet")
def greet(i: int, s: str = "", ratio: float = 0.0) -> str:
    """Typed args from the job's map: an int (from a float64 on Go's retry path), a str…"""
    assert isinstance(i, int) and isinstance(ratio, float)
    return f"{s}{i}"


@app.task("slow")
def slow(ms: int) -> None:
    time.sleep(ms / 1000)


@app.task("doomed")
def doomed() -> None:
    raise RuntimeError("boom doomed")
