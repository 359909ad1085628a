"""The Redis result backend against a real redis-server and Go's golden bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.backends.base import now_utc
from bridge.backends.redis import (
    CHORD_MUTEX_KEY,
    ChordLockError,
    GroupMetaNotFoundError,
    MutexPolicy,
    RedisBackend,
    RedsyncMutex,
    TaskStateNotFoundError,
)
from bridge.config import Config
from bridge.errors import ForeignKeyError, StatesRefused
from bridge.protocol.gotime import GO_ZERO_TIME, GoTime
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    GroupMeta,
    Signature,
    TaskResult,
    TaskState,
    new_uuid,
)
from tests.fixtures import MACHINERY
from tests.strategies import results as result_values
from tests.strategies import text, times

GOLDEN = MACHINERY / "v2"
_OFFSET = timezone(timedelta(hours=5, minutes=30))
GOLDEN_UUID = b"task_a2533e77-091d-4361-90c0-006a8cb05e5d"


def golden(name: str, uuid: str | None = None, old: bytes = GOLDEN_UUID) -> bytes:
    """A golden file's bytes, its UUID replaced by ``uuid`` (so tests never share keys)."""
    data = (GOLDEN / name).read_bytes().strip()
    return data if uuid is None else data.replace(old, uuid.encode())


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    b = RedisBackend(redis_url, Config(results_expire_in=600))
    yield b
    b.close()


def fresh(redis_url: str, expire: int = 600) -> RedisBackend:
    """A new backend: its own connection pool and an empty merge cache."""
    return RedisBackend(redis_url, Config(results_expire_in=expire))


def when() -> GoTime:
    """A distinct CreatedAt with nanoseconds and a non-UTC offset."""
    now = now_utc()
    return GoTime.from_datetime(now.astimezone(_OFFSET), now.nanosecond)


def state(uuid: str, name: str, **kw: Any) -> TaskState:
    """What machinery's New*TaskState builds for a non-PENDING state."""
    return TaskState(uuid, state=name, **kw)


GO_SEQUENCE = [
    (state("", RECEIVED), "task_state_redis_received.json"),
    (state("", STARTED), "task_state_redis_started.json"),
    (state("", RETRY), "task_state_redis_retry.json"),
    (state("", SUCCESS, results=[TaskResult("int64", 5)]), "task_state_redis_success.json"),
]


# ------------------------------------------------------------------ merge: Go's exact bytes


@pytest.mark.parametrize("cached", [True, False], ids=["same-backend", "fresh-backends"])
def test_replays_go_sequence_byte_for_byte(redis_url: str, raw: redis.Redis,
                                            cached: bool) -> None:
    uuid = new_uuid()
    raw.set(uuid, golden("task_state_redis_pending.json", uuid))  # Go's own PENDING
    b = fresh(redis_url)
    for template, expected in GO_SEQUENCE:
        writer = b if cached else fresh(redis_url)
        writer.set_state(TaskState(uuid, state=template.state, results=template.results))
        assert raw.get(uuid) == golden(expected, uuid), expected


def test_failure_matches_go(backend: RedisBackend, raw: redis.Redis) -> None:
    expected = golden("task_state_redis_failure.json")
    go = TaskState.from_json(expected)
    backend.set_state(TaskState(go.task_uuid + "x", go.task_name, PENDING,
                                created_at=go.created_at))
    backend.set_state(state(go.task_uuid + "x", FAILURE, error=go.error))
    uuid = go.task_uuid.encode()
    assert raw.get(go.task_uuid + "x") == expected.replace(uuid, uuid + b"x")


def test_received_without_pending_matches_go(redis_url: str, raw: redis.Redis) -> None:
    old = b"task_2273f7dc-5a87-43a8-9b6d-53a4c797cdce"
    uuid = new_uuid()
    fresh(redis_url).set_state(state(uuid, RECEIVED))
    assert raw.get(uuid) == golden("task_state_redis_received_without_pending.json", uuid, old)


