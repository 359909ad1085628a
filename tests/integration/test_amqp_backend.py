"""The AMQP result backend against a real RabbitMQ, Go's frames and Go's steps.

What Go writes is captured, not hand-written: real machinery (the harness, v1 and v2) talks
to RabbitMQ through a recording proxy (tests/amqp_capture.py), and our backend's frames for
the same states are compared with its. Go's chord steps are modelled on raw py-amqp
(tests/amqp_go_model.py) to put our claim between two of them; the live tests
(tests/interop/test_live_amqp_backend.py) race real Go workers.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from bridge.app import Bridge, backend_from_config
from bridge.backends.amqp import AmqpBackend, GroupStatesConsumed, ResultQueueRefused
from bridge.backends.base import new_state
from bridge.config import AMQPConfig, Config, ConfigError
from bridge.errors import Unreachable
from bridge.localredis import free_port
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Signature,
    TaskState,
    new_uuid,
)
from bridge.result import AsyncResult, TaskFailed
from bridge.types import to_result
from tests.amqp_capture import (
    BASIC_PUBLISH,
    EXCHANGE_DECLARE,
    QUEUE_BIND,
    QUEUE_DECLARE,
    Method,
    capturing_proxy,
)
from tests.amqp_go_model import (
    GoError,
    go_connection,
    go_declare,
    go_get_state,
    go_group_completed,
    go_group_task_states,
    go_trigger_chord,
    go_worker_chord,
)
from tests.fixtures import ROOT
from tests.interop.go_processes import go_worker
from tests.interop.interop_app import make_app
from tests.worker_thread import worker_thread

ONE = [to_result(1, "int64")]


@pytest.fixture
def backend(amqp_url: str) -> Iterator[AmqpBackend]:
    b = AmqpBackend(amqp_url, claim_timeout=2.0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def harness() -> dict[str, Path]:
    """The Go harness binaries (real machinery v1 and v2), built as the interop tests do."""
    if shutil.which("go") is None:
        pytest.fail("Go is not installed: this test needs the harness (see .ci/run)")
    subprocess.run(["bash", str(ROOT / "build.sh")], check=True, timeout=1200)
    return {v: ROOT / "bin" / f"harness-{v}" for v in ("v1", "v2")}


def depth(url: str, queue: str) -> int | None:
    """Ready messages in ``queue``; None when it does not exist."""
    with go_connection(url) as channel:
        try:
            return int(channel.queue_declare(queue, passive=True)[1])
        except amqp.exceptions.NotFound:
            return None


def raw_messages(url: str, queue: str) -> list[bytes]:
    """Every message of ``queue``, taken (basic.get + ack)."""
    bodies = []
    with go_connection(url) as channel:
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            channel.basic_ack(message.delivery_tag)
            bodies.append(bytes(message.body))
    return bodies


def member(group: str, count: int) -> Signature:
    return Signature(uuid=new_uuid("task_"), name="add", group_uuid=group,
                     group_task_count=count)


def declarations(methods: list[Method]) -> set[tuple[Any, ...]]:
    """The exchange/queue/bind declarations, wait flag aside (we do not wait: deliberate)."""
    found = set()
    for m in methods:
        if m.key in (EXCHANGE_DECLARE, QUEUE_DECLARE, QUEUE_BIND):
            args = {k: sorted(v.items()) if isinstance(v, dict) else v  # Go: a map's order
                    for k, v in m.args.items() if k != "nowait"}
            found.add((m.key, repr(sorted(args.items()))))
    return found


def publishes(methods: list[Method]) -> list[tuple[Any, ...]]:
    """Each basic.publish as (exchange, routing key, flags, raw properties, body)."""
    return [(m.args["exchange"], m.args["routing_key"], m.args["mandatory"],
             m.args["immediate"], m.properties, m.body)
            for m in methods if m.key == BASIC_PUBLISH]


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ------------------------------------------------------------------ bytes: what Go writes


@pytest.mark.go
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pending_write_is_gos(version: str, harness: dict[str, Path], amqp_url: str,
                              redis_url: str) -> None:
    """machinery's SendTask writes PENDING through its AMQP backend; ours writes the same
    state: the same exchange, queue (durable false, auto-delete, x-message-ttl and x-expires
    as signed 32-bit ints) and binding, and a publish with the same flags, properties and
    body bytes. Declaring Go's queue again is accepted by RabbitMQ (equivalent arguments)."""
    with capturing_proxy(amqp_url) as (url, capture):
        run = subprocess.run([str(harness[version]), "send", "--broker", redis_url, "--backend",
                              url, "--queue", f"cap_{uuid.uuid4().hex[:8]}", "--task", "add",
                              "--arg", "int64=1", "-q"], capture_output=True, text=True,
                             timeout=60, check=True)
        task_uuid = run.stdout.split()[0]
        wait_for(lambda: publishes(capture.methods()))
        go = capture.methods()
        capture.clear()
        [go_publish] = publishes(go)
        backend = AmqpBackend(url)
        backend.set_state(TaskState.from_json(go_publish[-1]))
        backend.close()
        ours = capture.methods()
    assert declarations(ours) == declarations(go)
    assert publishes(ours) == [go_publish]
    [table] = [m.args["arguments"] for m in go if m.key == QUEUE_DECLARE]
    assert table == {"x-message-ttl": ("I", 3_600_000), "x-expires": ("I", 3_600_000)}
    assert go_publish[:2] == ("machinery_exchange", task_uuid)
    assert go_publish[4] == b"\x90\x00\x10application/json\x02"  # content type, persistent
    assert [m.args["nowait"] for m in ours if m.key in (QUEUE_DECLARE, QUEUE_BIND)] == [True] * 2
    assert depth(amqp_url, task_uuid) == 2  # Go's PENDING and ours


