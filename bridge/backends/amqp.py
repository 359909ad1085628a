"""machinery's AMQP result backend (``backends/amqp/amqp.go``, v1 == v2) on RabbitMQ.

Layout, shared with Go producers, workers and readers on the same RabbitMQ:

* a queue per task UUID (durable false, auto-delete, ``x-message-ttl`` and ``x-expires`` =
  ``results_expire_in`` in ms as int32), bound to the machinery exchange with the UUID;
  every state is one more message (``application/json``, persistent), the TaskState JSON
  exactly as Go's ``New*TaskState`` builds it (no merge);
* a group member's SUCCESS or FAILURE also goes to the queue ``<group UUID>`` (same
  arguments); Go keeps no group meta: ``InitGroup`` does nothing, ``GroupCompleted`` is
  "the group queue holds GroupTaskCount messages";
* ``<group UUID>_chord_triggered``: a queue Go's ``TriggerChord`` only checks (nothing in Go
  creates it; it answers "not yet triggered" while it does not exist).

**Writes.** Go opens a connection per state. Here the declarations ride along without
waiting (``nowait``) on the publisher-confirm channel of one kept connection, so a batch of
states costs one round trip: RabbitMQ handles a channel's methods in order, so every queue
exists and is bound before its message is routed, and a refused declaration closes the
channel before the confirms arrive.

**Reads** are destructive, as Go's ``GetState`` (redeclare, ``basic.get``, ack) is: each
state is handed out once. ``get_state`` takes the waiting states oldest first up to the
newest and remembers it per process. A completed state (SUCCESS, FAILURE) is put back where
it was (``basic.reject`` with requeue), so a Go reader waiting on the same task still gets
it; Go's reader removes it, as two Go readers do to each other. The queue is never
deleted by a read (Go's ``AsyncResult`` does not purge either: the backend's ``IsAMQP()``
is false).

**Chords.** Go's ``TriggerChord`` is not atomic (it is true unless the marker queue
exists); what makes Go's chord fire once is ``GroupTaskStates``: it consumes the group queue
as its *exclusive* consumer and needs all GroupTaskCount messages, so only one worker can get
them, and the auto-delete queue disappears with that consumer. ``trigger_chord`` here claims
the chord the same way (see :mod:`bridge.backends.amqp_chord`), so a Go worker racing us is
refused the consumer or finds the queue empty or gone; after claiming it declares the marker
queue, so every later Go ``TriggerChord`` answers false without touching the group queue.
A member state written twice (a redelivered task, a write repeated after a lost connection)
stalls Go's chord for good (its count never equals GroupTaskCount again); ours counts each
member once, and puts what it took back when the count only looked complete.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import amqp

from bridge.backends.amqp_chord import (
    QueueArguments,
    chord_triggered_queue,
    claim_group,
    inspect,
    result_queue_arguments,
)
from bridge.backends.base import Backend, MemberState
from bridge.backends.common import unreachable
from bridge.brokers.amqp_consuming import body_bytes
from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.brokers.amqp_topology import CONTENT_TYPE, PERSISTENT
from bridge.config import AMQPConfig, Config, ConfigError, redact_url
from bridge.errors import BridgeError, DecodeError
from bridge.protocol.machinery import FAILURE, SUCCESS, TaskState

__all__ = ["AmqpBackend", "GroupStatesConsumed", "ResultQueueRefused",
           "chord_triggered_queue"]

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MAX_READ = 1000
"""States one ``get_state`` takes at most (a queue holds a handful per run of a task)."""


class ResultQueueRefused(BridgeError):
    """RabbitMQ refused a result queue or exchange declaration (arguments differ...)."""


class GroupStatesConsumed(BridgeError, LookupError):
    """The group queue no longer holds every member's state (Go: ``Already consumed``)."""


class _Bounded(Generic[K, V]):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._items.pop(key, None)


