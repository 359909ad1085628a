"""Dead-letter envelopes: a parked message with its queue, reason and time, as JSON.

``{"queue", "reason", "time", "body" | "body_b64"}``: the raw body as text, or base64 when
it is not UTF-8, so a replay gives back the exact bytes. Shared by every Redis layout
(machinery's, Celery's) and by the tools that park what they cannot move. A large body
parked by a Redis script is kept aside instead: ``{"body_ref", "size", "queue", "reason",
"time"}``, ``body_ref`` naming a one-item list that holds it (see
:mod:`bridge.brokers.redis_dead`).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, cast

from bridge.errors import clip
from bridge.protocol.gotime import format_rfc3339


def now_rfc3339() -> str:
    """The current UTC time as Go writes it."""
    return format_rfc3339(datetime.now(UTC))


def make_envelope(queue: str, reason: str, body: bytes) -> bytes:
    """A dead-letter entry: JSON with the raw body as text, or base64 when not UTF-8."""
    entry = {"queue": queue, "reason": clip(reason), "time": now_rfc3339()}
    try:
        entry["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        entry["body_b64"] = base64.b64encode(body).decode("ascii")
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parse_envelope(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def read_envelope(raw: bytes) -> dict[str, Any]:
    """A dead-letter entry as a dict; an unreadable one keeps its raw text under ``body``."""
    entry = _parse_envelope(raw)
    if entry is None:
        return {"reason": "unreadable dead-letter entry", "body": raw.decode("utf-8", "replace")}
    return entry


def envelope_body(raw: bytes) -> bytes:
    """The raw message bytes a dead-letter entry carries, byte for byte (b"" when they are
    kept aside: see :func:`envelope_parts`)."""
    return envelope_parts(raw)[0]


def envelope_parts(raw: bytes) -> tuple[bytes, str]:
    """``(body, body_ref)`` of a dead-letter entry: the raw bytes it carries, or b"" and the
    key of the one-item list that keeps them."""
    entry = _parse_envelope(raw)
    if entry is None:
        return raw, ""
    if isinstance(entry.get("body_ref"), str):
        return b"", cast(str, entry["body_ref"])
    if isinstance(entry.get("body_b64"), str):
        return base64.b64decode(entry["body_b64"]), ""
    if isinstance(entry.get("body"), str):
        return cast(str, entry["body"]).encode("utf-8"), ""
    return raw, ""