@pytest.mark.go
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_worker_states_are_gos(version: str, harness: dict[str, Path], amqp_url: str,
                               redis_url: str) -> None:
    """One group member (the same message bytes) run by a Go worker, then by ours: the same
    RECEIVED, STARTED, SUCCESS messages on the task's queue and SUCCESS on the group's."""
    queue = f"cap_{uuid.uuid4().hex[:8]}"
    producer = make_app(redis_url, queue)
    producer.config = dataclasses.replace(producer.config, result_backend=amqp_url)
    result = producer.send_group(producer.signature("add", 1, 2)).results[0]
    lists = redis.Redis.from_url(redis_url)
    body = lists.lindex(queue, 0)
    assert isinstance(body, bytes)
    sig = Signature.from_json(body)
    with capturing_proxy(amqp_url) as (url, capture):
        with go_worker(harness[version], redis_url, queue, 1, backend=url, extra=["-q"]):
            wait_for(lambda: len(publishes(capture.methods())) == 4)
        go = capture.methods()
        capture.clear()
        lists.rpush(queue, body)
        worker_app = make_app(redis_url, queue)
        worker_app.config = dataclasses.replace(worker_app.config, result_backend=url)
        with worker_thread(worker_app, 2):
            wait_for(lambda: len(publishes(capture.methods())) == 4)
        ours = capture.methods()
    assert publishes(ours) == publishes(go)
    assert [p[1] for p in publishes(go)] == [sig.uuid] * 3 + [sig.group_uuid]
    assert [TaskState.from_json(p[-1]).state for p in publishes(go)] == \
        [RECEIVED, STARTED, SUCCESS, SUCCESS]
    assert declarations(ours) == declarations(go)
    assert result.get(timeout=10) == 3
    producer.close()


# ------------------------------------------------------------------ states and reads