class AmqpBackend(Backend):
    """machinery's AMQP result backend, read and written as Go workers do.

    ``config`` supplies ``results_expire_in`` and the ``amqp`` exchange (machinery's
    defaults when the section is missing). ``claim_timeout``: how long a chord claim waits
    for the group's messages once it is their exclusive consumer.
    """

    def __init__(self, url: str, config: Config | None = None, *, heartbeat: float = 60.0,
                 connect_timeout: float = 10.0, confirm_timeout: float = 30.0,
                 claim_timeout: float = 5.0, ssl: bool | dict[str, Any] | None = None,
                 transport_options: dict[str, Any] | None = None) -> None:
        cfg = config or Config(result_backend=url)
        section = cfg.amqp or AMQPConfig()
        self.url = url  # may hold a password: only ever shown redacted
        self.exchange = section.exchange
        self.exchange_type = section.exchange_type
        self.arguments: QueueArguments = result_queue_arguments(cfg.results_expire_seconds)
        self.claim_timeout = claim_timeout
        self._session_options: dict[str, Any] = {
            "heartbeat": heartbeat, "connect_timeout": connect_timeout,
            "confirm_timeout": confirm_timeout, "ssl": ssl,
            "transport_options": transport_options}
        self._session: AmqpSession | None = None
        self._opening = threading.Lock()
        self._seen: _Bounded[str, TaskState] = _Bounded(10_000)
        self._expected: _Bounded[str, int] = _Bounded(1_000)
        self._claimed: _Bounded[str, list[TaskState]] = _Bounded(1_000)

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> AmqpBackend:
        """The backend at ``config.result_backend``."""
        return cls(config.result_backend, config, **options)

    def __repr__(self) -> str:
        return f"AmqpBackend({redact_url(self.url)!r}, exchange={self.exchange!r})"

    # ----------------------------------------------------------------- connection

    def _connected(self) -> AmqpSession:
        """The session, connecting on first use (a backend is built before it is needed)."""
        with self._opening:
            if self._session is None:
                self._session = AmqpSession([self.url], on_consume_lost=_nothing,
                                            **self._session_options)
            return self._session

    def _run(self, operation: Callable[[AmqpSession], T]) -> T:
        """``operation`` under the session's lock, once more after a lost connection; a
        refused declaration becomes one :class:`ResultQueueRefused` line."""
        session = self._connected()
        box: list[T] = []
        try:
            session.retrying(lambda: box.append(operation(session)))
        except amqp.exceptions.ChannelError as exc:
            _confirm_mode_again(session)
            if isinstance(exc, amqp.exceptions.PreconditionFailed):
                raise _refused(exc) from None
            raise
        return box[-1]

    def ping(self) -> None:
        """Connect (credentials, vhost and TLS are checked then) with open channels.

        A refused login goes up as RabbitMQ's AccessRefused (start-up validation makes it
        the one-line "refused the login" ConfigError); a missing vhost is a ConfigError; a
        server that cannot be reached is :class:`~bridge.errors.Unreachable`.
        """
        try:
            session = self._connected()
            with session.lock:
                session.ready()
        except amqp.exceptions.AccessRefused:
            raise
        except amqp.exceptions.NotAllowed as exc:
            raise ConfigError(f"result_backend {redact_url(self.url)}: {_reply(exc)}: create "
                              f"that vhost or fix result_backend",
                              key="result_backend") from None
        except (OSError, amqp.exceptions.AMQPError) as exc:
            raise unreachable(self.url, str(exc) or type(exc).__name__,
                              "start RabbitMQ there or fix result_backend") from None

    def close(self) -> None:
        with self._opening:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # ----------------------------------------------------------------- declarations

    def _declare(self, channel: Any, queues: Sequence[str]) -> None:
        """What Go's ``Connect`` declares before each write or read, without waiting."""
        if self.exchange:
            channel.exchange_declare(self.exchange, self.exchange_type, durable=True,
                                     auto_delete=False, nowait=True)
        for queue in queues:
            channel.queue_declare(queue=queue, durable=False, auto_delete=True, nowait=True,
                                  arguments=dict(self.arguments))
            if self.exchange:  # the default exchange binds every queue by its name already
                channel.queue_bind(queue=queue, exchange=self.exchange, routing_key=queue,
                                   nowait=True)

    # ----------------------------------------------------------------- task states

    def set_state(self, state: TaskState) -> None:
        """One message on the task's queue (and the group's, for a finished member)."""
        self.set_states([state])

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Every state one message, in order, confirmed by RabbitMQ as one batch."""
        if not states:
            return
        queues: dict[str, None] = {}
        outgoing: list[Outgoing] = []
        for state in states:
            message = amqp.Message(state.to_json(), content_type=CONTENT_TYPE,
                                   delivery_mode=PERSISTENT)
            for queue in _queues_of(state):
                queues[queue] = None
                outgoing.append(Outgoing(self.exchange, queue, message))

        def write(session: AmqpSession) -> None:
            self._declare(session.publish, list(queues))
            session.publish_confirmed(outgoing)

        self._run(write)

    def get_state(self, task_uuid: str) -> TaskState | None:
        """The newest state: the waiting ones are taken (oldest first) up to the newest or
        the first completed one, which stays in the queue; None when none was ever seen."""
        known = self._seen.get(task_uuid)
        if known is not None and known.is_completed():
            return known
        latest = self._run(lambda session: self._take(session, task_uuid))
        if latest is None:
            return known
        self._seen.put(task_uuid, latest)
        return latest

    def _take(self, session: AmqpSession, task_uuid: str) -> TaskState | None:
        channel = session.admin
        self._declare(channel, [task_uuid])  # as Go's GetState: the reader may come first
        latest: TaskState | None = None
        for _ in range(_MAX_READ):
            message = channel.basic_get(queue=task_uuid, no_ack=False)
            if message is None:
                break
            tag = message.delivery_tag
            try:
                state = TaskState.from_json(body_bytes(message))
            except DecodeError as exc:
                channel.basic_ack(tag)  # Go acks before decoding, and drops it too
                log.warning("result queue %s: dropped a message that is no TaskState (%s)",
                            task_uuid, exc)
                continue
            if state.is_completed():
                channel.basic_reject(tag, requeue=True)  # there for every other reader
                return state
            channel.basic_ack(tag)
            latest = state
        return latest

    def purge_state(self, task_uuid: str) -> None:
        """Delete the task's queue (Go's PurgeState)."""
        self._seen.pop(task_uuid)
        self._run(lambda session: session.admin.queue_delete(task_uuid))

    # ----------------------------------------------------------------- groups and chords

    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        """Nothing, as in Go: the AMQP backend keeps no group meta."""

    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """The group queue holds ``group_task_count`` member states (SUCCESS or FAILURE) or
        more (Go wants exactly as many: a state written twice would stall Go's chord)."""
        self._expected.put(group_uuid, group_task_count)
        return (self._run(lambda session: inspect(session, group_uuid)) or 0) \
            >= group_task_count

    def trigger_chord(self, group_uuid: str) -> bool:
        """Claim the chord: True for exactly one caller, Go workers included.

        False when the marker queue exists, when the group queue no longer holds every
        member's state, or when another consumer has it; True after taking them all as its
        exclusive consumer (kept for :meth:`group_task_states`), declaring the marker queue
        Go's TriggerChord checks and deleting the group queue (Go's deferred PurgeGroupMeta).
        """
        expected = self._expected.pop(group_uuid) or 0

        def trigger(session: AmqpSession) -> bool:
            marker = chord_triggered_queue(group_uuid)
            if inspect(session, marker) is not None:
                return False
            for _ in range(3):
                ready = inspect(session, group_uuid) or 0
                if not ready or ready < expected:
                    return False
                outcome, states = claim_group(session, group_uuid, ready, expected or ready,
                                              self.claim_timeout,
                                              lambda bodies: self._restore(session, group_uuid,
                                                                           bodies))
                if outcome == "won":
                    self._claimed.put(group_uuid, states)
                    session.admin.queue_declare(queue=marker, durable=False, auto_delete=True,
                                                arguments=dict(self.arguments))
                    session.admin.queue_delete(group_uuid)
                    return True
                if outcome == "refused" or (inspect(session, group_uuid) or 0) <= ready:
                    return False  # nothing came while the restored queue was away
            return False

        return self._run(trigger)

    def _restore(self, session: AmqpSession, group_uuid: str, bodies: list[bytes]) -> None:
        """Publish taken member states back to the group queue (declared as Go declares it)."""
        self._declare(session.publish, [group_uuid])
        session.publish_confirmed([
            Outgoing(self.exchange, group_uuid, amqp.Message(
                body, content_type=CONTENT_TYPE, delivery_mode=PERSISTENT))
            for body in bodies])

    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """The member states in the order they finished (the group queue's order, as Go).

        After :meth:`trigger_chord` returned True, the states it took; otherwise Go's
        GroupTaskStates: all ``group_task_count`` messages as the queue's exclusive consumer.
        """
        claimed = self._claimed.pop(group_uuid)
        if claimed is not None:
            return claimed

        def consume(session: AmqpSession) -> list[TaskState]:
            ready = inspect(session, group_uuid) or 0
            if ready == group_task_count:
                outcome, states = claim_group(
                    session, group_uuid, ready, group_task_count, self.claim_timeout,
                    lambda bodies: self._restore(session, group_uuid, bodies))
                if outcome == "won":
                    return states
            raise GroupStatesConsumed(
                f"group {group_uuid!r}: its queue holds {ready} of {group_task_count} "
                f"member states (taken by the worker that triggered the chord, or expired); "
                f"Go reports 'Already consumed'")

        return self._run(consume)

    def purge_group_meta(self, group_uuid: str) -> None:
        """Delete the group queue and the marker queue (Go's PurgeGroupMeta)."""

        def purge(session: AmqpSession) -> None:
            session.admin.queue_delete(chord_triggered_queue(group_uuid))
            session.admin.queue_delete(group_uuid)

        self._run(purge)


def _queues_of(state: TaskState) -> tuple[str, ...]:
    """The task's queue, and the group's for a finished member (Go's markTaskCompleted)."""
    if (isinstance(state, MemberState) and state.state in (SUCCESS, FAILURE)
            and state.group_uuid and state.group_task_count):
        return state.task_uuid, state.group_uuid
    return (state.task_uuid,)


def _confirm_mode_again(session: AmqpSession) -> None:
    """After a channel error py-amqp reopens the channel by itself, without confirm mode:
    close it, so the session opens a publish channel in confirm mode on its next use."""
    with session.lock:
        channel = session.publish
        if channel is not None and channel.is_open:
            channel.close()


def _reply(exc: amqp.exceptions.AMQPError) -> str:
    """RabbitMQ's reply text without its pointer to the log file."""
    text = str(getattr(exc, "reply_text", "") or exc)
    return text.split(". For details", 1)[0]


def _refused(exc: amqp.exceptions.PreconditionFailed) -> ResultQueueRefused:
    """RabbitMQ's PRECONDITION_FAILED as one line naming the fix."""
    text = " ".join(str(exc).split())
    if "x-expires" in text or "x-message-ttl" in text:
        fix = ("every machinery process sharing this RabbitMQ must use the same "
               "results_expire_in (Go fails the same way)")
    elif "exchange" in text:
        fix = "use the exchange type the exchange was declared with (amqp.exchange_type)"
    else:
        fix = "remove the conflicting queue or exchange, or align the configuration"
    return ResultQueueRefused(f"RabbitMQ refused a result backend declaration ({text}): {fix}")


def _nothing() -> None:
    """The backend consumes nothing on the session's consume channel."""
