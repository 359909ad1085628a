"""The relay's parts both directions share: options, the :class:`Side` contract, and the
bookkeeping of which task ids it still owes a result for, kept in Redis.

Every id a client on the producing side may wait on (the task, chain members and links
with an id, chord callbacks, errbacks) gets a :class:`Tracked` record in one Redis hash,
``bridge:relay:<name>:inflight`` (field = task id, value = the record as JSON), written
*before* the task is published. The hash is the truth: a restarted relay reloads it and
carries the results of tasks that ended while it was down. A record is removed after its
result was written, so a crash in between writes the same result again (idempotent).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, cast

import msgspec
import redis

from bridge.brokers.base import Consumer, Delivery
from bridge.outage import is_outage
from bridge.protocol.machinery import Signature
from bridge.redislane import Lane
from bridge.schema import TaskSchema

log = logging.getLogger("bridge.relay")

__all__ = ["CHORD", "DROP", "FAIL", "InFlight", "Outcome", "RelayOptions", "Side", "Tracked",
           "chord_error", "inflight_key", "point_at", "track_signature"]

FAIL, CHORD, DROP = "fail", "chord", "drop"
"""What a failure does to a dependent id: the same failure, a ChordError, or forget it."""
_HSCAN_COUNT = 1000
_encode = msgspec.json.Encoder().encode  # compact JSON, UTF-8 (read back by json.loads)


@dataclass(slots=True)
class Tracked:
    """One task id the relay carries a result back for."""

    uuid: str
    name: str
    since: float
    group: str | None = None
    parent: str | None = None
    on_failure: Sequence[tuple[str, str]] = ()
    """Dependents and what a failure of this task does to them (FAIL, CHORD, DROP)."""
    on_success: Sequence[str] = ()
    """Dependents that can no longer run once this task succeeded (errbacks): forgotten.
    Both are the shared empty tuple for a leaf, most entries: a backlog's entries live
    long, and each list would be one more object every collection walks (two lists were
    two thirds of what the relay's young collections walked)."""

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"n": self.name, "t": self.since}
        if self.group:
            data["g"] = self.group
        if self.parent:
            data["p"] = self.parent
        if self.on_failure:
            data["f"] = [list(pair) for pair in self.on_failure]
        if self.on_success:
            data["s"] = self.on_success
        return _encode(data)

    @classmethod
    def from_json(cls, uuid: str, raw: bytes) -> Tracked:
        data = json.loads(raw)
        return cls(uuid, str(data.get("n", "")), float(data.get("t", 0.0)),
                   data.get("g"), data.get("p"),
                   [(str(u), str(how)) for u, how in data.get("f", [])] or (),
                   [str(u) for u in data.get("s", [])] or ())


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task ended, in terms both sides understand."""

    success: bool
    value: Any = None
    """SUCCESS: the result (forward: Python values; reverse: the Celery result)."""
    error: str = ""
    """FAILURE: the error text (Go's ``TaskState.Error``)."""
    exception: dict[str, Any] | None = None
    """FAILURE: Celery's exception dict (exc_type, exc_message, exc_module)."""


def track_signature(sig: Signature, *, group: str | None, parent: str | None,
                    chain_failure: str, chord_failure: str | None,
                    now: float | None = None) -> list[Tracked]:
    """Records for every id in ``sig``'s tree: the task, OnSuccess (chain members, links),
    OnError (errbacks) and the chord callback, each once."""
    now = time.time() if now is None else now
    if not (sig.on_success or sig.on_error or sig.chord_callback):  # a leaf: itself alone
        return [Tracked(sig.uuid, sig.name, now, group, parent)] if sig.uuid else []
    out: dict[str, Tracked] = {}

    def visit(s: Signature, parent_id: str | None, group_id: str | None) -> None:
        on_failure: list[tuple[str, str]] = []
        on_success: list[str] = []
        for sub in s.on_success or ():
            if sub is not None:
                visit(sub, s.uuid or None, None)
                if sub.uuid:
                    on_failure.append((sub.uuid, chain_failure))
        for sub in s.on_error or ():
            if sub is not None:
                visit(sub, s.uuid or None, None)
                if sub.uuid:
                    on_success.append(sub.uuid)
        callback = s.chord_callback
        if callback is not None:
            visit(callback, None, s.group_uuid or None)
            if callback.uuid and chord_failure is not None:
                on_failure.append((callback.uuid, chord_failure))
        if s.uuid and s.uuid not in out:
            out[s.uuid] = Tracked(s.uuid, s.name, now, group_id, parent_id,
                                  on_failure or (), on_success or ())

    visit(sig, parent, group)
    return list(out.values())


def point_at(sig: Signature, queue: str) -> Signature:
    """Route every signature of ``sig``'s tree to ``queue`` (the other system's queue names
    mean nothing here, and may even name a list of the other layout)."""
    sig.routing_key = queue
    for sub in (*(sig.on_success or ()), *(sig.on_error or ()), sig.chord_callback):
        if sub is not None:
            point_at(sub, queue)
    return sig


class InFlight:
    """The in-flight hash, mirrored in memory (this process is its only writer)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self._lane = Lane(client)
        self.entries: dict[str, Tracked] = {}

    def load(self) -> int:
        """Read the hash (HSCAN); returns how many records it held."""
        self.entries.clear()
        for field_, raw in self.client.hscan_iter(self.key, count=_HSCAN_COUNT):
            uuid = field_.decode() if isinstance(field_, bytes) else str(field_)
            try:
                self.entries[uuid] = Tracked.from_json(uuid, cast(bytes, raw))
            except (ValueError, TypeError, AttributeError):
                self.client.hdel(self.key, uuid)  # not ours / damaged: nothing to carry
        return len(self.entries)

    def add(self, entries: Sequence[Tracked]) -> None:
        """Record ``entries`` (one HSET); a known id keeps its first record."""
        self.begin_add(entries)()

    def begin_add(self, entries: Sequence[Tracked]) -> Callable[[], None]:
        """:meth:`add` with the HSET sent now and its reply read by the call returned (which
        raises a refused write, forgetting those entries), so the relay does not wait for
        Redis while it runs the next take; the entries are known here at once. On a busy
        lane the client's way, done before this returns."""
        fresh = [e for e in entries if e.uuid not in self.entries]
        if not fresh:
            return _nothing
        records = {e.uuid: e.to_json() for e in fresh}
        pending = self._lane.begin([("HSET", self.key, *chain.from_iterable(records.items()))])
        if pending is None:  # the lane is busy or unavailable: the client's way
            self.client.hset(self.key, mapping=records)  # type: ignore[arg-type]
        self.entries.update((entry.uuid, entry) for entry in fresh)
        if pending is None:
            return _nothing

        def read() -> None:
            try:
                (reply,) = pending.read()
                if isinstance(reply, Exception):
                    raise reply
            except Exception:
                for entry in fresh:
                    self.entries.pop(entry.uuid, None)
                raise
        return read

    def remove(self, uuids: Iterable[str]) -> None:
        """Forget ``uuids`` (one HDEL)."""
        gone = [u for u in set(uuids) if self.entries.pop(u, None) is not None]
        if gone:
            self.client.hdel(self.key, *gone)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self.entries


def _nothing() -> None:
    return None


def inflight_key(name: str) -> str:
    """The Redis hash of a relay's ids in flight."""
    return f"bridge:relay:{name}:inflight"


@dataclass(slots=True)
class RelayOptions:
    """How a relay runs (``mbridge relay`` flags)."""

    batch: int = 500
    """Messages fetched and published per round trip."""
    schema: TaskSchema | None = None
    """Go types of args (Celery → machinery) and of results (machinery → Celery)."""
    strict: bool = True
    """Celery → machinery: refuse args a Go worker could not take (untyped values)."""
    poll_interval: float = 0.2
    """Seconds between two reads of the states of the tasks in flight."""
    fetch_timeout: float = 1.0
    """Longest wait on an empty queue."""
    max_age: float = 7 * 86400.0
    """Forget an id with no result after this many seconds (its result expired)."""
    chord_timeout: float = 600.0
    """Celery → machinery: fail a chord whose header tasks did not all arrive in time."""
    name: str = ""
    """The bookkeeping's name (default: from both endpoints' protocols and queues)."""
    accept: tuple[str, ...] = ("json", "msgpack")
    """Celery → machinery: the serializers taken from Celery messages (a Celery app's
    accept_content); others are refused and parked."""
    window_take: bool = False
    """Celery → machinery on Redis: take a backlog by the window take
    (:mod:`bridge.brokers.celery_redis_window`): redis-server spends 7-11 µs a message less
    and the relay's processes more. Set where relay processes run side by side
    (``--processes`` 2 or more), as they scale with cores and redis-server's one thread
    does not; one process alone is bound by its own CPU (bench/results/
    issue13-2026-12-06f.txt)."""


class Side(ABC):
    """One direction of a relay: what it consumes, how it translates, where results are."""

    consumer: Consumer
    queue: str

    def __init__(self, inflight: InFlight, options: RelayOptions) -> None:
        self.inflight = inflight
        self.options = options
        self.stats: Counter[str] = Counter()
        self._unreturned: list[Delivery] = []
        """Deliveries to give back that the broker could not take yet (unreachable)."""

    @abstractmethod
    def relay(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Translate and publish ``deliveries`` (tracking their ids first); park what cannot
        be translated. Returns the deliveries to acknowledge (published or done)."""

    def prepare(self, deliveries: list[Delivery]) -> Any:
        """:meth:`relay`'s first half: decode and translate, writing nothing yet; what
        :meth:`send` takes. (By default: the deliveries, relayed by :meth:`send`.)"""
        return deliveries

    def send(self, prepared: Any) -> Callable[[], list[Delivery]]:
        """:meth:`relay`'s second half: write what ``prepared`` holds, as far as the brokers
        go without a wait; the call returned waits for them and gives the deliveries to
        acknowledge. (By default: relayed now.)"""
        acks = self.relay(prepared)
        return lambda: acks

    def abandon(self, prepared: Any) -> None:
        """Give back to their queue the deliveries ``prepared`` holds (it will not be sent).
        """
        self.give_back(prepared)

    @property
    def unreturned(self) -> list[Delivery]:
        """Deliveries waiting to be given back (the broker was unreachable)."""
        return list(self._unreturned)

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Requeue ``deliveries``. While the broker is unreachable the rest are kept (held,
        unacked) and given back by :meth:`maintain` once it answers: one failed call, not
        a retrying call each."""
        pending, self._unreturned = [*self._unreturned, *deliveries], []
        for index, delivery in enumerate(pending):
            try:
                self.consumer.requeue(delivery)
            except Exception as exc:
                if is_outage(exc):
                    self._unreturned = pending[index:]
                    log.debug("%d message(s) of %s to give back once the broker answers",
                              len(self._unreturned), delivery.queue)
                    return
                log.exception("could not give a message back to %s", delivery.queue)

    def settle(self) -> list[Delivery]:
        """Per-turn upkeep (held chord headers); deliveries that can be acknowledged now."""
        return []

    def held(self) -> list[Delivery]:
        """Deliveries held across turns, given back when the relay stops."""
        return []

    @abstractmethod
    def read(self, uuids: Sequence[str]) -> dict[str, Outcome]:
        """The outcomes of the ids that ended (one round trip)."""

    @abstractmethod
    def write(self, done: Sequence[tuple[Tracked, Outcome]]) -> None:
        """Store the outcomes in the producing side's result backend (one round trip)."""

    def maintain(self) -> None:
        if self._unreturned:
            self.give_back([])
            if self._unreturned:  # still unreachable: the turn waits the outage out
                raise ConnectionError("the broker does not take messages back yet")
        self.consumer.maintain()

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


def chord_error(failed: str, outcome: Outcome) -> Outcome:
    """What Celery stores for a chord body when a header task failed."""
    text = f"Dependency {failed} raised {outcome.error}"
    return Outcome(False, error=text, exception={
        "exc_type": "ChordError", "exc_message": [text], "exc_module": "celery.exceptions"})
