"""Live interop on the Memcache and MongoDB result backends (Redis broker) with real Go
machinery v1 and v2: Go cannot tell our side from Go.

- Go producer → our worker → Go's GetWithTimeout (typed results, failure text, chain,
  group, chord, ETA, retry); the ``types`` scenario reports exactly what it reports when a
  Go worker writes the states (on MongoDB Go cannot read some of its own results back);
- our producer → Go worker → our AsyncResult.get;
- the records a Go worker stores and the ones ours stores for the same tasks are the same
  bytes (Memcache) or the same fields with the same BSON types (MongoDB), PENDING from Go's
  producer and ours alike;
- a Go worker and ours on one queue run chords of 50: the callback fires exactly once,
  round after round. The Go worker runs one task at a time: machinery's own Memcache and
  MongoDB chord triggers are not atomic, so two Go goroutines alone can both fire.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from pymemcache.client.base import Client as MemcacheClient
from pymongo import MongoClient

from bridge import TaskFailed
from bridge.app import Bridge
from bridge.config import MongoDBConfig
from bridge.protocol.machinery import GroupMeta, TaskState
from bridge.result import AsyncResult, ResultTimeout
from tests.backend_servers import Memcached, start_memcached
from tests.interop.conftest import VERSIONS
from tests.interop.go_processes import go_produce, go_worker
from tests.interop.interop_app import echo_task_name, make_app
from tests.interop.python_corpus import EDGE
from tests.interop.workflow_checks import check_workflows
from tests.worker_thread import worker_thread

pytestmark = pytest.mark.go

BACKENDS = ("memcache", "mongodb")
JSON_STRINGS: dict[str, Any] = {
    '{"a":1,"b":[true,null,{"c":"d"}]}': {"a": 1.0, "b": [True, None, {"c": "d"}]},
    "null": None, " {} trailing": {}}
"""String results Go's MongoDB backend stores as ``{type: "json"}`` documents (and those)."""
RAW = CodecOptions(document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_MS)


@dataclass
class Target:
    """One result backend as Go's harness (``go_url``) and our Config (``config``) name it."""

    kind: str
    go_url: str
    config: dict[str, Any]
    read: Callable[[str], Any]
    """The raw stored record of a key: memcache bytes, a MongoDB task document."""
    read_group: Callable[[str], Any]
    closers: list[Callable[[], Any]] = field(default_factory=list)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "memcache":
        server = request.getfixturevalue("memcached_server")
        raw = MemcacheClient(server.address)
        yield Target("memcache", server.url, {"result_backend": server.url}, raw.get, raw.get,
                     [raw.close])
        raw.close()
        return
    server = request.getfixturevalue("mongo_server")
    database = f"machinery_{uuid.uuid4().hex[:10]}"
    client: MongoClient[dict[str, Any]] = MongoClient(server.url)
    db = client.get_database(database, codec_options=RAW)
    go_url = urlunsplit(urlsplit(server.url)._replace(path=f"/{database}"))
    yield Target("mongodb", go_url, {"result_backend": server.url,
                                     "mongodb": MongoDBConfig(database=database)},
                 lambda key: db.tasks.find_one({"_id": key}),
                 lambda key: db.group_metas.find_one({"_id": key}))
    client.drop_database(database)
    client.close()


def fresh_queue() -> str:
    return f"interop_mm_{uuid.uuid4().hex[:10]}"


@contextmanager
def python_worker(redis_url: str, queue: str, target: Target,
                  concurrency: int = 8) -> Iterator[Bridge]:
    app = make_app(redis_url, queue, **target.config)
    with worker_thread(app, concurrency):
        yield app


