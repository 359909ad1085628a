"""The AMQP result backend's queue arguments and its chord claim (see
:mod:`bridge.backends.amqp` for the layout).

Go's worker fires a chord when ``GroupTaskStates`` gets every member's state: it consumes
the group queue as its *exclusive* consumer (``Consume(group, "", false, true, ...)``) and
waits for GroupTaskCount deliveries, acking each. RabbitMQ refuses a second exclusive
consumer (ACCESS_REFUSED), acked messages are gone, and the queue is auto-delete: it goes
away with the consumer. :func:`claim_group` takes the group's states exactly that way, so a
Go worker and ours can never both get them: whoever comes second is refused, finds fewer
messages than GroupTaskCount, or finds no queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import amqp

from bridge.brokers.amqp_consuming import body_bytes
from bridge.brokers.amqp_session import AmqpSession
from bridge.config import ConfigError
from bridge.errors import DecodeError
from bridge.protocol.machinery import TaskState

__all__ = ["INT32_MAX", "Outcome", "QueueArguments", "chord_triggered_queue", "claim_group",
           "inspect", "result_queue_arguments"]

log = logging.getLogger("bridge.backends.amqp")

INT32_MAX = 2**31 - 1

QueueArguments = Mapping[str, int]


def result_queue_arguments(expire_seconds: int) -> QueueArguments:
    """Go's ``x-message-ttl`` and ``x-expires``: ``int32(results_expire_in * 1000)``.

    py-amqp writes an int in the int32 range as a signed 32-bit field ('I'), as amqp091 does
    for Go's int32. Beyond it Go's conversion wraps to a negative number RabbitMQ refuses
    (machinery #94): a ConfigError here.
    """
    ms = expire_seconds * 1000
    if ms > INT32_MAX:
        raise ConfigError(
            f"results_expire_in: {expire_seconds} s is too long for machinery's AMQP result "
            f"backend (its queue TTL is int32 milliseconds, at most {INT32_MAX // 1000} s; Go "
            f"wraps it to a negative TTL RabbitMQ refuses): lower it", key="results_expire_in")
    return {"x-message-ttl": ms, "x-expires": ms}


def chord_triggered_queue(group_uuid: str) -> str:
    """The queue Go's ``TriggerChord`` checks (``amqmChordTriggeredQueue``)."""
    return f"{group_uuid}_chord_triggered"


def inspect(session: AmqpSession, queue: str) -> int | None:
    """Go's ``QueueInspect`` (a passive declaration): the ready messages, None when the queue
    does not exist. The 404 closes the admin channel and py-amqp reopens it at once (the
    same channel: nothing to replace, nothing leaks)."""
    try:
        _, count, _ = session.admin.queue_declare(queue=queue, passive=True)
    except amqp.exceptions.NotFound:
        return None
    return int(count)


Outcome = Literal["won", "refused", "incomplete"]


def claim_group(session: AmqpSession, group_uuid: str, ready: int, expected: int,
                timeout: float,
                restore: Callable[[list[bytes]], None]) -> tuple[Outcome, list[TaskState]]:
    """Take the group queue's ``ready`` messages as its exclusive consumer and ack them.

    ``("won", states)``: they hold ``expected`` members or more (each member's first state,
    in queue order: a state written twice, by a redelivered task or a write repeated after a
    lost connection, counts once). ``("refused", [])``: another consumer has the queue, or
    it is gone. ``("incomplete", [])``: repeated states made the count look complete; what
    was taken is published back with ``restore`` (the auto-delete queue went with our
    consumer), in order.

    Called with the session's lock held. The acks are done before this returns
    (``basic.cancel`` waits for its reply, which RabbitMQ sends after handling the acks).
    """
    channel = session.open_channel()
    received: list[Any] = []
    cancelled: list[str] = []
    try:
        try:
            tag = channel.basic_consume(queue=group_uuid, exclusive=True,
                                        callback=received.append, on_cancel=cancelled.append)
        except (amqp.exceptions.AccessRefused, amqp.exceptions.NotFound,
                amqp.exceptions.ResourceLocked):
            return "refused", []  # another worker is taking them, or took them: queue gone
        deadline = time.monotonic() + timeout
        while len(received) < ready and not cancelled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("chord of group %s: %d of %d member states came in %.1f s",
                            group_uuid, len(received), ready, timeout)
                break
            session.drain(min(remaining, 0.1))
        if not received:
            return "refused", []  # the queue was deleted under us: another worker's claim
        channel.basic_ack(received[-1].delivery_tag, multiple=True)
        channel.basic_cancel(tag)
        members = _first_states(group_uuid, received)
        if len(members) >= expected:
            return "won", members
        restore([body_bytes(message) for message in received])
        return "incomplete", []
    finally:
        if channel.is_open:
            channel.close()


def _first_states(group_uuid: str, messages: list[Any]) -> list[TaskState]:
    """Each member's first state, in queue order (a message that is no TaskState is left
    out, as Go's GroupTaskStates drops it)."""
    states: dict[str, TaskState] = {}
    for message in messages:
        try:
            state = TaskState.from_json(body_bytes(message))
        except DecodeError as exc:
            log.error("chord of group %s: dropped a message that is no TaskState (%s)",
                      group_uuid, exc)
            continue
        states.setdefault(state.task_uuid, state)
    return list(states.values())