def test_reads_are_destructive_and_keep_the_completed_state(backend: AmqpBackend,
                                                           amqp_url: str) -> None:
    """One message per state, read oldest first by Go; our read takes the waiting states up
    to the newest, puts a completed one back for other readers, and remembers what it saw."""
    sig = Signature(uuid=new_uuid("task_"), name="add")
    backend.set_state(new_state(sig, PENDING))
    backend.set_states([new_state(sig, RECEIVED), new_state(sig, STARTED)])
    assert depth(amqp_url, sig.uuid) == 3
    assert go_get_state(amqp_url, sig.uuid).state == PENDING  # type: ignore[union-attr]
    got = backend.get_state(sig.uuid)
    assert got is not None and got.state == STARTED
    assert depth(amqp_url, sig.uuid) == 0  # taken, as Go's reads take them
    assert go_get_state(amqp_url, sig.uuid) is None  # Go: "No state ready"
    assert backend.get_state(sig.uuid) == got  # remembered
    backend.set_state(new_state(sig, SUCCESS, ONE))
    done = backend.get_state(sig.uuid)
    assert done is not None and done.state == SUCCESS
    assert depth(amqp_url, sig.uuid) == 1  # still there for a Go reader
    assert AsyncResult(sig.uuid, backend).get(timeout=5) == 1
    other = AmqpBackend(amqp_url)  # another process of ours
    assert AsyncResult(sig.uuid, other).get(timeout=5) == 1
    other.close()
    go_done = go_get_state(amqp_url, sig.uuid)
    assert go_done is not None and go_done.to_json() == done.to_json()
    assert depth(amqp_url, sig.uuid) == 0  # Go's reader took it; ours still knows it
    assert backend.get_state(sig.uuid) == done
    backend.purge_state(sig.uuid)
    assert depth(amqp_url, sig.uuid) is None
    assert backend.get_state(sig.uuid) is None


def test_async_result_reads_a_failure_written_go_style(backend: AmqpBackend,
                                                       amqp_url: str) -> None:
    """States published exactly as Go's updateState publishes them (its own declarations,
    one connection each): our AsyncResult gets the failure text."""
    task_uuid = new_uuid("task_")
    for state in (TaskState(task_uuid, state=RECEIVED), TaskState(task_uuid, state=STARTED),
                  TaskState(task_uuid, state=FAILURE, error="boom <&> é")):
        with go_connection(amqp_url) as channel:
            go_declare(channel, task_uuid)
            channel.basic_publish(amqp.Message(state.to_json(), content_type="application/json",
                                               delivery_mode=2),
                                  exchange="machinery_exchange", routing_key=task_uuid)
    with pytest.raises(TaskFailed, match=r"^boom <&> é$"):
        AsyncResult(task_uuid, backend).get(timeout=5)


def test_refused_declaration_is_one_line(amqp_url: str) -> None:
    """A result queue declared elsewhere with another TTL: RabbitMQ refuses ours (as Go's);
    one line naming the fix, and the backend keeps working for other queues."""
    task_uuid = new_uuid("task_")
    with go_connection(amqp_url) as channel:
        channel.queue_declare(task_uuid, durable=False, auto_delete=True,
                              arguments={"x-message-ttl": 60_000, "x-expires": 60_000})
    backend = AmqpBackend(amqp_url, Config(results_expire_in=120))
    with pytest.raises(ResultQueueRefused) as info:
        backend.set_state(TaskState(task_uuid, state=STARTED))
    line = str(info.value)
    assert "\n" not in line and "inequivalent arg" in line and "results_expire_in" in line
    other = new_uuid("task_")
    backend.set_state(TaskState(other, state=STARTED))
    assert backend.get_state(other) == TaskState(other, state=STARTED)
    backend.close()


def test_default_exchange(amqp_url: str) -> None:
    """An empty ``amqp.exchange``: Go's backend cannot bind to the default exchange and fails;
    ours publishes through it (it routes by queue name) and reads back."""
    backend = AmqpBackend(amqp_url, Config(amqp=AMQPConfig(exchange="")))
    sig = Signature(uuid=new_uuid("task_"), name="add")
    backend.set_states([new_state(sig, PENDING), new_state(sig, SUCCESS, ONE)])
    assert AsyncResult(sig.uuid, backend).get(timeout=5) == 1
    backend.close()


