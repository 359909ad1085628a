"""What ``mbridge ui`` watches: the queues of each broker it was given (machinery's from the
config, any endpoint such as ``celery+redis://…?queue=celery``), their counts sampled over
time, the workers that answer the remote control, tasks looked up by id, dead letters."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bridge.config import redact_url
from bridge.outage import is_outage, one_line
from bridge.queuestats import STAT_NAMES, queue_stats

log = logging.getLogger("bridge.ui")

HISTORY = 1800
"""Samples kept per queue (an hour at the default 2 s interval)."""


@dataclass
class Watched:
    """One broker and the queues watched on it."""

    protocol: str  # "machinery" or "celery"
    broker_url: str
    broker: Any
    queues: list[str]
    backend: Any = None
    """Where tasks are looked up by id (machinery's backend, or Celery's Redis backend)."""
    mailbox_url: str | None = None
    """Where the workers' remote control listens (None: no broadcast, as on SQS)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """One caller at a time on this broker (the sampler and the request threads)."""

    @property
    def label(self) -> str:
        return f"{self.protocol} {redact_url(self.broker_url)}"

    def close(self) -> None:
        for server in (self.broker, self.backend):
            close = getattr(server, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # closing at exit: say it, go on
                    log.debug("close: %s", exc)


@dataclass
class Sample:
    at: float
    stats: dict[str, int]


class Watch:
    """The watched brokers, and a thread sampling their queues every ``interval`` s."""

    def __init__(self, watched: list[Watched], interval: float = 2.0) -> None:
        self.watched = watched
        self.interval = interval
        self.history: dict[tuple[int, str], deque[Sample]] = {
            (n, queue): deque(maxlen=HISTORY)
            for n, one in enumerate(watched) for queue in one.queues}
        self.errors: dict[int, str] = {}
        """Per broker: why the last sample failed (an outage, shown on the page)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-ui-sampler", daemon=True)
        self._workers: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def start(self) -> Watch:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        for one in self.watched:
            one.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        for n, one in enumerate(self.watched):
            try:
                with one.lock:
                    counts = {queue: queue_stats(one.broker, queue) for queue in one.queues}
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("sampling %s failed", one.label)
                self.errors[n] = one_line(exc)
                continue
            self.errors.pop(n, None)
            for queue, stats in counts.items():
                self.history[(n, queue)].append(Sample(now, stats))

    def queues(self) -> list[dict[str, Any]]:
        """Every watched queue: its latest counts and its history as columns."""
        rows = []
        for (n, queue), samples in self.history.items():
            one = self.watched[n]
            latest = samples[-1].stats if samples else {}
            rows.append({
                "id": f"{n}-{queue}", "target": n, "label": one.label, "queue": queue,
                "protocol": one.protocol, "error": self.errors.get(n, ""),
                "stats": {name: latest.get(name) for name in STAT_NAMES},
                "history": {"t": [round(s.at, 3) for s in samples],
                            **{name: [s.stats.get(name) for s in samples]
                               for name in STAT_NAMES}},
            })
        return rows

    # ------------------------------------------------------------------ on request

    def workers(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Workers answering the remote control on each mailbox (cached for 2 s), and the
        ones the Redis layout still lists while their heartbeat is gone."""
        cached_at, cached = self._workers
        if time.monotonic() - cached_at < 2.0:
            return cached
        from bridge.control.client import broadcast

        found: list[dict[str, Any]] = []
        for one in self.watched:
            if one.mailbox_url is None:
                continue
            try:
                stats = broadcast(one.mailbox_url, "stats", timeout=timeout)
                active = broadcast(one.mailbox_url, "active", timeout=timeout) if stats else {}
            except Exception as exc:
                found.append({"node": "?", "label": one.label, "error": one_line(exc)})
                continue
            seen = time.time()
            for node, info in sorted(stats.items()):
                info = info if isinstance(info, dict) else {}
                found.append({"node": node, "label": one.label, "alive": True,
                              "last_seen": seen, "pid": info.get("pid"),
                              "uptime": info.get("uptime"),
                              "consuming": info.get("consuming") or [],
                              "queues": info.get("queues") or {},
                              "running": active.get(node) or []})
            health = getattr(one.broker, "worker_health", None)
            if health is None:
                continue
            with one.lock:
                for queue in one.queues:
                    for worker_id, (held, alive) in health(queue).items():
                        if not alive:
                            found.append({"node": worker_id, "label": one.label,
                                          "alive": False, "held": held, "queue": queue})
        self._workers = (time.monotonic(), found)
        return found

    def task(self, task_id: str) -> list[dict[str, Any]]:
        """What each backend knows of ``task_id``, and its message where one is in sight."""
        found = []
        for one in self.watched:
            if one.backend is None:
                continue
            with one.lock:
                if one.protocol == "machinery":
                    state = one.backend.get_state(task_id)
                    record = state.to_json().decode() if state is not None else None
                else:
                    meta = one.backend.get_meta(task_id)
                    record = meta if meta and meta.get("status") != "PENDING" else None
                message = self._message(one, task_id)
            if record is not None or message is not None:
                found.append({"label": one.label, "record": record, "message": message})
        return found

    @staticmethod
    def _message(one: Watched, task_id: str, limit: int = 200) -> str | None:
        """The waiting message of ``task_id`` among the first ``limit`` of each queue."""
        peek = getattr(one.broker, "peek", None)
        if peek is None:
            return None
        needle = task_id.encode()
        for queue in one.queues:
            for body in peek(queue, limit):
                if needle in body:
                    return bytes(body).decode("utf-8", "replace")
        return None
