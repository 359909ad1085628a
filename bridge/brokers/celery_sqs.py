"""Celery's layout on SQS, as kombu 5.6.2's SQS transport writes it (celery-wire.md §4).

* queue name = ``entity_name(queue_name_prefix + name)``: ``.`` becomes ``-``, other
  punctuation but ``-`` and ``_`` becomes ``_``, a trailing ``.fifo`` is kept;
* the SQS body is base64 of kombu's virtual envelope (whose ``body`` is base64 again);
  on receive a body is base64-decoded only when it is strict base64 of UTF-8 text, as kombu;
* queues are created on first use, as kombu creates them (VisibilityTimeout 1800 s);
  queue URLs come from the endpoint (GetQueueUrl), not from a prefix;
* FIFO queues: MessageGroupId from the message's properties (kombu's default ``default``),
  MessageDeduplicationId from them or a fresh uuid4.

Beyond a Celery worker (the machinery SQS broker's machinery, shared through
:class:`~bridge.brokers.sqs.SqsBroker`): long polling in a thread, batched receive and
delete, held messages kept invisible by a heartbeat, an ack deletes, a requeue with a delay
is ChangeMessageVisibility, bad input is parked with its reason in the queue's redrive DLQ or
``<queue>-bridge-dead`` (a Celery worker leaves it to come back forever).

Broker URLs as Celery's: ``sqs://KEY:SECRET@HOST:PORT`` (a local endpoint, plain HTTP) or
``sqs://[KEY:SECRET@]`` (AWS: boto3's chain, region from the options or boto3, else
us-east-1, as kombu).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import string
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from bridge.brokers import sqs_calls
from bridge.brokers.base import CeleryBroker, Delivery
from bridge.brokers.sqs import SqsBroker
from bridge.brokers.sqs_client import SqsLocation, error_code, new_client
from bridge.brokers.sqs_layout import Outgoing, is_fifo
from bridge.config import Config, SQSConfig, redact_url
from bridge.errors import DecodeError
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.kombu_envelope import DEFAULT_MAX_SIZE, decode_envelope, to_envelope

__all__ = ["CelerySqsBroker", "entity_name", "sqs_body", "transport_settings", "unwrap_body"]

log = logging.getLogger("bridge.brokers.sqs")

KOMBU_VISIBILITY = 1800
"""kombu's ``visibility_timeout`` default: the attribute of the queues it creates."""
KOMBU_FIFO_GROUP = "default"
"""kombu's MessageGroupId when the message's properties give none."""

_TABLE = {ord(c): ord("_") for c in string.punctuation if c not in "-_."}
_TABLE[ord(".")] = ord("-")
_EXISTS = frozenset({"QueueNameExists", "QueueAlreadyExists",
                     "AWS.SimpleQueueService.QueueNameExists"})
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


TRANSPORT_KEYS = ("region", "queue_name_prefix", "wait_time_seconds", "visibility_timeout")
"""kombu SQS transport options this broker takes from a Celery app's
``broker_transport_options`` (the endpoint is the broker URL's host, as kombu's)."""


def transport_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of :class:`CelerySqsBroker` in kombu's ``broker_transport_options``."""
    return {key: options[key] for key in TRANSPORT_KEYS if options.get(key) is not None}


def entity_name(name: str) -> str:
    """kombu's ``Channel.entity_name``: the SQS queue name of a kombu queue name."""
    if name.endswith(".fifo"):
        return name[:-len(".fifo")].translate(_TABLE) + ".fifo"
    return name.translate(_TABLE)


def sqs_body(message: CeleryMessage, queue: str) -> str:
    """The SQS MessageBody kombu sends for ``message`` to Celery queue ``queue``."""
    return base64.b64encode(to_envelope(message, routing_key=queue)).decode("ascii")


def unwrap_body(body: bytes) -> bytes:
    """kombu's ``_optional_b64_decode``: the base64-decoded body when it is strict base64 of
    UTF-8 text (re-encoding to itself), else the body unchanged."""
    text = body.strip()
    if not text or len(text) % 4 or not _B64.match(text.decode("ascii", "replace")):
        return body
    try:
        decoded = base64.b64decode(text, validate=True)
        decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return body
    if base64.b64encode(decoded).rstrip(b"=") != text.rstrip(b"="):
        return body
    return decoded