def test_pending_then_lifecycle_keeps_name_and_created_at(backend: RedisBackend) -> None:
    sig = Signature(uuid=new_uuid(), name="add")
    backend.set_state_pending(sig)
    pending = backend.get_state(sig.uuid)
    assert pending is not None and pending.state == PENDING
    backend.set_state_received(sig)
    backend.set_state_started(sig)
    backend.set_state_success(sig, [TaskResult("int64", 5)])
    done = backend.get_state(sig.uuid)
    assert done == TaskState(sig.uuid, "add", SUCCESS, [TaskResult("int64", 5)],
                             created_at=pending.created_at)


def test_pending_is_written_fresh(backend: RedisBackend, raw: redis.Redis) -> None:
    uuid = new_uuid()
    backend.set_state(TaskState(uuid, "first", PENDING, created_at=GO_ZERO_TIME))
    again = TaskState(uuid, "second", PENDING, created_at=when())
    backend.set_state(again)
    assert raw.get(uuid) == again.to_json()


def test_a_value_that_is_not_a_task_state_is_never_overwritten(backend: RedisBackend,
                                                               raw: redis.Redis) -> None:
    """Go writes over whatever the key holds (a decode error only skips the merge); here a
    key that holds anything but this task's state is left alone, whatever the state."""
    uuid = new_uuid()
    for foreign in (b'{"TaskName": 5}', b"not json", state(new_uuid(), STARTED).to_json()):
        raw.set(uuid, foreign)
        for new in (STARTED, PENDING):
            with pytest.raises(ForeignKeyError, match="no task state is written over it"):
                backend.set_state(state(uuid, new))
            assert raw.get(uuid) == foreign
    raw.delete(uuid)
    raw.hset(uuid, "field", "value")
    with pytest.raises(ForeignKeyError, match="a Redis hash"):
        backend.set_state(state(uuid, SUCCESS))
    other = new_uuid()
    with pytest.raises(StatesRefused) as refused:  # a batch: the others are written
        backend.set_states([state(other, RECEIVED), state(uuid, RECEIVED),
                            state(other, STARTED)])
    assert list(refused.value.refused) == [uuid]
    assert raw.get(other) == state(other, STARTED).to_json()
    assert raw.hgetall(uuid) == {b"field": b"value"}


def test_merge_ignores_trailing_bytes_like_go(backend: RedisBackend, raw: redis.Redis) -> None:
    uuid = new_uuid()
    pending = TaskState(uuid, "t", PENDING, created_at=when())
    raw.set(uuid, pending.to_json() + b" trailing")
    backend.set_state(state(uuid, STARTED))
    assert raw.get(uuid) == state(uuid, STARTED, task_name="t",
                                  created_at=pending.created_at).to_json()


# ------------------------------------------------------------------ the merge cache


def test_cache_sees_a_foreign_write(backend: RedisBackend, raw: redis.Redis) -> None:
    uuid = new_uuid()
    backend.set_state(TaskState(uuid, "ours", PENDING, created_at=when()))
    theirs = TaskState(uuid, "theirs", PENDING, created_at=when())
    raw.set(uuid, theirs.to_json())  # e.g. a Go producer re-sending the task
    backend.set_state(state(uuid, RECEIVED))
    assert raw.get(uuid) == state(uuid, RECEIVED, task_name="theirs",
                                  created_at=theirs.created_at).to_json()


def test_cache_sees_an_expired_key(backend: RedisBackend, raw: redis.Redis) -> None:
    uuid = new_uuid()
    backend.set_state(TaskState(uuid, "ours", PENDING, created_at=when()))
    raw.delete(uuid)  # expired: Go's merge finds nothing
    backend.set_state(state(uuid, STARTED))
    assert raw.get(uuid) == state(uuid, STARTED).to_json()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, created=times, steps=st.lists(st.tuples(
    st.sampled_from([RECEIVED, STARTED, RETRY, SUCCESS, FAILURE]),
    st.none() | st.lists(result_values, max_size=2), text), min_size=1, max_size=4))
