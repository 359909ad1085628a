"""What our producer checks through a Go worker beyond the arg types, on any broker."""

from __future__ import annotations

import time
import uuid

import pytest

from bridge import TaskFailed
from bridge.app import Bridge


def check_workflows(app: Bridge, not_before_ms: int = 1950) -> str:
    """Chain, group, chord, a countdown of 2 s (the task ran ``not_before_ms`` after it was
    sent, or later), a failure's text and RetryLater; the chord callback's counter key (the
    caller checks it is exactly 1)."""
    chain = app.send_chain(app.signature("add", 1, 2), app.signature("multiply", 10),
                           app.signature("add", 5))
    assert chain.get(timeout=60) == 35
    group = app.send_group(*(app.signature("add", i, i) for i in range(5)))
    assert group.get(timeout=60) == [0, 2, 4, 6, 8]
    key = f"count_{uuid.uuid4().hex}"
    chord = app.send_chord([app.signature("add", i, 1) for i in range(10)],
                           app.signature("count_call", key))
    assert chord.get(timeout=60) == sum(range(1, 11))
    sent_at = time.time_ns() // 1_000_000
    stamped = app.send_task("stamp", f"stamp_{uuid.uuid4().hex}", countdown=2).get(timeout=60)
    assert stamped >= sent_at + not_before_ms
    with pytest.raises(TaskFailed, match=r"^boom <&> é$"):
        app.send_task("fail", "boom <&> é").get(timeout=60)
    assert app.send_task("retry_later", f"r_{uuid.uuid4().hex}").get(timeout=60) == 3
    return key