def test_ttl_too_long_for_int32_is_a_config_error(amqp_url: str) -> None:
    with pytest.raises(ConfigError, match=r"results_expire_in: 2147484 s is too long"):
        AmqpBackend(amqp_url, Config(results_expire_in=2_147_484))
    AmqpBackend(amqp_url, Config(results_expire_in=2_147_483)).close()  # the largest Go takes


def test_backend_from_config_and_ping(amqp_url: str) -> None:
    for url in (amqp_url, amqp_url.replace("amqp://", "amqps://", 1)):
        assert isinstance(backend_from_config(Config(result_backend=url)), AmqpBackend)
    backend = backend_from_config(Config(result_backend=amqp_url))
    backend.ping()
    backend.close()


def test_ping_names_the_url_and_the_fix(amqp_url: str) -> None:
    port = free_port()
    with pytest.raises(Unreachable) as refused:
        AmqpBackend(f"amqp://guest:secret@127.0.0.1:{port}//", connect_timeout=2).ping()
    assert str(refused.value) == (
        f"result backend amqp://guest:***@127.0.0.1:{port}// is unreachable ([Errno 111] "
        f"Connection refused): start RabbitMQ there or fix result_backend")
    wrong = amqp_url.replace("guest:guest@", "guest:wrong@", 1)
    app = Bridge(Config(result_backend=wrong))
    with pytest.raises(ConfigError, match=r"^result backend amqp://guest:\*\*\*@.* refused the "
                       r"login \(.*ACCESS_REFUSED.*\): fix the user and password in "
                       r"`result_backend`"):
        app.check(broker=False)
    app.close()
    no_vhost = amqp_url.rstrip("/") + "/nosuchvhost"
    with pytest.raises(ConfigError, match=r"vhost nosuchvhost not found: create that vhost"):
        AmqpBackend(no_vhost).ping()


# ------------------------------------------------------------------ groups


def test_group_members_go_to_the_group_queue(backend: AmqpBackend, amqp_url: str) -> None:
    """SUCCESS and FAILURE of a member (GroupUUID and GroupTaskCount set) are also published
    to the group's queue, byte for byte; other states and non-members are not. InitGroup
    stores nothing; GroupCompleted counts the group queue."""
    group = new_uuid("group_")
    sigs = [member(group, 3) for _ in range(3)]
    backend.init_group(group, [s.uuid for s in sigs])
    assert depth(amqp_url, group) is None  # no group meta, as in Go
    assert not backend.group_completed(group, 3)
    backend.set_states([new_state(s, kind) for s in sigs for kind in (RECEIVED, STARTED)])
    backend.set_state(new_state(sigs[0], RETRY))
    backend.set_state(new_state(Signature(uuid=new_uuid("task_")), SUCCESS, ONE))
    assert depth(amqp_url, group) is None
    backend.set_states([new_state(sigs[1], SUCCESS, ONE), new_state(sigs[2], FAILURE,
                                                                   error="boom")])
    assert not backend.group_completed(group, 3)
    backend.set_state(new_state(sigs[0], SUCCESS, ONE))
    assert backend.group_completed(group, 3)
    assert backend.group_completed(group, 2)  # Go wants exactly 2 (see the repeats below)
    assert backend.group_completed(group, 3)
    states = backend.group_task_states(group, 3)  # Go's order: as they finished
    assert [s.task_uuid for s in states] == [sigs[1].uuid, sigs[2].uuid, sigs[0].uuid]
    assert [s.state for s in states] == [SUCCESS, FAILURE, SUCCESS]
    assert depth(amqp_url, group) is None  # consumed: the auto-delete queue went with it
    with pytest.raises(GroupStatesConsumed, match="'Already consumed'"):
        backend.group_task_states(group, 3)
    task_queue = raw_messages(amqp_url, sigs[0].uuid)
    assert task_queue[-1] == states[2].to_json()


def chord_group(backend: AmqpBackend, count: int) -> str:
    group = new_uuid("group_")
    backend.set_states([new_state(member(group, count), SUCCESS, ONE) for _ in range(count)])
    return group


