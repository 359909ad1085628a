"""machinery's MongoDB result backend (``backends/mongo/mongodb.go``, v1 and v2).

Layout, shared with Go workers on the same server (documents: ``mongodb_documents``):

* database ``machinery`` (or ``config.mongodb.database``; like Go, never the URI's path),
  collections ``tasks`` and ``group_metas``;
* each state is an upsert ``{$set: fields}`` on ``{_id: task UUID}`` with the fields of Go's
  ``SetState*`` (so earlier fields stay: Mongo's ``$set`` is the merge); SUCCESS and FAILURE
  also set ``delete_at = now + results_expire_in`` (raw: 0 means now), as v2.0.14+ does
  (v1 readers ignore the field);
* a group meta is inserted once, ``InsertOne(GroupMeta)``;
* on first use, v2.0.14+'s index: ``delete_at`` with ``expireAfterSeconds: 0``. A server that
  cannot make TTL indexes (FerretDB v1: NotImplemented, code 238) or refuses the index gets a
  one-time warning and the backend works on (Go drops that error silently): results then
  never expire there.

**Chord trigger.** Go's ``TriggerChord`` is ``UpdateOne({_id, chord_triggered: false},
{$set: {chord_triggered: true}})`` and ignores whether it matched: a Go worker that saw the
group complete *always* fires. Ours is the same update as a ``find_one_and_update`` that
does look: after it, any Go update matches nothing. To leave the chord to a Go worker that
saw the group complete about when we did, we first check the flag, wait ``chord_grace``
seconds (the time a Go worker needs from its SUCCESS write to its update), then update: a
Go update in that time makes ours match nothing. The winner of the update then inserts
``{_id: group UUID}`` into ``bridge_chord_claims``: a unique key is atomic on every server,
conditional updates are not on FerretDB v1 (two of them can both match), so this insert is
what makes exactly one Python caller win there. What remains is Go's own race (two Go
workers both fire) and a Go worker stalled for longer than ``chord_grace`` between seeing
the group complete and its update.

**Batches.** ``set_states`` is ordered bulk writes of up to 64 updates (FerretDB v1 hangs
on an update command of 100 statements that match documents).

**Upserts.** Two first writes of one task (a Go producer's PENDING and our RECEIVED) can
both try to insert; the loser's duplicate-key error is retried once as the update it now is
(Go reports it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from bridge.backends.base import Backend, now_utc
from bridge.backends.common import GroupMetaMissing, members_in_order, unreachable
from bridge.backends.mongodb_documents import (
    group_meta_document,
    group_meta_from_document,
    state_fields,
    state_from_document,
)
from bridge.config import Config, ConfigError, redact_url
from bridge.errors import EncodeError, StatesRefused
from bridge.protocol.machinery import GroupMeta, TaskState

__all__ = ["CHORD_CLAIMS", "DEFAULT_CHORD_GRACE", "TTL_NOT_IMPLEMENTED", "MongoBackend"]

log = logging.getLogger(__name__)

DEFAULT_CHORD_GRACE = 0.5
"""Seconds a chord trigger waits for a Go worker that saw the group complete too."""

CHORD_CLAIMS = "bridge_chord_claims"
"""Our collection beside Go's: one ``{_id: group UUID, delete_at}`` per triggered chord."""

TTL_NOT_IMPLEMENTED = 238
"""MongoDB's NotImplemented code: FerretDB v1's answer to ``expireAfterSeconds``."""

_CONNECT_TIMEOUT_MS = 10_000  # Go's dial: context.WithTimeout(10 s)
_SOCKET_TIMEOUT_MS = 60_000  # Go waits forever; a server that stops answering is an outage
_PING_TIMEOUT = 5.0
_BULK_LIMIT = 64  # FerretDB v1 (SQLite) hangs on an update of 100 statements that match
_GO_NO_DOCUMENT = "mongo: no documents in result"
_DOCUMENTS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_MS)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


