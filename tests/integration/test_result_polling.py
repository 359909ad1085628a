"""``AsyncResult.get`` reads a pending state soon, then less often: 0.2 ms, doubling up to
``interval`` (a quick task's result is seen when it is stored, a slow one costs few reads)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from bridge.backends.base import new_state
from bridge.backends.redis import RedisBackend
from bridge.config import Config
from bridge.protocol.machinery import PENDING, SUCCESS, Signature, TaskResult
from bridge.result import AsyncResult, ResultTimeout


def test_reads_come_sooner_first_then_every_interval(redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    backend = RedisBackend(redis_url, Config(result_backend=redis_url))
    sig = Signature(uuid=f"task_{uuid.uuid4()}", name="add")
    backend.set_state(new_state(sig, PENDING))
    pauses: list[float] = []
    reads: list[str] = []
    get_state = backend.get_state

    def counted_get_state(task_uuid: str) -> object:
        reads.append(task_uuid)
        return get_state(task_uuid)

    real_sleep, this_thread = time.sleep, threading.get_ident()

    def pause(seconds: float) -> None:  # the state is stored after the 12th pause
        if threading.get_ident() != this_thread:  # time.sleep is patched process-wide: a
            real_sleep(seconds)  # thread another test left behind sleeps for real, uncounted
            return
        pauses.append(seconds)
        if len(pauses) == 12:
            backend.set_state(new_state(sig, SUCCESS, [TaskResult("int64", 42)]))

    monkeypatch.setattr(backend, "get_state", counted_get_state)
    monkeypatch.setattr("bridge.result.time.sleep", pause)
    assert AsyncResult(sig.uuid, backend).get(timeout=60, interval=0.05) == 42
    assert pauses == [0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256,
                      0.05, 0.05, 0.05, 0.05]
    assert len(reads) == 13  # one before each pause, and the one that found SUCCESS
    pauses.clear()
    backend.set_state(new_state(sig, PENDING))
    with pytest.raises(ResultTimeout, match="Timeout reached"):
        AsyncResult(sig.uuid, backend).get(timeout=0, interval=0.0001)
    assert pauses == []  # a zero timeout reads once and does not wait
    backend.close()
