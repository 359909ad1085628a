"""machinery's SQS layout and our bookkeeping queues beside it, as pure functions.

machinery's: a queue per routing key (URL = broker + "/" + name), bodies the raw Signature
JSON, FIFO when the name ends in ``.fifo`` (MessageGroupId = BrokerMessageGroupId,
MessageDeduplicationId = the UUID), an ETA as DelaySeconds (at most 900 s).

Ours, never read by Go:

* ``bridge_delayed_tasks`` (standard; one per account and endpoint, like machinery's Redis
  ``delayed_tasks``): messages not due within SQS's 900 s, and FIFO messages with an ETA (a
  FIFO queue has no per-message delay). Each waits in hops of DelaySeconds; a bridge worker
  re-plans it when a hop ends and sends it to its queue once it is due within 900 s (with
  DelaySeconds the rest), or, for FIFO, once it is due. A Go worker only ever sees a message
  in its queue when it is due, so it never runs a task early. The body is untouched; where it
  goes and when are message attributes.
* ``<queue>-bridge-dead`` (``<name>-bridge-dead.fifo`` for FIFO queues), unless the queue has
  a redrive policy, whose dead-letter queue is used instead: parked messages, body untouched,
  the reason and time as message attributes (so SQS's own DLQ redrive also works).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError
from bridge.protocol.gotime import parse_rfc3339, unix_nano

MAX_DELAY = 900
"""SQS's longest DelaySeconds."""
MAX_BATCH = 10
"""Messages per SendMessageBatch / ReceiveMessage / DeleteMessageBatch call."""
MAX_VISIBILITY = 43_200
"""SQS's longest visibility timeout (12 h)."""
MAX_BATCH_BYTES = 256 * 1024
"""Payload of one SendMessageBatch (SQS's older limit, still safe everywhere)."""
MAX_REASON = 1000
RETENTION = "1209600"
"""Our queues keep messages 14 days, SQS's longest."""
DELAY_QUEUE = "bridge_delayed_tasks"

FIFO_SUFFIX = ".fifo"
FIFO_GROUP_MISSING = ("please specify BrokerMessageGroupId attribute for task Signature when "
                      "submitting a task to FIFO queue")
"""Go's error text (``brokers/sqs/sqs.go`` Publish)."""

ATTR_QUEUE = "bridge-queue"
"""Delayed and parked messages: the queue (name) they belong to."""
ATTR_DUE = "bridge-due"
"""Delayed messages: the ETA, Unix nanoseconds."""
ATTR_GROUP = "bridge-group"
"""The MessageGroupId to send with when the message goes (back) to a FIFO queue."""
ATTR_DEDUP = "bridge-dedup"
ATTR_REASON = "bridge-reason"
ATTR_TIME = "bridge-time"
REDRIVEN = "moved here by the queue's redrive policy (maxReceiveCount)"

_ETA = re.compile(rb'"ETA":"([^"]{1,64})"')
"""The first ``"ETA":`` of a Go body is the Signature's own (UUID, Name and RoutingKey come
first, and a quote inside a JSON string is always escaped)."""
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class FifoGroupMissing(BridgeError, ValueError):
    """A task for a FIFO queue without BrokerMessageGroupId (Go's error text)."""


def is_fifo(queue: str) -> bool:
    """A FIFO queue, as machinery decides it: the name ends in ``.fifo``."""
    return queue.endswith(FIFO_SUFFIX)


def dead_queue_name(queue: str) -> str:
    """Our dead-letter queue for ``queue`` (FIFO for a FIFO queue)."""
    if is_fifo(queue):
        return f"{queue[:-len(FIFO_SUFFIX)]}-bridge-dead{FIFO_SUFFIX}"
    return f"{queue}-bridge-dead"


def queue_attributes(fifo: bool) -> dict[str, str]:
    """CreateQueue attributes of our own queues."""
    attributes = {"MessageRetentionPeriod": RETENTION}
    if fifo:
        attributes["FifoQueue"] = "true"
    return attributes