def produce_report(binary: Path, redis_url: str, target: Target, queue: str,
                   scenario: str, *extra: str) -> list[str]:
    """``harness produce`` whatever it finds: its ok/FAIL lines."""
    run = subprocess.run([str(binary), "produce", "--broker", redis_url, "--backend",
                          target.go_url, "--queue", queue, "--scenario", scenario, *extra],
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    return lines


# --------------------------------------------------------------------------- Go produces


SCENARIOS = {"memcache": "all", "mongodb": "basic,chain,group,chord,eta,fail,retry"}


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_python_worker(version: str, harness: dict[str, Path], redis_url: str,
                                   target: Target) -> None:
    queue = fresh_queue()
    with python_worker(redis_url, queue, target):
        out = go_produce(harness[version], redis_url, queue, SCENARIOS[target.kind],
                         backend=target.go_url)
    assert int(out.splitlines()[-1].split()[0]) >= (30 if target.kind == "memcache" else 15)


@pytest.mark.parametrize("version", VERSIONS)
def test_two_memcached_servers_keys_where_go_looks(version: str, harness: dict[str, Path],
                                                   redis_url: str, memcached_server: Memcached,
                                                   tmp_path: Path) -> None:
    """``memcache://a,b``: Go's producer finds every state and group meta our worker wrote
    on the server gomemcache picks for the key, and ours finds Go's."""
    second = start_memcached(tmp_path)
    try:
        url = f"{memcached_server.url},{second.url.removeprefix('memcache://')}"
        target = Target("memcache", url, {"result_backend": url}, lambda key: None,
                        lambda key: None)
        queue = fresh_queue()
        with python_worker(redis_url, queue, target):
            go_produce(harness[version], redis_url, queue, "basic,chain,group,chord,fail",
                       backend=url)
        app = make_app(redis_url, queue, **target.config)
        with go_worker(harness[version], redis_url, queue, 1, backend=url):
            group = app.send_group(*(app.signature("add", i, i) for i in range(20)))
            assert group.get(timeout=60) == [2 * i for i in range(20)]
        app.close()
        counts = [MemcacheClient(s.address).stats()[b"curr_items"]
                  for s in (memcached_server, second)]
        assert all(counts)  # both servers hold keys
    finally:
        second.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_types_report_as_with_a_go_worker(version: str, harness: dict[str, Path],
                                          redis_url: str, target: Target) -> None:
    """Every arg type through Go's producer: our worker's states give Go's AsyncResult the
    very results (and, on MongoDB, the very failures) a Go worker's states give it.

    On MongoDB Go's worker stops serving at the first value it cannot store (a uint64
    above int64): machinery's Redis consumer stalls (v2.0.14+) or leaks its goroutine
    (v1.10.8) after such a task, so every later line of its report is "Timeout reached".
    Up to there the reports are equal; the later types are compared record by record in
    test_stored_records_are_what_go_stores.
    """
    binary = harness[version]
    go_queue, our_queue = fresh_queue(), fresh_queue()
    with go_worker(binary, redis_url, go_queue, 4, backend=target.go_url):
        with_go = produce_report(binary, redis_url, target, go_queue, "types", "--timeout", "15")
    with python_worker(redis_url, our_queue, target):
        with_us = produce_report(binary, redis_url, target, our_queue, "types", "--timeout", "15")
    assert [case(line) for line in with_us] == [case(line) for line in with_go]
    timeouts = [i for i, line in enumerate(with_go) if line.endswith(": Timeout reached")]
    stall = timeouts[0] if timeouts else len(with_go)
    assert with_us[:stall] == with_go[:stall]
    unstorable = [line for line in with_us if line.endswith(": Timeout reached")]
    if target.kind == "memcache":
        assert [line for line in with_us if line.startswith("FAIL")] == [] and not timeouts
        return
    # narrow ints come back int32 and []byte as binary, which Go's ReflectValue rejects
    assert any(" is not int8" in line for line in with_us[:stall])
    assert unstorable and all(case(line).split("/")[1] in UINT64_KINDS for line in unstorable)
    assert with_go[stall] in unstorable  # parked by us; where Go's worker stopped


UINT64_KINDS = ("uint", "uint64", "slice_uint", "slice_uint64")


def case(line: str) -> str:
    """``ok types/int8/0`` / ``FAIL types/int8/0: reason`` → ``types/int8/0``."""
    return line.split()[1].rstrip(":")


# --------------------------------------------------------------------------- we produce


@pytest.mark.parametrize("version", VERSIONS)
def test_python_producer_go_worker(version: str, harness: dict[str, Path], redis_url: str,
                                   target: Target) -> None:
    queue = fresh_queue()
    app = make_app(redis_url, queue, **target.config)
    with go_worker(harness[version], redis_url, queue, 1, backend=target.go_url):
        sent = [(go_type, value, app.send_task(echo_task_name(go_type), value))
                for go_type, value in typed_edge_values(target.kind)]
        for go_type, value, result in sent:
            assert result.get(timeout=60) == expected(go_type, value), (go_type, value)
        for text, document in JSON_STRINGS.items():
            got = app.send_task("echo_string", text).get(timeout=60)
            # on MongoDB Go's decodeResults made it a document (numbers as doubles)
            assert got == (document if target.kind == "mongodb" else text)
        key = check_workflows(app)  # chain, group, chord, countdown, failure, RetryLater
    assert int(redis.Redis.from_url(redis_url).get(key) or 0) == 1
    app.close()


def typed_edge_values(kind: str) -> Iterator[tuple[str, Any]]:
    """Every supported type with its edge values (on MongoDB without what BSON cannot
    hold: Go's worker fails to store a uint64 above int64)."""
    def storable(go_type: str, value: Any) -> bool:
        if kind != "mongodb" or go_type.removeprefix("[]") not in ("uint", "uint64"):
            return True
        return all(v < 2**63 for v in (value if isinstance(value, list) else [value]))

    for go_type, values in EDGE.items():
        for value in values:
            if storable(go_type, value):
                yield go_type, value
        for value in (values, []):
            if storable(f"[]{go_type}", value):
                yield f"[]{go_type}", value
    yield "[]byte", b"\x00\xff<>&"
    yield "[]byte", b""


def expected(go_type: str, value: Any) -> Any:
    from bridge.types import to_python, to_wire

    return to_python(go_type, to_wire(go_type, value))


# --------------------------------------------------------------------------- stored records


@pytest.mark.parametrize("version", VERSIONS)
def test_stored_records_are_what_go_stores(version: str, harness: dict[str, Path],
                                           redis_url: str, target: Target) -> None:
    """The same tasks through a Go worker and through ours: byte for byte (Memcache), field
    for field and BSON type for BSON type (MongoDB), SUCCESS, FAILURE, unstorable values,
    chord group metas; and PENDING as Go's producer writes it."""
    go_queue, our_queue = fresh_queue(), fresh_queue()
    app = make_app(redis_url, go_queue, **target.config)
    jobs = [(echo_task_name(t), (v,)) for t, v in typed_edge_values(target.kind)]
    jobs += [("echo_string", (text,)) for text in JSON_STRINGS]
    jobs += [("fail", ("boom <&>",))]
    pairs = []
    with go_worker(harness[version], redis_url, go_queue, 1, backend=target.go_url), \
            python_worker(redis_url, our_queue, target):
        for name, args in jobs:
            theirs = app.send(app.signature(name, *args, queue=go_queue))
            ours = app.send(app.signature(name, *args, queue=our_queue))
            pairs.append((theirs, ours))
        chords = [app.send_chord([app.signature("add", i, 1, queue=q) for i in range(3)],
                                 app.signature("add", queue=q)) for q in (go_queue, our_queue)]
        for chord in chords:
            assert chord.get(timeout=60) == 6
        for pair in pairs:
            for result in pair:
                settle(result)
    compare = same_bytes if target.kind == "memcache" else same_document
    for theirs, ours in pairs:
        compare(target.read(theirs.task_uuid), target.read(ours.task_uuid),
                theirs.task_uuid, ours.task_uuid, version)
    go_meta, our_meta = (target.read_group(c.group.group_uuid) for c in chords)
    compare(go_meta, our_meta, chords[0].group.group_uuid, chords[1].group.group_uuid, version)
    app.close()


def settle(result: AsyncResult) -> None:
    with suppress(TaskFailed):
        result.get(timeout=60)


def same_bytes(go: bytes, ours: bytes, go_key: str, our_key: str, version: str) -> None:
    assert go is not None and ours is not None
    if go.startswith(b'{"GroupUUID"'):  # made by our producer: other members, another time
        go_meta, our_meta = GroupMeta.from_json(go), GroupMeta.from_json(ours)
        our_meta.group_uuid, our_meta.task_uuids = go_meta.group_uuid, go_meta.task_uuids
        our_meta.created_at = go_meta.created_at
        assert our_meta.to_json() == go
        return
    assert ours.replace(our_key.encode(), go_key.encode()) == go


def same_document(go: dict[str, Any], ours: dict[str, Any], go_key: str, our_key: str,
                  version: str) -> None:
    assert go is not None and ours is not None
    go, ours = dict(go), dict(ours)
    for doc in (go, ours):
        doc.pop("_id")
        if "task_uuids" in doc:
            doc["task_uuids"] = len(doc["task_uuids"])
    if version == "v1":  # v1 writes no delete_at (v2.0.14+ does, and so do we)
        assert "delete_at" not in go
        ours.pop("delete_at", None)
    assert set(go) == set(ours), (go, ours)
    for name in ("created_at", "delete_at"):
        if name in go:
            assert type(go[name]) is type(ours[name]) is DatetimeMS
            go.pop(name), ours.pop(name)
    assert typed(ours) == typed(go)


def typed(value: Any) -> Any:
    """A BSON value with the Python type of every scalar (int32 vs Int64, bytes, float)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_pending_as_go_producer_writes_it(harness: dict[str, Path], redis_url: str,
                                          target: Target) -> None:
    """Go's SetStatePending (``harness send`` with no worker) and ours."""
    queue = fresh_queue()
    run = subprocess.run([str(harness["v2"]), "send", "--broker", redis_url, "--backend",
                          target.go_url, "--queue", queue, "--task", "add", "--arg",
                          "int64=1", "-q"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    go_uuid = run.stdout.split()[0]
    app = make_app(redis_url, queue, **target.config)
    ours = app.send_task("add", 1)
    go, mine = target.read(go_uuid), target.read(ours.task_uuid)
    if target.kind == "memcache":
        go_state, our_state = TaskState.from_json(go), TaskState.from_json(mine)
        assert abs(go_state.created_at - our_state.created_at).total_seconds() < 30
        our_state.task_uuid, our_state.created_at = go_state.task_uuid, go_state.created_at
        assert our_state.to_json() == go  # the same bytes but for the UUID and the time
    else:
        assert set(go) == set(mine) == {"_id", "state", "task_name", "created_at"}
        assert typed({**mine, "_id": "", "created_at": 0}) == \
            typed({**go, "_id": "", "created_at": 0})
        assert type(go["created_at"]) is type(mine["created_at"]) is DatetimeMS
    app.close()


# --------------------------------------------------------------------------- chords


def test_go_and_python_workers_share_chords_of_50(harness: dict[str, Path], redis_url: str,
                                                  target: Target) -> None:
    """Each round a fresh Go worker (v2, v1...) and ours race for the last members of a
    chord of 50: the callback runs once, never twice.

    Go's producer checks the callback's result and that it ran exactly once (still once
    500 ms on); then our producer does the same. On a machine this busy, Go's own side can
    lose a chord outright (gomemcache's 100 ms timeouts, after which its Redis consumer
    stops): such a round fires nothing, is counted as lost and retried with a new Go worker.
    """
    queue = fresh_queue()
    app = make_app(redis_url, queue, **target.config)
    counters = redis.Redis.from_url(redis_url)
    fired: list[int] = []
    with python_worker(redis_url, queue, target, 4):
        while fired.count(1) < 6 and len(fired) < 12:
            version = VERSIONS[len(fired) % 2]
            with go_worker(harness[version], redis_url, queue, 1, backend=target.go_url):
                if fired.count(1) < 4:
                    fired.append(go_chord_round(harness[version], redis_url, target, queue))
                else:
                    fired.append(python_chord_round(app, counters))
            assert fired[-1] <= 1, f"round {len(fired)}: the callback ran {fired[-1]} times"
    app.close()
    assert fired.count(1) == 6, f"callbacks per round: {fired} (0: Go's worker lost it)"


def go_chord_round(binary: Path, redis_url: str, target: Target, queue: str) -> int:
    """Go's ``chord --n 50`` scenario: how many times the callback ran."""
    run = subprocess.run([str(binary), "produce", "--broker", redis_url, "--backend",
                          target.go_url, "--queue", queue, "--scenario", "chord", "--n", "50",
                          "--timeout", "30"], capture_output=True, text=True, timeout=300)
    counts = re.findall(r"^info chord/counter=(\d+)$", run.stdout, re.MULTILINE)
    fired = int(counts[-1]) if counts else 0
    if fired == 1:
        assert "FAIL" not in run.stdout and run.returncode == 0, run.stdout[-3000:]
    return fired


def python_chord_round(app: Bridge, counters: redis.Redis) -> int:
    """Our producer's chord of 50 → ``count_call``: how many times the callback ran."""
    key = f"count_{uuid.uuid4().hex}"
    chord = app.send_chord([app.signature("add", i, 1) for i in range(50)],
                           app.signature("count_call", key))
    try:
        assert chord.get(timeout=60) == sum(range(1, 51))
    except ResultTimeout:
        return int(counters.get(key) or 0)
    time.sleep(1.0)  # a second callback would be on its way
    return int(counters.get(key) or 0)
