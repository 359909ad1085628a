"""Celery → machinery: Celery producers' tasks run by Go (or bridge) machinery workers.

Each Celery message is decoded and translated to a Signature with typed args (by the schema
for the tasks it names, else by inference; by default a value without a Go type is refused),
every routing key in its tree pointed at the machinery queue, then sent as machinery's
SendTask does: PENDING state, then publish (one script where machinery's broker and backend
share a Redis). Chord header tasks wait until the whole header
arrived (its size is the ``.s`` key the Celery producer writes) and go out as machinery's
SendChord does: InitGroup, PENDING for each, publish, each member carrying the callback and
GroupTaskCount, so Go workers trigger the callback. A plain group's tasks go out one by one
(Celery writes no group size): machinery only needs one for chords.

Results go back as Celery metas when machinery's TaskState is SUCCESS (the typed results as
Python: one → the value, several → a list, none → None) or FAILURE (a ``GoError`` carrying
the Go error text). A failed chain member fails the rest of the chain, a failed header task
the chord body (ChordError), as a Celery worker would. An expired task is REVOKED, as a
Celery worker would; a message that cannot be translated gets a FAILURE meta naming the
reason and is parked in the Celery broker's dead letters.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from bridge.backends.base import Backend, new_state, now_utc
from bridge.backends.celery_redis import CeleryRedisBackend, TaskMeta, go_error
from bridge.brokers.base import Broker, CeleryBroker, Delivery
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.endpoints import Endpoint
from bridge.errors import (
    ArgTranslationError,
    BridgeError,
    DecodeError,
    ForeignKeyError,
    StatesRefused,
    describe,
)
from bridge.protocol.celery import CeleryTask, decode_task
from bridge.protocol.celery_canvas import CeleryTranslationError, to_signature
from bridge.protocol.celery_message import group_of, parent_of
from bridge.protocol.celery_quick import QuickCall, quick_signature
from bridge.protocol.machinery import PENDING, Signature, TaskState
from bridge.redis_send import OneTripSend
from bridge.relay.track import (
    CHORD,
    FAIL,
    InFlight,
    Outcome,
    RelayOptions,
    Side,
    Tracked,
    inflight_key,
    point_at,
    track_signature,
)
from bridge.schema import SchemaOrInference
from bridge.types import result_to_python

__all__ = ["CeleryToMachinery", "refused"]

log = logging.getLogger("bridge.relay")

_UNTRANSLATABLE = (CeleryTranslationError, ArgTranslationError, DecodeError)


@dataclass(slots=True)
class _Batch:
    """One fetch, translated (:meth:`CeleryToMachinery.prepare`)."""

    sigs: list[Signature | QuickCall] = field(default_factory=list)
    """What is sent: a quick translation as it is (its JSON written), else a Signature."""
    tracked: list[Tracked] = field(default_factory=list)
    metas: list[TaskMeta] = field(default_factory=list)
    parks: list[tuple[Delivery, str]] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    sent: dict[str, tuple[Delivery, CeleryTask | QuickCall]] = field(default_factory=dict)


@dataclass(slots=True)
class _Chord:
    """Header tasks of one chord, held until all arrived."""

    since: float
    members: dict[int, tuple[Delivery, CeleryTask]] = field(default_factory=dict)
    extra: list[tuple[Delivery, CeleryTask]] = field(default_factory=list)


class CeleryToMachinery(Side):
    """Consumes a Celery queue, publishes to a machinery queue (see the module docstring)."""

    def __init__(self, source: CeleryBroker, source_queue: str, results: CeleryRedisBackend,
                 broker: Broker, backend: Backend, queue: str, inflight: InFlight,
                 options: RelayOptions) -> None:
        super().__init__(inflight, options)
        self.consumer = source
        self.source: CeleryBroker = source
        self.queue = source_queue
        self.results = results
        self.broker = broker
        self.backend = backend
        self.target_queue = queue
        self._typer = SchemaOrInference(options.schema)
        self._chords: dict[str, _Chord] = {}
        self._raw_source: CeleryRedisBroker | None = None
        """Set where plain calls are translated the quick way: the Signature is published
        as encoded (machinery's Redis layout, to a named queue: the broker changes nothing
        before it writes it) and the Celery message is a kombu Redis envelope, fetched
        undecoded (what the quick path does not take is decoded after it)."""
        if isinstance(source, CeleryRedisBroker):
            source.window_take = options.window_take
        if type(broker) is RedisBroker and isinstance(source, CeleryRedisBroker) and queue:
            self._raw_source = source
            source.decode_on_fetch = False
        self._one_trip = OneTripSend.between(backend, broker)
        """PENDING and publish in one script where machinery's broker and backend share a
        Redis server (what it cannot send goes the two-step way)."""

    @classmethod
    def open(cls, source: Endpoint, target: Endpoint, options: RelayOptions,
             name: str) -> CeleryToMachinery:
        results = cast(CeleryRedisBackend, source.open_backend())
        return cls(source.open_broker(), source.queue, results, target.open_broker(),
                   target.open_backend(), target.queue, InFlight(results.client,
                                                                 inflight_key(name)), options)

    # ------------------------------------------------------------------ tasks out

    def relay(self, deliveries: list[Delivery]) -> list[Delivery]:
        return self.send(self.prepare(deliveries))()

    def prepare(self, deliveries: list[Delivery]) -> _Batch:
        """Decode and translate ``deliveries``; what is sent, tracked, stored and parked."""
        batch = _Batch()
        sigs, tracked, metas, parks = batch.sigs, batch.tracked, batch.metas, batch.parks
        acks, sent = batch.acks, batch.sent
        now = datetime.now(UTC)
        since = now.timestamp()
        for fetched in deliveries:
            quick = self._quick(fetched)
            if quick is not None:
                sigs.append(quick)
                sent[quick.id] = (fetched, quick)
                if quick.headers.get("ignore_result") is not True:  # _track's, for a leaf
                    tracked.append(Tracked(quick.id, quick.name, since,
                                           group_of(quick.headers),
                                           parent_of(quick.headers)))
                acks.append(fetched)
                continue
            delivery = self._message_of(fetched)
            if delivery is None:
                continue
            ctask = self._decode(delivery, metas, parks)
            if ctask is None:
                continue
            try:
                expires = ctask.expires
            except DecodeError:
                expires = None
            if expires is not None and now > expires:
                log.info("task %s (%s) expired at %s: REVOKED", ctask.id, ctask.name, expires)
                metas.append(self._meta(ctask, "REVOKED", {
                    "exc_type": "TaskRevokedError", "exc_message": ["expired"],
                    "exc_module": "celery.exceptions"}))
                acks.append(delivery)
                continue
            if ctask.chord is not None and ctask.group:
                self._hold(delivery, ctask)
                continue
            try:
                sig = self._translate(ctask, 0)
            except Exception as exc:  # whatever the message holds: this message's reason
                self._refuse(delivery, ctask, _untranslatable(exc), metas, parks)
                continue
            sigs.append(sig)
            sent[sig.uuid] = (delivery, ctask)
            tracked += self._track(sig, ctask)
            acks.append(delivery)
        return batch

    def abandon(self, batch: _Batch) -> None:
        self.give_back([*batch.acks, *(d for d, _ in batch.parks)])

    def send(self, batch: _Batch) -> Callable[[], list[Delivery]]:
        """Track, then send the batch's tasks without waiting for machinery's broker; the
        call returned waits, parks what was refused and gives the deliveries to ack."""
        try:
            sending = self._send_begin(batch.sigs, batch.tracked, batch.metas, [])
        except Exception:
            self.abandon(batch)
            raise

        def finish() -> list[Delivery]:
            try:
                refused_states = sending()
            except Exception:
                self.abandon(batch)
                raise
            acks = self._drop_refused(refused_states, batch.sent, batch.acks, batch.parks)
            self._park(batch.parks)
            self.stats["relayed"] += len(batch.sigs) - len(refused_states)
            return acks
        return finish

    def _quick(self, delivery: Delivery) -> QuickCall | None:
        """A plain call that needs no expiry, chord or schema check, translated the quick
        way (bridge.protocol.celery_quick: the same Signature); else None."""
        if self._raw_source is None:
            return None
        quick = quick_signature(delivery.body, self.target_queue, self.options.accept,
                                self.options.schema)
        if (quick is None or quick.tag != delivery.tag
                or quick.headers.get("expires") is not None):
            return None
        return quick

    def _message_of(self, delivery: Delivery) -> Delivery | None:
        """``delivery`` with its kombu message (fetched undecoded: read now, or parked by
        the broker, None, when it is not a kombu envelope of its tag)."""
        if self._raw_source is None or delivery.message is not None:
            return delivery
        return self._raw_source.decode(delivery)

    def _decode(self, delivery: Delivery, metas: list[TaskMeta],
                parks: list[tuple[Delivery, str]]) -> CeleryTask | None:
        message = delivery.message
        if message is None:
            parks.append((delivery, "not a kombu message"))
            return None
        try:
            return decode_task(message, accept=self.options.accept)
        except DecodeError as exc:
            reason = f"undecodable Celery message: {exc}"
            task_id = message.headers.get("id") if isinstance(message.headers, dict) else None
            if isinstance(task_id, str) and task_id:
                metas.append(TaskMeta(task_id, "FAILURE", refused(exc)))
            parks.append((delivery, reason))
            return None

    def _translate(self, ctask: CeleryTask, group_task_count: int) -> Signature:
        sig = to_signature(ctask, types=self._typer, queue=self.target_queue,
                           group_task_count=group_task_count, strict=self.options.strict)
        if sig.chord_callback is not None and not sig.group_uuid:
            raise CeleryTranslationError("a chord body without a group id cannot be "
                                         "triggered by machinery")
        if sig.headers is None:
            sig.headers = {}
        return point_at(sig, self.target_queue)

    def _track(self, sig: Signature, ctask: CeleryTask) -> list[Tracked]:
        tracked = track_signature(sig, group=ctask.group, parent=ctask.parent_id,
                                  chain_failure=FAIL, chord_failure=CHORD)
        if ctask.headers.get("ignore_result") is True:
            tracked = [t for t in tracked if t.uuid != sig.uuid]
        return tracked

    def _refuse(self, delivery: Delivery, ctask: CeleryTask, exc: BaseException,
                metas: list[TaskMeta], parks: list[tuple[Delivery, str]]) -> None:
        reason = f"cannot translate task {ctask.name} ({ctask.id}) for machinery: {exc}"
        log.error("%s; parked in dead letters", reason)
        metas.append(self._meta(ctask, "FAILURE", refused(exc)))
        parks.append((delivery, reason))

    def _meta(self, ctask: CeleryTask, state: str, result: Any) -> TaskMeta:
        return TaskMeta(ctask.id, state, result, group_id=ctask.group, parent_id=ctask.parent_id)

    def _send(self, sigs: Sequence[Signature | QuickCall], tracked: Sequence[Tracked],
              metas: Sequence[TaskMeta], groups: Sequence[tuple[str, list[str]]]
              ) -> dict[str, str]:
        """Track, InitGroup, PENDING, publish (machinery's SendTask/SendChord order). The
        tasks whose PENDING the backend refused (their id names a key that is not a task
        state) are not published: returned, with why."""
        return self._send_begin(sigs, tracked, metas, groups)()

    def _send_begin(self, sigs: Sequence[Signature | QuickCall], tracked: Sequence[Tracked],
                    metas: Sequence[TaskMeta], groups: Sequence[tuple[str, list[str]]]
                    ) -> Callable[[], dict[str, str]]:
        """:meth:`_send` with the one-trip script calls sent now; the call returned reads
        them and does the rest."""
        tracking = self.inflight.begin_add(tracked)
        try:
            for group_uuid, uuids in groups:
                self.backend.init_group(group_uuid, uuids)
            one_trip = (self._one_trip.begin_many(sigs)
                        if sigs and self._one_trip is not None else None)
        except Exception:
            with contextlib.suppress(Exception):  # read, so its lane is free again
                tracking()
            raise

        def end() -> dict[str, str]:
            try:
                left = sigs if one_trip is None else one_trip()
            finally:
                tracking()  # a refused record fails the batch (given back) like a write
            return self._send_end(left, metas)
        return end

    def _send_end(self, sent: Sequence[Signature | QuickCall], metas: Sequence[TaskMeta]
                  ) -> dict[str, str]:
        """The two-step way for ``sent`` (what one trip did not send), then ``metas``."""
        refused: dict[str, str] = {}
        sigs = [s.signature() if isinstance(s, QuickCall) else s for s in sent]
        if sigs:
            try:
                now = now_utc()
                self.backend.set_states([new_state(s, PENDING, now=now) for s in sigs])
            except StatesRefused as exc:  # the others are written
                refused = exc.refused
                sigs = [s for s in sigs if s.uuid not in refused]
                self.inflight.remove(list(refused))
            if sigs:
                self.broker.publish(sigs)
        if metas:
            self.results.store_many(metas)
        return refused

    def _drop_refused(self, refused: dict[str, str],
                      sent: dict[str, tuple[Delivery, CeleryTask | QuickCall]],
                      acks: list[Delivery], parks: list[tuple[Delivery, str]]
                      ) -> list[Delivery]:
        """The messages whose PENDING was refused: a FAILURE meta each, parked, not acked."""
        if not refused:
            return acks
        metas: list[TaskMeta] = []
        dropped = set()
        for uuid, why in refused.items():
            delivery, call = sent[uuid]
            ctask = (call if isinstance(call, CeleryTask)
                     else CeleryTask(call.name, call.id, headers=call.headers))
            dropped.add(id(delivery))
            self._refuse(delivery, ctask, ForeignKeyError(why), metas, parks)
        self.results.store_many(metas)
        return [d for d in acks if id(d) not in dropped]

    def _park(self, parks: Sequence[tuple[Delivery, str]]) -> None:
        for delivery, reason in parks:
            try:
                self.source.dead_letter(delivery, reason)
                self.stats["parked"] += 1
            except Exception:
                log.exception("could not park a message of %s; it stays unacked",
                              delivery.queue)

    # ------------------------------------------------------------------ chords

    def _hold(self, delivery: Delivery, ctask: CeleryTask) -> None:
        group = cast(str, ctask.group)
        chord = self._chords.setdefault(group, _Chord(time.monotonic()))
        index = ctask.group_index
        if index is None or index in chord.members:
            chord.extra.append((delivery, ctask))
        else:
            chord.members[index] = (delivery, ctask)

    def held(self) -> list[Delivery]:
        return [d for c in self._chords.values()
                for d, _ in (*c.members.values(), *c.extra)]

    def settle(self) -> list[Delivery]:
        """Send every chord whose header is complete (size from Celery's ``.s`` key); fail
        the ones still incomplete after ``chord_timeout``."""
        if not self._chords:
            return []
        groups = list(self._chords)
        sizes = self.results.client.mget([self.results.group_key(g, ".s") for g in groups])
        acks: list[Delivery] = []
        for group, raw in zip(groups, sizes, strict=True):
            chord = self._chords[group]
            size = int(raw) if raw else None
            parts = len(chord.members) + len(chord.extra)
            if size is not None and parts >= size:
                acks += self._send_chord(group, chord, size)
            elif time.monotonic() - chord.since > self.options.chord_timeout:
                acks += self._fail_chord(group, chord, CeleryTranslationError(
                    f"chord {group}: {parts} header task(s) of "
                    f"{size if size is not None else 'an unknown number'} arrived in "
                    f"{self.options.chord_timeout:.0f}s"))
        return acks

    def _send_chord(self, group: str, chord: _Chord, size: int) -> list[Delivery]:
        parts = [chord.members[i] for i in sorted(chord.members)] + chord.extra
        if len(parts) != size or sorted(chord.members) != list(range(size)):
            return self._fail_chord(group, chord, CeleryTranslationError(
                f"chord {group}: header tasks do not carry group_index 0..{size - 1}"))
        try:
            sigs = [self._translate(ctask, size) for _, ctask in parts]
        except Exception as exc:  # whatever a member holds: the chord's reason
            return self._fail_chord(group, chord, _untranslatable(exc))
        tracked = [t for (_, ctask), sig in zip(parts, sigs, strict=True)
                   for t in self._track(sig, ctask)]
        del self._chords[group]
        deliveries = [d for d, _ in parts]
        try:
            refused_states = self._send(sigs, tracked, [], [(group, [s.uuid for s in sigs])])
        except Exception:
            self.give_back(deliveries)
            raise
        parks: list[tuple[Delivery, str]] = []
        deliveries = self._drop_refused(refused_states, {
            sig.uuid: part for sig, part in zip(sigs, parts, strict=True)}, deliveries, parks)
        self._park(parks)
        self.stats["relayed"] += len(sigs) - len(refused_states)
        log.info("chord %s: %d header tasks sent to %s", group, size, self.target_queue)
        return deliveries

    def _fail_chord(self, group: str, chord: _Chord, exc: BaseException) -> list[Delivery]:
        """Every header task FAILURE, the body ChordError, all parked."""
        del self._chords[group]
        parts = [*chord.members.values(), *chord.extra]
        metas: list[TaskMeta] = []
        parks: list[tuple[Delivery, str]] = []
        for delivery, ctask in parts:
            self._refuse(delivery, ctask, exc, metas, parks)
        body = (parts[0][1].chord or {}) if parts else {}
        body_id = (body.get("options") or {}).get("task_id")
        if isinstance(body_id, str) and body_id:
            text = f"chord {group} could not be relayed: {exc}"
            metas.append(TaskMeta(body_id, "FAILURE", {
                "exc_type": "ChordError", "exc_message": [text],
                "exc_module": "celery.exceptions"}, group_id=group))
        self.results.store_many(metas)
        self._park(parks)
        return []

    # ------------------------------------------------------------------ results back

    def read(self, uuids: Sequence[str]) -> dict[str, Outcome]:
        try:
            states = self.backend.get_completed_states(uuids)
        except DecodeError:
            states = [self._one_state(u) for u in uuids]
        out: dict[str, Outcome] = {}
        for uuid, state in zip(uuids, states, strict=True):
            if state is not None and state.is_completed():
                out[uuid] = _outcome(state)
        return out

    def _one_state(self, uuid: str) -> TaskState | None:
        try:
            return self.backend.get_state(uuid)
        except DecodeError as exc:
            return TaskState(uuid, state="FAILURE", error=f"undecodable machinery state: {exc}")

    def write(self, done: Sequence[tuple[Tracked, Outcome]]) -> None:
        metas = [_meta(entry, outcome) for entry, outcome in done]
        try:
            self.results.store_many(metas)
            return
        except (TypeError, ValueError):
            pass
        for meta in metas:  # one result Celery's serializer refuses must not block the rest
            try:
                self.results.store_many([meta])
            except (TypeError, ValueError) as exc:
                self.results.store_many([TaskMeta(meta.task_id, "FAILURE", {
                    "exc_type": "EncodeError", "exc_message": [str(exc)],
                    "exc_module": "kombu.exceptions"}, group_id=meta.group_id,
                    parent_id=meta.parent_id)])

    def close(self) -> None:
        for closable in (self.source, self.broker, self.backend, self.results):
            try:
                closable.close()
            except Exception:
                log.debug("closing %r failed", closable, exc_info=True)


def _untranslatable(exc: Exception) -> Exception:
    """``exc`` as a reason to refuse a message: our own errors as they are, anything else
    (a value the translation did not foresee) named by its type and text."""
    return exc if isinstance(exc, _UNTRANSLATABLE) else CeleryTranslationError(describe(exc))


def refused(exc: BaseException, text: str = "") -> dict[str, Any]:
    """Celery's exception dict for a bridge error. Its module is one no client imports, so
    every Celery client rebuilds it as an exception of that name carrying the text."""
    return {"exc_type": type(exc).__name__, "exc_message": [text or str(exc)],
            "exc_module": "mbridge.relay"}


def _outcome(state: TaskState) -> Outcome:
    """A completed machinery state as an outcome: typed results as Python values."""
    if state.is_failure():
        return Outcome(False, error=state.error, exception=go_error(state.error))
    try:
        values = [result_to_python(r) for r in state.results or () if r is not None]
    except BridgeError as exc:
        text = f"result of {state.task_uuid} cannot be read: {exc}"
        return Outcome(False, error=text, exception=refused(exc, text))
    value = None if not values else values[0] if len(values) == 1 else values
    return Outcome(True, value=value)


def _meta(entry: Tracked, outcome: Outcome) -> TaskMeta:
    if outcome.success:
        return TaskMeta(entry.uuid, "SUCCESS", outcome.value, group_id=entry.group,
                        parent_id=entry.parent)
    return TaskMeta(entry.uuid, "FAILURE", outcome.exception or go_error(outcome.error),
                    group_id=entry.group, parent_id=entry.parent)