def test_chord_with_a_member_state_written_twice(backend: AmqpBackend, amqp_url: str) -> None:
    """A repeated member state (redelivery, a write repeated after a lost connection) makes
    Go's count miss GroupTaskCount forever; ours counts members: with all three there the
    chord fires with each member once; with one missing, what the claim took is put back in
    order and the chord fires when the last one comes."""
    group = new_uuid("group_")
    sigs = [member(group, 3) for _ in range(3)]
    first, second, third = (new_state(s, SUCCESS, ONE) for s in sigs)
    backend.set_states([first, second, first])
    assert go_group_completed(amqp_url, group, 3)  # Go: 3 messages, it would fire with m1 twice
    assert backend.group_completed(group, 3)
    assert backend.trigger_chord(group) is False  # only two members
    assert raw_messages(amqp_url, group) == [s.to_json() for s in (first, second, first)]
    backend.set_states([first, second, first, third])
    assert not go_group_completed(amqp_url, group, 3)  # 4 messages: Go never fires
    assert backend.group_completed(group, 3) and backend.trigger_chord(group)
    assert [s.task_uuid for s in backend.group_task_states(group, 3)] == [s.uuid for s in sigs]


def test_chord_claim_and_marker(backend: AmqpBackend, amqp_url: str) -> None:
    """Our claim takes every member state as the group queue's exclusive consumer, declares
    the marker Go's TriggerChord checks, and leaves the states for group_task_states."""
    group = chord_group(backend, 4)
    assert backend.group_completed(group, 4)
    assert backend.trigger_chord(group)
    assert go_trigger_chord(amqp_url, group) is False  # Go sees the marker
    assert depth(amqp_url, group) is None
    assert depth(amqp_url, f"{group}_chord_triggered") == 0
    assert len(backend.group_task_states(group, 4)) == 4
    assert not backend.group_completed(group, 4)
    assert not backend.trigger_chord(group)
    backend.purge_group_meta(group)
    assert depth(amqp_url, f"{group}_chord_triggered") is None