def xml_text(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as SQS accepts it in an attribute: allowed characters only, bounded."""
    return _NOT_XML.sub("?", text)[:limit]


@dataclass(slots=True)
class Outgoing:
    """One message to send: where, the body, its delay, FIFO ids, our attributes."""

    queue: str
    body: str
    delay: int = 0
    group: str | None = None
    dedup: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def entry(self, entry_id: str) -> dict[str, Any]:
        """A SendMessageBatch entry (also the SendMessage arguments, minus ``Id``)."""
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": self.body}
        if self.delay > 0:
            entry["DelaySeconds"] = self.delay
        if self.group is not None:
            entry["MessageGroupId"] = self.group
        if self.dedup is not None:
            entry["MessageDeduplicationId"] = self.dedup
        if self.attributes:
            entry["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value}
                for name, value in self.attributes.items()}
        return entry

    def size(self) -> int:
        """Bytes SQS counts against a batch's payload."""
        return len(self.body.encode("utf-8")) + sum(
            len(k) + len(v.encode("utf-8")) + 6 for k, v in self.attributes.items())


def ceil_seconds(nanoseconds: int) -> int:
    """Whole seconds, rounded up (a delay never ends early)."""
    return -(-nanoseconds // 1_000_000_000)


def plan(queue: str, body: str, *, due_ns: int, now_ns: int, max_delay: int = MAX_DELAY,
         group: str | None = None, dedup: str | None = None) -> Outgoing:
    """Where a message due at ``due_ns`` goes now: ``queue`` (with DelaySeconds, rounded
    up, for a standard queue due within ``max_delay``) or the delay queue for one more hop.

    The same function re-plans a delayed message when its hop ends.
    """
    remaining = due_ns - now_ns
    if remaining <= 0:
        return Outgoing(queue, body, 0, group, dedup)
    fifo = is_fifo(queue)
    seconds = ceil_seconds(remaining)
    if not fifo and seconds <= max_delay:
        return Outgoing(queue, body, seconds, group, dedup)
    hop = seconds if fifo else seconds - max_delay
    attributes = {ATTR_QUEUE: queue, ATTR_DUE: str(due_ns)}
    if group is not None:
        attributes[ATTR_GROUP] = group
    if dedup is not None:
        attributes[ATTR_DEDUP] = dedup
    return Outgoing(DELAY_QUEUE, body, max(1, min(hop, max_delay)), attributes=attributes)


def replan(body: str, attributes: dict[str, str], *, now_ns: int,
           max_delay: int = MAX_DELAY) -> Outgoing | None:
    """The next hop of a message of the delay queue (None: not one of ours)."""
    queue, due = attributes.get(ATTR_QUEUE), attributes.get(ATTR_DUE)
    if not queue or not due or not due.isdigit():
        return None
    return plan(queue, body, due_ns=int(due), now_ns=now_ns, max_delay=max_delay,
                group=attributes.get(ATTR_GROUP), dedup=attributes.get(ATTR_DEDUP))


def string_attributes(message: dict[str, Any]) -> dict[str, str]:
    """A received message's String message attributes, as plain values."""
    return {name: str(value.get("StringValue", ""))
            for name, value in (message.get("MessageAttributes") or {}).items()}


def dead_entry(message: dict[str, Any], queue: str) -> dict[str, Any]:
    """A parked message as ``dead_letters`` returns it (the Redis broker's shape)."""
    attributes = string_attributes(message)
    return {
        "queue": attributes.get(ATTR_QUEUE, queue),
        "reason": attributes.get(ATTR_REASON, REDRIVEN),
        "time": attributes.get(ATTR_TIME, ""),
        "body": message.get("Body", ""),
    }


def eta_of(body: bytes) -> int:
    """The ETA of a raw Signature body, Unix nanoseconds (0: none, or unreadable)."""
    start = body.find(b'"ETA":')
    found = _ETA.match(body, start) if start >= 0 else None
    if found is None:
        return 0
    try:
        return unix_nano(parse_rfc3339(found.group(1).decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return 0
