"""The Go harness on machinery's other transports: real Go v1/v2 worker + producer.

Go producer → Go worker of the other major version (v1 → v2 and v2 → v1), through:

- the SQS broker on moto (machinery's URL form, endpoint and credentials from the
  environment) with the Redis backend, standard and FIFO (``--group-id``) queues;
- the Redis broker with the Memcache, MongoDB (FerretDB), DynamoDB (moto) and AMQP backends.

This proves the harness side (client injection, queue/table creation, readiness, group meta
readers), so later Python work can be tested live against real Go. Where machinery itself
cannot do something on a transport, the scenario is left out and the reason given:

- ETA on SQS: ``DelaySeconds = int(ETA - now)`` truncates (a 2 s ETA runs after ~1 s); FIFO
  queues ignore the ETA, and a retry re-sends the same UUID as ``MessageDeduplicationId``,
  which SQS drops as a duplicate: ``eta`` and ``retry`` fail there.
- Memcache and MongoDB trigger chords without an atomic step (memcache: get/set, MongoDB:
  ``UpdateOne`` whose "already triggered" branch never happens), so concurrent last members
  can send the callback twice: those workers run with concurrency 1.
- MongoDB (BSON): ints narrower than 64 bits come back as int32 (``ReflectValue`` rejects
  them), ``[]byte`` as binary (``ReflectValue`` panics), uint64 > 2^63-1 cannot be stored:
  ``types`` fails.
- DynamoDB stores every result value as ``fmt.Sprintf("%v")`` text: only string results
  round-trip (``5 is not int64``), and a chord callback cannot reflect its arguments.
- FIFO on moto: its long poll is not woken when a message group unblocks, so a worker with
  concurrency > 1 gets about one message a second; the FIFO worker runs with concurrency 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.interop.go_processes import go_produce, go_worker

if TYPE_CHECKING:
    from tests.backend_servers import Memcached, MongoServer, MotoServer

pytestmark = pytest.mark.go

PAIRS = [("v1", "v2"), ("v2", "v1")]
"""(worker, producer): each major version is worker once and producer once."""

TIMEOUT = ("--timeout", "20")
BACKEND_SCENARIOS = "basic,chain,group,chord,fail"


def fresh_queue(suffix: str = "") -> str:
    return f"interop_tr_{uuid.uuid4().hex[:10]}{suffix}"


def aws_env(moto: MotoServer) -> dict[str, str]:
    """This process's environment with moto's endpoint, region and test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **moto.env()}