def test_cached_path_writes_what_the_uncached_path_writes(
        redis_url: str, raw: redis.Redis, name: str, created: Any,
        steps: list[tuple[str, list[TaskResult | None] | None, str]]) -> None:
    cached, ours, go = fresh(redis_url), new_uuid(), new_uuid()
    for uuid in (ours, go):
        fresh(redis_url).set_state(TaskState(uuid, name, PENDING, created_at=created))
    cached.set_state(TaskState(ours, name, PENDING, created_at=created))  # primes the cache
    for name_of_state, results, error in steps:
        cached.set_state(state(ours, name_of_state, results=results, error=error))
        fresh(redis_url).set_state(state(go, name_of_state, results=results, error=error))
        theirs = cast(bytes, raw.get(go))
        assert raw.get(ours) == theirs.replace(go.encode(), ours.encode())


def test_set_states_batch_equals_one_by_one(redis_url: str, raw: redis.Redis) -> None:
    a, b, c = new_uuid(), new_uuid(), new_uuid()
    created = when()
    raw.set(a, TaskState(a, "a", PENDING, created_at=created).to_json())
    batch = [
        state(a, RECEIVED), state(a, STARTED),
        TaskState(b, "b", PENDING, created_at=created), state(b, RECEIVED),
        state(c, FAILURE, error="boom"),
        state(a, SUCCESS, results=[TaskResult("string", "<ok>")]),
    ]
    fresh(redis_url).set_states(batch)
    batched = [raw.get(u) for u in (a, b, c)]
    for s in batch[:4]:  # replay one by one (fresh backends) on the same keys
        raw.delete(s.task_uuid)
    raw.set(a, TaskState(a, "a", PENDING, created_at=created).to_json())
    raw.delete(c)
    for s in batch:
        fresh(redis_url).set_state(s)
    assert [raw.get(u) for u in (a, b, c)] == batched
    assert TaskState.from_json(batched[0] or b"").task_name == "a"


def test_set_states_recovers_from_a_foreign_write(redis_url: str, raw: redis.Redis) -> None:
    b = fresh(redis_url)
    uuid = new_uuid()
    b.set_state(TaskState(uuid, "ours", PENDING, created_at=when()))
    theirs = TaskState(uuid, "theirs", PENDING, created_at=when())
    raw.set(uuid, theirs.to_json())  # the cached entry is now stale
    b.set_states([state(uuid, RECEIVED), state(uuid, STARTED), state(new_uuid(), RECEIVED)])
    assert raw.get(uuid) == state(uuid, STARTED, task_name="theirs",
                                  created_at=theirs.created_at).to_json()


# ------------------------------------------------------------------ round trips


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one send = one round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def counting_backend(redis_url: str) -> RedisBackend:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    b = RedisBackend(redis_url, client=redis.Redis(connection_pool=pool))
    warm = new_uuid()  # connect and load the script
    b.set_states([state(warm, RECEIVED), state(warm, SUCCESS)])
    b.set_state(state(warm, STARTED))
    b.get_state(warm)  # the client's own connection too (every state write uses the lane)
    return b


def round_trips(action: Any) -> int:
    before = CountingConnection.sends
    action()
    return CountingConnection.sends - before


def lifecycle(b: RedisBackend, sig: Signature) -> None:
    b.set_state_received(sig)
    b.set_state_started(sig)
    b.set_state_success(sig, [TaskResult("int64", 1)])


def test_round_trips_per_task(redis_url: str) -> None:
    b = counting_backend(redis_url)
    foreign = Signature(uuid=new_uuid(), name="add")
    fresh(redis_url).set_state_pending(foreign)  # the producer is another process
    # the merge happens in Redis: one script call per state, no read first
    assert round_trips(lambda: lifecycle(b, foreign)) == 3  # Go: 6 (GET + SET each)
    own = Signature(uuid=new_uuid(), name="add")
    b.set_state_pending(own)
    assert round_trips(lambda: lifecycle(b, own)) == 3
    many = [new_uuid() for _ in range(50)]
    assert round_trips(lambda: b.set_states([state(u, RECEIVED) for u in many])) <= 2
    assert round_trips(lambda: b.set_states([state(u, STARTED) for u in many])) == 1
    assert round_trips(lambda: b.get_states(many)) == 1


