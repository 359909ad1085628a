"""A kombu message as every transport carries it: serialized body plus metadata.

Transports (Redis envelope, AMQP properties, SQS) turn their own layout into a
:class:`CeleryMessage` and back; ``bridge.protocol.celery`` turns it into task
semantics. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"
MSGPACK = "application/x-msgpack"


@dataclass(frozen=True, slots=True)
class CeleryMessage:
    """One message as kombu's ``Producer.publish`` sends it.

    ``body`` is the serialized payload (json or msgpack bytes) with the
    transport's own body encoding (base64 on Redis and SQS) already undone,
    but still compressed when ``headers["compression"]`` says so.
    ``properties`` holds the AMQP-style properties Celery sets
    (``correlation_id``, ``reply_to``, ``delivery_mode``, ``priority``,
    ``expiration`` ...), without transport bookkeeping (``delivery_tag``,
    ``delivery_info``, ``body_encoding``).
    """

    body: bytes
    content_type: str | None = JSON
    content_encoding: str | None = "utf-8"
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    json_checked: bool = field(default=False, compare=False, repr=False)
    """Whether the transport read headers and properties from JSON (string keys only) and
    found them within ``MAX_HEADER_DEPTH``: ``decode_task`` does not walk them again."""
    plain_json: bool = field(default=False, compare=False, repr=False)
    """Whether headers and properties hold JSON's values alone, no float among them (dicts
    with string keys, lists, str, int, bool, None: read from JSON without a float): kombu's
    envelope of such a message is written by msgspec (``kombu_envelope.to_envelope``)."""

    @property
    def priority(self) -> int:
        value = self.properties.get("priority")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


def group_of(headers: dict[str, Any]) -> str | None:
    """The group id a task's headers name (``group``, protocol 1's ``taskset``)."""
    value = headers.get("group") or headers.get("taskset")
    return value if isinstance(value, str) and value else None


def parent_of(headers: dict[str, Any]) -> str | None:
    """The parent task id a task's headers name."""
    value = headers.get("parent_id")
    return value if isinstance(value, str) else None