def with_database(mongo_url: str, database: str) -> str:
    """``mongo_url`` naming ``database`` (the harness sets Config.MongoDB.Database from it)."""
    parts = urlsplit(mongo_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def go_send_wait(binary: Path, broker: str, backend: str, queue: str, task: str,
                 *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """``harness send --wait`` of one task: its ``{"results": ...}`` or ``{"error": ...}``."""
    argv = [str(binary), "send", "--broker", broker, "--backend", backend, "--queue", queue,
            "--task", task, "--wait", "--timeout", "20", "-q"]
    for arg in args:
        argv += ["--arg", arg]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    _, _, line = run.stdout.strip().partition(" ")
    result: dict[str, object] = json.loads(line)
    return result


# ------------------------------------------------------------------------------ SQS broker

@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_sqs_broker_redis_backend(worker: str, producer: str, harness: dict[str, Path],
                                  moto_server: MotoServer, redis_url: str) -> None:
    """machinery's SQS broker URL (``http://HOST:PORT/ACCOUNT``) with AWS_ENDPOINT_URL."""
    queue, env = fresh_queue(), aws_env(moto_server)
    broker = moto_server.sqs_broker_url
    with go_worker(harness[worker], broker, queue, backend=redis_url, env=env):
        out = go_produce(harness[producer], broker, queue, "basic,types,chain,group,chord,"
                         "fail,retry", *TIMEOUT, backend=redis_url, env=env)
    assert "ok types/" in out and "ok retry/counter" in out


@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_sqs_fifo_queue(worker: str, producer: str, harness: dict[str, Path],
                        moto_server: MotoServer, redis_url: str) -> None:
    """A ``.fifo`` queue (created FIFO by the harness), ``sqs://HOST:PORT`` form, one message
    group for every task (``--group-id``)."""
    queue = fresh_queue(".fifo")
    broker = "sqs://" + urlsplit(moto_server.endpoint).netloc
    env = aws_env(moto_server)
    with go_worker(harness[worker], broker, queue, 1, backend=redis_url, env=env):
        out = go_produce(harness[producer], broker, queue, "basic,chain,group,chord,fail",
                         *TIMEOUT, "--group-id", "interop", backend=redis_url, env=env)
    assert "ok chord/counter_later" in out


def test_sqs_fifo_needs_a_group_id(harness: dict[str, Path], moto_server: MotoServer,
                                   redis_url: str) -> None:
    """machinery refuses to publish to a FIFO queue without BrokerMessageGroupId."""
    run = subprocess.run(
        [str(harness["v2"]), "send", "--broker", moto_server.sqs_broker_url, "--backend",
         redis_url, "--queue", fresh_queue(".fifo"), "--task", "noop", "-q"],
        capture_output=True, text=True, timeout=60, env=aws_env(moto_server))
    assert run.returncode == 2
    assert "please specify BrokerMessageGroupId" in run.stderr


# ------------------------------------------------------------------------ result backends

@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_memcache_backend(worker: str, producer: str, harness: dict[str, Path],
                          memcached_server: Memcached, redis_url: str) -> None:
    queue, backend = fresh_queue(), memcached_server.url
    with go_worker(harness[worker], redis_url, queue, 1, backend=backend):
        out = go_produce(harness[producer], redis_url, queue, "types," + BACKEND_SCENARIOS,
                         *TIMEOUT, backend=backend)
    assert "ok chord/group_meta" in out and "ok types/" in out


@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_mongodb_backend(worker: str, producer: str, harness: dict[str, Path],
                         mongo_server: MongoServer, redis_url: str) -> None:
    queue = fresh_queue()
    backend = with_database(mongo_server.url, f"go_{worker}_{uuid.uuid4().hex[:8]}")
    with go_worker(harness[worker], redis_url, queue, 1, backend=backend):
        out = go_produce(harness[producer], redis_url, queue, BACKEND_SCENARIOS, *TIMEOUT,
                         backend=backend)
    assert "ok chord/group_meta" in out


@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_dynamodb_backend(worker: str, producer: str, harness: dict[str, Path],
                          moto_server: MotoServer, redis_url: str) -> None:
    """``dynamodb://HOST:PORT``: the harness creates task_states / group_metas. Only string
    results round-trip through machinery's DynamoDB backend."""
    queue, env = fresh_queue(), aws_env(moto_server)
    backend = "dynamodb://" + urlsplit(moto_server.endpoint).netloc
    with go_worker(harness[worker], redis_url, queue, backend=backend, env=env):
        go_produce(harness[producer], redis_url, queue, "fail", *TIMEOUT, backend=backend,
                   env=env)
        concat = go_send_wait(harness[producer], redis_url, backend, queue, "concat",
                              '[]string=["a","<&>"]', env=env)
        assert concat == {"results": [{"type": "string", "canon": "a<&>"}]}
        add = go_send_wait(harness[producer], redis_url, backend, queue, "add", "int64=2",
                           "int64=3", env=env)
        assert add == {"error": "5 is not int64"}  # stored as the text "5"
    tables = moto_server.client("dynamodb").list_tables()["TableNames"]
    assert {"task_states", "group_metas"} <= set(tables)


@pytest.mark.parametrize(("worker", "producer"), PAIRS)
def test_amqp_backend(worker: str, producer: str, harness: dict[str, Path], amqp_url: str,
                      redis_url: str) -> None:
    """machinery's AMQP backend (a queue per task UUID, read once): states, chains, chords."""
    queue = fresh_queue()
    with go_worker(harness[worker], redis_url, queue, backend=amqp_url):
        out = go_produce(harness[producer], redis_url, queue, BACKEND_SCENARIOS, *TIMEOUT,
                         backend=amqp_url)
    assert "ok chain/step_1" in out and "ok chord/counter_later" in out
