"""``mbridge relay`` on a real Redis, with real Celery clients and workers and the bridge's
machinery worker standing in for Go (tests/interop/test_relay_live.py runs real Go).

Celery → machinery: a Celery 5.6.2 producer's tasks, chains and chords run on a machinery
worker and the Celery client's ``AsyncResult.get()`` returns or raises; untranslatable and
expired messages; results in flight survive a relay restart. machinery → Celery: a machinery
producer's tasks run on a real ``celery worker`` and machinery's AsyncResult gets typed values.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, group, signature
from celery.exceptions import ChordError, TaskRevokedError

from bridge.app import Bridge
from bridge.backends.celery_redis import CeleryRedisBackend
from bridge.backends.redis import RedisBackend
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.endpoints import parse_endpoint
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.machinery import GroupMeta, Signature, TaskState
from bridge.relay import Relay, RelayOptions, inflight_key, open_relay
from bridge.relay.reverse import error_text, typed_results
from bridge.result import TaskFailed
from bridge.schema import TaskSchema
from tests.celery_worker import celery_worker
from tests.interop.interop_app import make_app
from tests.worker_thread import worker_thread

WAIT = 30.0


def fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@contextmanager
def celery_producer(url: str, queue: str) -> Iterator[Celery]:
    """A real Celery client app sending to ``queue``, results in Redis."""
    app = Celery(fresh("producer"), broker=url, backend=url)
    app.conf.update(task_default_queue=queue, accept_content=["json", "msgpack"],
                    result_accept_content=["json", "msgpack"])
    try:
        yield app
    finally:
        close_producer(app)


def close_producer(app: Celery) -> None:
    """Celery unsubscribes each result in ``AsyncResult.__del__``, retrying for 20 s once
    Redis is gone; a result its own promise keeps alive dies only at exit. So: collect what
    can go while Redis is up, close the pub/sub and let the stragglers find none."""
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        consumer._pubsub = None  # stop() closes it but keeps it: later unsubscribes reconnect
    app.close()


def relay_for(url: str, source: str, target: str, **options: Any) -> Relay:
    """A relay between two ``protocol:queue`` names on one Redis."""
    src_protocol, src_queue = source.split(":")
    dst_protocol, dst_queue = target.split(":")
    return open_relay(parse_endpoint(f"{src_protocol}+{url}?queue={src_queue}"),
                      parse_endpoint(f"{dst_protocol}+{url}?queue={dst_queue}"),
                      RelayOptions(poll_interval=0.05, fetch_timeout=0.2, **options))


@contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    """``relay.run()`` in a thread until the block ends."""
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(timeout=20)
        assert not thread.is_alive()


@contextmanager
def machinery_worker(url: str, queue: str) -> Iterator[Bridge]:
    """The bridge's machinery worker serving the Go harness's task set on ``queue``."""
    app = make_app(url, queue)
    with worker_thread(app, 4):
        yield app


def hash_fields(client: redis.Redis, key: str) -> set[str]:
    return {f.decode() if isinstance(f, bytes) else str(f) for f in client.hkeys(key)}


def eventually(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# --------------------------------------------------------------------------- Celery → machinery


@dataclass
class Forward:
    url: str
    celery_queue: str
    machinery_queue: str
    producer: Celery
    relay: Relay


@pytest.fixture(scope="module")
def forward(redis_url: str) -> Iterator[Forward]:
    cq, mq = fresh("cq"), fresh("mq")
    relay = relay_for(redis_url, f"celery:{cq}", f"machinery:{mq}")
    with running(relay), machinery_worker(redis_url, mq), celery_producer(redis_url, cq) as app:
        yield Forward(redis_url, cq, mq, app, relay)


def test_celery_task_runs_on_a_machinery_worker(forward: Forward) -> None:
    result = forward.producer.send_task("add", (2, 3))
    assert result.get(timeout=WAIT) == 5
    state = RedisBackend(forward.url).get_state(result.id)
    assert state is not None and state.state == "SUCCESS" and state.task_name == "add"
    assert forward.producer.send_task("concat", (["a", "<&>", "é"],)).get(timeout=WAIT) == "a<&>é"
    assert forward.producer.send_task("noop").get(timeout=WAIT) is None


def test_failure_raises_the_go_error_text(forward: Forward) -> None:
    result = forward.producer.send_task("fail", ("boom <&> é",))
    with pytest.raises(Exception) as caught:
        result.get(timeout=WAIT)
    assert type(caught.value).__name__ == "GoError"
    assert caught.value.args == ("boom <&> é",)
    assert result.state == "FAILURE"


def test_chain_gives_the_last_result_and_a_failure_fails_the_rest(forward: Forward) -> None:
    app = forward.producer
    ok = chain(signature("add", (2, 3), app=app), signature("multiply", (4,), app=app),
               signature("add", (1,), app=app)).apply_async()
    assert ok.get(timeout=WAIT) == 21
    assert ok.parent.get(timeout=WAIT) == 20
    bad = chain(signature("fail", ("first",), app=app), signature("add", (1,), app=app),
                signature("add", (2,), app=app)).apply_async()
    with pytest.raises(Exception, match=r"^first$"):
        bad.get(timeout=WAIT)
    assert [bad.state, bad.parent.state, bad.parent.parent.state] == ["FAILURE"] * 3


def test_chord_is_sent_as_machinery_sends_chords(forward: Forward) -> None:
    app = forward.producer
    header = [signature("add", (i, 1), app=app) for i in range(4)]
    result = chord(header, signature("add", (), app=app)).apply_async()
    assert result.get(timeout=WAIT) == 1 + 2 + 3 + 4
    group_id = result.parent.id
    meta = GroupMeta.from_json(redis.Redis.from_url(forward.url).get(group_id) or b"")
    assert meta.task_uuids == [r.id for r in result.parent.results]
    assert meta.chord_triggered
    assert result.parent.get(timeout=WAIT) == [1, 2, 3, 4]
    plain = group(signature("multiply", (i, i), app=app) for i in range(3)).apply_async()
    assert plain.get(timeout=WAIT) == [0, 1, 4]
    failing = chord([signature("add", (1, 1), app=app), signature("fail", ("no", ), app=app)],
                    signature("add", (), app=app)).apply_async()
    with pytest.raises(Exception, match=r"^no$"):  # Celery raises the header's error first
        failing.get(timeout=WAIT)
    body = eventually(lambda: (m := CeleryRedisBackend.from_url(forward.url).get_meta(
        failing.id))["status"] == "FAILURE" and m)
    assert body["result"]["exc_type"] == "ChordError"
    assert body["result"]["exc_message"] == [f"Dependency {failing.parent.results[1].id} "
                                             "raised no"]
    with pytest.raises(ChordError):
        failing.get(timeout=WAIT, follow_parents=False)


def test_incomplete_chord_fails_after_its_timeout(redis_url: str) -> None:
    """A chord header task whose siblings never come (no ``.s`` size either)."""
    cq, mq = fresh("cq"), fresh("mq")
    group_id, body_id = str(uuid.uuid4()), str(uuid.uuid4())
    body: dict[str, Any] = {"task": "add", "args": [], "kwargs": {}, "options": {
        "task_id": body_id, "group_id": group_id}, "subtask_type": None, "immutable": False}
    member = new_task("add", (1, 1), group=group_id, group_index=0, chord=body)
    CeleryRedisBroker.from_url(redis_url).publish_messages(cq, [encode_task(member)])
    with running(relay_for(redis_url, f"celery:{cq}", f"machinery:{mq}", chord_timeout=0.3)):
        results = CeleryRedisBackend.from_url(redis_url)
        meta = eventually(lambda: (m := results.get_meta(body_id))["status"] != "PENDING" and m)
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "ChordError"
    assert "1 header task(s) of an unknown number arrived" in meta["result"]["exc_message"][0]
    assert results.get_meta(member.id)["status"] == "FAILURE"
    dead = CeleryRedisBroker.from_url(redis_url).dead_letters(cq)
    assert [member.id in d["reason"] for d in dead] == [True]
    assert redis.Redis.from_url(redis_url).llen(mq) == 0


def test_countdown_goes_to_machinery_delayed_tasks(forward: Forward) -> None:
    result = forward.producer.send_task("add", (1, 2), countdown=1)
    assert result.get(timeout=WAIT) == 3
    state = RedisBackend(forward.url).get_state(result.id)
    assert state is not None and state.state == "SUCCESS"


def test_celery_on_rabbitmq_to_machinery(redis_url: str, amqp_url: str) -> None:
    cq, mq = fresh("cq"), fresh("mq")
    relay = open_relay(parse_endpoint(f"celery+{amqp_url}?queue={cq}&backend={redis_url}"),
                       parse_endpoint(f"machinery+{redis_url}?queue={mq}"),
                       RelayOptions(poll_interval=0.05, fetch_timeout=0.2))
    app = Celery(fresh("producer"), broker=amqp_url, backend=redis_url)
    app.conf.update(task_default_queue=cq)
    try:
        with running(relay), machinery_worker(redis_url, mq):
            assert app.send_task("add", (40, 2)).get(timeout=WAIT) == 42
            with pytest.raises(Exception, match="no machinery Go type"):
                app.send_task("add", (None,)).get(timeout=WAIT)
    finally:
        close_producer(app)
    assert relay.stats["relayed"] == 1 and relay.stats["parked"] == 1


def test_untranslatable_message_fails_and_is_parked(forward: Forward) -> None:
    result = forward.producer.send_task("add", ({"not": "typed"},))
    with pytest.raises(Exception, match="dict values have no machinery Go type") as caught:
        result.get(timeout=WAIT)
    assert type(caught.value).__name__ == "TaskArgError"
    broker = CeleryRedisBroker.from_url(forward.url)
    dead = eventually(lambda: [d for d in broker.dead_letters(forward.celery_queue)
                               if result.id in d["reason"]])
    assert "cannot translate task add" in dead[0]["reason"]
    assert RedisBackend(forward.url).get_state(result.id) is None  # never reached machinery
    assert forward.relay.stats["parked"] >= 1


@pytest.mark.parametrize("kind", ["string", "list"])
def test_a_task_id_naming_another_key_is_refused_and_parked(forward: Forward,
                                                            kind: str) -> None:
    """machinery keeps a task's state under its id: a key of that name that is not a task
    state is left as it is, and the task fails and is parked instead of being sent."""
    client = redis.Redis.from_url(forward.url)
    task_id = fresh("app-key")
    if kind == "string":
        client.set(task_id, b"the application's own value")
    else:
        client.rpush(task_id, b"the application's own item")
    refused = forward.producer.send_task("add", (1, 2), task_id=task_id)
    fine = forward.producer.send_task("add", (3, 4))
    with pytest.raises(Exception, match=task_id) as caught:
        refused.get(timeout=WAIT)
    assert type(caught.value).__name__ == "ForeignKeyError"
    assert fine.get(timeout=WAIT) == 7
    broker = CeleryRedisBroker.from_url(forward.url)
    dead = eventually(lambda: [d for d in broker.dead_letters(forward.celery_queue)
                               if task_id in d["reason"]])
    assert "cannot translate task add" in dead[0]["reason"]
    if kind == "string":
        assert client.get(task_id) == b"the application's own value"
    else:
        assert client.lrange(task_id, 0, -1) == [b"the application's own item"]
    assert not any(task_id.encode() in body for body in client.lrange(forward.machinery_queue,
                                                                        0, -1))


def test_expired_task_is_revoked(forward: Forward) -> None:
    expired = datetime.now(UTC) - timedelta(seconds=5)
    result = forward.producer.send_task("add", (1, 2), expires=expired)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=WAIT)


def test_results_in_flight_survive_a_restart(redis_url: str) -> None:
    cq, mq = fresh("cq"), fresh("mq")
    with celery_producer(redis_url, cq) as producer:
        _restart(redis_url, cq, mq, producer)


def _restart(redis_url: str, cq: str, mq: str, producer: Celery) -> None:
    client = redis.Redis.from_url(redis_url)
    first = relay_for(redis_url, f"celery:{cq}", f"machinery:{mq}")
    with running(first):
        single = producer.send_task("add", (20, 22))
        pair = chain(signature("add", (1, 1), app=producer),
                     signature("multiply", (5,), app=producer)).apply_async()
        eventually(lambda: client.llen(mq) == 2)
    key = inflight_key(f"celery.{cq}-machinery.{mq}")
    assert hash_fields(client, key) == {single.id, pair.parent.id, pair.id}
    sig = Signature.from_json(client.lindex(mq, 0) or b"")  # what a Go worker will read
    assert (sig.uuid, sig.name, sig.routing_key) == (single.id, "add", mq)
    assert [(a.type, a.value) for a in sig.args or []] == [("int64", 20), ("int64", 22)]
    pending = TaskState.from_json(client.get(single.id) or b"")
    assert (pending.state, pending.task_name) == ("PENDING", "add")

    with machinery_worker(redis_url, mq):  # the tasks run while no relay is up
        backend = RedisBackend(redis_url)
        eventually(lambda: all((s := backend.get_state(u)) is not None and s.is_completed()
                               for u in (single.id, pair.id)))
    assert producer.AsyncResult(single.id).state == "PENDING"
    with running(relay_for(redis_url, f"celery:{cq}", f"machinery:{mq}")):
        assert single.get(timeout=WAIT) == 42
        assert pair.get(timeout=WAIT) == 10
        eventually(lambda: client.hlen(key) == 0)


# --------------------------------------------------------------------------- machinery → Celery


@dataclass
class Reverse:
    url: str
    machinery_queue: str
    app: Bridge
    relay: Relay


@pytest.fixture(scope="module")
def reverse(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reverse]:
    cq, mq = fresh("cq"), fresh("mq")
    schema = TaskSchema.from_dict({"tasks": {"tasks.mul": {"results": ["int32"]}}})
    relay = relay_for(redis_url, f"machinery:{mq}", f"celery:{cq}", schema=schema)
    log_path: Path = tmp_path_factory.mktemp("celery") / "worker.log"
    with celery_worker(redis_url, redis_url, queues=(cq,), log_path=log_path), running(relay):
        app = Bridge(Config(broker=redis_url, result_backend=redis_url, default_queue=mq))
        yield Reverse(redis_url, mq, app, relay)
        app.close()


def test_machinery_task_runs_on_a_celery_worker(reverse: Reverse) -> None:
    app = reverse.app
    added = app.send_task("tasks.add", 2, 3)
    multiplied = app.send_task("tasks.mul", 6, 7)
    echoed = app.send_task("tasks.echo", "x", 1)
    assert added.get(timeout=WAIT) == 5
    assert multiplied.get(timeout=WAIT) == 42
    assert echoed.get(timeout=WAIT) == {"args": ["x", 1], "kwargs": {}}
    assert app.send_task("tasks.noop").get(timeout=WAIT) is None
    types = {r.task_uuid: [t.type for t in (r.state() or TaskState()).results or [] if t]
             for r in (added, multiplied, echoed)}
    assert types == {added.task_uuid: ["int64"], multiplied.task_uuid: ["int32"],
                     echoed.task_uuid: ["map[string]interface {}"]}


def test_celery_failure_is_a_go_error(reverse: Reverse) -> None:
    with pytest.raises(TaskFailed, match=r"^no luck$"):
        reverse.app.send_task("tasks.fail", "no luck").get(timeout=WAIT)


def test_machinery_chain_and_chord_on_celery(reverse: Reverse) -> None:
    app = reverse.app
    chained = app.send_chain(app.signature("tasks.add", 1, 2), app.signature("tasks.mul", 10))
    assert chained.get(timeout=WAIT) == 30
    members = [app.signature("tasks.add", i, i) for i in range(4)]
    result = app.send_chord(members, app.signature("tasks.xsum"))
    assert result.get(timeout=WAIT) == 0 + 2 + 4 + 6


def test_undecodable_machinery_message_is_parked(reverse: Reverse) -> None:
    broker = RedisBroker(reverse.url, Config(broker=reverse.url))
    broker.publish_raw(reverse.machinery_queue, [b'{"UUID": 5}'])
    dead = eventually(lambda: broker.dead_letters(reverse.machinery_queue))
    assert "undecodable machinery message" in dead[0]["reason"]
    broker.close()


def test_results_typed_by_schema_or_inference() -> None:
    schema = TaskSchema.from_dict({"tasks": {"pair": {"results": ["int8", "[]string"]},
                                             "none": {"results": []}}})
    assert [(r.type, r.value) for r in typed_results("pair", [3, ["a"]], schema)] == [
        ("int8", 3), ("[]string", ["a"])]
    assert typed_results("none", None, schema) == []
    assert [(r.type, r.value) for r in typed_results("other", [1.5, 2.0], schema)] == [
        ("[]float64", [1.5, 2.0])]
    assert typed_results("other", b"\x00", None)[0].type == "[]uint8"
    assert typed_results("other", [1, "a"], None)[0].type == "[]interface {}"
    with pytest.raises(ValueError, match="out of range for int8"):
        typed_results("pair", [300, []], schema)
    exc = {"exc_type": "ValueError", "exc_message": ["bad", 7], "exc_module": "builtins"}
    assert error_text("FAILURE", exc) == "('bad', 7)"
    assert error_text("REVOKED", {"exc_type": "TaskRevokedError", "exc_message": ["expired"],
                                  "exc_module": "celery.exceptions"}) == "revoked: expired"
