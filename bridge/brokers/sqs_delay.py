"""The delay queue (``bridge_delayed_tasks``): ETAs beyond SQS's 900 s, and FIFO ETAs.

:func:`~bridge.brokers.sqs_layout.plan` decides the hops; this module sends them, and moves
each message on when its hop ends: one more hop, or its queue. Moving is send-then-delete,
so a crash in between can deliver a message twice (at least once, never lost); a FIFO
queue drops that copy itself (same deduplication id within 5 minutes).

Any bridge worker on the endpoint moves every queue's delayed messages, as any machinery
worker moves Redis's ``delayed_tasks``; with no bridge worker running they wait, nothing lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.sqs_client import QueueUrls, is_missing_queue
from bridge.brokers.sqs_dead import DeadLetters
from bridge.brokers.sqs_layout import (
    DELAY_QUEUE,
    MAX_DELAY,
    Outgoing,
    queue_attributes,
    replan,
    string_attributes,
)

log = logging.getLogger("bridge.brokers.sqs")

LOOKUP_INTERVAL = 30.0
"""How often a mover looks again for a delay queue that does not exist yet (seconds)."""
FOREIGN = "not a delayed message of the bridge (no bridge-queue / bridge-due attributes)"
MOVE_VISIBILITY = 60
"""Seconds a message being moved stays invisible (a mover that dies mid-move gives it back)."""


class DelayQueue:
    """Sends messages into the delay queue and moves them on (thread-safe)."""

    def __init__(self, client: Any, urls: QueueUrls, dead: DeadLetters, *,
                 max_delay: int = MAX_DELAY,
                 lookup_interval: float = LOOKUP_INTERVAL,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.client = client
        self.urls = urls
        self.dead = dead
        self.max_delay = max_delay
        self.lookup_interval = lookup_interval
        self._clock = clock
        self._url: str | None = None
        self._looked = -lookup_interval
        self._lock = threading.Lock()

    def url(self, create: bool = False) -> str | None:
        """The delay queue's URL; None when it does not exist (looked up again at most every
        ``lookup_interval`` s), unless ``create``."""
        with self._lock:
            if self._url is not None:
                return self._url
            if not create and time.monotonic() - self._looked < self.lookup_interval:
                return None
            self._looked = time.monotonic()
        if create:
            url: str | None = self.urls.ensure(DELAY_QUEUE, queue_attributes(False))
        else:
            try:
                url = self.urls(DELAY_QUEUE)
                self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            except Exception as exc:
                if not is_missing_queue(exc):
                    raise
                url = None
        with self._lock:
            self._url = url
        return url

    def hold(self, messages: Sequence[Outgoing]) -> None:
        """Send hops into the delay queue (created on first use)."""
        url = self.url(create=True)
        assert url is not None
        sqs_calls.send(self.client, url, messages)

    def move_due(self, wait: int = 0, rounds: int = 100) -> int:
        """Move on the messages whose hop ended (up to ``rounds`` batches of 10, long-polling
        ``wait`` s for the first); how many went to their queues."""
        url = self.url()
        if url is None:
            return 0
        moved = 0
        for _ in range(rounds):
            messages = sqs_calls.receive(self.client, url, 10, wait, MOVE_VISIBILITY)
            if not messages:
                break
            moved += self._move(url, messages)
            wait = 0
        return moved

    def _move(self, url: str, messages: list[dict[str, Any]]) -> int:
        now = self._clock()
        by_queue: dict[str, list[tuple[dict[str, Any], Outgoing]]] = {}
        for message in messages:
            nxt = replan(str(message.get("Body", "")), string_attributes(message),
                         now_ns=now, max_delay=self.max_delay)
            if nxt is None:
                log.warning("delay queue: message %s is not one of ours: parked",
                            message.get("MessageId"))
                self.dead.park(DELAY_QUEUE, str(message.get("Body", "")), FOREIGN, None)
                sqs_calls.delete(self.client, url, [message["ReceiptHandle"]])
                continue
            by_queue.setdefault(nxt.queue, []).append((message, nxt))
        moved = 0
        for queue, pairs in by_queue.items():
            try:
                target = self.url() if queue == DELAY_QUEUE else self.urls(queue)
                assert target is not None
                sqs_calls.send(self.client, target, [nxt for _, nxt in pairs])
            except Exception as exc:  # kept: it comes back after MOVE_VISIBILITY
                log.warning("delay queue: could not move %d message(s) to %s: %s",
                            len(pairs), queue, " ".join(str(exc).split()))
                continue
            sqs_calls.delete(self.client, url, [m["ReceiptHandle"] for m, _ in pairs])
            if queue != DELAY_QUEUE:
                moved += len(pairs)
        return moved

    def count(self) -> int:
        """Messages in the delay queue (waiting, in a hop, or being moved)."""
        url = self.url()
        if url is None:
            return 0
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        return sum(int(attributes.get("Attributes", {}).get(name, 0)) for name in names)


class Mover:
    """A daemon thread long-polling the delay queue and moving what is due."""

    def __init__(self, delays: DelayQueue, wait: int) -> None:
        self.delays = delays
        self.wait = wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bridge-sqs-mover")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        pause = 1.0
        while not self._stop.is_set():
            try:
                if self.delays.url() is None:
                    self._stop.wait(self.delays.lookup_interval)
                    continue
                self.delays.move_due(wait=self.wait)
                pause = 1.0
            except Exception as exc:
                log.warning("delay queue: %s; trying again in %.0f s",
                            " ".join(str(exc).split()), pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 60.0)
