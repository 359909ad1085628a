"""``mbridge relay`` between real Celery 5.6.2 and real Go machinery (v1 and v2) on one Redis.

Celery → machinery: a Celery client's tasks, chains and chords run on machinery's own Go
worker (the harness); the client's ``AsyncResult.get()`` returns Go's typed results or
raises with Go's error text; results of tasks that ended while the relay (the ``mbridge
relay`` command, stopped by SIGTERM) was down arrive after its restart.
machinery → Celery: Go's ``SendTask`` + ``AsyncResult.GetWithTimeout`` (harness ``send
--wait``) against a real ``celery worker``: typed values and Go error strings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, signature

from bridge.backends.redis import RedisBackend
from bridge.protocol.gojson import to_float32
from bridge.relay import inflight_key
from tests.celery_worker import celery_worker
from tests.integration.test_relay import (
    WAIT,
    celery_producer,
    eventually,
    fresh,
    hash_fields,
    relay_for,
    running,
)
from tests.interop.conftest import VERSIONS
from tests.interop.go_processes import go_worker

pytestmark = pytest.mark.go

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = """\
tasks:
  echo_int8: {args: [int8], results: [int8]}
  echo_float32: {args: [float32], results: [float32]}
  tasks.mul: {args: [int64, int64], results: [int32]}
