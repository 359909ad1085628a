"""A worker serving a machinery queue and a Celery queue of one real Redis, tasks that
count their runs, and helpers that push raw (hostile) bytes beside good tasks.

Each hostile test puts its bad input between good tasks and checks three things: the bad
message is parked (or refused) with its real reason, every good task ran exactly once,
and the worker goes on serving.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from bridge.app import Bridge
from bridge.backends.celery_redis import CeleryRedisBackend
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_keys import QueueKeys
from bridge.config import Config
from bridge.handlers.celery import celery_handler_factory
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.kombu_envelope import to_envelope
from bridge.protocol.machinery import Signature, new_uuid
from bridge.worker import Worker, WorkerOptions

DEADLINE = 30.0


def wait_for(check: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or check}")


@dataclass
class Served:
    """A running worker and what it has done."""

    url: str
    machinery_queue: str
    celery_queue: str
    app: Bridge
    worker: Worker
    runs: Counter[str] = field(default_factory=Counter)
    client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.client = redis.Redis.from_url(self.url)

    # ------------------------------------------------------------ sending

    def machinery_good(self, count: int, prefix: str = "m") -> list[str]:
        """``count`` good machinery tasks (``h.record``), straight onto the queue."""
        keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        self.app.send_batch([self.app.signature("h.record", key) for key in keys])
        return keys

    def celery_good(self, count: int, prefix: str = "c") -> list[str]:
        """``count`` good Celery tasks (``h.record``) onto the Celery queue."""
        keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        for key in keys:
            self.push_celery(celery_envelope("h.record", [key]))
        return keys

    def push_machinery(self, *bodies: bytes) -> None:
        """Raw bytes at the tail of the machinery queue (as a Go producer's RPUSH)."""
        self.client.rpush(self.machinery_queue, *bodies)

    def push_celery(self, *items: bytes) -> None:
        """Raw list items at the back of the Celery queue (as kombu's LPUSH)."""
        self.client.lpush(self.celery_queue, *items)

    # ------------------------------------------------------------ judging

    def dead(self, celery: bool = False) -> list[dict[str, Any]]:
        """The dead letters of the machinery (or Celery) queue, small entries only."""
        key = (f"bridge:celery:dead:{self.celery_queue}" if celery
               else QueueKeys.of(self.machinery_queue).dead)
        out = []
        for raw in self.client.lrange(key, 0, -1):
            out.append(json.loads(raw))
        return out

    def reasons(self, celery: bool = False) -> list[str]:
        return [str(entry.get("reason")) for entry in self.dead(celery)]

    def wait_parked(self, count: int, celery: bool = False, timeout: float = DEADLINE) -> list[str]:
        wait_for(lambda: len(self.reasons(celery)) >= count, timeout,
                 f"{count} parked message(s) in {'Celery' if celery else 'machinery'} dead letters"
                 f" (now: {self.reasons(celery)})")
        return self.reasons(celery)

    def wait_ran(self, keys: Sequence[str], timeout: float = DEADLINE) -> None:
        wait_for(lambda: all(self.runs[k] >= 1 for k in keys), timeout,
                 f"{len(keys)} good tasks to run ({sum(1 for k in keys if self.runs[k])} ran)")

    def assert_exactly_once(self, keys: Sequence[str], settle: float = 0.5) -> None:
        """Every key ran once and only once (after a short settle for late duplicates)."""
        self.wait_ran(keys)
        time.sleep(settle)
        twice = {k: self.runs[k] for k in keys if self.runs[k] != 1}
        assert not twice, f"good tasks ran more than once: {twice}"

    def celery_meta(self, task_id: str) -> dict[str, Any] | None:
        raw = self.client.get(f"celery-task-meta-{task_id}")
        return None if raw is None else dict(json.loads(raw))

    def still_serving(self) -> None:
        """A fresh good task on each queue runs (the worker goes on)."""
        keys = self.machinery_good(1, "after") + self.celery_good(1, "after")
        self.assert_exactly_once(keys, settle=0.0)


def no_batch_failures(caplog: Any) -> None:
    """No turn of the worker failed (a handler raising gives its batch back: a loop)."""
    bad = [r.getMessage() for r in caplog.records
           if "failed on a batch" in r.getMessage()
           or "broker or result backend failed" in r.getMessage()]
    assert not bad, bad


def celery_envelope(name: str, args: list[Any], *, task_id: str | None = None,
                    **options: Any) -> bytes:
    """A kombu Redis envelope of a Celery protocol-2 task, as Celery's producer writes it."""
    task = new_task(name, args, task_id=task_id or str(uuid.uuid4()), **options)
    return to_envelope(encode_task(task), routing_key="celery")


def machinery_body(name: str = "h.record", *args: Any, **fields: Any) -> bytes:
    """A Signature's JSON with string args, as Go's producer writes it."""
    from bridge.protocol.machinery import Arg

    sig = Signature(uuid=fields.pop("uuid", new_uuid()), name=name,
                    args=[Arg("", "string", a) for a in args], **fields)
    return sig.to_json()


def register(app: Bridge, runs: Counter[str], lock: threading.Lock) -> None:
    """``h.record(key)`` counts its runs; ``h.fail(key)`` counts and raises."""

    @app.task("h.record")
    def record(key: str) -> str:
        with lock:
            runs[key] += 1
        return key

    @app.task("h.fail")
    def fail(key: str) -> str:
        with lock:
            runs[key] += 1
        raise ValueError(f"failed on purpose: {key}")


@contextmanager
def served(redis_url: str, *, celery_broker: str | None = None, machinery: bool = True,
           concurrency: int = 4, **broker_options: Any) -> Iterator[Served]:
    """A worker on a fresh machinery queue and a fresh Celery queue (on ``celery_broker``,
    by default the same Redis), results in that Redis."""
    mq = f"hm_{uuid.uuid4().hex[:8]}"
    cq = f"hc_{uuid.uuid4().hex[:8]}"
    config = Config(broker=redis_url, result_backend=redis_url, default_queue=mq)
    app = Bridge(config, broker=RedisBroker(redis_url, config, **broker_options),
                 backend=RedisBackend(redis_url, config))
    runs: Counter[str] = Counter()
    register(app, runs, threading.Lock())
    handler = celery_handler_factory(celery_broker or redis_url, redis_url, cq)
    worker = Worker(app, WorkerOptions(concurrency=concurrency, poll_timeout=0.1),
                    handlers=[handler], machinery=machinery)
    thread = threading.Thread(target=worker.run, daemon=True, name="hostile-worker")
    thread.start()
    state = Served(redis_url, mq, cq, app, worker, runs)
    try:
        yield state
        assert thread.is_alive(), "the worker loop ended"
    finally:
        worker.stop()
        thread.join(timeout=30)
        app.close()
        state.client.close()


__all__ = ["CeleryRedisBackend", "Served", "celery_envelope", "machinery_body",
           "no_batch_failures", "served", "wait_for"]