class MongoBackend(Backend):
    """machinery's MongoDB result backend, field-compatible with Go workers sharing it."""

    def __init__(self, url: str, config: Config | None = None, *,
                 chord_grace: float = DEFAULT_CHORD_GRACE,
                 client: pymongo.MongoClient[dict[str, Any]] | None = None) -> None:
        cfg = config or Config()
        self._url = url
        self.expires_in = cfg.results_expire_in  # raw, as Go's delete_at uses it
        self.chord_grace = chord_grace
        self.database = cfg.mongodb_database
        self._client = client if client is not None else _connect(url)
        db = self._client.get_database(self.database, codec_options=_DOCUMENTS)
        self._tasks: Collection[dict[str, Any]] = db["tasks"]
        self._groups: Collection[dict[str, Any]] = db["group_metas"]
        self._claims: Collection[dict[str, Any]] = db[CHORD_CLAIMS]
        self.claim_expires_in = cfg.results_expire_seconds
        self._indexed = False
        self._index_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> MongoBackend:
        """The backend at ``cfg.result_backend``."""
        return cls(cfg.result_backend, cfg)

    def __repr__(self) -> str:
        return f"MongoBackend({redact_url(self._url)!r}, database={self.database!r})"

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        """One ``ping`` command, five seconds at most."""
        try:
            with pymongo.timeout(_PING_TIMEOUT):
                self._client.admin.command("ping")
        except OperationFailure as exc:
            if exc.code in (13, 18):  # Unauthorized, AuthenticationFailed
                raise unreachable(self._url, f"refused: {exc.details or exc}",
                                  "fix the user and password in result_backend") from None
            raise
        except PyMongoError as exc:
            raise unreachable(self._url, _server_error(exc),
                              "start MongoDB there or fix result_backend") from None

    # ----------------------------------------------------------------- task states

    def set_state(self, state: TaskState) -> None:
        """Go's SetState*: an upsert of that state's fields."""
        self._ensure_index()
        update = {"$set": state_fields(state, self._expires_at())}
        try:
            self._tasks.update_one({"_id": state.task_uuid}, update, upsert=True)
        except DuplicateKeyError:  # another first write inserted it meanwhile
            self._tasks.update_one({"_id": state.task_uuid}, update, upsert=True)

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Ordered bulk writes of up to 64 updates: each task's states land in order, each its
        own update."""
        if not states:
            return
        self._ensure_index()
        expires_at = self._expires_at()
        refused: dict[str, str] = {}
        writes: list[tuple[TaskState, UpdateOne]] = []
        for state in states:
            try:
                fields = state_fields(state, expires_at)
            except EncodeError as exc:  # a value BSON cannot hold: this state alone
                refused.setdefault(state.task_uuid, str(exc))
                continue
            writes.append((state, UpdateOne({"_id": state.task_uuid}, {"$set": fields},
                                            upsert=True)))
        for start in range(0, len(writes), _BULK_LIMIT):
            chunk = writes[start:start + _BULK_LIMIT]
            try:
                self._tasks.bulk_write([update for _, update in chunk], ordered=True)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or [{}]
                if errors[0].get("code") != 11000:
                    raise
                for state, _ in chunk[errors[0]["index"]:]:  # ordered: it stopped there
                    self.set_state(state)
        if refused:  # every other state is written
            raise StatesRefused(refused)

    def get_state(self, task_uuid: str) -> TaskState | None:
        doc = self._tasks.find_one({"_id": task_uuid})
        return None if doc is None else state_from_document(doc)

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One ``find`` with ``$in``, in the given order; None where there is none."""
        if not task_uuids:
            return []
        docs = self._tasks.find({"_id": {"$in": list(dict.fromkeys(task_uuids))}})
        found = {state.task_uuid: state for state in map(state_from_document, docs)}
        return [found.get(uuid) for uuid in task_uuids]

    def purge_state(self, task_uuid: str) -> None:
        self._tasks.delete_one({"_id": task_uuid})

    # ----------------------------------------------------------------- groups and chords

    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        self._ensure_index()
        meta = GroupMeta(group_uuid, list(task_uuids), created_at=now_utc())
        self._groups.insert_one(group_meta_document(meta))

    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """Members in SUCCESS or FAILURE == count (missing members are not completed)."""
        uuids = self._group_meta(group_uuid).task_uuids or []
        states = self._tasks.find({"_id": {"$in": uuids}}, {"state": 1})
        done = sum(1 for doc in states if doc.get("state") in ("SUCCESS", "FAILURE"))
        return done == group_task_count

    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """Member states in TaskUUIDs order (Go: the collection's order); a missing one
        raises MemberStateMissing (Go leaves it out)."""
        uuids = self._group_meta(group_uuid).task_uuids or []
        return members_in_order(group_uuid, uuids, self.get_states(uuids), "MongoDB")

    def trigger_chord(self, group_uuid: str) -> bool:
        """True for exactly one caller: a grace for Go, then one atomic claim (module doc)."""
        meta = self._groups.find_one({"_id": group_uuid}, {"chord_triggered": 1})
        if meta is None:
            raise GroupMetaMissing(group_uuid, "MongoDB", _GO_NO_DOCUMENT)
        if meta.get("chord_triggered"):
            return False
        if self.chord_grace > 0:
            time.sleep(self.chord_grace)
        before = self._groups.find_one_and_update(
            {"_id": group_uuid, "chord_triggered": False},
            {"$set": {"chord_triggered": True}},
            return_document=ReturnDocument.BEFORE)  # FerretDB v1: no projection here
        if before is None:
            log.info("group %s: another worker triggered its chord meanwhile; leaving it "
                     "to that one", group_uuid)
            return False
        try:
            self._claims.insert_one({"_id": group_uuid, "delete_at": DatetimeMS(
                (time.time_ns() + self.claim_expires_in * 1_000_000_000) // 1_000_000)})
        except DuplicateKeyError:
            return False
        log.debug("group %s: chord triggered here", group_uuid)
        return True

    def purge_group_meta(self, group_uuid: str) -> None:
        self._groups.delete_one({"_id": group_uuid})

    # ----------------------------------------------------------------- internals

    def _expires_at(self) -> int:
        """v2's ``delete_at``: now + results_expire_in seconds, in Unix nanoseconds."""
        return time.time_ns() + self.expires_in * 1_000_000_000

    def _group_meta(self, group_uuid: str) -> GroupMeta:
        doc = self._groups.find_one({"_id": group_uuid})
        if doc is None:
            raise GroupMetaMissing(group_uuid, "MongoDB", _GO_NO_DOCUMENT)
        return group_meta_from_document(doc)

    def _ensure_index(self) -> None:
        """v2.0.14+'s TTL index on ``delete_at``, once (refusals are a one-time warning)."""
        if self._indexed:
            return
        with self._index_lock:
            if self._indexed:
                return
            try:
                for collection in (self._tasks, self._claims):
                    collection.create_indexes([IndexModel(
                        [("delete_at", ASCENDING)], background=True, expireAfterSeconds=0)])
            except OperationFailure as exc:
                if exc.code == TTL_NOT_IMPLEMENTED:
                    _warn_once(self._url, "result backend %s cannot make TTL indexes (%s): "
                               "task states written there never expire (FerretDB v1 lacks "
                               "them; machinery's Go backend ignores this too)",
                               redact_url(self._url), exc.details.get("errmsg", exc)
                               if exc.details else exc)
                else:
                    _warn_once(self._url, "result backend %s refused the delete_at TTL index "
                               "(%s): task states may not expire", redact_url(self._url), exc)
            self._indexed = True


def _server_error(exc: PyMongoError) -> str:
    """pymongo's error without its timeouts and topology description."""
    text = str(exc).split(", Timeout: ")[0]
    return re.sub(r" \(configured timeouts: [^)]*\)", "", text)


def _connect(url: str) -> pymongo.MongoClient[dict[str, Any]]:
    """A client for ``url`` (no I/O yet); a URL pymongo cannot use is a ConfigError."""
    try:
        return pymongo.MongoClient(url, connect=False, serverSelectionTimeoutMS=_CONNECT_TIMEOUT_MS,
                                   connectTimeoutMS=_CONNECT_TIMEOUT_MS,
                                   socketTimeoutMS=_SOCKET_TIMEOUT_MS)
    except (ConfigurationError, ValueError) as exc:  # a bad port is a plain ValueError
        raise ConfigError(f"result_backend {redact_url(url)!r}: {exc}",
                          key="result_backend") from None
