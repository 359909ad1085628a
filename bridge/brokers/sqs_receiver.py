"""Long polling of one queue in a daemon thread, for as many messages as the worker can take.

The worker loop never blocks in a 20-second ReceiveMessage: it asks for up to N messages
and waits at most its own timeout; the thread keeps one long poll open for what the worker
still wants (batches of up to 10) and hands over what arrives at once. What it received is
held (see :mod:`bridge.brokers.sqs_inflight`) from the moment SQS returns it, so the
heartbeat covers messages waiting in the buffer too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.sqs_client import explain, is_outage
from bridge.brokers.sqs_inflight import InFlight, SqsReceipt, receipt_of
from bridge.brokers.sqs_layout import MAX_BATCH

log = logging.getLogger("bridge.brokers.sqs")

Received = tuple[dict[str, Any], SqsReceipt]

JOIN_TIMEOUT = 2.0
"""How long ``close`` waits for a long poll in progress to return."""


class Receiver:
    """One queue's long poll (``wait`` s per ReceiveMessage, visibility ``visibility`` s)."""

    def __init__(self, client: Any, url: str, queue: str, inflight: InFlight, *, wait: int,
                 visibility: int, where: str) -> None:
        self.client = client
        self.url = url
        self.queue = queue
        self.inflight = inflight
        self.wait = wait
        self.visibility = visibility
        self.where = where
        self._buffer: deque[Received] = deque()
        self._cond = threading.Condition()
        self._wanted = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def take(self, max_count: int, timeout: float) -> list[Received]:
        """Up to ``max_count`` messages, waiting up to ``timeout`` s for the first; raises
        (one line, :class:`~bridge.errors.Unreachable` where it can say why) when the last
        receive failed and nothing is buffered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._wanted = max_count
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"bridge-sqs-receive-{self.queue}")
                self._thread.start()
            self._cond.notify_all()
            while not self._buffer and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._buffer and self._error is not None:
                error = self._error
                raise explain(error, self.where, self.queue) or error
            taken = [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
            self._wanted = max_count - len(taken)
            return taken

    def close(self) -> list[Received]:
        """Stop polling; the buffered messages, for the caller to give back. A poll still
        in progress after :data:`JOIN_TIMEOUT` gives back what it gets itself."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT)
        with self._cond:
            buffered = list(self._buffer)
            self._buffer.clear()
        return buffered

    def _run(self) -> None:
        pause = 0.5
        failing = False
        while True:
            with self._cond:
                while not self._stopped and self._wanted - len(self._buffer) <= 0:
                    self._cond.wait()
                if self._stopped:
                    return
                count = min(MAX_BATCH, self._wanted - len(self._buffer))
            try:
                messages = sqs_calls.receive(self.client, self.url, count, self.wait,
                                             self.visibility)
            except Exception as exc:
                if not failing:
                    log.warning("receiving from %s failed (%s); retrying",
                                self.queue, " ".join(str(exc).split()))
                failing = True
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                    self._cond.wait(pause)
                pause = min(pause * 2, 30.0) if is_outage(exc) else 30.0
                continue
            if failing:
                log.info("receiving from %s again", self.queue)
            failing, pause = False, 0.5
            received = [(m, receipt_of(self.url, m)) for m in messages]
            self.inflight.add((r for _, r in received), self.visibility)
            with self._cond:
                self._error = None
                stopped = self._stopped
                if not stopped:
                    self._buffer.extend(received)
                    self._cond.notify_all()
            if stopped:
                self._give_back(received)
                return

    def _give_back(self, received: list[Received]) -> None:
        receipts = [r for _, r in received]
        self.inflight.release(receipts)
        if receipts:
            try:
                sqs_calls.change_visibility(self.client, self.url,
                                            [r.receipt_handle for r in receipts], 0)
            except Exception as exc:  # they come back after the visibility timeout
                log.warning("could not give back %d message(s) of %s: %s", len(receipts),
                            self.queue, exc)
