"""The MongoDB result backend against a real MongoDB-wire server (FerretDB v1 here).

The documents expected below follow ``backends/mongo/mongodb.go`` and mongo-driver v1.17's
encoders (the versions the harness pins); tests/interop/test_live_memcache_mongodb.py
compares them field by field, BSON type by BSON type, with what a running Go worker writes.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest
from bson.binary import Binary
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from bridge.app import backend_from_config
from bridge.backends.base import new_state
from bridge.backends.common import GroupMetaMissing
from bridge.backends.mongodb import MongoBackend
from bridge.config import Config, ConfigError, MongoDBConfig
from bridge.errors import EncodeError, StatesRefused, Unreachable
from bridge.localredis import free_port
from bridge.protocol.gotime import GO_ZERO_TIME, GoTime
from bridge.protocol.machinery import (
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Signature,
    TaskResult,
    new_uuid,
)
from bridge.result import AsyncResult, TaskFailed
from bridge.types import to_result
from tests.backend_groups import (
    Ours,
    check_group_completion,
    go_mongo_trigger_chord,
    python_callers_race,
)
from tests.backend_servers import MongoServer

RAW = CodecOptions(document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_MS)


@pytest.fixture
def database() -> str:
    return f"machinery_{uuidlib.uuid4().hex[:10]}"


@pytest.fixture
def db(mongo_server: MongoServer, database: str) -> Iterator[Database[dict[str, Any]]]:
    """The raw database the backend writes (what a Go worker reads), dropped afterwards."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url)
    yield client.get_database(database, codec_options=RAW)
    client.drop_database(database)
    client.close()


def config(url: str, database: str, expire: int = 600) -> Config:
    return Config(result_backend=url, results_expire_in=expire,
                  mongodb=MongoDBConfig(database=database))


@pytest.fixture
def backend(mongo_server: MongoServer, database: str,
            db: Database[dict[str, Any]]) -> Iterator[MongoBackend]:
    b = MongoBackend(mongo_server.url, config(mongo_server.url, database), chord_grace=0.05)
    yield b
    b.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- URLs, ping


