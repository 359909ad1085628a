"""Celery's Redis result backend layout against a real redis-server and real Celery."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from celery import Celery, chord, signature
from celery.app.task import Context
from celery.result import GroupResult

from bridge.backends.celery_redis import (
    CeleryRedisBackend,
    ChordPartFailed,
    Extended,
    ResultTimeout,
    TaskMeta,
    encode_exception,
    go_error,
)
from bridge.brokers.base import Delivery
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.protocol.celery_message import CeleryMessage
from tests.celery_worker import celery_worker
from tests.redis_servers import with_db

BROKER_DB, BACKEND_DB = 9, 10


@pytest.fixture
def backend_url(redis_url: str) -> str:
    return with_db(redis_url, BACKEND_DB)


@pytest.fixture
def broker_url(redis_url: str) -> str:
    url = with_db(redis_url, BROKER_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def client(backend_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(backend_url)
    yield conn
    conn.close()


@pytest.fixture
def backend(backend_url: str) -> Iterator[CeleryRedisBackend]:
    ours = CeleryRedisBackend.from_url(backend_url)
    yield ours
    ours.close()


def celery_app(broker_url: str, backend_url: str, **conf: Any) -> Celery:
    app = Celery("bridge_results", broker=broker_url, backend=backend_url)
    app.conf.update(accept_content=["json", "msgpack"],
                    result_accept_content=["json", "msgpack"], **conf)
    return app


@pytest.fixture
def app(broker_url: str, backend_url: str) -> Iterator[Celery]:
    made = celery_app(broker_url, backend_url)
    yield made
    made.close()


def new_id() -> str:
    return str(uuid.uuid4())


def without_volatile(raw: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(raw)
    meta["date_done"] = "..." if meta["date_done"] else None
    meta["task_id"] = "..."
    return meta


# ------------------------------------------------------------------ layout vs Celery's own


@pytest.mark.parametrize("extended", [False, True])
def test_meta_bytes_as_celery_writes_them(broker_url: str, backend_url: str,
                                          backend: CeleryRedisBackend, client: redis.Redis,
                                          extended: bool) -> None:
    app = celery_app(broker_url, backend_url, result_extended=extended)
    request = Context(id="x", task="tasks.add", args=[2, 3], kwargs={}, hostname="w1@vm",
                      retries=1, group="g-1", parent_id="p-1",
                      delivery_info={"routing_key": "celery"})
    theirs, ours = new_id(), new_id()
    app.backend.store_result(theirs, 5, "SUCCESS", request=request)
    backend.store_result(ours, "SUCCESS", 5, group_id="g-1", parent_id="p-1",
                         extended=Extended("tasks.add", [2, 3], {}, "w1@vm", 1, "celery")
                         if extended else None)
    their_raw, our_raw = client.get(f"celery-task-meta-{theirs}"), client.get(
        f"celery-task-meta-{ours}")
    assert their_raw is not None and our_raw is not None
    assert list(json.loads(our_raw)) == list(json.loads(their_raw))  # key order
    assert without_volatile(our_raw) == without_volatile(their_raw)
    their_date = json.loads(their_raw)["date_done"]
    assert len(json.loads(our_raw)["date_done"]) == len(their_date)  # same isoformat shape
    assert client.ttl(f"celery-task-meta-{ours}") == 86400
    app.close()


def test_celery_client_reads_our_states(backend: CeleryRedisBackend, app: Celery) -> None:
    ok, bad, go, retry, marked = (new_id() for _ in range(5))
    backend.store_result(ok, "SUCCESS", {"sum": 3, "items": [1, 2]})
    backend.store_result(bad, "FAILURE", ValueError("bad value", 7), traceback="Traceback...")
    backend.store_result(go, "FAILURE", go_error("dial tcp: connection refused"))
    backend.store_result(retry, "RETRY", KeyError("not yet"))
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    backend.store_result(marked, "SUCCESS", [when, Decimal("1.10")])
    assert app.AsyncResult(ok).get(timeout=5) == {"sum": 3, "items": [1, 2]}
    with pytest.raises(ValueError) as info:
        app.AsyncResult(bad).get(timeout=5)
    assert info.value.args == ("bad value", 7)
    assert app.AsyncResult(bad).traceback == "Traceback..."
    with pytest.raises(Exception, match="dial tcp: connection refused") as go_info:
        app.AsyncResult(go).get(timeout=5)
    assert type(go_info.value).__name__ == "GoError"
    state = app.AsyncResult(retry)
    assert state.state == "RETRY" and isinstance(state.result, KeyError)
    assert app.AsyncResult(marked).get(timeout=5) == [when, Decimal("1.10")]


def test_waiting_celery_client_is_woken_by_our_publish(backend: CeleryRedisBackend,
                                                       app: Celery) -> None:
    task_id = new_id()
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(
        app.AsyncResult(task_id).get(timeout=20)))
    waiter.start()
    time.sleep(0.5)  # subscribed by now
    backend.store_result(task_id, "SUCCESS", 42)
    waiter.join()
    assert result == [42]


def test_our_wait_is_woken_by_celery(backend: CeleryRedisBackend, app: Celery) -> None:
    task_id = new_id()
    threading.Timer(0.3, app.backend.store_result, (task_id, 7, "SUCCESS")).start()
    meta = backend.wait(task_id, timeout=20)
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 7, task_id)
    backend.store_result(task_id, "STARTED", {"pid": 1})  # deduped: SUCCESS stays
    with pytest.raises(ResultTimeout, match=r"not ready after 0.3s \(state PENDING\)"):
        backend.wait(new_id(), timeout=0.3)


def test_success_is_never_overwritten(backend: CeleryRedisBackend, app: Celery,
                                      client: redis.Redis) -> None:
    task_id = new_id()
    assert backend.store_result(task_id, "STARTED", {"pid": 9, "hostname": "h"})
    assert backend.get_meta(task_id)["date_done"] is None
    assert backend.store_result(task_id, "SUCCESS", 1)
    assert not backend.store_result(task_id, "FAILURE", RuntimeError("late duplicate"))
    app.backend.store_result(task_id, None, "FAILURE")  # Celery's dedupe honours ours too
    assert backend.get_meta(task_id)["status"] == "SUCCESS"
    assert backend.get_meta(new_id()) == {"status": "PENDING", "result": None}


def test_store_many_one_round_trip(backend: CeleryRedisBackend, app: Celery,
                                   client: redis.Redis) -> None:
    ids = [new_id() for _ in range(500)]
    done = backend.store_many([TaskMeta(t, "SUCCESS", i) for i, t in enumerate(ids)])
    assert done == [True] * 500
    assert [app.AsyncResult(t).get(timeout=5) for t in ids[:: 97]] == list(range(0, 500, 97))
    assert backend.store_many([TaskMeta(ids[0], "FAILURE", None),
                               TaskMeta(new_id(), "SUCCESS", 1)]) == [False, True]


def test_raw_metas_read_in_one_round_trip(backend: CeleryRedisBackend,
                                          client: redis.Redis) -> None:
    ids = [new_id() for _ in range(300)]  # past 64 arguments: packed by bridge.resp
    backend.store_many([TaskMeta(t, "SUCCESS", i) for i, t in enumerate(ids[::2])])
    missing = new_id()
    raws = backend.get_raw_many([*ids, missing])
    assert raws == client.mget([backend.task_key(t) for t in [*ids, missing]])
    assert raws[1] is None and raws[-1] is None
    assert [backend.decode(raw)["result"] for raw in raws[:-1:2]] == list(range(150))
    with backend._reads._lock:  # the lane busy (another thread): the client's way, same bytes
        assert backend.get_raw_many(ids[:3]) == raws[:3]
    assert backend.get_raw_many([]) == []


def test_expiry_prefix_and_msgpack(broker_url: str, backend_url: str,
                                   client: redis.Redis) -> None:
    forever = CeleryRedisBackend.from_url(backend_url, expires=None)
    task_id = new_id()
    forever.store_result(task_id, "SUCCESS", 1)
    assert client.ttl(f"celery-task-meta-{task_id}") == -1
    prefixed = CeleryRedisBackend.from_url(backend_url, global_keyprefix="pfx",
                                           serializer="msgpack", expires=60)
    prefixed.store_result(task_id, "SUCCESS", {"a": [1, 2]})
    assert client.ttl(f"pfx_celery-task-meta-{task_id}") == 60
    app = celery_app(broker_url, backend_url, result_serializer="msgpack",
                     result_backend_transport_options={"global_keyprefix": "pfx"})
    assert app.AsyncResult(task_id).get(timeout=5) == {"a": [1, 2]}
    app.backend.store_result(other := new_id(), [3], "SUCCESS")
    assert prefixed.get_meta(other)["result"] == [3]
    app.close()
    forever.close()
    prefixed.close()


def test_exception_encoding() -> None:
    class Inner(Exception):
        pass

    assert encode_exception(ValueError("bad value", 7)) == {
        "exc_type": "ValueError", "exc_message": ["bad value", 7], "exc_module": "builtins"}
    encoded = encode_exception(Inner(object))
    assert encoded["exc_type"].endswith("test_exception_encoding.<locals>.Inner")
    assert encoded["exc_message"] == [repr(object)]  # not serializable: repr, as Celery


def test_group_save_and_restore(backend: CeleryRedisBackend, app: Celery) -> None:
    gid, ids = new_id(), [new_id(), new_id()]
    backend.save_group(gid, ids)
    restored = GroupResult.restore(gid, app=app)
    assert restored is not None and [r.id for r in restored.results] == ids
    theirs = app.GroupResult(new_id(), [app.AsyncResult(i) for i in ids])
    theirs.save()
    assert backend.restore_group(theirs.id) == ids
    assert backend.restore_group(new_id()) is None


# ------------------------------------------------------------------ chords


def test_chord_join_alone(backend: CeleryRedisBackend, client: redis.Redis) -> None:
    gid, ids = new_id(), [new_id() for _ in range(3)]
    assert backend.on_chord_part_return(gid, 2, ids[2], "SUCCESS", "c") is None  # no .s yet
    backend.set_chord_size(gid, 3)
    assert backend.on_chord_part_return(gid, 0, ids[0], "SUCCESS", "a") is None
    assert backend.on_chord_part_return(gid, 1, ids[1], "SUCCESS", "b") == ["a", "b", "c"]
    assert client.ttl(f"celery-taskset-meta-{gid}.j") == 86400
    backend.chord_cleanup(gid)
    assert not client.exists(*(f"celery-taskset-meta-{gid}{s}" for s in (".j", ".t", ".s")))
    failing = new_id()
    backend.set_chord_size(failing, 2)
    backend.on_chord_part_return(failing, 0, ids[0], "FAILURE", ValueError("x"))
    with pytest.raises(ChordPartFailed, match=f"dependency {ids[0]} ended FAILURE") as info:
        backend.on_chord_part_return(failing, 1, ids[1], "SUCCESS", 1)
    assert info.value.result["exc_type"] == "ValueError"


def _run_header_part(backend: CeleryRedisBackend, msg: CeleryMessage) -> list[Any] | None:
    """What a bridge worker does with a chord header task: run, store, join."""
    args, _, embed = json.loads(msg.body)
    value = sum(args)
    headers = msg.headers
    backend.store_result(headers["id"], "SUCCESS", value, group_id=headers["group"],
                         parent_id=headers["parent_id"])
    assert embed["chord"]["task"] == "tasks.xsum"
    return backend.on_chord_part_return(headers["group"], headers["group_index"],
                                        headers["id"], "SUCCESS", value)


def _body_message(embed_chord: dict[str, Any], results: list[Any]) -> CeleryMessage:
    """The chord body as our side publishes it (``callback.delay(results)``)."""
    options = embed_chord["options"]
    body = json.dumps([[results, *embed_chord["args"]], embed_chord["kwargs"],
                       {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    tid = options["task_id"]
    return CeleryMessage(body.encode(), headers={
        "lang": "py", "task": embed_chord["task"], "id": tid, "group": options.get("group_id"),
        "root_id": tid, "parent_id": None, "retries": 0},
        properties={"correlation_id": tid, "reply_to": "", "delivery_mode": 2, "priority": 0})


def test_chord_fires_once_with_a_real_worker(broker_url: str, backend_url: str,
                                             backend: CeleryRedisBackend, app: Celery,
                                             client: redis.Redis) -> None:
    """Two chords of six header tasks; we run three of each, a real Celery worker the rest.

    Chord A: ours finish first, so the worker completes it. Chord B: the worker's finish
    first, so we complete it. Each body is published exactly once, to a queue nobody reads.
    """
    hq, bodyq = f"hq_{new_id()[:8]}", f"bodyq_{new_id()[:8]}"
    broker = CeleryRedisBroker.from_url(broker_url)
    chords = []
    for base in (0, 100):
        header = [signature("tasks.add", (base + i, i), app=app).set(queue=hq)
                  for i in range(6)]
        body = signature("tasks.xsum", app=app).set(queue=bodyq)
        chords.append(chord(header, body, app=app).apply_async())
    fetched = broker.fetch(hq, 100, 0)
    assert len(fetched) == 12
    ours: dict[int, list[Delivery]] = {0: [], 1: []}
    group_ids = [d.message.headers["group"] for d in (fetched[0], fetched[6]) if d.message]
    for delivery in fetched:
        assert delivery.message is not None
        which = group_ids.index(delivery.message.headers["group"])
        if delivery.message.headers["group_index"] % 2 == 0:
            ours[which].append(delivery)
        else:
            broker.requeue(delivery)
    assert [len(v) for v in ours.values()] == [3, 3]
    assert [_run_header_part(backend, d.message) for d in ours[0] if d.message] == [None] * 3
    broker.ack(ours[0])
    with celery_worker(broker_url, backend_url, queues=[hq]):
        deadline = time.monotonic() + 30
        worker_parts = {d.message.headers["id"] for d in fetched
                        if d.message and d not in ours[0] and d not in ours[1]}
        while time.monotonic() < deadline and any(
                backend.get_meta(t)["status"] != "SUCCESS" for t in worker_parts):
            time.sleep(0.1)
    results = [_run_header_part(backend, d.message) for d in ours[1] if d.message]
    broker.ack(ours[1])
    assert results[:2] == [None, None] and results[2] == [100 + 2 * i for i in range(6)]
    embed_chord = json.loads(ours[1][0].message.body)[2]["chord"] if ours[1][0].message else {}
    broker.publish_messages(bodyq, [_body_message(embed_chord, results[2])])
    backend.chord_cleanup(group_ids[1])
    bodies = broker.fetch(bodyq, 10, 0)
    assert len(bodies) == 2  # one per chord: the worker's for A, ours for B
    by_group = {d.message.headers["group"]: json.loads(d.message.body)[0]
                for d in bodies if d.message}
    assert by_group == {group_ids[0]: [[2 * i for i in range(6)]],
                        group_ids[1]: [[100 + 2 * i for i in range(6)]]}
    assert {d.message.headers["id"] for d in bodies if d.message} == {c.id for c in chords}
    for gid in group_ids:  # both joins cleaned up (Celery's DEL, our chord_cleanup)
        assert not client.exists(f"celery-taskset-meta-{gid}.j")
    broker.ack(bodies)
    broker.close()


def test_real_worker_results_read_by_get_meta(broker_url: str, backend_url: str,
                                              backend: CeleryRedisBackend,
                                              app: Celery) -> None:
    q = f"rq_{new_id()[:8]}"
    ok = app.send_task("tasks.add", (20, 22), queue=q)
    bad = app.send_task("tasks.fail", ("kaput",), queue=q)
    with celery_worker(broker_url, backend_url, queues=[q]):
        meta = backend.wait(ok.id, timeout=30)
        failed = backend.wait(bad.id, timeout=30)
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 42, ok.id)
    assert meta["children"] == [] and meta["date_done"]
    assert failed["status"] == "FAILURE" and failed["result"] == {
        "exc_type": "ValueError", "exc_message": ["kaput"], "exc_module": "builtins"}
    assert "ValueError: kaput" in failed["traceback"]
    assert backend.get_meta(ok.id) == meta
