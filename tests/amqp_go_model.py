"""machinery's AMQP result backend (``backends/amqp/amqp.go``, v1.10.8 == v2.0.16) step by
step in Python on raw py-amqp, so a test can put our code between two of Go's steps (the
live tests race the real Go workers). Each call opens its own connection, as Go's does.

Go's worker, after storing a member's SUCCESS: ``GroupCompleted`` (passive declare of the
group queue, message count == GroupTaskCount), ``TriggerChord`` (true unless the queue
``<group>_chord_triggered`` exists), ``GroupTaskStates`` (passive declare: count must be
GroupTaskCount, else "Already consumed"; then ``Consume(group, "", autoAck=false,
exclusive=true)`` and GroupTaskCount deliveries, each acked), then SendTask of the callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import amqp

from bridge.protocol.machinery import TaskState

GO_TTL_MS = 3_600_000  # int32(ResultsExpireIn * 1000) with machinery's default 3600 s


@contextmanager
def go_connection(url: str) -> Iterator[amqp.Channel]:
    """A new connection and channel (Go's ``AMQPConnector.Open``)."""
    parts = urlsplit(url)
    vhost = parts.path[1:] or "/"
    conn = amqp.Connection(f"{parts.hostname}:{parts.port or 5672}", userid=parts.username,
                           password=parts.password, virtual_host=vhost)
    conn.connect()
    try:
        channel = conn.channel()
        channel.auto_decode = False
        yield channel
    finally:
        conn.close()


def go_declare(channel: amqp.Channel, queue: str, exchange: str = "machinery_exchange",
               ttl_ms: int = GO_TTL_MS) -> None:
    """What ``Connect`` declares for a result queue."""
    channel.exchange_declare(exchange, "direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=False, auto_delete=True,
                          arguments={"x-message-ttl": ttl_ms, "x-expires": ttl_ms})
    channel.queue_bind(queue, exchange, queue)


def go_get_state(url: str, task_uuid: str) -> TaskState | None:
    """``GetState``: redeclare, basic.get, ack, decode; None for Go's "No state ready"."""
    with go_connection(url) as channel:
        go_declare(channel, task_uuid)
        message = channel.basic_get(task_uuid, no_ack=False)
        if message is None:
            return None
        channel.basic_ack(message.delivery_tag)
        return TaskState.from_json(bytes(message.body))


def go_group_completed(url: str, group_uuid: str, count: int) -> bool:
    """``GroupCompleted``: the group queue's message count == count; an error is false."""
    with go_connection(url) as channel:
        try:
            _, messages, _ = channel.queue_declare(group_uuid, passive=True)
        except amqp.exceptions.NotFound:
            return False
        return bool(messages == count)


def go_trigger_chord(url: str, group_uuid: str) -> bool:
    """``TriggerChord``: true unless ``<group>_chord_triggered`` exists."""
    with go_connection(url) as channel:
        try:
            channel.queue_declare(f"{group_uuid}_chord_triggered", passive=True)
        except amqp.exceptions.NotFound:
            return True
        return False


class GoError(Exception):
    """An error Go's GroupTaskStates returns (its worker logs it and sends no callback)."""


def go_group_task_states(url: str, group_uuid: str, count: int, *,
                         after_inspect: Callable[[], None] = lambda: None,
                         after_deliveries: Callable[[], None] = lambda: None,
                         wait: float = 5.0) -> list[TaskState]:
    """``GroupTaskStates``, with hooks between its steps. Where Go would block on a closed
    deliveries channel or wait forever, this raises GoError after ``wait`` s."""
    with go_connection(url) as channel:
        try:
            _, messages, _ = channel.queue_declare(group_uuid, passive=True)
        except amqp.exceptions.NotFound as exc:
            raise GoError(f"Queue inspect error: {exc}") from None
        if messages != count:
            raise GoError("Already consumed: <nil>")
        after_inspect()
        got: list[Any] = []
        cancelled: list[str] = []
        try:
            channel.basic_consume(group_uuid, exclusive=True, callback=got.append,
                                  on_cancel=cancelled.append)
        except (amqp.exceptions.AccessRefused, amqp.exceptions.NotFound) as exc:
            raise GoError(f"Queue consume error: {exc}") from None
        deadline = time.monotonic() + wait
        while len(got) < count:
            if cancelled:  # amqp091 closes the deliveries channel: a zero Delivery
                raise GoError("EOF (deliveries channel closed)")
            if time.monotonic() > deadline:
                raise GoError("still waiting for deliveries")
            with suppress(TimeoutError):
                channel.connection.drain_events(timeout=0.05)
        after_deliveries()
        states = []
        for message in got[:count]:
            channel.basic_ack(message.delivery_tag)
            states.append(TaskState.from_json(bytes(message.body)))
        return states


def go_purge_group_meta(url: str, group_uuid: str) -> None:
    """``PurgeGroupMeta``: delete the marker queue and the group queue."""
    with go_connection(url) as channel:
        channel.queue_delete(f"{group_uuid}_chord_triggered")
        channel.queue_delete(group_uuid)


def go_worker_chord(url: str, group_uuid: str, count: int, **hooks: Any) -> bool:
    """Go's ``taskSucceeded`` from GroupCompleted on (PurgeGroupMeta deferred once the
    group is complete): True when it sends the callback."""
    if not go_group_completed(url, group_uuid, count):
        return False
    try:
        if not go_trigger_chord(url, group_uuid):
            return False
        try:
            states = go_group_task_states(url, group_uuid, count, **hooks)
        except GoError:
            return False
        return all(state.is_success() for state in states)
    finally:
        go_purge_group_meta(url, group_uuid)