@pytest.mark.parametrize("name", ['quo"te', "<html&>", "back\\slash", "é\u2028"])
def test_names_the_in_redis_merge_cannot_read_merge_the_careful_way(
        redis_url: str, raw: redis.Redis, name: str) -> None:
    """Go escapes these names; the splice script hands them back and Python merges them."""
    uuid = new_uuid()
    pending = TaskState(uuid, name, PENDING, created_at=now_utc())
    raw.set(uuid, pending.to_json())
    b = fresh(redis_url)
    b.set_states([state(uuid, RECEIVED), state(uuid, STARTED)])
    b.set_state(state(uuid, SUCCESS, results=[]))
    expected = TaskState(uuid, name, SUCCESS, [], created_at=pending.created_at)
    assert raw.get(uuid) == expected.to_json()


# ------------------------------------------------------------------ TTL


def test_ttl_is_set_and_reset(redis_url: str, raw: redis.Redis) -> None:
    b = fresh(redis_url, expire=120)
    uuid = new_uuid()
    b.set_state(TaskState(uuid, "t", PENDING, created_at=GO_ZERO_TIME))
    assert 110 < raw.ttl(uuid) <= 120
    raw.expire(uuid, 5)
    b.set_state(state(uuid, STARTED))  # cached merge path
    assert 110 < raw.ttl(uuid) <= 120
    raw.expire(uuid, 5)
    b.set_states([state(uuid, RETRY), state(new_uuid(), RECEIVED)])  # batched path
    assert 110 < raw.ttl(uuid) <= 120
    group = new_uuid("group_")
    b.init_group(group, [uuid])
    assert 110 < raw.ttl(group) <= 120
    raw.expire(group, 5)
    assert b.trigger_chord(group)
    assert 110 < raw.ttl(group) <= 120


def test_zero_expiry_means_an_hour(redis_url: str, raw: redis.Redis) -> None:
    b = fresh(redis_url, expire=0)
    uuid = new_uuid()
    b.set_state(state(uuid, RECEIVED))
    assert 3590 < raw.ttl(uuid) <= 3600


# ------------------------------------------------------------------ reads, purges


def test_get_states_and_purge(backend: RedisBackend) -> None:
    a, missing = new_uuid(), new_uuid()
    backend.set_state(state(a, STARTED))
    assert backend.get_state(missing) is None
    assert backend.get_states([a, missing]) == [state(a, STARTED), None]
    assert backend.get_states([]) == []
    backend.purge_state(a)
    assert backend.get_state(a) is None
    group = new_uuid("group_")
    backend.init_group(group, [a])
    backend.purge_group_meta(group)
    with pytest.raises(GroupMetaNotFoundError):
        backend.group_completed(group, 1)


def test_many_states_are_read_on_their_own_lane_while_the_writes_lane_is_busy(
        redis_url: str) -> None:
    b = counting_backend(redis_url)
    ids = [new_uuid() for _ in range(20)]
    b.set_states([state(u, STARTED) for u in ids[::2]])
    expected = [state(u, STARTED) if i % 2 == 0 else None for i, u in enumerate(ids)]
    pending = b.lane.begin([("PING",)])  # a batch sent, its reply not read yet
    assert pending is not None
    try:
        assert round_trips(lambda: b.get_states(ids)) == 1
        assert b.get_states(ids) == expected
        assert b._reads._conn is not None and b._reads._conn is not b._lane._conn
    finally:
        assert len(pending.read()) == 1
    with b._reads._lock:  # that lane busy too (another thread): the client's MGET
        assert b.get_states(ids) == expected


