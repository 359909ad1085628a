"""How a worker runs (``mbridge worker``'s flags) and the waits its loop keeps."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class WorkerOptions:
    """How a worker runs (``mbridge worker`` flags)."""

    queue: str = ""
    concurrency: int = 4
    pool: str = "threads"  # or "processes" for CPU-bound tasks
    graceful_timeout: float = 30.0
    poll_timeout: float = 0.5  # longest wait on an empty queue (machinery polls every 1 s)
    maintain_interval: float = 0.25  # heartbeat/delayed-mover checks (each runs when due)
    max_unregistered_backoff: float = 60.0
    handoff_window: float = 5.0
    """For this long after it first takes a task it does not know, the worker puts it back
    at the tail at once (as machinery does), where a worker that knows it takes it; only
    then does each return wait, growing up to ``max_unregistered_backoff``."""
    outage_backoff_first: float = 0.5
    """First wait after the broker or backend could not be reached (doubling, jittered)."""
    outage_backoff_cap: float = 30.0
    """Longest wait between tries while the broker or backend is unreachable."""
    metrics_interval: float = 5.0
    """How often queue depths are sampled for the metrics (when they are served)."""
    prefetch_multiplier: int | None = None
    """Messages held per thread (fetched ahead of the threads); None: each handler's own
    default (machinery 1, so a task is STARTED when a thread runs it; Celery 4, as
    Celery's worker_prefetch_multiplier)."""


ACK_HOLD = 0.02
"""Seconds the acks of finished tasks may wait, while every thread is busy, for the next
fetch to carry them (a trip of their own per finished task costs a quarter of the loop's
round trips on short tasks); a stored result is acknowledged within this, or a crash
runs its task again."""


def unregistered_delay(returns: int, cap: float, rand: Callable[[], float] = random.random
                       ) -> float:
    """How long a task nobody here registered waits before its ``returns``-th delayed return
    to the queue (returns after the hand-off window): 0.25 s, 0.5 s, 1 s … up to ``cap``,
    each scaled by ½, ¾ or 1 at random so that workers that lack it do not hand it back and
    forth in step (three values, not a continuum: a broker with a queue per delay, as on
    AMQP, keeps few of them)."""
    return min(cap, 0.25 * 2.0 ** (returns - 1)) * (0.5 + 0.25 * int(rand() * 3))
