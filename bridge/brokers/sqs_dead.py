"""Parked messages: where they go, listing them and replaying them byte for byte.

A queue with a redrive policy parks into its dead-letter queue (where SQS itself moves
messages received too often, and from where SQS's own redrive can move them back); any
other queue into ``<queue>-bridge-dead`` (created on first use). The body is untouched; the
queue, reason and time ride as message attributes.

SQS cannot peek: listing receives every message with a short visibility and gives them all
back; replaying receives, sends each back to its queue and deletes it. Both count as a
receive of each message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.dead_letters import now_rfc3339
from bridge.brokers.sqs_client import QueueUrls
from bridge.brokers.sqs_inflight import SqsReceipt
from bridge.brokers.sqs_layout import (
    ATTR_GROUP,
    ATTR_QUEUE,
    ATTR_REASON,
    ATTR_TIME,
    Outgoing,
    dead_entry,
    dead_queue_name,
    is_fifo,
    queue_attributes,
    string_attributes,
    xml_text,
)

log = logging.getLogger("bridge.brokers.sqs")

LIST_VISIBILITY = 30
"""Seconds a dead letter stays hidden while a listing or replay pages past it."""
DEAD_GROUP = "bridge-dead"
"""MessageGroupId of a FIFO dead letter whose original group is unknown."""


class DeadLetters:
    """The dead-letter queue of each queue, and what it holds."""

    def __init__(self, client: Any, urls: QueueUrls) -> None:
        self.client = client
        self.urls = urls
        self._targets: dict[str, tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def target(self, queue: str, create: bool = True) -> tuple[str, bool] | None:
        """(URL, FIFO?) of ``queue``'s dead-letter queue: its redrive policy's, else ours
        (created when ``create``; None when it does not exist yet)."""
        with self._lock:
            known = self._targets.get(queue)
        if known is not None:
            return known
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.urls(queue), AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        policy = attributes.get("RedrivePolicy")
        if policy:
            arn = str(json.loads(policy)["deadLetterTargetArn"])
            account, name = arn.split(":")[4], arn.split(":")[5]
            url = str(self.client.get_queue_url(QueueName=name,
                                                QueueOwnerAWSAccountId=account)["QueueUrl"])
        else:
            name = dead_queue_name(queue)
            if create:
                url = self.urls.ensure(name, queue_attributes(is_fifo(name)))
            else:
                try:
                    url = self.urls(name)
                    self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                except Exception:
                    return None
        found = (url, is_fifo(name))
        with self._lock:
            self._targets[queue] = found
        return found

    def park(self, queue: str, body: str, reason: str, receipt: SqsReceipt | None) -> None:
        """Send ``body`` to ``queue``'s dead-letter queue with the reason."""
        target = self.target(queue)
        assert target is not None
        url, fifo = target
        attributes = {ATTR_QUEUE: queue, ATTR_REASON: xml_text(reason), ATTR_TIME: now_rfc3339()}
        group = receipt.group if receipt is not None else None
        if group:
            attributes[ATTR_GROUP] = group
        message = Outgoing(queue, body, attributes=attributes)
        if fifo:
            message.group = group or DEAD_GROUP
            message.dedup = (receipt.message_id if receipt is not None and receipt.message_id
                             else uuid.uuid4().hex)
        sqs_calls.send(self.client, url, [message])

    def _receive(self, url: str, queue: str, before_ms: int | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """One batch of the DLQ: (``queue``'s, the others); None when it is empty."""
        batch = sqs_calls.receive(self.client, url, 10, 1, LIST_VISIBILITY)
        if not batch:
            return None
        mine: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for message in batch:
            owner = string_attributes(message).get(ATTR_QUEUE, queue)
            sent = int((message.get("Attributes") or {}).get("SentTimestamp", 0))
            fresh = before_ms is not None and sent > before_ms
            (others if owner != queue or fresh else mine).append(message)
        return mine, others

    def _give_back(self, url: str, messages: list[dict[str, Any]]) -> None:
        if messages:
            sqs_calls.change_visibility(self.client, url,
                                        [m["ReceiptHandle"] for m in messages], 0)

    def entries(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries ``{"queue", "reason", "time", "body"}``, oldest first (of a
        FIFO DLQ, at most 10 per message group: SQS hides a group while any is received)."""
        target = self.target(queue, create=False)
        if target is None:
            return []
        url = target[0]
        mine: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        try:
            while (batch := self._receive(url, queue, None)) is not None:
                mine += batch[0]
                others += batch[1]
        finally:
            self._give_back(url, mine + others)
        mine.sort(key=lambda m: int((m.get("Attributes") or {}).get("SentTimestamp", 0)))
        entries = [dead_entry(m, queue) for m in mine]
        return entries[start:] if stop == -1 else entries[start:stop + 1]

    def replay(self, queue: str, queue_url: str, count: int = 0) -> int:
        """Send ``count`` (0: all parked now) dead letters back to ``queue``, bodies
        untouched, batch by batch; how many."""
        target = self.target(queue, create=False)
        if target is None:
            return 0
        url = target[0]
        before_ms = int(time.time() * 1000)
        replayed = 0
        others: list[dict[str, Any]] = []
        try:
            while not count or replayed < count:
                batch = self._receive(url, queue, before_ms)
                if batch is None:
                    break
                mine = batch[0][:count - replayed] if count else batch[0]
                others += batch[1] + batch[0][len(mine):]
                if mine:
                    self._send_back(queue, queue_url, mine)
                    sqs_calls.delete(self.client, url, [m["ReceiptHandle"] for m in mine])
                    replayed += len(mine)
        finally:
            self._give_back(url, others)
        if replayed:
            log.info("replayed %d dead letter(s) into %s", replayed, queue)
        return replayed

    def _send_back(self, queue: str, queue_url: str, messages: list[dict[str, Any]]) -> None:
        outgoing = []
        for message in messages:
            out = Outgoing(queue, str(message.get("Body", "")))
            if is_fifo(queue):
                out.group = (string_attributes(message).get(ATTR_GROUP)
                             or (message.get("Attributes") or {}).get("MessageGroupId")
                             or DEAD_GROUP)
                out.dedup = uuid.uuid4().hex
            outgoing.append(out)
        sqs_calls.send(self.client, queue_url, outgoing)