def test_repr_hides_the_password() -> None:
    b = RedisBackend("redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(b)
    b.close()


# ------------------------------------------------------------------ groups


def test_group_lifecycle(backend: RedisBackend, raw: redis.Redis) -> None:
    group = new_uuid("group_")
    members = [new_uuid() for _ in range(3)]
    backend.init_group(group, members)
    meta = GroupMeta.from_json(raw.get(group) or b"")
    assert meta.group_uuid == group and meta.task_uuids == members
    assert not meta.chord_triggered and meta.created_at.year > 2000
    assert raw.get(group) == meta.to_json()
    assert not backend.group_completed(group, 3)  # no member state yet
    backend.set_state(state(members[2], SUCCESS, results=[TaskResult("int64", 3)]))
    backend.set_state(state(members[0], FAILURE, error="no"))
    backend.set_state(state(members[1], STARTED))
    assert not backend.group_completed(group, 3)
    backend.set_state(state(members[1], SUCCESS, results=[]))
    assert backend.group_completed(group, 3)
    assert not backend.group_completed(group, 4)
    got = backend.group_task_states(group, 3)
    assert [s.task_uuid for s in got] == members
    assert [s.state for s in got] == [FAILURE, SUCCESS, SUCCESS]


def test_missing_group_meta_is_a_clear_error(backend: RedisBackend) -> None:
    group = new_uuid("group_")
    for call in (lambda: backend.group_completed(group, 1),
                 lambda: backend.group_task_states(group, 1),
                 lambda: backend.trigger_chord(group)):
        with pytest.raises(GroupMetaNotFoundError, match=group):
            call()


def test_group_task_states_names_a_missing_member(backend: RedisBackend) -> None:
    group, member = new_uuid("group_"), new_uuid()
    backend.init_group(group, [member])
    with pytest.raises(TaskStateNotFoundError, match=member):
        backend.group_task_states(group, 1)


# ------------------------------------------------------------------ chord trigger


def test_trigger_chord_on_go_group_meta_writes_go_bytes(backend: RedisBackend,
                                                        raw: redis.Redis) -> None:
    old = b"group_79b2d71e-1abb-4e61-aebf-47fc12b9a7b7"
    group = new_uuid("group_")
    raw.set(group, golden("group_meta_chord_init.json", group, old))
    assert backend.trigger_chord(group)
    assert raw.get(group) == golden("group_meta_chord_triggered.json", group, old)
    assert not backend.trigger_chord(group)


def test_trigger_chord_exactly_once_across_16_threads(redis_url: str,
                                                      raw: redis.Redis) -> None:
    group = new_uuid("group_")
    fresh(redis_url).init_group(group, [new_uuid(), new_uuid()])
    backends = [fresh(redis_url) for _ in range(16)]

    def race() -> list[bool]:
        barrier = threading.Barrier(len(backends))
        outcome: list[bool] = []

        def run(b: RedisBackend) -> None:
            barrier.wait()
            outcome.append(b.trigger_chord(group))

        threads = [threading.Thread(target=run, args=(b,)) for b in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcome

    first = race()
    assert len(first) == 16 and first.count(True) == 1
    assert GroupMeta.from_json(raw.get(group) or b"").chord_triggered
    assert race() == [False] * 16
    assert not raw.exists(CHORD_MUTEX_KEY)
    for b in backends:
        b.close()


def test_chord_lock_released_after_an_error(backend: RedisBackend, raw: redis.Redis) -> None:
    with pytest.raises(GroupMetaNotFoundError):
        backend.trigger_chord(new_uuid("group_"))
    assert not raw.exists(CHORD_MUTEX_KEY)


def test_chord_lock_held_elsewhere_raises(redis_url: str, raw: redis.Redis) -> None:
    quick = MutexPolicy(tries=3, min_delay_ms=1, max_delay_ms=5)
    b = RedisBackend(redis_url, chord_lock_policy=quick)
    group = new_uuid("group_")
    b.init_group(group, [])
    raw.set(CHORD_MUTEX_KEY, "held-by-a-go-worker", px=8000)
    try:
        with pytest.raises(ChordLockError, match=CHORD_MUTEX_KEY):
            b.trigger_chord(group)
        assert raw.get(CHORD_MUTEX_KEY) == b"held-by-a-go-worker"  # never released by us
    finally:
        raw.delete(CHORD_MUTEX_KEY)
    assert b.trigger_chord(group)


def test_redsync_mutex_commands(redis_url: str, raw: redis.Redis) -> None:
    name = "test_mutex_" + new_uuid()
    mutex = RedsyncMutex(raw, name)
    assert mutex.policy == MutexPolicy(8000, 32, 50, 250, 0.01)
    value = mutex.acquire()
    assert len(value) == 24 and raw.get(name) == value.encode()  # base64 of 16 bytes
    assert 7000 < raw.pttl(name) <= 8000
    assert not mutex.release("someone else's value")
    assert mutex.release(value) and not raw.exists(name)
