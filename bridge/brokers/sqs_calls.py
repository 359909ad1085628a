"""SQS calls in batches of ten: send, receive, delete, change visibility.

Each reports what SQS refused entry by entry instead of failing the whole batch; a
network or credentials error still raises (the caller decides what it means).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from bridge.brokers.sqs_layout import MAX_BATCH, MAX_BATCH_BYTES, Outgoing, xml_text
from bridge.errors import BridgeError

T = TypeVar("T")

RECEIVE_ATTRIBUTES = ["All"]
"""System attributes asked for on receive (ApproximateReceiveCount, MessageGroupId...), by
the parameter every boto3 version knows (MessageSystemAttributeNames came later)."""


class SendRefused(BridgeError):
    """SQS refused a message (too large, bad characters, a FIFO rule...)."""


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _failures(reply: dict[str, Any]) -> list[tuple[int, str]]:
    """(entry index, "code: message") of the entries a batch call refused."""
    return [(int(failed["Id"]), f"{failed.get('Code', '?')}: {failed.get('Message', '')}")
            for failed in reply.get("Failed") or ()]


def send(client: Any, url: str, messages: Sequence[Outgoing]) -> None:
    """Send ``messages`` to ``url`` in batches (of 10 and at most 256 KiB); one line naming
    the first refusal when SQS refuses any (the others were sent)."""
    refused: list[str] = []
    batch: list[Outgoing] = []
    size = 0
    for message in messages:
        if batch and (len(batch) == MAX_BATCH or size + message.size() > MAX_BATCH_BYTES):
            refused += _send_batch(client, url, batch)
            batch, size = [], 0
        batch.append(message)
        size += message.size()
    if batch:
        refused += _send_batch(client, url, batch)
    if refused:
        raise SendRefused(f"SQS refused {len(refused)} of {len(messages)} message(s) for "
                          f"{url}: {refused[0]}")


def _send_batch(client: Any, url: str, batch: list[Outgoing]) -> list[str]:
    if len(batch) == 1:  # a message over the batch payload limit may still fit alone
        entry = batch[0].entry("0")
        del entry["Id"]
        try:
            client.send_message(QueueUrl=url, **entry)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code is None:
                raise
            return [f"{code}: {xml_text(str(exc), 300)}"]
        return []
    reply = client.send_message_batch(
        QueueUrl=url, Entries=[m.entry(str(i)) for i, m in enumerate(batch)])
    return [text for _, text in _failures(reply)]


def delete(client: Any, url: str, receipts: Sequence[str]) -> list[tuple[str, str]]:
    """Delete by receipt handle; the (receipt, why) SQS refused."""
    refused: list[tuple[str, str]] = []
    for part in chunks(receipts):
        reply = client.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(part)])
        refused += [(part[i], why) for i, why in _failures(reply)]
    return refused


def change_visibility(client: Any, url: str, receipts: Sequence[str],
                      timeout: int) -> list[tuple[str, str]]:
    """Set the visibility timeout of held messages; the (receipt, why) SQS refused."""
    refused: list[tuple[str, str]] = []
    for part in chunks(receipts):
        reply = client.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": timeout}
            for i, r in enumerate(part)])
        refused += [(part[i], why) for i, why in _failures(reply)]
    return refused


def receive(client: Any, url: str, count: int, wait: int,
            visibility: int | None) -> list[dict[str, Any]]:
    """Up to ``count`` (≤ 10) messages, long-polling ``wait`` s, with every attribute."""
    request: dict[str, Any] = {
        "QueueUrl": url, "MaxNumberOfMessages": max(1, min(count, MAX_BATCH)),
        "WaitTimeSeconds": wait, "AttributeNames": RECEIVE_ATTRIBUTES,
        "MessageAttributeNames": ["All"],
    }
    if visibility is not None:
        request["VisibilityTimeout"] = visibility
    return list(client.receive_message(**request).get("Messages") or ())
