"""Messages this process holds: their receipts, their visibility deadlines and the heartbeat
that keeps them invisible while held (ChangeMessageVisibility, in batches).

A message is held from its receive until it is deleted, given back or parked. While held its
visibility is renewed whenever less than half of it is left, so a long task's message never
reappears to another worker (machinery v2 does this only with ``visibility_hearth_beat``);
when the process dies the renewals stop and the message comes back after the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.sqs_layout import MAX_VISIBILITY

log = logging.getLogger("bridge.brokers.sqs")


@dataclass(frozen=True, slots=True)
class SqsReceipt:
    """``Delivery.tag`` of an SQS message: where it was received and this receive's handle."""

    url: str
    receipt_handle: str
    message_id: str = ""
    receive_count: int = 1
    group: str | None = None
    """A FIFO message's MessageGroupId."""


@dataclass(slots=True)
class _Held:
    receipt: SqsReceipt
    timeout: int
    deadline: float


class InFlight:
    """The held messages, renewed by :meth:`renew_due` (thread-safe)."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._renewing = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, receipts: Iterable[SqsReceipt], timeout: int) -> None:
        """Received now with visibility ``timeout`` s."""
        deadline = self._clock() + timeout
        with self._lock:
            for receipt in receipts:
                self._held[receipt.receipt_handle] = _Held(receipt, timeout, deadline)

    def release(self, receipts: Iterable[SqsReceipt]) -> None:
        """No longer held (deleted, given back, parked, or left to reappear)."""
        with self._lock:
            for receipt in receipts:
                self._held.pop(receipt.receipt_handle, None)

    def holds(self, receipt: SqsReceipt) -> bool:
        with self._lock:
            return receipt.receipt_handle in self._held

    def all(self) -> list[SqsReceipt]:
        with self._lock:
            return [held.receipt for held in self._held.values()]

    def renew_due(self) -> int:
        """Renew every held message with less than half its visibility left; how many.

        A receipt SQS no longer knows (deleted, or expired and received elsewhere) is
        dropped with a warning.
        """
        if not self._renewing.acquire(blocking=False):
            return 0  # another thread is renewing right now
        try:
            now = self._clock()
            with self._lock:
                due = [h for h in self._held.values() if h.deadline - now < h.timeout / 2]
            groups: dict[tuple[str, int], list[_Held]] = {}
            for held in due:
                groups.setdefault((held.receipt.url, min(held.timeout, MAX_VISIBILITY)),
                                  []).append(held)
            for (url, timeout), members in groups.items():
                refused = dict(sqs_calls.change_visibility(
                    self.client, url, [h.receipt.receipt_handle for h in members], timeout))
                deadline = self._clock() + timeout
                with self._lock:
                    for held in members:
                        if held.receipt.receipt_handle in refused:
                            log.warning("message %s of %s can no longer be kept invisible (%s)",
                                        held.receipt.message_id, url,
                                        refused[held.receipt.receipt_handle])
                            self._held.pop(held.receipt.receipt_handle, None)
                        else:
                            held.deadline = deadline
            return len(due)
        finally:
            self._renewing.release()


def receipt_of(url: str, message: dict[str, Any]) -> SqsReceipt:
    """The receipt of a message received from ``url``."""
    attributes = message.get("Attributes") or {}
    count = str(attributes.get("ApproximateReceiveCount", "1"))
    return SqsReceipt(url, str(message["ReceiptHandle"]), str(message.get("MessageId", "")),
                      int(count) if count.isdigit() else 1, attributes.get("MessageGroupId"))