@pytest.mark.parametrize("round_", range(10))
def test_chord_once_among_python_backends(amqp_url: str, round_: int) -> None:
    """Eight backends (eight connections, as eight workers) finish the last member at once."""
    backends = [AmqpBackend(amqp_url, claim_timeout=2.0) for _ in range(8)]
    group = chord_group(backends[0], 5)
    barrier = threading.Barrier(len(backends))
    wins: list[bool] = []

    def last_member(b: AmqpBackend) -> None:
        barrier.wait()
        wins.append(b.group_completed(group, 5) and b.trigger_chord(group))

    threads = [threading.Thread(target=last_member, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    for b in backends:
        b.close()


def test_chord_go_holds_the_group_queue(backend: AmqpBackend, amqp_url: str) -> None:
    """Go's GroupTaskStates has the deliveries (not acked yet): our claim is refused."""
    group = chord_group(backend, 3)
    assert backend.group_completed(group, 3)
    ours: list[bool] = []
    states = go_group_task_states(amqp_url, group, 3,
                                  after_deliveries=lambda: ours.append(
                                      backend.trigger_chord(group)))
    assert ours == [False] and len(states) == 3


def test_chord_go_inspected_before_our_claim(backend: AmqpBackend, amqp_url: str) -> None:
    """Go saw all the states (count == GroupTaskCount), then we claim: Go's Consume finds no
    queue and Go sends nothing."""
    group = chord_group(backend, 3)
    ours: list[bool] = []
    with pytest.raises(GoError, match="NOT_FOUND"):
        go_group_task_states(amqp_url, group, 3, after_inspect=lambda: ours.append(
            backend.group_completed(group, 3) and backend.trigger_chord(group)))
    assert ours == [True]


def test_chord_go_after_our_claim(backend: AmqpBackend, amqp_url: str) -> None:
    """A Go worker finishing a member after our claim: TriggerChord false (the marker); one
    that passed TriggerChord before: GroupTaskStates fails; neither sends."""
    group = chord_group(backend, 3)
    assert backend.group_completed(group, 3) and backend.trigger_chord(group)
    assert go_trigger_chord(amqp_url, group) is False
    with pytest.raises(GoError):
        go_group_task_states(amqp_url, group, 3)


@pytest.mark.parametrize("round_", range(10))
def test_chord_once_racing_the_go_model(amqp_url: str, round_: int) -> None:
    """Go's steps and ours, each the last member's worker, started together."""
    backends = [AmqpBackend(amqp_url, claim_timeout=2.0) for _ in range(2)]
    group = chord_group(backends[0], 6)
    barrier = threading.Barrier(4)
    wins: list[tuple[str, bool]] = []

    def ours(b: AmqpBackend) -> None:
        barrier.wait()
        wins.append(("ours", b.group_completed(group, 6) and b.trigger_chord(group)))

    def go() -> None:
        barrier.wait()
        wins.append(("go", go_worker_chord(amqp_url, group, 6)))

    threads = [threading.Thread(target=ours, args=(b,)) for b in backends]
    threads += [threading.Thread(target=go) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(won for _, won in wins) == 1, wins
    for b in backends:
        b.close()


def test_chord_once_with_two_python_workers(amqp_url: str, redis_url: str) -> None:
    """Our worker twice on one queue (Redis broker, AMQP backend): chords of 20, three times,
    the callback once each."""
    queue = f"amqp_chord_{uuid.uuid4().hex[:8]}"

    def app() -> Bridge:
        made = make_app(redis_url, queue)
        made.config = dataclasses.replace(made.config, result_backend=amqp_url)
        return made

    producer = app()
    counters = redis.Redis.from_url(redis_url)
    with worker_thread(app(), 4), worker_thread(app(), 4):
        for _ in range(3):
            key = f"count_{uuid.uuid4().hex}"
            chord = producer.send_chord([producer.signature("add", i, 1) for i in range(20)],
                                        producer.signature("count_call", key))
            assert chord.get(timeout=60) == sum(range(1, 21))
            time.sleep(0.3)
            assert int(counters.get(key) or 0) == 1
    producer.close()


# ------------------------------------------------------------------ the mbridge command


def test_mbridge_with_machinerys_amqp_configuration(amqp_url: str, tmp_path: Path) -> None:
    """machinery's AMQP example configuration (RabbitMQ for tasks and results) in a
    config.yml: the real ``mbridge worker`` starts (it was refused before), ``mbridge send
    --wait`` gets the result, and an unreachable backend is one line naming the fix."""
    queue = f"cli_amqp_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yml"
    config.write_text(f"broker: {amqp_url}\ndefault_queue: {queue}\n"
                      f"result_backend: {amqp_url}\nresults_expire_in: 3600\n"
                      f"amqp:\n  exchange: machinery_exchange\n  exchange_type: direct\n"
                      f"  binding_key: {queue}\n  prefetch_count: 3\n")
    cli = [sys.executable, "-m", "bridge.cli"]
    worker = subprocess.Popen([*cli, "worker", "-A", str(ROOT.parent / "examples" / "tasks.py"),
                               "--config", str(config), "-c", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sent = subprocess.run([*cli, "send", "--config", str(config), "add", "40", "2",
                               "--wait", "30"], capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.strip().splitlines()[-1] == "42"
    finally:
        worker.terminate()
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors[-2000:]
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    config.write_text(config.read_text().replace(f"result_backend: {amqp_url}",
                                                 f"result_backend: {dead}"))
    refused = subprocess.run([*cli, "worker", "-A", str(ROOT.parent / "examples" / "tasks.py"),
                              "--config", str(config)], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0
    [line] = [ln for ln in refused.stderr.splitlines() if ln.startswith("Error:")]
    assert line == (f"Error: result backend {dead.replace(':guest@', ':***@')} is unreachable "
                    f"([Errno 111] Connection refused): start RabbitMQ there or fix "
                    f"result_backend")