class CelerySqsBroker(CeleryBroker):
    """Celery's queues on SQS: fetch, ack (delete), delayed requeue, dead letters, publish.

    Options: ``default_queue``; ``queue_name_prefix`` (kombu's transport option);
    ``region``; ``endpoint_url`` (else the URL's host, else boto3's chain);
    ``visibility_timeout`` (of the queues we create, kombu's 1800 by default; received
    messages keep their queue's); ``wait_time_seconds`` (long poll, 20 unless given);
    ``max_message_bytes``; ``client`` (a boto3 SQS client).
    """

    def __init__(self, url: str, *, default_queue: str = "celery", queue_name_prefix: str = "",
                 region: str | None = None, endpoint_url: str | None = None,
                 visibility_timeout: int = KOMBU_VISIBILITY, wait_time_seconds: int = 0,
                 max_message_bytes: int = DEFAULT_MAX_SIZE, client: Any = None) -> None:
        self.url = url
        self.default_queue = default_queue
        self.prefix = queue_name_prefix
        self.visibility_timeout = int(visibility_timeout)
        self.max_message_bytes = max_message_bytes
        parsed = SqsLocation.parse(url if url.startswith("sqs://") else "sqs://", endpoint_url)
        location = dataclasses.replace(parsed, url=url, prefix=None,
                                       region=region or parsed.region or _region())
        client = client or new_client(location, read_timeout=(wait_time_seconds or 20) + 30)
        config = Config(broker=url, default_queue=self.name(default_queue),
                        sqs=SQSConfig(wait_time_seconds=int(wait_time_seconds)))
        self.sqs = SqsBroker(url, config, client=client, move_delayed=False, location=location)
        self.sqs.where = f"Celery SQS broker {redact_url(url)}" + (
            f" (endpoint {location.endpoint_url})" if location.endpoint_url else "")
        self.client = client
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CelerySqsBroker:
        """``sqs://`` URL plus the keyword options (kombu's transport option names)."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"CelerySqsBroker({redact_url(self.url)!r})"

    def name(self, queue: str) -> str:
        """The SQS queue name of Celery queue ``queue``."""
        return entity_name(self.prefix + queue)

    def _ensure(self, queue: str) -> str:
        """The SQS name of ``queue``, created as kombu creates it when missing."""
        name = self.name(queue)
        with self._lock:
            if name in self._ready:
                return name
        attributes = {"VisibilityTimeout": str(self.visibility_timeout)}
        if is_fifo(name):
            attributes["FifoQueue"] = "true"
        try:
            self.sqs.urls.ensure(name, attributes)
        except Exception as exc:
            if error_code(exc) not in _EXISTS:  # created meanwhile, by kombu with its own
                raise self.sqs._fail(exc, name) from exc  # attributes: use it as it is
        with self._lock:
            self._ready.add(name)
        return name

    # ------------------------------------------------------------ publishing

    def publish_messages(self, queue: str, messages: Sequence[CeleryMessage]) -> None:
        """SendMessageBatch of kombu's bodies to ``queue`` (FIFO: kombu's group and
        deduplication ids)."""
        if not messages:
            return
        name = self._ensure(queue)
        out = []
        for message in messages:
            item = Outgoing(name, sqs_body(message, queue))
            if is_fifo(name):
                props = message.properties
                item.group = str(props.get("MessageGroupId") or KOMBU_FIFO_GROUP)
                item.dedup = str(props.get("MessageDeduplicationId") or uuid.uuid4())
            out.append(item)
        try:
            sqs_calls.send(self.client, self.sqs.urls(name), out)
        except Exception as exc:
            raise self.sqs._fail(exc, name) from exc

    def publish_raw(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Send SQS bodies as they were received (replays)."""
        name = self._ensure(queue)
        out = [Outgoing(name, bytes(b).decode("utf-8"), group=KOMBU_FIFO_GROUP if is_fifo(name)
                        else None, dedup=uuid.uuid4().hex if is_fifo(name) else None)
               for b in bodies]
        try:
            sqs_calls.send(self.client, self.sqs.urls(name), out)
        except Exception as exc:
            raise self.sqs._fail(exc, name) from exc

    # ------------------------------------------------------------ consuming

    def _inner(self, delivery: Delivery) -> Delivery:
        return dataclasses.replace(delivery, queue=self.name(delivery.queue))

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` kombu messages of ``queue``; what is not a kombu envelope is
        parked with the reason here."""
        self.ack(ack)
        if max_count <= 0:
            return []
        name = self._ensure(queue)
        out = []
        for raw in self.sqs.fetch(name, max_count, timeout):
            try:
                envelope = decode_envelope(unwrap_body(raw.body), max_size=self.max_message_bytes)
            except DecodeError as exc:
                self._park(raw, str(exc))
                continue
            out.append(Delivery(raw.body, queue, raw.tag, envelope.message))
        return out

    def _park(self, raw: Delivery, reason: str) -> None:
        try:
            self.sqs.dead_letter(raw, reason)
        except Exception as exc:  # it comes back after its visibility timeout
            log.warning("could not park a message of %s: %s", raw.queue, exc)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages (batched)."""
        if deliveries:
            self.sqs.ack([self._inner(d) for d in deliveries])

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Visible again after ``delay`` s (at most SQS's 12 h; a later ETA is hidden again
        when it comes back)."""
        self.sqs.requeue(self._inner(delivery), delay)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park the SQS body as received, with the reason, then delete it here."""
        self.sqs.dead_letter(self._inner(delivery), reason)

    def maintain(self) -> None:
        self.sqs.maintain()

    def ping(self) -> None:
        """Reach the endpoint: the default queue, created if missing (as kombu does)."""
        self._ensure(self.default_queue)

    def close(self) -> None:
        """Stop receiving; held messages not done are visible again at once."""
        self.sqs.close()

    # ------------------------------------------------------------ inspection

    def queue_depth(self, queue: str) -> int:
        return self.sqs.queue_depth(self._ensure(queue))

    def dead_letters(self, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """The first ``count`` parked messages of ``queue``."""
        return self.sqs.dead_letters(self.name(queue), 0, count - 1)

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Send parked messages back to ``queue``, byte for byte."""
        return self.sqs.replay_dead(self._ensure(queue), count)


def _region() -> str:
    """boto3's session region, else us-east-1 (kombu's fallback)."""
    try:
        import boto3
    except ImportError:
        return "us-east-1"
    return str(boto3.session.Session().region_name or "us-east-1")
