"""The worker against a real Redis: machinery's lifecycle, reliability and bad input."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from bridge import Arg, AsyncResult, RetryLater, Signature, TaskResult, TaskState, new_uuid
from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.result import TaskFailed
from bridge.worker import Worker, WorkerOptions

Running = Callable[..., Bridge]


@pytest.fixture
def running(redis_url: str) -> Iterator[Running]:
    """Start an app with its own queue and a worker thread; stopped after the test."""
    started: list[tuple[Worker, threading.Thread, Bridge]] = []

    def start(register: Callable[[Bridge], None] | None = None, **options: Any) -> Bridge:
        queue = f"q_{uuid.uuid4().hex[:8]}"
        config = Config(broker=redis_url, result_backend=redis_url, default_queue=queue)
        app = Bridge(config, broker=RedisBroker(redis_url, config),
                     backend=RedisBackend(redis_url, config))
        if register:
            register(app)
        worker = Worker(app, WorkerOptions(poll_timeout=0.1, **options))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread, app))
        return app

    yield start
    for worker, thread, app in started:
        worker.stop()
        thread.join(timeout=15)
        app.close()


def stored(app: Bridge, task_uuid: str) -> TaskState:
    state = app.backend.get_state(task_uuid)
    assert state is not None
    return state


def test_success_writes_states_as_go_and_returns_typed_values(running: Running) -> None:
    def register(app: Bridge) -> None:
        @app.task("add")
        def add(*values: int) -> int:
            return sum(values)

        @app.task("pair")
        def pair(a: int, b: list[str]) -> tuple[int, str]:
            return a * 2, "".join(b)

    app = running(register)
    result = app.send_task("add", 1, 2, 39)
    assert result.get(timeout=10) == 42
    state = stored(app, result.task_uuid)
    assert (state.task_name, state.state) == ("add", "SUCCESS")
    assert state.created_at.year >= 2024  # CreatedAt kept from PENDING (Go's merge)
    expected = TaskState(result.task_uuid, "add", "SUCCESS", [TaskResult("int64", 42)],
                         created_at=state.created_at)
    stored_bytes = redis.Redis.from_url(app.config.result_backend).get(result.task_uuid)
    assert stored_bytes == expected.to_json()  # Go's exact bytes, as its backend stores them
    assert app.send_task("pair", 4, ["a", "<b>"]).get(timeout=10) == (8, "a<b>")


def test_retries_follow_fibonacci_and_retry_later(running: Running) -> None:
    calls: list[float] = []

    def register(app: Bridge) -> None:
        @app.task("flaky")
        def flaky() -> int:
            calls.append(time.monotonic())
            if len(calls) < 3:
                raise ValueError("not yet")
            return len(calls)

        @app.task("later")
        def later(key: str) -> int:
            count = redis.Redis.from_url(app.config.broker).incr(key)
            if count < 3:
                raise RetryLater("wait", 0.2)
            return int(count)

    app = running(register)
    result = app.send_task("flaky", retry_count=3)
    assert result.get(timeout=15) == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # RetryTimeout 0 → retried at ETA now+1 s, then now+2 s: never earlier
    assert len(gaps) == 2 and gaps[0] >= 0.99 and gaps[1] >= 1.99, gaps
    assert app.send_task("later", f"k{uuid.uuid4().hex}").get(timeout=10) == 3


def test_failure_on_error_and_on_success_callbacks(running: Running) -> None:
    def register(app: Bridge) -> None:
        @app.task("fail")
        def fail(message: str) -> None:
            raise RuntimeError(message)

        @app.task("concat")
        def concat(*parts: str) -> str:
            return "|".join(parts)

        @app.task("add")
        def add(*values: int) -> int:
            return sum(values)

    app = running(register)
    on_error = app.signature("concat", "handled")
    on_error.uuid = new_uuid()  # the worker sends it: preset the UUID to wait on it
    sig = app.signature("fail", "boom <&> é")
    sig.on_error = [on_error]
    with pytest.raises(TaskFailed, match="boom <&> é"):
        app.send(sig).get(timeout=10)
    assert AsyncResult(on_error.uuid, app.backend).get(timeout=10) == "boom <&> é|handled"
    # machinery: the FINISHED task's Immutable decides whether its results are appended
    chain = app.send_chain(app.signature("add", 1, 2), app.signature("add", 10, immutable=True),
                           app.signature("concat", "fixed"))
    assert chain.get(timeout=10) == "fixed"
    assert chain.results[1].get(timeout=1) == 13


def test_group_and_chord_callback_runs_once(running: Running) -> None:
    counted: list[tuple[int, ...]] = []

    def register(app: Bridge) -> None:
        @app.task("add")
        def add(*values: int) -> int:
            return sum(values)

        @app.task("collect")
        def collect(*values: int) -> int:
            counted.append(values)
            return sum(values)

    app = running(register, concurrency=8)
    group = app.send_group(*(app.signature("add", i, i) for i in range(5)))
    assert group.get(timeout=10) == [0, 2, 4, 6, 8]
    chord = app.send_chord([app.signature("add", i, 1) for i in range(20)],
                           app.signature("collect"))
    assert chord.get(timeout=20) == sum(range(1, 21))
    time.sleep(0.5)
    assert counted == [tuple(range(1, 21))]  # once, results in member order


def test_async_and_process_pool_tasks(running: Running) -> None:
    from tests.integration.sample_app import square

    def register(app: Bridge) -> None:
        @app.task("aio")
        async def aio(value: int) -> int:
            import asyncio

            await asyncio.sleep(0.01)
            return value + 1

        app.register("square", square)

    threads = running(register)
    assert threads.send_task("aio", 41).get(timeout=10) == 42
    processes = running(register, pool="processes", concurrency=2)
    assert [r.get(timeout=20) for r in [processes.send_task("square", i) for i in range(4)]] \
        == [0, 1, 4, 9]


def test_a_dying_child_process_fails_only_its_own_task(running: Running) -> None:
    """``--pool processes``: a child that dies fails the task it ran (machinery's retries
    apply) and no other; tasks running beside it in other children finish, and later
    tasks get a fresh child."""
    from tests.integration.sample_app import die, slow_square

    def register(app: Bridge) -> None:
        app.register("die", die)
        app.register("slow_square", slow_square)

    app = running(register, pool="processes", concurrency=3)
    beside = [app.send_task("slow_square", i) for i in range(2)]
    doomed = app.send_task("die", 3)
    killed = app.send_task("die", -9)  # SIGKILL, as the OOM killer sends
    with pytest.raises(TaskFailed, match=r"^the process running die died \(exit code 3\)"):
        doomed.get(timeout=30)
    with pytest.raises(TaskFailed, match=r"died \(killed by SIGKILL\)"):
        killed.get(timeout=30)
    assert [r.get(timeout=30) for r in beside] == [0, 1]
    later = [app.send_task("slow_square", i) for i in range(2, 8)]
    assert [r.get(timeout=60) for r in later] == [i * i for i in range(2, 8)]
    retried = app.signature("die", 5)
    retried.retry_count = 1  # machinery's retry, then FAILURE
    with pytest.raises(TaskFailed, match="exit code 5"):
        app.send(retried).get(timeout=60)


def test_bad_input_is_parked_with_a_reason_and_the_worker_goes_on(running: Running) -> None:
    def register(app: Bridge) -> None:
        @app.task("add")
        def add(*values: int) -> int:
            return sum(values)

        @app.task("small")
        def small(value: int) -> int:
            return value

    app = running(register)
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    queue = app.config.default_queue
    bad_args = Signature(uuid="task_badarg" + uuid.uuid4().hex, name="small",
                         args=[Arg("", "int8", 300)], headers={})  # Go would store 44
    broker.publish_raw(queue, [b"not json at all", b'{"UUID":"task_bad1","RetryCount":1.5}',
                               bad_args.to_json()])
    assert app.send_task("add", 2, 2).get(timeout=10) == 4  # the worker went on
    deadline = time.time() + 10
    while len(broker.dead_letters(queue, 0, -1)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    reasons = [entry["reason"] for entry in broker.dead_letters(queue, 0, -1)]
    assert len(reasons) == 3, reasons
    assert any("undecodable" in r for r in reasons)
    assert stored(app, "task_bad1").state == "FAILURE"  # UUID salvaged
    failed = stored(app, bad_args.uuid)
    assert failed.state == "FAILURE"
    assert failed.error.startswith("Reflect task args error: ")
    assert "300 is out of range for int8" in failed.error
    assert broker.replay_dead(queue, 0) == 3  # operators can replay them


_WHERE_IS = """
local found = {}
local function scan(members)
  for _, m in ipairs(members) do
    if string.find(m, ARGV[1], 1, true) then found[#found + 1] = m end
  end
end
scan(redis.call('ZRANGE', KEYS[1], 0, -1))
scan(redis.call('LRANGE', KEYS[2], 0, -1))
for _, key in ipairs(redis.call('KEYS', 'bridge:processing:*')) do
  scan(redis.call('LRANGE', key, 0, -1))
end
return found
"""
"""Every copy of a message (by a text it holds) in the delayed set, the queue and the
processing lists, read at one instant."""


def test_unregistered_tasks_back_off_and_are_not_lost(running: Running) -> None:
    app = running(handoff_window=0.0)  # back-off from the second return on
    result = app.send_task("nobody_has_this", 1)
    ignored = app.signature("nobody_has_this_either")
    ignored.ignore_when_task_not_registered = True
    app.send(ignored)
    time.sleep(2.5)
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    client = redis.Redis.from_url(app.config.broker)
    delayed = app.config.redis.delayed_tasks_key if app.config.redis else "delayed_tasks"
    # one script, so the snapshot is atomic: read key by key, a message moving between them
    # (held -> delayed, delayed -> queue) could be missed or seen twice
    where = client.eval(_WHERE_IS, 2, delayed, app.config.default_queue, result.task_uuid)
    assert len(where) == 1  # in the queue, the delayed set or held right now: not lost
    assert stored(app, result.task_uuid).state in ("PENDING",)  # never run, never failed


def test_a_finished_task_is_acknowledged_while_every_thread_stays_busy(
        running: Running) -> None:
    release = threading.Event()

    def register(app: Bridge) -> None:
        @app.task("hold")
        def hold() -> None:
            release.wait(30)

        @app.task("quick")
        def quick() -> None:
            return None

    app = running(register, concurrency=2)
    try:
        # the second hold waits in the queue while the quick task runs, so the fetch after
        # it takes that hold and leaves no thread free for another fetch to carry its ack
        first, quick, second = app.send_batch(
            [app.signature("hold"), app.signature("quick"), app.signature("hold")])
        holds = [first, second]
        quick.get(timeout=10)
        client = redis.Redis.from_url(app.config.broker)
        deadline = time.monotonic() + 5
        held: list[bytes] = []
        while time.monotonic() < deadline:
            held = [m for key in client.keys("bridge:processing:*")
                    for m in client.lrange(key, 0, -1)]
            if len(held) == 2 and all(b'"Name":"hold"' in m for m in held):
                break
            time.sleep(0.02)
        # the quick task's stored result is acknowledged without waiting for a hold to end
        assert sorted(b'"Name":"hold"' in m for m in held) == [True, True], held
        assert all(stored(app, r.task_uuid).state == "STARTED" for r in holds)
    finally:
        release.set()
    assert [r.get(timeout=10) for r in holds] == [None, None]
