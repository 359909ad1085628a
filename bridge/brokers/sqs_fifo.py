"""FIFO queues: at most one message of each message group with the worker at a time.

One ReceiveMessage may return several messages of one group, in order; the worker would
run them side by side. The gate hands out the first and keeps the others (held, so the
heartbeat keeps them invisible) until it is done. When the first goes back to the queue
instead (a back-off, a StopTaskDeletionOnError failure, an early ETA), the ones behind it
go back too, so the group comes back in its order. Go's SQS consumer receives one message
at a time, which SQS serialises per group the same way.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from bridge.brokers.sqs_inflight import SqsReceipt

Received = tuple[dict[str, Any], SqsReceipt]


def _group(receipt: SqsReceipt) -> tuple[str, str] | None:
    return (receipt.url, receipt.group) if receipt.group is not None else None


class GroupGate:
    """Which received messages the worker may run now (thread-safe)."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str], str] = {}  # group -> receipt handle running
        self._waiting: dict[tuple[str, str], deque[Received]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def ready(self, url: str, limit: int) -> list[Received]:
        """Up to ``limit`` waiting messages of ``url`` whose group's previous one is done."""
        out: list[Received] = []
        with self._lock:
            for group in list(self._waiting):
                if len(out) >= limit:
                    break
                if group[0] == url and group not in self._active:
                    item = self._waiting[group].popleft()
                    if not self._waiting[group]:
                        del self._waiting[group]
                    self._active[group] = item[1].receipt_handle
                    out.append(item)
        return out

    def admit(self, received: list[Received]) -> list[Received]:
        """Of newly received messages (in SQS's order), those the worker may run now; the
        others wait behind their group's message in progress."""
        out: list[Received] = []
        with self._lock:
            for item in received:
                group = _group(item[1])
                if group is None:
                    out.append(item)
                elif group in self._active or group in self._waiting:
                    self._waiting.setdefault(group, deque()).append(item)
                else:
                    self._active[group] = item[1].receipt_handle
                    out.append(item)
        return out

    def done(self, receipt: SqsReceipt) -> None:
        """The message left the queue (deleted, parked): the next of its group may run."""
        group = _group(receipt)
        if group is not None:
            with self._lock:
                if self._active.get(group) == receipt.receipt_handle:
                    del self._active[group]

    def reopen(self, receipt: SqsReceipt) -> list[Received]:
        """The message goes back to the queue: the ones waiting behind it, to give back."""
        group = _group(receipt)
        if group is None:
            return []
        with self._lock:
            if self._active.get(group) == receipt.receipt_handle:
                del self._active[group]
            return list(self._waiting.pop(group, ()))

    def drain(self) -> list[Received]:
        """Every waiting message (closing: to give back)."""
        with self._lock:
            waiting = [item for items in self._waiting.values() for item in items]
            self._waiting.clear()
            self._active.clear()
        return waiting