def test_url_forms_and_database(mongo_server: MongoServer,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    url = mongo_server.url.rstrip("/")
    for given, database in [(Config(result_backend=url + "/other"), "machinery"),
                            (config(url, "mine"), "mine"),
                            (Config(result_backend="mongodb+srv://cluster.example.com/"),
                             "machinery")]:
        backend = backend_from_config(given)
        assert isinstance(backend, MongoBackend) and backend.database == database
        backend.close()
    with pytest.raises(ConfigError, match=r"^result_backend 'mongodb://h:port/': Port contains"):
        MongoBackend("mongodb://h:port/")
    for name in [n for n in sys.modules if n.partition(".")[0] in ("pymongo", "bson")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bridge.backends.mongodb")
    with pytest.raises(ConfigError) as refused:
        backend_from_config(Config(result_backend=url))
    assert str(refused.value) in (
        f"result_backend: the mongodb backend needs {package}, which is not installed: "
        "pip install 'machinery-bridge[mongodb]'" for package in ("pymongo", "bson"))


def test_ping(mongo_server: MongoServer) -> None:
    MongoBackend(mongo_server.url).ping()
    port = free_port()
    down = MongoBackend(f"mongodb://bob:secret@127.0.0.1:{port}/")
    started = time.monotonic()
    with pytest.raises(Unreachable) as refused:
        down.ping()
    assert time.monotonic() - started < 10
    text = str(refused.value)
    assert text == (f"result backend mongodb://bob:***@127.0.0.1:{port}/ is unreachable "
                    f"(127.0.0.1:{port}: [Errno 111] Connection refused): start MongoDB there "
                    "or fix result_backend")
    assert "secret" not in text and "\n" not in text
    down.close()


# --------------------------------------------------------------------------- documents


def test_state_documents_as_go_sets_them(backend: MongoBackend,
                                         db: Database[dict[str, Any]]) -> None:
    sig = Signature(uuid=new_uuid(), name="add")
    before = now_ms()
    backend.set_state_pending(sig)
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None and set(doc) == {"_id", "state", "task_name", "created_at"}
    assert doc["state"] == PENDING and doc["task_name"] == "add"
    assert isinstance(doc["created_at"], DatetimeMS)
    assert before <= int(doc["created_at"]) <= now_ms()
    pending = dict(doc)
    for kind in (RECEIVED, STARTED, RETRY):
        backend.set_state(new_state(sig, kind))
        assert db.tasks.find_one({"_id": sig.uuid}) == {**pending, "state": kind}
    backend.set_state_success(sig, [to_result(5, "int64")])
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None
    assert set(doc) == {"_id", "state", "task_name", "created_at", "results", "delete_at"}
    assert doc["results"] == [{"type": "int64", "value": 5}]
    assert type(doc["results"][0]["value"]) is Int64
    assert isinstance(doc["delete_at"], DatetimeMS)
    assert abs(int(doc["delete_at"]) - (now_ms() + 600_000)) < 5000
    stored = backend.get_state(sig.uuid)
    assert stored is not None and stored.task_name == "add" and stored.results == [
        TaskResult("int64", 5)]
    assert stored.created_at == GoTime.from_unix_nano(int(pending["created_at"]) * 1_000_000)

    failed = Signature(uuid=new_uuid(), name="fail")
    backend.set_state_failure(failed, "boom <&>")
    doc = db.tasks.find_one({"_id": failed.uuid})
    assert doc is not None and set(doc) == {"_id", "state", "error", "delete_at"}
    assert doc["error"] == "boom <&>"
    stored = backend.get_state(failed.uuid)
    assert stored is not None and stored.created_at == GO_ZERO_TIME and stored.task_name == ""
    with pytest.raises(TaskFailed, match=r"^boom <&>$"):
        AsyncResult(failed.uuid, backend).get(timeout=5)


def test_delete_at_uses_the_raw_expiry(mongo_server: MongoServer, database: str,
                                       db: Database[dict[str, Any]]) -> None:
    """v2.0.14+: ``time.Now().Add(ResultsExpireIn)``: 0 is now (not 3600 as elsewhere)."""
    backend = MongoBackend(mongo_server.url, config(mongo_server.url, database, expire=0))
    sig = Signature(uuid=new_uuid(), name="x")
    backend.set_state_success(sig, [])
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None and abs(int(doc["delete_at"]) - now_ms()) < 5000
    assert doc["results"] == []
    backend.close()


# The BSON type mongo-driver v1 gives each Go type (IntEncodeValue, UintCodec, FloatCodec,
# ByteSliceCodec, SliceCodec): what Go's SetStateSuccess stores for a result of that type.
BSON_TYPES: list[tuple[str, Any, Any, type[Any]]] = [
    ("int", 7, 7, int),
    ("int", 2**40, 2**40, Int64),
    ("int8", -8, -8, int), ("int16", 16, 16, int), ("int32", -(2**31), -(2**31), int),
    ("uint8", 255, 255, int), ("uint16", 65535, 65535, int),
    ("int64", 3, 3, Int64), ("uint", 4, 4, Int64), ("uint32", 2**32 - 1, 2**32 - 1, Int64),
    ("uint64", 2**63 - 1, 2**63 - 1, Int64),
    ("float32", 1.1, 1.100000023841858, float), ("float64", 0.1, 0.1, float),
    ("bool", True, True, bool), ("string", "<é>", "<é>", str),
    ("[]byte", b"\x00\xff", b"\x00\xff", bytes),
    ("[]string", ["a", "b"], ["a", "b"], list), ("[]int", [1, 2**40], [1, 2**40], list),
    ("[]float32", [0.5], [0.5], list), ("[]string", None, None, type(None)),
]


@pytest.mark.parametrize(("go_type", "value", "stored", "bson_type"), BSON_TYPES)
def test_result_bson_types(go_type: str, value: Any, stored: Any, bson_type: type[Any],
                           backend: MongoBackend, db: Database[dict[str, Any]]) -> None:
    sig = Signature(uuid=new_uuid(), name="echo")
    backend.set_state_success(sig, [to_result(value, go_type)])
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None
    [result] = doc["results"]
    assert result == {"type": "[]uint8" if go_type == "[]byte" else go_type, "value": stored}
    assert type(result["value"]) is bson_type
    if go_type == "[]int":
        assert [type(v) for v in result["value"]] == [int, Int64]
    assert AsyncResult(sig.uuid, backend).get(timeout=5) == ([] if value is None else stored)


def test_uint64_above_int64_is_refused_as_go_refuses_it(backend: MongoBackend) -> None:
    sig, other = Signature(uuid=new_uuid(), name="echo"), Signature(uuid=new_uuid(), name="e")
    with pytest.raises(EncodeError, match=r"^result 0 \(uint64\): 18446744073709551615 "
                                          r"overflows int64"):
        backend.set_state_success(sig, [to_result(2**64 - 1, "uint64")])
    batch = [new_state(sig, STARTED), new_state(sig, SUCCESS, [to_result([1, 2**63], "[]uint")]),
             new_state(other, SUCCESS, [to_result(1, "uint64")])]
    with pytest.raises(StatesRefused) as refused:  # the others are written
        backend.set_states(batch)
    assert list(refused.value.refused) == [sig.uuid]
    assert "result 0 ([]uint) element 1: 9223372036854775808 overflows" in \
        refused.value.refused[sig.uuid]
    assert [s.state if s else None for s in backend.get_states([sig.uuid, other.uuid])] == \
        [STARTED, SUCCESS]


@pytest.mark.parametrize(("text", "document"), [
    ('{"a":1,"b":[1,{"c":"d"}],"e":null}', {"a": 1.0, "b": [1.0, {"c": "d"}], "e": None}),
    (' {"x": -0, "x": 2.5} trailing', {"x": 2.5}),  # Go's Decoder: one value; last key wins
    ("null", None),  # decodes into the nil map without an error: a "json" null
])
def test_json_object_strings_become_documents(text: str, document: Any, backend: MongoBackend,
                                              db: Database[dict[str, Any]]) -> None:
    """Go's ``decodeResults``: a string result holding a JSON object is stored as one."""
    sig = Signature(uuid=new_uuid(), name="echo")
    backend.set_state_success(sig, [to_result(text, "string")])
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None and doc["results"] == [{"type": "json", "value": document}]
    if isinstance(document, dict):
        assert type(doc["results"][0]["value"]["b" if "b" in document else "x"]) in (list, float)
    assert AsyncResult(sig.uuid, backend).get(timeout=5) == document


@pytest.mark.parametrize("text", ["", "[1]", '"x"', "12", '{"a":', '{"a":1e400}', "{bad}"])
def test_other_strings_stay_strings(text: str, backend: MongoBackend,
                                    db: Database[dict[str, Any]]) -> None:
    sig = Signature(uuid=new_uuid(), name="echo")
    backend.set_state_success(sig, [to_result(text, "string")])
    doc = db.tasks.find_one({"_id": sig.uuid})
    assert doc is not None and doc["results"] == [{"type": "string", "value": text}]


def test_reads_documents_go_wrote(backend: MongoBackend, db: Database[dict[str, Any]]) -> None:
    """Go's own shapes (int32 for an int, binary for []uint8, arrays) read back typed."""
    uuid = new_uuid()
    db.tasks.insert_one({"_id": uuid, "state": SUCCESS, "task_name": "multi", "results": [
        {"type": "int", "value": 7}, {"type": "[]uint8", "value": Binary(b"\x01\x02", 0)},
        {"type": "[]int64", "value": [Int64(1), Int64(2)]}, {"type": "float32", "value": 0.5},
        {"type": "map[string]interface {}", "value": {"k": Int64(1)}},
        {"type": "[]string", "value": None}],
        "created_at": DatetimeMS(1_700_000_000_123), "delete_at": DatetimeMS(0)})
    state = backend.get_state(uuid)
    assert state is not None and state.task_name == "multi"
    assert state.created_at == GoTime.from_unix_nano(1_700_000_000_123_000_000)
    assert AsyncResult(uuid, backend).get(timeout=5) == (7, b"\x01\x02", [1, 2], 0.5,
                                                         {"k": 1}, [])
    assert state.results is not None and state.results[1] == TaskResult("[]uint8", "AQI=")


def test_set_states_in_one_ordered_batch(backend: MongoBackend) -> None:
    sigs = [Signature(uuid=new_uuid(), name="add") for _ in range(4)]
    states = [new_state(s, PENDING) for s in sigs]
    states += [new_state(s, kind) for kind in (RECEIVED, STARTED) for s in sigs]
    states.append(new_state(sigs[0], SUCCESS, [to_result(3, "int64")]))
    backend.set_states(states)
    got = backend.get_states([s.uuid for s in sigs] + ["task_missing", sigs[0].uuid])
    assert [s.state if s else None for s in got] == [SUCCESS, STARTED, STARTED, STARTED, None,
                                                     SUCCESS]
    assert all(s is None or s.task_name == "add" for s in got)  # $set keeps PENDING's fields
    backend.purge_state(sigs[0].uuid)
    assert backend.get_state(sigs[0].uuid) is None


def test_large_batches(backend: MongoBackend) -> None:
    """150 updates of existing documents in one call (FerretDB v1 hangs on one update command
    of 100 such statements: the backend writes in chunks)."""
    sigs = [Signature(uuid=new_uuid(), name="add") for _ in range(150)]
    backend.set_states([new_state(s, PENDING) for s in sigs])
    started = time.monotonic()
    backend.set_states([new_state(s, STARTED) for s in sigs])
    assert time.monotonic() - started < 30
    assert {s.state for s in backend.get_states([s.uuid for s in sigs]) if s} == {STARTED}


def test_ttl_index_or_a_one_time_warning(mongo_server: MongoServer, backend: MongoBackend,
                                         database: str, db: Database[dict[str, Any]],
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bridge.backends.mongodb")
    backend.set_state_pending(Signature(uuid=new_uuid(), name="x"))
    again = MongoBackend(mongo_server.url, config(mongo_server.url, database))
    again.set_state_pending(Signature(uuid=new_uuid(), name="x"))
    again.close()
    indexes = db.tasks.index_information()
    if mongo_server.ferretdb:
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) <= 1  # once per process (an earlier test may have had it)
        assert all("cannot make TTL indexes" in w and "never expire" in w for w in warnings)
        assert "delete_at_1" not in indexes
        assert db.tasks.count_documents({}) == 2
    else:
        assert indexes["delete_at_1"]["expireAfterSeconds"] == 0
        assert indexes["delete_at_1"]["key"] == [("delete_at", 1)]


# --------------------------------------------------------------------------- groups


def test_group_meta_document_and_completion(backend: MongoBackend,
                                            db: Database[dict[str, Any]]) -> None:
    group, members = new_uuid("group_"), [new_uuid() for _ in range(3)]
    before = now_ms()
    backend.init_group(group, members)
    doc = db.group_metas.find_one({"_id": group})
    assert doc is not None
    assert list(doc) == ["_id", "task_uuids", "chord_triggered", "lock", "created_at"]
    assert doc["task_uuids"] == members and doc["chord_triggered"] is False
    assert doc["lock"] is False and before <= int(doc["created_at"]) <= now_ms()
    with pytest.raises(DuplicateKeyError):  # Go's InsertOne fails the same way
        backend.init_group(group, members)
    check_group_completion(backend, group, members, "mongo: no documents in result")


def test_chord_triggers_once_among_python_callers(backend: MongoBackend,
                                                  db: Database[dict[str, Any]]) -> None:
    """On FerretDB v1 two conditional updates can both match: the claim's unique key
    decides (this failed without it)."""
    for _ in range(5):
        group = new_uuid("group_")
        backend.init_group(group, [new_uuid()])
        wins = python_callers_race(backend.trigger_chord, group)
        assert sorted(wins) == [False] * 7 + [True]
        meta = db.group_metas.find_one({"_id": group})
        assert meta is not None and meta["chord_triggered"] is True
        [claim] = db.bridge_chord_claims.find({"_id": group})
        assert set(claim) == {"_id", "delete_at"}


def test_chord_left_to_a_go_worker_within_the_grace(backend: MongoBackend,
                                                    db: Database[dict[str, Any]]) -> None:
    """Go's TriggerChord fires whatever its update matched: when it comes before or during
    our grace, our claim fails and the callback is Go's alone."""
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    assert go_mongo_trigger_chord(db.group_metas, group)
    assert backend.trigger_chord(group) is False
    for delay in (0.0, 0.02):
        group = new_uuid("group_")
        backend.init_group(group, [new_uuid()])
        ours = Ours(backend.trigger_chord, group)
        ours.start(delay)
        assert go_mongo_trigger_chord(db.group_metas, group)
        assert ours.result() is False, delay
    with pytest.raises(GroupMetaMissing):
        backend.trigger_chord(new_uuid("group_"))
