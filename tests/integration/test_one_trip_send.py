"""``send`` on a Redis broker and backend of one server: the PENDING state and the message in
one round trip (bridge.redis_send), the same bytes as the two-step way, and the two-step way
whenever the one trip cannot keep machinery's order (another server, an ETA, a foreign key)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.errors import ForeignKeyError, StatesRefused
from bridge.protocol.machinery import Signature, TaskState


def app_on(broker_url: str, backend_url: str, queue: str) -> Bridge:
    config = Config(broker=broker_url, result_backend=backend_url, default_queue=queue)
    app = Bridge(config, broker=RedisBroker(broker_url, config),
                 backend=RedisBackend(backend_url, config))
    app.register("add", lambda a, b: a + b)
    return app


def sent(client: redis.Redis, queue: str, task_uuid: str,
         states: redis.Redis | None = None) -> tuple[Signature, TaskState]:
    [body] = client.lrange(queue, 0, -1)
    states = states or client
    raw = states.get(task_uuid)
    assert raw is not None and states.ttl(task_uuid) > 0
    return Signature.from_json(body), TaskState.from_json(raw)


def test_one_round_trip_with_the_bytes_of_two(private_redis_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(private_redis_url)
    other_db = private_redis_url.rsplit("/", 1)[0] + "/1"
    shared, split = f"one_{uuid.uuid4().hex[:8]}", f"two_{uuid.uuid4().hex[:8]}"
    one = app_on(private_redis_url, private_redis_url, shared)
    two = app_on(private_redis_url, other_db, split)  # another database: two steps
    for app, queue in ((one, shared), (two, split)):  # warm up: connections, scripts
        app.send_task("add", 1, 2)
        client.delete(queue)
    trips: list[object] = []
    send_packed = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        trips.append(command)  # one packed write per round trip (a pipeline is one)
        send_packed(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    a = one.send(one.signature("add", 20, 22))
    one_trip, trips[:] = len(trips), []
    b = two.send(two.signature("add", 20, 22))
    two_trips = len(trips)
    monkeypatch.undo()
    assert (one_trip, two_trips) == (1, 2)
    sig_a, state_a = sent(client, shared, a.task_uuid)
    sig_b, state_b = sent(client, split, b.task_uuid, redis.Redis.from_url(other_db))
    assert state_a.state == state_b.state == "PENDING"
    assert (sig_a.name, sig_a.args) == (sig_b.name, sig_b.args)
    assert sig_a.routing_key == shared and state_a.task_name == "add"
    assert sig_a.to_json() == client.lrange(shared, 0, -1)[0]  # Go's bytes, unchanged
    for app in (one, two):
        app.close()
    client.close()


@pytest.fixture
def shared(private_redis_url: str) -> Iterator[tuple[Bridge, redis.Redis, str]]:
    """An app whose broker and backend share one Redis; a client of it; the queue."""
    client = redis.Redis.from_url(private_redis_url)
    queue = f"q_{uuid.uuid4().hex[:8]}"
    app = app_on(private_redis_url, private_redis_url, queue)
    yield app, client, queue
    app.close()
    client.close()


def test_a_foreign_key_is_refused_and_nothing_is_published(
        shared: tuple[Bridge, redis.Redis, str]) -> None:
    app, client, queue = shared
    sig = app.signature("add", 1, 2)
    sig.uuid = f"task_{uuid.uuid4()}"
    client.hset(sig.uuid, "not", "a state")
    with pytest.raises(ForeignKeyError):
        app.send(sig)
    assert client.llen(queue) == 0  # the state could not be written: no message either
    client.set(sig.uuid, b"someone else's value")
    with pytest.raises(ForeignKeyError):
        app.send(sig)
    assert client.llen(queue) == 0 and client.get(sig.uuid) == b"someone else's value"


def test_an_eta_goes_to_the_delayed_set(shared: tuple[Bridge, redis.Redis, str]) -> None:
    app, client, queue = shared
    result = app.send_task("add", 1, 2, countdown=60)
    assert client.llen(queue) == 0
    members: list[Any] = client.zrange("delayed_tasks", 0, -1)
    assert any(result.task_uuid.encode() in m for m in members)
    assert TaskState.from_json(client.get(result.task_uuid) or b"").state == "PENDING"


def test_send_batch_writes_what_send_writes(shared: tuple[Bridge, redis.Redis, str]) -> None:
    """The batch's states are the same bytes as one send's, with the TTL, and a foreign key
    among them is refused."""
    app, client, queue = shared
    results = app.send_batch([app.signature("add", i, 1) for i in range(300)])
    one = app.send(app.signature("add", 0, 1))
    raws = client.mget([r.task_uuid for r in results] + [one.task_uuid])
    states = [TaskState.from_json(raw or b"") for raw in raws]
    assert all(s.state == "PENDING" and s.task_name == "add" for s in states)
    assert all(client.ttl(r.task_uuid) > 0 for r in results)
    assert [s.to_json() for s in states] == raws  # Go's bytes, whichever way written
    assert client.llen(queue) == 301
    given = app.signature("add", 1, 1)
    given.uuid = f"task_{uuid.uuid4()}"
    client.hset(given.uuid, "not", "a state")
    fine = app.signature("add", 2, 1)
    with pytest.raises(StatesRefused) as refused:
        app.send_batch([fine, given])
    assert list(refused.value.refused) == [given.uuid]
    bodies = client.lrange(queue, 0, -1)
    assert len(bodies) == 302  # the refused task is not published, the other one is
    assert Signature.from_json(bodies[-1]).uuid == fine.uuid
    assert client.type(given.uuid) == b"hash"


def test_send_batch_streams_script_calls_in_one_round_trip(
        shared: tuple[Bridge, redis.Redis, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Many tasks, two queues, an ETA and a state stored by an older write: every task's
    PENDING state is written before its message is pushed, each message once, in order; a
    state stored in another shape goes the careful way, and its message after the others."""
    from bridge import redis_send

    app, client, queue = shared
    other = f"{queue}_b"
    app.send_batch([app.signature("add", 0, 0)])  # warm up: connections, scripts
    client.delete(queue)
    stale = app.signature("add", 7, 7)
    stale.uuid = f"task_{uuid.uuid4()}"
    client.set(stale.uuid, json.dumps({"State": "STARTED", "TaskUUID": stale.uuid}))
    sigs = [app.signature("add", i, 1, queue=other if i % 3 == 0 else "")
            for i in range(3 * redis_send.CHUNK + 7)]
    later = app.signature("add", 1, 2, countdown=60)
    reads: list[int] = []
    read_response = redis.connection.AbstractConnection.read_response

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return read_response(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", counted)
    results = app.send_batch([stale, *sigs, later])
    monkeypatch.undo()
    mine = [s for s in sigs if s.routing_key == queue]
    theirs = [s for s in sigs if s.routing_key == other]
    chunks = -(-len(mine) // redis_send.CHUNK) + -(-len(theirs) // redis_send.CHUNK)
    assert len(reads) >= chunks  # one reply per script call, read after all were sent
    assert [Signature.from_json(b).uuid for b in client.lrange(other, 0, -1)] == [
        s.uuid for s in theirs]
    pushed = [Signature.from_json(b).uuid for b in client.lrange(queue, 0, -1)]
    assert sorted(pushed) == sorted([s.uuid for s in mine] + [stale.uuid])
    assert pushed == [s.uuid for s in mine] + [stale.uuid]  # first given, pushed last
    assert client.zcard("delayed_tasks") >= 1 and client.llen(queue) == len(mine) + 1
    raws = client.mget([r.task_uuid for r in results])
    states = [TaskState.from_json(raw or b"") for raw in raws]
    assert all(s.state == "PENDING" and s.task_name == "add" for s in states)
    assert [s.to_json() for s in states] == raws
