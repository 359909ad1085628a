"""The client side of the remote control: broadcast a command to the workers listening on a
broker's pidbox mailbox and gather their replies (what ``celery inspect`` does), for
``mbridge inspect --workers`` and ``mbridge control``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kombu import Connection
from kombu.pidbox import Mailbox

from bridge.redisconn import RedisURLError, parse_redis_url

NO_BROADCAST = ("sqs", "https")
"""Brokers without broadcast (SQS): neither Celery nor we have a remote control there."""


def mailbox_url(machinery_broker: str) -> str | None:
    """machinery's broker URL as kombu reads it (machinery writes ``redis://PASSWORD@host``);
    None where the mailbox cannot go (SQS has no broadcast; TLS Redis is left out)."""
    if machinery_broker.startswith(("amqp://", "amqps://")):
        return machinery_broker
    if not machinery_broker.startswith(("redis://", "redis+socket://")):
        return None
    try:
        target = parse_redis_url(machinery_broker)
    except RedisURLError:
        return None
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    if target.socket_path:
        return f"redis+socket://{auth}{target.socket_path}?virtual_host={target.db}"
    if len(target.addresses) != 1:
        return None  # a cluster: no pub/sub broadcast across it here
    host, port = target.addresses[0]
    return f"redis://{auth}{host}:{port}/{target.db}"



def celery_mailbox(namespace: str = "celery", accept: tuple[str, ...] = ("json",),
                   ttl: float = 300.0, expires: float = 10.0) -> Mailbox:
    """Celery's control mailbox (``app.control.mailbox``): fanout ``<namespace>.pidbox``,
    replies on ``reply.<namespace>.pidbox``, queues with Celery's TTL and expiry."""
    return Mailbox(namespace, type="fanout", accept=list(accept), serializer="json",
                   queue_ttl=ttl, queue_expires=expires, reply_queue_ttl=ttl,
                   reply_queue_expires=expires)


def broadcast(url: str, command: str, arguments: dict[str, Any] | None = None, *,
              destination: list[str] | None = None, timeout: float = 1.0,
              reply: bool = True, namespace: str = "celery",
              transport_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """node name → its reply to ``command`` (empty without ``reply``), from every worker whose
    mailbox is on ``url`` (a kombu URL: see :func:`mailbox_url` for machinery's)."""
    mailbox = celery_mailbox(namespace)
    with Connection(url, transport_options=transport_options or {},
                    connect_timeout=5) as connection:
        connection.ensure_connection(max_retries=1)
        replies = mailbox(connection)._broadcast(command, arguments or {}, destination,
                                                 reply=reply, timeout=timeout) or []
    merged: dict[str, Any] = {}
    for one in replies:
        if isinstance(one, dict):
            merged.update(one)
    return merged
