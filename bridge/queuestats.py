"""What an operator watches on a queue, from whatever broker serves it: messages waiting,
delayed, held by workers (taken, not yet acknowledged) and parked as dead letters. Each
broker tells what it can; a count it cannot tell is left out, never guessed."""

from __future__ import annotations

import inspect
from typing import Any

STAT_NAMES = ("waiting", "delayed", "held", "dead")


def queue_stats(broker: Any, queue: str) -> dict[str, int]:
    """The counts of ``queue`` that ``broker`` can tell (a subset of STAT_NAMES).

    machinery on Redis keeps one delayed set for every queue (``delayed_tasks``): its
    ``delayed`` is that set's size; Celery on Redis and SQS count per queue or per broker
    as they store them."""
    stats: dict[str, int] = {}
    for name, method in (("waiting", "queue_depth"), ("dead", "dead_count")):
        read = getattr(broker, method, None)
        if read is not None:
            stats[name] = int(read(queue))
    delayed = getattr(broker, "delayed_count", None)
    if delayed is not None:
        stats["delayed"] = int(delayed(queue) if _takes_an_argument(delayed) else delayed())
    processing = getattr(broker, "processing", None)
    if processing is not None:
        stats["held"] = sum(int(count) for count in processing(queue).values())
    return stats


def _takes_an_argument(method: Any) -> bool:
    try:
        return bool(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False


def dead_page(broker: Any, queue: str, count: int) -> list[dict[str, Any]]:
    """The oldest ``count`` dead letters of ``queue``, whichever paging the broker has."""
    if count <= 0:
        return []
    read = broker.dead_letters
    if "stop" in inspect.signature(read).parameters:
        return list(read(queue, 0, count - 1))
    return list(read(queue, count))
