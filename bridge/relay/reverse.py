"""machinery → Celery: Go producers' tasks run by Celery workers.

Each machinery message (a Signature, as Go's SendTask/SendChain/SendGroup/SendChord publish
it) becomes the Celery message ``from_signature`` + ``encode_task`` make (typed args as
plain values, OnSuccess → link, OnError → link_error, ChordCallback → the chord body, every
routing key pointed at the Celery queue). The relay writes RECEIVED, as a machinery worker
would, and for a chord member Celery's chord size (``.s``) and the member's group_index (its
place in the group meta), so Celery's chord join calls the body once with the results in
machinery's order.

Results go back as machinery TaskStates when the Celery meta is ready: SUCCESS with results
typed by the schema's result types (else inferred: int → int64, a list → ``[]T``, a dict →
``map[string]interface {}``...), FAILURE/REVOKED with the exception text as the Go error
string, so Go's ``AsyncResult.Get`` returns or fails as with a Go worker.

Semantics that differ and cannot be bridged: a Celery link gets the parent's result as its
*first* argument (machinery appends it last), and a chord body gets the results as one list.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from bridge.backends.base import Backend, new_state
from bridge.backends.celery_redis import READY_STATES, CeleryRedisBackend
from bridge.brokers.base import Broker, CeleryBroker, Delivery
from bridge.brokers.redis import RedisBroker
from bridge.endpoints import Endpoint
from bridge.errors import (
    ArgTranslationError,
    BridgeError,
    DecodeError,
    EncodeError,
    StatesRefused,
    clip,
    describe,
)
from bridge.protocol.celery import encode_task
from bridge.protocol.celery_canvas import from_signature
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.celery_quick import QuickBack, quick_back, quick_message
from bridge.protocol.machinery import (
    FAILURE,
    RECEIVED,
    SUCCESS,
    GroupMeta,
    Signature,
    TaskResult,
    TaskState,
)
from bridge.relay.one_trip_back import OneTripBack, Written
from bridge.relay.track import (
    DROP,
    InFlight,
    Outcome,
    RelayOptions,
    Side,
    Tracked,
    inflight_key,
    point_at,
    track_signature,
)
from bridge.schema import TaskSchema
from bridge.types import to_result

__all__ = ["MachineryToCelery", "error_text", "typed_results"]

log = logging.getLogger("bridge.relay")


@dataclass(slots=True)
class _Batch:
    """One fetch, translated (:meth:`MachineryToCelery.prepare`)."""

    tracked: list[Tracked] = field(default_factory=list)
    received: list[tuple[TaskState, CeleryMessage]] = field(default_factory=list)
    """RECEIVED and the message of each translated task with an id."""
    unstated: list[CeleryMessage] = field(default_factory=list)
    """Messages of tasks without an id (no state to write)."""
    failures: list[TaskState] = field(default_factory=list)
    """FAILURE of each task that could not be translated."""
    chord_sizes: dict[str, int] = field(default_factory=dict)
    parks: list[tuple[Delivery, str]] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    sent: dict[str, Delivery] = field(default_factory=dict)
    """The delivery of each task in ``received``, by id."""

    def translated(self, delivery: Delivery, uuid: str, message: CeleryMessage,
                   tracked: list[Tracked]) -> None:
        """``delivery`` became ``message``: acked once sent, RECEIVED first when it has an
        id, its ids tracked."""
        self.acks.append(delivery)
        if uuid:
            self.received.append((TaskState(uuid, state=RECEIVED), message))
            self.sent[uuid] = delivery
        else:
            self.unstated.append(message)
        self.tracked += tracked


class MachineryToCelery(Side):
    """Consumes a machinery queue, publishes to a Celery queue (see the module docstring)."""

    def __init__(self, source: Broker, source_queue: str, backend: Backend,
                 broker: CeleryBroker, results: CeleryRedisBackend, queue: str,
                 inflight: InFlight, options: RelayOptions) -> None:
        super().__init__(inflight, options)
        self.consumer = source
        self.source: Broker = source
        self.queue = source_queue
        self.backend = backend
        self.broker = broker
        self.results = results
        self.target_queue = queue
        if isinstance(source, RedisBroker):  # batches acknowledged whole: taken as windows
            source.window_take = True
        self._one_trip = OneTripBack.between(backend, broker)
        """RECEIVED and the message in one script where machinery's backend and the Celery
        lists share a Redis database (what it leaves goes the two-step way)."""

    @classmethod
    def open(cls, source: Endpoint, target: Endpoint, options: RelayOptions,
             name: str) -> MachineryToCelery:
        results = cast(CeleryRedisBackend, target.open_backend())
        return cls(source.open_broker(), source.queue, source.open_backend(),
                   target.open_broker(), results, target.queue,
                   InFlight(results.client, inflight_key(name)), options)

    # ------------------------------------------------------------------ tasks out

    def relay(self, deliveries: list[Delivery]) -> list[Delivery]:
        return self.send(self.prepare(deliveries))()

    def prepare(self, deliveries: list[Delivery]) -> _Batch:
        """Decode and translate ``deliveries``; what is sent, tracked, stored and parked."""
        batch = _Batch()
        decoded: list[tuple[Delivery, Signature | QuickBack]] = []
        for delivery in deliveries:
            quick = quick_back(delivery.body)  # a plain call from Celery: no Signature made
            if quick is not None:
                decoded.append((delivery, quick))
                continue
            try:
                decoded.append((delivery, Signature.from_json(delivery.body)))
            except DecodeError as exc:
                batch.parks.append((delivery, f"undecodable machinery message: {exc}"))
        members = self._group_members({s.group_uuid for _, s in decoded
                                       if isinstance(s, Signature) and s.group_uuid
                                       and s.chord_callback is not None})
        now = time.time()
        for delivery, sig in decoded:
            if isinstance(sig, QuickBack):  # a leaf with nothing but the call
                batch.translated(delivery, sig.uuid, sig.message,
                                 [Tracked(sig.uuid, sig.name, now)] if sig.uuid else [])
                continue
            try:
                message = self._translate(sig, members)
            except Exception as exc:  # whatever the message holds: this message's reason
                why = clip(str(exc)) if isinstance(exc, BridgeError) else describe(exc)
                reason = f"cannot translate task {sig.name} ({sig.uuid}) for Celery: {why}"
                log.error("%s; parked in dead letters", reason)
                batch.parks.append((delivery, reason))
                if sig.uuid:
                    batch.failures.append(new_state(sig, FAILURE, error=reason))
                continue
            batch.translated(delivery, sig.uuid, message, track_signature(
                sig, group=None, parent=None, chain_failure=DROP, chord_failure=None, now=now))
            if sig.chord_callback is not None and sig.group_uuid:
                batch.chord_sizes[sig.group_uuid] = sig.group_task_count
        return batch

    def abandon(self, batch: _Batch) -> None:
        self.give_back([*batch.acks, *(d for d, _ in batch.parks)])

    def send(self, batch: _Batch) -> Callable[[], list[Delivery]]:
        """Track, chord sizes, then RECEIVED and the Celery messages (one script call sent
        without waiting, where machinery's backend and the Celery lists share a Redis
        database); the call returned reads it, sends what is left the two-step way, parks
        what was refused and gives the deliveries to ack."""
        try:
            tracking = self.inflight.begin_add(batch.tracked)
        except Exception:
            self.abandon(batch)
            raise
        try:
            for group, size in batch.chord_sizes.items():
                self.results.set_chord_size(group, size)
            if batch.failures:
                with contextlib.suppress(StatesRefused):  # parked either way
                    self.backend.set_states(batch.failures)
            receiving = (self._one_trip.begin(self.target_queue, batch.received)
                         if self._one_trip is not None else None)
        except Exception:
            with contextlib.suppress(Exception):  # read, so its lane is free again
                tracking()
            self.abandon(batch)
            raise

        def finish() -> list[Delivery]:
            try:
                try:
                    refused = self._finish_sending(batch, receiving)
                finally:
                    tracking()  # a refused record fails the batch (given back)
            except Exception:
                self.abandon(batch)
                raise
            for delivery, reason in batch.parks:
                try:
                    self.source.dead_letter(delivery, reason)
                    self.stats["parked"] += 1
                except Exception:
                    log.exception("could not park a message of %s", delivery.queue)
            self.stats["relayed"] += (len(batch.received) + len(batch.unstated)
                                      - len(refused.keys() & batch.sent.keys()))
            return batch.acks
        return finish

    def _finish_sending(self, batch: _Batch, receiving: Callable[[], Written] | None
                        ) -> dict[str, str]:
        """What one trip left (or everything) the two-step way: RECEIVED, then publish the
        messages of the states written; a refused task's message is parked instead (the
        refused ids, with why)."""
        refused: dict[str, str]
        if receiving is None:
            refused, left = {}, batch.received
        else:
            refused, indexes = receiving()
            left = [batch.received[i] for i in indexes]
        if left:
            try:
                self.backend.set_states([state for state, _ in left])
            except StatesRefused as exc:  # the others are written: these are not sent
                refused.update(exc.refused)
        messages = [m for s, m in left if s.task_uuid not in refused] + batch.unstated
        if refused:
            batch.acks = self._drop_refused(refused, batch.sent, batch.acks, batch.parks)
        if messages:
            self.broker.publish_messages(self.target_queue, messages)
        return refused

    def _translate(self, sig: Signature, members: dict[str, list[str]]) -> CeleryMessage:
        quick = quick_message(sig)  # a plain call from Celery: the same message, quicker
        if quick is not None:
            return quick
        for sub in (*(sig.on_success or ()), *(sig.on_error or ()), sig.chord_callback):
            if sub is not None:
                point_at(sub, self.target_queue)
        index = None
        uuids = members.get(sig.group_uuid) if sig.chord_callback is not None else None
        if uuids is not None and sig.uuid in uuids:
            index = uuids.index(sig.uuid)
        return encode_task(from_signature(sig, group_index=index))

    def _group_members(self, groups: set[str]) -> dict[str, list[str]]:
        """TaskUUIDs of each group meta (one MGET); a missing or bad meta is left out."""
        client = getattr(self.backend, "client", None)
        if not groups or client is None:
            return {}
        names = sorted(groups)
        out: dict[str, list[str]] = {}
        for group, raw in zip(names, client.mget(names), strict=True):
            try:
                if raw is not None:
                    out[group] = GroupMeta.from_json(raw).task_uuids or []
            except DecodeError:
                log.warning("group meta %s is not machinery's: chord order unknown", group)
        return out

    def _drop_refused(self, refused: dict[str, str], sent: dict[str, Delivery],
                      acks: list[Delivery], parks: list[tuple[Delivery, str]]
                      ) -> list[Delivery]:
        """The messages whose state the backend refused (their UUID names a key that is not
        a task state): parked, neither sent nor acked."""
        dropped: set[int] = set()
        for uuid, why in refused.items():
            if uuid not in sent:
                continue
            delivery = sent[uuid]
            dropped.add(id(delivery))
            reason = f"cannot relay task {uuid}: {why}"
            log.error("%s; parked in dead letters", reason)
            parks.append((delivery, reason))
        self.inflight.remove(list(refused))
        return [d for d in acks if id(d) not in dropped]

    # ------------------------------------------------------------------ results back

    def read(self, uuids: Sequence[str]) -> dict[str, Outcome]:
        raws = self.results.get_raw_many(uuids)
        out: dict[str, Outcome] = {}
        for uuid, raw in zip(uuids, raws, strict=True):
            if raw is None:
                continue
            try:
                meta = self.results.decode(raw)
            except Exception as exc:
                text = f"undecodable Celery result meta: {exc}"
                out[uuid] = Outcome(False, error=text)
                continue
            status = meta.get("status") if isinstance(meta, dict) else None
            if status == SUCCESS:
                out[uuid] = Outcome(True, value=meta.get("result"))
            elif status in READY_STATES:
                result = meta.get("result")
                out[uuid] = Outcome(False, error=error_text(str(status), result),
                                    exception=result if isinstance(result, dict) else None)
        return out

    def write(self, done: Sequence[tuple[Tracked, Outcome]]) -> None:
        self.backend.set_states([self._state(entry, outcome) for entry, outcome in done])

    def _state(self, entry: Tracked, outcome: Outcome) -> TaskState:
        if not outcome.success:
            return TaskState(entry.uuid, state=FAILURE, error=outcome.error)
        try:
            results = typed_results(entry.name, outcome.value, self.options.schema)
            state = TaskState(entry.uuid, state=SUCCESS, results=list(results))
            state.to_json()  # a value Go's encoder could not write either fails here
            return state
        except (ArgTranslationError, EncodeError) as exc:
            text = f"result of task {entry.name} cannot be given Go types: {exc}"
            log.error("task %s: %s", entry.uuid, text)
            return TaskState(entry.uuid, state=FAILURE, error=text)

    def close(self) -> None:
        for closable in (self.source, self.broker, self.backend, self.results):
            try:
                closable.close()
            except Exception:
                log.debug("closing %r failed", closable, exc_info=True)


def error_text(status: str, result: Any) -> str:
    """A Celery exception (dict) as the text a Go error carries: ``str(exc)``."""
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            text = str(message[0]) if len(message) == 1 else str(tuple(message)) \
                if message else ""
        else:
            text = "" if message is None else str(message)
        text = text or str(result.get("exc_type"))
    else:
        text = str(result)
    return f"revoked: {text}" if status == "REVOKED" else text


def typed_results(name: str, value: Any, schema: TaskSchema | None) -> list[TaskResult]:
    """A Celery result as machinery TaskResults: by the schema's result types, else inferred
    (None → no results, as a Go task returning only an error)."""
    types = schema.result_types(name) if schema is not None else None
    if types is None:
        return [] if value is None else [_inferred(value)]
    if len(types) == 1:
        values = [value]
    elif not types:
        values = []
    elif isinstance(value, list | tuple) and len(value) == len(types):
        values = list(value)
    else:
        raise ArgTranslationError(f"the schema gives {len(types)} results, the task returned "
                                  f"{value!r}"[:300], go_type=None, value=value)
    return [_inferred(v) if t is None else to_result(v, t)
            for v, t in zip(values, types, strict=True)]


def _inferred(value: Any) -> TaskResult:
    """A result typed by inference; what machinery cannot reflect keeps Go's type name."""
    try:
        return to_result(value)
    except ArgTranslationError:
        pass
    if isinstance(value, dict):
        return TaskResult("map[string]interface {}", _plain(value))
    if isinstance(value, list | tuple):
        return TaskResult("[]interface {}", _plain(value))
    if isinstance(value, datetime):
        return TaskResult("time.Time", value)
    return TaskResult("string", str(value))


def _plain(value: Any) -> Any:
    """JSON-ready data for Go's encoder (unknown leaves as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str | bytes | datetime):
        return value
    return str(value)