"""


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    path.write_text(SCHEMA, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- Celery → Go


@dataclass
class ToGo:
    url: str
    producer: Celery


@pytest.fixture(scope="module", params=VERSIONS)
def to_go(request: pytest.FixtureRequest, harness: dict[str, Path], redis_url: str,
          schema_file: Path) -> Iterator[ToGo]:
    """Celery queue → relay (with the schema) → machinery queue ← the Go worker."""
    from bridge.schema import TaskSchema

    cq, mq = fresh("cq"), fresh("mq")
    relay = relay_for(redis_url, f"celery:{cq}", f"machinery:{mq}",
                      schema=TaskSchema.load(schema_file))
    with go_worker(harness[request.param], redis_url, mq), running(relay), \
            celery_producer(redis_url, cq) as producer:
        yield ToGo(redis_url, producer)


def test_celery_client_gets_go_results(to_go: ToGo) -> None:
    send = to_go.producer.send_task
    assert send("add", (2, 3, 4)).get(timeout=WAIT) == 9
    assert send("multiply", (-6, 7)).get(timeout=WAIT) == -42
    assert send("concat", (["a", "<&>", "é😀"],)).get(timeout=WAIT) == "a<&>é😀"
    assert send("echo_bytes", (b"\x00\xff",)).get(timeout=WAIT) == b"\x00\xff"
    assert send("echo_slice_string", (["x", "y"],)).get(timeout=WAIT) == ["x", "y"]
    assert send("echo_int8", (-128,)).get(timeout=WAIT) == -128  # int8 by the schema
    assert send("echo_float32", (0.1,)).get(timeout=WAIT) == to_float32(0.1)
    assert send("noop").get(timeout=WAIT) is None
    with pytest.raises(Exception, match="out of range for int8") as caught:
        send("echo_int8", (300,)).get(timeout=WAIT)
    assert type(caught.value).__name__ == "TaskArgError"


def test_go_failure_raises_in_the_celery_client(to_go: ToGo) -> None:
    with pytest.raises(Exception) as caught:
        to_go.producer.send_task("fail", ("boom <&> é",)).get(timeout=WAIT)
    assert (type(caught.value).__name__, caught.value.args) == ("GoError", ("boom <&> é",))


def test_celery_chain_runs_on_go(to_go: ToGo) -> None:
    app = to_go.producer
    result = chain(signature("add", (1, 2), app=app), signature("multiply", (10,), app=app),
                   signature("add", (5,), app=app)).apply_async()
    assert result.get(timeout=WAIT) == 35
    assert result.parent.get(timeout=WAIT) == 30
    failing = chain(signature("fail", ("stop",), app=app),
                    signature("add", (1,), app=app)).apply_async()
    with pytest.raises(Exception, match=r"^stop$"):
        failing.get(timeout=WAIT)


def test_celery_chord_triggers_on_go(to_go: ToGo) -> None:
    app = to_go.producer
    key = f"relay_chord_{uuid.uuid4().hex}"
    result = chord([signature("add", (i, 1), app=app) for i in range(6)],
                   signature("count_call", (key,), app=app)).apply_async()
    assert result.get(timeout=WAIT) == sum(range(1, 7))
    assert result.parent.get(timeout=WAIT) == [1, 2, 3, 4, 5, 6]
    assert int(redis.Redis.from_url(to_go.url).get(key) or 0) == 1  # the callback ran once


def _relay_cli(url: str, cq: str, mq: str, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it until it exits
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "relay", "--from", f"celery+{url}?queue={cq}",
         "--to", f"machinery+{url}?queue={mq}", "--poll", "0.05", "-l", "INFO"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ,
                                                             "PYTHONPATH": str(ROOT)})


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_relay_restart_delivers_results_of_tasks_that_ended_meanwhile(
        harness: dict[str, Path], redis_url: str, tmp_path: Path) -> None:
    cq, mq = fresh("cq"), fresh("mq")
    log_path = tmp_path / "relay.log"
    with go_worker(harness["v2"], redis_url, mq), celery_producer(redis_url, cq) as producer:
        _restart_scenario(redis_url, cq, mq, producer, log_path)
    assert "results in flight" in log_path.read_text()


def _restart_scenario(redis_url: str, cq: str, mq: str, producer: Celery,
                      log_path: Path) -> None:
    """Results are local here, so they are gone before the producer closes."""
    backend = RedisBackend(redis_url)
    relay = _relay_cli(redis_url, cq, mq, log_path)
    slow = producer.send_task("sleep_ms", (1500,))
    pair = chain(signature("sleep_ms", (300,), app=producer),
                 signature("add", (1,), app=producer)).apply_async()
    eventually(lambda: (s := backend.get_state(slow.id)) is not None
               and s.state == "STARTED"  # the relay passed it on; Go runs it
               and backend.get_state(pair.parent.id) is not None)
    assert _stop(relay) == 0, log_path.read_text()
    key = inflight_key(f"celery.{cq}-machinery.{mq}")
    assert hash_fields(redis.Redis.from_url(redis_url), key) >= {slow.id}
    eventually(lambda: all((s := backend.get_state(u)) is not None and s.is_completed()
                           for u in (slow.id, pair.id)))
    assert producer.AsyncResult(slow.id).state == "PENDING"  # nobody carried it yet
    relay = _relay_cli(redis_url, cq, mq, log_path)
    try:
        assert slow.get(timeout=WAIT) == 1500
        assert pair.get(timeout=WAIT) == 301
    finally:
        assert _stop(relay) == 0, log_path.read_text()


# --------------------------------------------------------------------------- Go → Celery


@dataclass
class FromGo:
    url: str
    queue: str


@pytest.fixture(scope="module")
def from_go(redis_url: str, schema_file: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[FromGo]:
    """Go producer → machinery queue → relay → Celery queue ← a real celery worker."""
    from bridge.schema import TaskSchema

    cq, mq = fresh("cq"), fresh("mq")
    relay = relay_for(redis_url, f"machinery:{mq}", f"celery:{cq}",
                      schema=TaskSchema.load(schema_file))
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    with celery_worker(redis_url, redis_url, queues=(cq,), log_path=log_path), running(relay):
        yield FromGo(redis_url, mq)


def go_send(binary: Path, target: FromGo, task: str, *args: str) -> dict[str, Any]:
    """``harness send --wait``: Go's SendTask, then AsyncResult.GetWithTimeout."""
    flags = [f"--arg={a}" for a in args]
    run = subprocess.run([str(binary), "send", "--broker", target.url, "--backend", target.url,
                          "--queue", target.queue, "--task", task, *flags, "--wait",
                          "--timeout", str(WAIT), "-q"],
                         capture_output=True, text=True, timeout=WAIT + 30)
    line = run.stdout.strip().splitlines()[-1]
    task_uuid, _, payload = line.partition(" ")
    assert task_uuid.startswith("task_"), run.stdout + run.stderr
    return dict(json.loads(payload))


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_gets_celery_results(version: str, harness: dict[str, Path],
                                         from_go: FromGo) -> None:
    binary = harness[version]
    assert go_send(binary, from_go, "tasks.add", "int64=2", "int64=3") == {
        "results": [{"type": "int64", "canon": "5"}]}
    assert go_send(binary, from_go, "tasks.mul", "int64=6", "int64=7") == {
        "results": [{"type": "int32", "canon": "42"}]}  # result type from the schema
    assert go_send(binary, from_go, "tasks.concat", "string=a", "string=é",
                   "string=<&>") == {"results": [{"type": "string", "canon": "aé<&>"}]}
    assert go_send(binary, from_go, "tasks.fail", "string=no luck <&>") == {
        "error": "no luck <&>"}

