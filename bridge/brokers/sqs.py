"""machinery's SQS broker, beside Go producers and workers (v1: aws-sdk-go, v2: aws-sdk-go-v2).

The same layout as Go (``brokers/sqs/sqs.go``): queue URL = broker + "/" + queue, the body is
the raw Signature JSON (RoutingKey as the producer left it: Go encodes before
AdjustRoutingKey), FIFO queues get MessageGroupId = BrokerMessageGroupId and
MessageDeduplicationId = UUID, an ETA becomes DelaySeconds, a message is deleted only once
the task's outcome is stored, ``SQSReceiptHandle`` is set on decode,
IgnoreWhenTaskNotRegistered deletes and StopTaskDeletionOnError keeps a failed message for
the queue's redrive policy.

Beyond Go, never in its way (each in its own module):

* long polling in a thread, batched receive (10) and delete (:mod:`.sqs_receiver`);
* a message received before its ETA (a Go producer truncates DelaySeconds, and ignores
  the ETA on FIFO queues) is made invisible until then instead of run early;
* held messages stay invisible while held, heartbeat always on (:mod:`.sqs_inflight`); a
  dead worker's messages come back after the visibility timeout;
* ETAs beyond 900 s (and FIFO ETAs) in hops through ``bridge_delayed_tasks``, so a Go worker
  never receives a message before it is due (:mod:`.sqs_delay`); DelaySeconds rounded up;
* bad input parked with its reason in the queue's redrive DLQ or ``<queue>-bridge-dead``,
  replayable (:mod:`.sqs_dead`); unregistered tasks back with back-off (ChangeMessageVisibility);
* FIFO: one message per message group with the worker at a time, however many one receive
  returns (:mod:`.sqs_fifo`);
* a retry of a FIFO message gets its own deduplication id (Go's reuses the UUID, and SQS
  drops the retry as a duplicate within 5 minutes).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.base import Broker, Delivery
from bridge.brokers.sqs_client import QueueUrls, SqsLocation, explain, new_client
from bridge.brokers.sqs_dead import DeadLetters
from bridge.brokers.sqs_delay import LOOKUP_INTERVAL, DelayQueue, Mover
from bridge.brokers.sqs_fifo import GroupGate
from bridge.brokers.sqs_inflight import InFlight, SqsReceipt
from bridge.brokers.sqs_layout import (
    DELAY_QUEUE,
    FIFO_GROUP_MISSING,
    MAX_DELAY,
    MAX_VISIBILITY,
    FifoGroupMissing,
    Outgoing,
    ceil_seconds,
    eta_of,
    is_fifo,
    plan,
)
from bridge.brokers.sqs_receiver import Receiver
from bridge.config import Config, SQSConfig
from bridge.protocol.gotime import unix_nano
from bridge.protocol.machinery import Signature

__all__ = ["SqsBroker", "SqsReceipt", "dedup_id"]

log = logging.getLogger("bridge.brokers.sqs")

DEFAULT_WAIT = 20
"""Long poll of a receive when ``sqs.receive_wait_time_seconds`` is unset or 0 (SQS's longest)."""
KEEP_INTERVAL = 0.25
"""How often the heartbeat thread looks for visibilities to renew (seconds; a look that
finds nothing due makes no call)."""


def dedup_id(sig: Signature) -> str:
    """MessageDeduplicationId: the UUID, as Go; a re-send of a received message (a retry,
    carrying its SQSReceiptHandle) gets the UUID plus a digest of that receipt."""
    if not sig.sqs_receipt_handle:
        return sig.uuid
    digest = hashlib.sha256(sig.sqs_receipt_handle.encode("utf-8")).hexdigest()[:20]
    return f"{sig.uuid[:100]}-{digest}"


class SqsBroker(Broker):
    """machinery's SQS broker (see the module docstring).

    ``config.sqs``: ``wait_time_seconds`` (the long poll; 0 or unset: 20 s),
    ``visibility_timeout`` (None: each queue's own), ``visibility_heartbeat`` (ours is always
    on). Options: ``endpoint_url`` (else the broker URL's, else boto3's chain, which reads
    AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL); ``max_delay`` (SQS's 900 s; lower only to test
    the delay queue); ``client`` (a boto3 SQS client to use); ``move_delayed`` (run the delay
    queue's mover while consuming); ``location`` (where the queues are, instead of parsing
    ``url``: Celery's SQS broker passes its own).
    """

    keeps_empty_routing_key = True

    def __init__(self, url: str, config: Config | None = None, *,
                 endpoint_url: str | None = None, max_delay: int = MAX_DELAY,
                 client: Any = None, move_delayed: bool = True,
                 lookup_interval: float = LOOKUP_INTERVAL,
                 location: SqsLocation | None = None) -> None:
        self.config = config or Config(broker=url)
        self.url = url
        self.default_queue = self.config.default_queue
        sqs = self.config.sqs or SQSConfig()
        self.wait = min(sqs.wait_time_seconds, 20) or DEFAULT_WAIT
        self.visibility_timeout = sqs.visibility_timeout
        self.location = location or SqsLocation.parse(url, endpoint_url)
        self.client = client or new_client(self.location, read_timeout=self.wait + 30)
        self.where = f"SQS broker {self.location.describe()}"
        endpoint = str(getattr(self.client.meta, "endpoint_url", "") or "")
        if endpoint and not self.location.describe().startswith(endpoint):
            self.where += f" (endpoint {endpoint})"  # AWS_ENDPOINT_URL, or the region's
        self.urls = QueueUrls(self.client, self.location)
        self.inflight = InFlight(self.client)
        self.dead = DeadLetters(self.client, self.urls)
        self.gate = GroupGate()
        self.delays = DelayQueue(self.client, self.urls, self.dead, max_delay=max_delay,
                                 lookup_interval=lookup_interval)
        self.move_delayed = move_delayed
        self._receivers: dict[str, Receiver] = {}
        self._visibility: dict[str, int] = {}
        self._kept: set[str] = set()  # receipt handles left undeleted (StopTaskDeletionOnError)
        self._deletes: list[SqsReceipt] = []  # acked, not deleted yet (an outage)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads_started = False
        self._upkeep_failing = False
        self._mover: Mover | None = None

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> SqsBroker:
        """The broker of ``config.broker``."""
        return cls(config.broker, config, **options)

    def __repr__(self) -> str:
        return f"SqsBroker({self.location.describe()!r})"

    def _fail(self, exc: Exception, queue: str = "") -> Exception:
        """``exc`` as one line naming the fix where it can (see :func:`explain`)."""
        return explain(exc, self.where, queue) or exc

    # ------------------------------------------------------------ producing

    def publish(self, signatures: Sequence[Signature]) -> None:
        """machinery's Publish for each signature, in batches per queue.

        The body is encoded before an empty RoutingKey is set to the default queue (on the
        signature, after), as Go does. An ETA within ``max_delay`` becomes DelaySeconds
        (rounded up: never early); later ones, and any ETA on a FIFO queue, go through the
        delay queue. Nothing is sent when a FIFO task lacks BrokerMessageGroupId.
        """
        now = time.time_ns()
        out: dict[str, list[Outgoing]] = {}
        for sig in signatures:
            body = sig.to_json().decode("utf-8")
            if not sig.routing_key:
                sig.routing_key = self.default_queue
            queue = sig.routing_key
            group = dedup = None
            if is_fifo(queue):
                if not sig.broker_message_group_id:
                    raise FifoGroupMissing(FIFO_GROUP_MISSING)
                group, dedup = sig.broker_message_group_id, dedup_id(sig)
            due = unix_nano(sig.eta) if sig.eta is not None else 0
            message = plan(queue, body, due_ns=due, now_ns=now, max_delay=self.delays.max_delay,
                           group=group, dedup=dedup)
            out.setdefault(message.queue, []).append(message)
        for queue, messages in out.items():
            try:
                if queue == DELAY_QUEUE:
                    self.delays.hold(messages)
                else:
                    sqs_calls.send(self.client, self.urls(queue), messages)
            except Exception as exc:
                raise self._fail(exc, queue) from exc

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Send already-encoded bodies to ``queue`` (a FIFO queue needs their
        BrokerMessageGroupId; each gets a fresh deduplication id)."""
        messages = []
        for body in bodies:
            message = Outgoing(queue, bytes(body).decode("utf-8"))
            if is_fifo(queue):
                sig = Signature.from_json(bytes(body))
                if not sig.broker_message_group_id:
                    raise FifoGroupMissing(FIFO_GROUP_MISSING)
                message.group, message.dedup = sig.broker_message_group_id, uuid.uuid4().hex
            messages.append(message)
        if messages:
            try:
                sqs_calls.send(self.client, self.urls(queue), messages)
            except Exception as exc:
                raise self._fail(exc, queue) from exc

    # ------------------------------------------------------------ consuming

    def visibility(self, queue: str) -> int:
        """The visibility timeout messages of ``queue`` are received with: the configured
        one, else the queue's own (read once)."""
        if self.visibility_timeout is not None:
            return max(1, min(self.visibility_timeout, MAX_VISIBILITY))
        known = self._visibility.get(queue)
        if known is None:
            try:
                attributes = self.client.get_queue_attributes(
                    QueueUrl=self.urls(queue), AttributeNames=["VisibilityTimeout"])
            except Exception as exc:
                raise self._fail(exc, queue) from exc
            known = max(1, int(attributes["Attributes"]["VisibilityTimeout"]))
            self._visibility[queue] = known
        return known

    def _receiver(self, queue: str) -> Receiver:
        receiver = self._receivers.get(queue)
        if receiver is None:
            try:
                url = self.urls(queue)
            except Exception as exc:
                raise self._fail(exc, queue) from exc
            receiver = Receiver(self.client, url, queue, self.inflight, wait=self.wait,
                                visibility=self.visibility(queue), where=self.where)
            self._receivers[queue] = receiver
        return receiver

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` messages, waiting up to ``timeout`` s for the first; ``ack``
        is deleted first. Fetched messages stay invisible until acked, given back or
        parked (and come back after the visibility timeout if this process dies)."""
        self._start_threads()
        self.ack(ack)
        if max_count <= 0:
            return []
        receiver = self._receiver(queue)
        received = self.gate.ready(receiver.url, max_count)  # FIFO: next of a finished group
        if len(received) < max_count:
            fresh = receiver.take(max_count - len(received), 0.0 if received else timeout)
            received += self.gate.admit(fresh)
        deliveries = []
        now = time.time_ns()
        for message, receipt in received:
            body = str(message.get("Body", "")).encode("utf-8")
            early = eta_of(body) - now
            if early > 0:  # a Go producer truncates DelaySeconds: never run before the ETA
                self._not_yet(receipt, early)
            else:
                deliveries.append(Delivery(body, queue, receipt))
        return deliveries

    def _not_yet(self, receipt: SqsReceipt, early_ns: int) -> None:
        seconds = min(ceil_seconds(early_ns), MAX_VISIBILITY)
        try:
            self._hide(receipt, seconds)
        except Exception as exc:  # it comes back after the visibility timeout anyway
            log.warning("could not hold back a message due in %d s: %s", seconds, exc)

    def _hide(self, receipt: SqsReceipt, seconds: int) -> None:
        """Back to the queue after ``seconds``; a FIFO group's messages waiting behind it
        go back at once (SQS keeps them behind it)."""
        self.inflight.release([receipt])
        behind = [r for _, r in self.gate.reopen(receipt)]
        self.client.change_message_visibility(
            QueueUrl=receipt.url, ReceiptHandle=receipt.receipt_handle,
            VisibilityTimeout=seconds)
        self._give_back(behind)

    def _give_back(self, receipts: list[SqsReceipt]) -> None:
        """Visible again at once."""
        self.inflight.release(receipts)
        by_url: dict[str, list[str]] = {}
        for receipt in receipts:
            by_url.setdefault(receipt.url, []).append(receipt.receipt_handle)
        for url, handles in by_url.items():
            sqs_calls.change_visibility(self.client, url, handles, 0)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages (batched), except those a failed task asked to keep."""
        behind: list[SqsReceipt] = []
        with self._lock:
            for delivery in deliveries:
                receipt = delivery.tag
                if not isinstance(receipt, SqsReceipt):
                    continue
                if receipt.receipt_handle in self._kept:
                    self._kept.discard(receipt.receipt_handle)
                    self.inflight.release([receipt])  # back after its visibility timeout
                    behind += [r for _, r in self.gate.reopen(receipt)]
                else:
                    self.gate.done(receipt)
                    self._deletes.append(receipt)
            pending, self._deletes = self._deletes, []
        if pending:
            self._delete(pending)
        if behind:
            self._give_back(behind)

    def _delete(self, receipts: list[SqsReceipt]) -> None:
        by_url: dict[str, list[SqsReceipt]] = {}
        for receipt in receipts:
            by_url.setdefault(receipt.url, []).append(receipt)
        remaining = list(by_url.items())
        while remaining:
            url, members = remaining[0]
            try:
                refused = sqs_calls.delete(self.client, url, [r.receipt_handle for r in members])
            except Exception as exc:  # still held and renewed: deleted once SQS answers
                with self._lock:
                    self._deletes += [r for _, rs in remaining for r in rs]
                raise self._fail(exc) from exc
            remaining.pop(0)
            for _, why in refused:
                log.warning("could not delete a message of %s: %s", url, why)
            self.inflight.release(members)

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Visible again after ``delay`` s (ChangeMessageVisibility; at most 12 h)."""
        seconds = min(math.ceil(delay), MAX_VISIBILITY) if delay > 0 else 0
        try:
            self._hide(self._receipt(delivery), seconds)
        except Exception as exc:
            raise self._fail(exc, delivery.queue) from exc

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Into the queue's dead-letter queue with the reason, then deleted here."""
        receipt = self._receipt(delivery)
        log.warning("dead-lettering a message of %s: %s", delivery.queue, reason)
        try:
            self.dead.park(delivery.queue, delivery.body.decode("utf-8", "replace"), reason,
                           receipt)
            self.client.delete_message(QueueUrl=receipt.url,
                                       ReceiptHandle=receipt.receipt_handle)
        except Exception as exc:
            raise self._fail(exc, delivery.queue) from exc
        self.inflight.release([receipt])
        self.gate.done(receipt)

    @staticmethod
    def _receipt(delivery: Delivery) -> SqsReceipt:
        if not isinstance(delivery.tag, SqsReceipt):
            raise TypeError(f"not an SQS delivery: {delivery.tag!r}")
        return delivery.tag

    def decoded(self, delivery: Delivery, signature: Signature) -> None:
        """SQSReceiptHandle = this delivery's receipt handle (Go's consumeOne)."""
        if isinstance(delivery.tag, SqsReceipt):
            signature.sqs_receipt_handle = delivery.tag.receipt_handle

    def failed(self, delivery: Delivery, signature: Signature) -> None:
        """StopTaskDeletionOnError: the ack leaves the message in the queue (it comes back
        after its visibility timeout, until the redrive policy moves it), as Go does."""
        if signature.stop_task_deletion_on_error and isinstance(delivery.tag, SqsReceipt):
            with self._lock:
                self._kept.add(delivery.tag.receipt_handle)

    # ------------------------------------------------------------ upkeep

    def _start_threads(self) -> None:
        if self._threads_started:
            return
        self._threads_started = True
        threading.Thread(target=self._keep, daemon=True, name="bridge-sqs-heartbeat").start()
        if self.move_delayed:
            self._mover = Mover(self.delays, self.wait)
            self._mover.start()

    def _keep(self) -> None:
        while not self._stop.wait(KEEP_INTERVAL):
            self.maintain()

    def maintain(self) -> None:
        """Renew the visibility of held messages with less than half of it left, and delete
        what an outage left acked but undeleted (also run by a thread every 0.25 s, so a
        stalled worker loop does not let its messages reappear)."""
        try:
            self.inflight.renew_due()
            with self._lock:
                pending, self._deletes = self._deletes, []
            if pending:
                self._delete(pending)
        except Exception as exc:
            if not self._upkeep_failing:
                log.warning("keeping held messages invisible failed: %s", self._fail(exc))
            self._upkeep_failing = True
            return
        if self._upkeep_failing:
            log.info("keeping held messages invisible again")
        self._upkeep_failing = False

    def move_delayed_now(self, wait: int = 0) -> int:
        """Move the delay queue's due messages on now; how many reached their queues."""
        try:
            return self.delays.move_due(wait=wait)
        except Exception as exc:
            raise self._fail(exc, DELAY_QUEUE) from exc

    def ping(self) -> None:
        """Read the default queue's attributes once: Unreachable (one line, the fix) when
        the endpoint, the credentials or the queue are wrong."""
        try:
            self.client.get_queue_attributes(QueueUrl=self.urls(self.default_queue),
                                             AttributeNames=["VisibilityTimeout"])
        except Exception as exc:
            raise self._fail(exc, self.default_queue) from exc

    def close(self) -> None:
        """Stop receiving and give back what is held but not done (visible again at once)."""
        self._stop.set()
        if self._mover is not None:
            self._mover.stop()
        for receiver in self._receivers.values():
            receiver.close()  # its buffered messages are held: given back below
        self._receivers.clear()
        with self._lock:
            pending, self._deletes = self._deletes, []
        try:
            if pending:
                self._delete(pending)
            self.gate.drain()
            self._give_back(self.inflight.all())
        except Exception as exc:  # they come back after their visibility timeout
            log.warning("could not give back held messages on close: %s", self._fail(exc))

    # ------------------------------------------------------------ inspection

    def _attribute(self, queue: str, name: str) -> int:
        try:
            attributes = self.client.get_queue_attributes(QueueUrl=self.urls(queue),
                                                          AttributeNames=[name])
        except Exception as exc:
            raise self._fail(exc, queue) from exc
        return int(attributes.get("Attributes", {}).get(name, 0))

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (SQS's approximate count)."""
        return self._attribute(queue, "ApproximateNumberOfMessages")

    def delayed_count(self) -> int:
        """Messages in the delay queue plus the default queue's delayed ones."""
        return (self.delays.count()
                + self._attribute(self.default_queue, "ApproximateNumberOfMessagesDelayed"))

    def processing(self, queue: str) -> dict[str, int]:
        """Messages of ``queue`` received and not yet deleted, by any worker (SQS does not
        say which)."""
        return {"(any, SQS in flight)": self._attribute(
            queue, "ApproximateNumberOfMessagesNotVisible")}

    def peek(self, queue: str, count: int) -> list[bytes]:
        """SQS cannot peek: nothing (receiving would count as a receive of each message)."""
        return []

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries ``{"queue", "reason", "time", "body"}``, oldest first."""
        try:
            return self.dead.entries(queue, start, stop)
        except Exception as exc:
            raise self._fail(exc, queue) from exc

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Send ``count`` (0: all parked now) dead letters back to ``queue``, byte for byte."""
        try:
            return self.dead.replay(queue, self.urls(queue), count)
        except Exception as exc:
            raise self._fail(exc, queue) from exc

