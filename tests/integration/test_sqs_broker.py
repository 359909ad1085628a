"""SqsBroker against a real SQS endpoint (moto's server mode): Go's bytes and attributes,
DelaySeconds, the delay queue beyond the 900 s limit (scaled down), the visibility heartbeat,
dead letters, unregistered back-off, and a worker process killed mid-batch.

What the broker sends is observed on the wire (botocore's request parameters, and the
messages as another consumer receives them), never by replacing a part of it. Live runs
with real Go machinery v1 and v2 workers and producers are in tests/interop/test_live_sqs.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge, broker_from_config
from bridge.backends.redis import RedisBackend
from bridge.brokers.sqs import SqsBroker, dedup_id
from bridge.brokers.sqs_layout import (
    DELAY_QUEUE,
    FIFO_GROUP_MISSING,
    FifoGroupMissing,
    dead_queue_name,
)
from bridge.config import Config, ConfigError, SQSConfig
from bridge.errors import Unreachable
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import FAILURE, SUCCESS, Signature
from bridge.retry import RetryLater
from tests.backend_servers import MotoServer
from tests.worker_thread import worker_thread

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0
"""Generous upper bound for something to happen; tests never assert durations."""


@pytest.fixture(autouse=True)
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region for boto3, as a deployment would have them."""
    for name, value in moto_server.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)


@pytest.fixture
def sqs(moto_server: MotoServer) -> Any:
    """A plain boto3 client: the test's own view of the queues (another consumer)."""
    return moto_server.client("sqs")


@pytest.fixture
def queue(sqs: Any) -> str:
    """A standard queue of this test only."""
    name = f"bridge_sqs_{uuid.uuid4().hex[:10]}"
    sqs.create_queue(QueueName=name)
    return name


def make_config(moto: MotoServer, queue: str, backend: str = "redis://127.0.0.1:1/0",
                **sqs_options: Any) -> Config:
    options = {"wait_time_seconds": 1, **sqs_options}
    return Config(broker=moto.sqs_broker_url, result_backend=backend, default_queue=queue,
                  sqs=SQSConfig(**options))


def make_app(moto: MotoServer, queue: str, redis_url: str, **broker_options: Any) -> Bridge:
    sqs_options = broker_options.pop("sqs", {})
    config = make_config(moto, queue, redis_url, **sqs_options)
    broker = SqsBroker(config.broker, config, lookup_interval=0.5, **broker_options)
    return Bridge(config, broker=broker, backend=RedisBackend(redis_url, config))


def url_of(moto: MotoServer, queue: str) -> str:
    return f"{moto.sqs_broker_url}/{queue}"


def record(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call ``client`` makes from now on."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(f"provide-client-params.sqs.{operation}",
                                lambda params, **_: calls.append(dict(params)))
    return calls


def receive_all(sqs: Any, url: str, expected: int, visibility: int = 30) -> list[dict[str, Any]]:
    """What another consumer receives from ``url`` (up to ``expected`` messages)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(got) < expected and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    VisibilityTimeout=visibility,
                                    MessageSystemAttributeNames=["All"],
                                    MessageAttributeNames=["All"])
        got += reply.get("Messages", [])
    return got


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def state_of(app: Bridge, task_uuid: str) -> str:
    state = app.backend.get_state(task_uuid)
    return state.state if state is not None else ""


# ---------------------------------------------------------------------------- the layout

def test_body_is_the_raw_signature_json_with_routing_key_left_empty(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url)
    sent = record(app.broker.client, "SendMessage")
    batches = record(app.broker.client, "SendMessageBatch")
    sig = app.signature("add", 1, 2, arg_types=["int64", "int64"])
    app.send(sig)
    [message] = receive_all(sqs, url_of(moto_server, queue), 1)
    assert json.loads(message["Body"])["RoutingKey"] == ""  # as Go's SQS Publish leaves it
    assert message["Body"].encode() == dataclasses.replace(sig, routing_key="").to_json()
    assert "MessageAttributes" not in message
    assert sig.routing_key == queue  # adjusted after encoding, as Go does
    assert len(sent) == 1 and batches == []
    assert "DelaySeconds" not in sent[0] and "MessageAttributes" not in sent[0]
    app.close()


@pytest.fixture(scope="module")
def harness() -> dict[str, Path]:
    """The Go harness binaries (real machinery v1 and v2), built as the interop tests do."""
    if shutil.which("go") is None:
        pytest.fail("Go is not installed: this test needs the harness (see .ci/run)")
    subprocess.run(["bash", str(ROOT / "compat_fixtures" / "build.sh")], check=True,
                   timeout=1200)
    return {v: ROOT / "compat_fixtures" / "bin" / f"harness-{v}" for v in ("v1", "v2")}


GO_ARGS = [("int64", "-7", -7), ("string", "<a&b> é", "<a&b> é"), ("float64", "0.1", 0.1),
           ("[]string", '["x","y"]', ["x", "y"]), ("uint8", "255", 255)]


@pytest.mark.go
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_bytes_and_attributes_are_those_of_go_sendtask(
        version: str, fifo: bool, harness: dict[str, Path], moto_server: MotoServer,
        sqs: Any, redis_url: str) -> None:
    """machinery's SendTask (v1: aws-sdk-go, v2: aws-sdk-go-v2) and ours, same task: the
    same body bytes, no message attributes, the same FIFO group and deduplication ids."""
    name = f"bridge_go_{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})
    argv = [str(harness[version]), "send", "-q", "--broker", moto_server.sqs_broker_url,
            "--backend", redis_url, "--queue", name, "--task", "add",
            *(f"--arg={t}={v}" for t, v, _ in GO_ARGS), *(["--group-id", "g7"] if fifo else [])]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AWS_ENDPOINT_URL": moto_server.endpoint})
    assert run.returncode == 0, run.stderr
    [go] = receive_all(sqs, url_of(moto_server, name), 1)
    sqs.delete_message(QueueUrl=url_of(moto_server, name), ReceiptHandle=go["ReceiptHandle"])
    app = make_app(moto_server, name, redis_url)
    sig = app.signature("add", *(p for _, _, p in GO_ARGS), arg_types=[t for t, _, _ in GO_ARGS])
    sig.uuid = run.stdout.strip()
    if fifo:
        sig.broker_message_group_id = "g7"
    app.send(sig)
    [ours] = receive_all(sqs, url_of(moto_server, name), 1)
    assert ours["Body"] == go["Body"]
    assert "MessageAttributes" not in ours and "MessageAttributes" not in go
    for key in ("MessageGroupId", "MessageDeduplicationId"):
        assert ours["Attributes"].get(key) == go["Attributes"].get(key)
    if fifo:
        assert ours["Attributes"]["MessageDeduplicationId"] == sig.uuid
    app.close()


def test_fifo_group_and_deduplication_ids(moto_server: MotoServer, sqs: Any,
                                          redis_url: str) -> None:
    name = f"bridge_fifo_{uuid.uuid4().hex[:8]}.fifo"
    sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
    app = make_app(moto_server, name, redis_url)
    with pytest.raises(FifoGroupMissing) as missing:
        app.broker.publish([Signature(uuid="task_x", name="add", headers={})])
    assert str(missing.value) == FIFO_GROUP_MISSING
    sigs = [Signature(uuid=f"task_{n}", name="add", headers={}, broker_message_group_id="g1")
            for n in range(3)]
    app.broker.publish(sigs)
    got = receive_all(sqs, url_of(moto_server, name), 3)
    assert [m["Attributes"]["MessageGroupId"] for m in got] == ["g1"] * 3
    assert [m["Attributes"]["MessageDeduplicationId"] for m in got] == [s.uuid for s in sigs]
    assert [json.loads(m["Body"])["UUID"] for m in got] == [s.uuid for s in sigs]  # in order
    retry = Signature(uuid="task_0", name="add", headers={}, broker_message_group_id="g1",
                      sqs_receipt_handle="receipt-of-the-first-delivery")
    assert dedup_id(retry) != "task_0"  # a retry is not dropped as a duplicate of the first
    app.close()


def test_one_message_per_fifo_group_at_a_time_in_order(moto_server: MotoServer, sqs: Any,
                                                       redis_url: str) -> None:
    """One receive returns a group's messages together; the worker gets them one by one."""
    name = f"bridge_fifo_{uuid.uuid4().hex[:8]}.fifo"
    sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
    app = make_app(moto_server, name, redis_url)
    app.broker.publish([Signature(uuid=f"task_{group}{n}", name="add", headers={},
                                  broker_message_group_id=group)
                        for n in range(4) for group in "ab"])

    def next_batch() -> tuple[list[str], list[Any]]:
        got: list[Any] = []
        deadline = time.monotonic() + WAIT
        while not got:
            assert time.monotonic() < deadline, "nothing more to fetch"
            got = app.broker.fetch(name, 10, 1)
        return [json.loads(d.body)["UUID"] for d in got], got

    order: list[str] = []
    uuids, held = next_batch()
    assert sorted(uuids) == ["task_a0", "task_b0"]  # never two of one group at once
    app.broker.requeue(next(d for d in held if b"task_a0" in d.body))  # a0 goes back...
    app.broker.ack([d for d in held if b"task_b0" in d.body])
    while len(order) < 7:  # b0 is done
        uuids, held = next_batch()
        assert len({u[5] for u in uuids}) == len(uuids)
        order += uuids
        app.broker.ack(held)
    for group in "ab":  # ...and its group comes back in order, a0 first
        assert [u for u in order if u[5] == group] == [f"task_{group}{n}" for n in range(
            0 if group == "a" else 1, 4)]
    app.close()


def test_eta_within_the_limit_is_delay_seconds_rounded_up(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url)
    sent = record(app.broker.client, "SendMessage")
    eta_ns = time.time_ns() + 2_300_000_000
    app.broker.publish([Signature(uuid="task_eta", name="add", headers={},
                                  eta=GoTime.from_unix_nano(eta_ns))])
    assert [call.get("DelaySeconds") for call in sent] in ([3], [2])  # ceil(2.3 - elapsed)
    [message] = receive_all(sqs, url_of(moto_server, queue), 1)
    assert int(message["Attributes"]["ApproximateFirstReceiveTimestamp"]) * 1_000_000 >= (
        eta_ns - 1_000_000)  # never received before its ETA (ms resolution)
    app.close()


def test_eta_beyond_the_limit_waits_in_the_delay_queue_and_is_never_early(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    """max_delay scaled down to 2 s: an ETA 6 s ahead hops through bridge_delayed_tasks and
    reaches the queue only when a Go worker may run it."""
    app = make_app(moto_server, queue, redis_url, max_delay=2)
    eta_ns = time.time_ns() + 6_000_000_000
    app.broker.publish([Signature(uuid="task_far", name="add", headers={},
                                  eta=GoTime.from_unix_nano(eta_ns))])
    assert app.broker.delays.count() >= 1
    mover = make_app(moto_server, queue, redis_url, max_delay=2).broker
    mover.fetch(queue, 0, 0)  # a consumer: its mover thread moves the delay queue on
    [message] = receive_all(sqs, url_of(moto_server, queue), 1)  # as a Go worker receives
    assert int(message["Attributes"]["ApproximateFirstReceiveTimestamp"]) * 1_000_000 >= (
        eta_ns - 1_000_000)
    assert json.loads(message["Body"])["UUID"] == "task_far"
    mover.close()
    app.close()


def test_a_message_received_before_its_eta_waits_until_then(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    """Go's producer truncates DelaySeconds (ETA in 2.5 s → DelaySeconds 2): our consumer
    gives the message back until its ETA instead of running it early."""
    app = make_app(moto_server, queue, redis_url)
    eta_ns = time.time_ns() + 2_500_000_000
    body = Signature(uuid="task_go_eta", name="add", headers={},
                     eta=GoTime.from_unix_nano(eta_ns)).to_json().decode()
    sqs.send_message(QueueUrl=url_of(moto_server, queue), MessageBody=body, DelaySeconds=2)
    got = []
    while not got:
        got = app.broker.fetch(queue, 1, WAIT)
    assert time.time_ns() >= eta_ns
    assert got[0].body.decode() == body
    app.broker.ack(got)
    app.close()


def test_retry_later_beyond_the_limit_runs_again(moto_server: MotoServer, queue: str,
                                                 redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url, max_delay=1)
    runs: list[int] = []

    @app.task("later")
    def later() -> int:
        runs.append(1)
        if len(runs) == 1:
            raise RetryLater("not yet", 3)  # Go: "Max AWS SQS delay exceeded", an endless loop
        return len(runs)

    with worker_thread(app, 2):
        result = app.send_task("later")
        wait_for(lambda: state_of(app, result.task_uuid) == SUCCESS, "the retried task")
    assert len(runs) == 2


def test_a_foreign_message_in_the_delay_queue_is_parked_not_forwarded(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url, max_delay=1)
    app.broker.publish([Signature(uuid="task_later", name="add", headers={},
                                  eta=GoTime.from_unix_nano(time.time_ns() + 10**11))])
    delay_url = app.broker.delays.url()
    assert delay_url is not None
    sqs.send_message(QueueUrl=delay_url, MessageBody="not ours")

    def parked() -> bool:
        app.broker.move_delayed_now(wait=1)  # any consumer's mover would do the same
        return any(e["body"] == "not ours" for e in app.broker.dead_letters(DELAY_QUEUE))

    wait_for(parked, "the foreign message parked")
    assert app.broker.queue_depth(queue) == 0
    sqs.purge_queue(QueueUrl=url_of(moto_server, dead_queue_name(DELAY_QUEUE)))
    app.close()


# ---------------------------------------------------------------------------- consuming

def test_batched_receive_and_delete(moto_server: MotoServer, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url)
    receives = record(app.broker.client, "ReceiveMessage")
    deletes = record(app.broker.client, "DeleteMessageBatch")
    app.broker.publish([Signature(uuid=f"task_{n}", name="add", headers={}) for n in range(25)])
    got = app.broker.fetch(queue, 25, WAIT)
    while len(got) < 25:
        got += app.broker.fetch(queue, 25 - len(got), WAIT)
    app.broker.ack(got)
    receives = [call for call in receives if call["QueueUrl"] == url_of(moto_server, queue)]
    deletes = [call for call in deletes if call["QueueUrl"] == url_of(moto_server, queue)]
    assert {call["MaxNumberOfMessages"] for call in receives} <= set(range(1, 11))
    assert max(call["MaxNumberOfMessages"] for call in receives) == 10
    assert all(call["WaitTimeSeconds"] == 1 for call in receives)  # long polling
    assert sum(len(call["Entries"]) for call in deletes) == 25
    assert max(len(call["Entries"]) for call in deletes) == 10
    assert app.broker.queue_depth(queue) == 0
    app.close()


def test_heartbeat_keeps_a_long_task_invisible_and_it_runs_once(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url, sqs={"visibility_timeout": 2})
    runs: list[int] = []
    started = threading.Event()

    @app.task("long")
    def long() -> int:
        runs.append(1)
        started.set()
        time.sleep(6)  # three visibility timeouts
        return 1

    with worker_thread(app, 2):
        result = app.send_task("long")
        assert started.wait(WAIT)
        stolen = []
        while state_of(app, result.task_uuid) != SUCCESS:  # another consumer, all along
            stolen += sqs.receive_message(QueueUrl=url_of(moto_server, queue),
                                          WaitTimeSeconds=1).get("Messages", [])
        assert stolen == []
        wait_for(lambda: app.broker.processing(queue)["(any, SQS in flight)"] == 0,
                 "the message deleted")
    assert len(runs) == 1
    assert app.broker.queue_depth(queue) == 0


def test_close_gives_back_what_is_held(moto_server: MotoServer, queue: str,
                                       redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url, sqs={"visibility_timeout": 600})
    app.broker.publish([Signature(uuid=f"task_{n}", name="add", headers={}) for n in range(3)])
    held = []
    while len(held) < 3:
        held += app.broker.fetch(queue, 3, WAIT)
    app.broker.close()
    other = make_app(moto_server, queue, redis_url).broker
    back = []
    while len(back) < 3:  # visible at once, not after the 600 s visibility timeout
        back += other.fetch(queue, 3, WAIT)
    assert sorted(d.body for d in back) == sorted(d.body for d in held)
    other.close()


def test_undecodable_message_is_parked_and_replayed_byte_for_byte(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url)
    body = '{"UUID":"task_bad","Name":7,"Args":[]}'
    sqs.send_message(QueueUrl=url_of(moto_server, queue), MessageBody=body)
    with worker_thread(app, 2):
        wait_for(lambda: len(app.broker.dead_letters(queue)) == 1, "the parked message")
    [entry] = app.broker.dead_letters(queue)
    assert entry["body"] == body and entry["queue"] == queue
    assert entry["reason"].startswith("undecodable message")
    assert state_of(app, "task_bad") == FAILURE
    assert app.broker.queue_depth(queue) == 0
    assert app.broker.replay_dead(queue) == 1
    [message] = receive_all(sqs, url_of(moto_server, queue), 1)
    assert message["Body"] == body
    assert app.broker.dead_letters(queue) == []
    app.close()


def test_parks_into_the_redrive_dead_letter_queue(moto_server: MotoServer, sqs: Any,
                                                  redis_url: str) -> None:
    name = f"bridge_redrive_{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}_dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
    sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    app = make_app(moto_server, name, redis_url)
    sqs.send_message(QueueUrl=url_of(moto_server, name), MessageBody="not json")
    [delivery] = app.broker.fetch(name, 1, WAIT)
    app.broker.dead_letter(delivery, "bad input")
    [message] = receive_all(sqs, dlq, 1)
    assert message["Body"] == "not json"
    assert message["MessageAttributes"]["bridge-reason"]["StringValue"] == "bad input"
    app.close()


def test_unregistered_task_goes_back_with_growing_backoff(
        moto_server: MotoServer, sqs: Any, queue: str, redis_url: str) -> None:
    app = make_app(moto_server, queue, redis_url)
    backoffs = record(app.broker.client, "ChangeMessageVisibility")
    ignored = app.signature("nobody_serves_this")
    ignored.ignore_when_task_not_registered = True
    with worker_thread(app, 2, handoff_window=0.0):  # back-off from the second return on
        kept = app.send_task("nobody_serves_this_either")
        app.send(ignored)
        wait_for(lambda: len(backoffs) >= 6, "six hand-backs")
    delays = [call["VisibilityTimeout"] for call in backoffs[:6]]
    assert delays[0] == 0  # straight back: another worker may serve it
    assert min(delays[1:]) >= 1 and delays[5] >= 2  # then growing (whole seconds on SQS)
    assert {json.loads(m["Body"])["UUID"] for m in receive_all(
        sqs, url_of(moto_server, queue), 1)} == {kept.task_uuid}  # the ignored one is deleted


def test_sqs_receipt_handle_rides_on_a_retry_and_stop_task_deletion_keeps_it(
        moto_server: MotoServer, sqs: Any, redis_url: str) -> None:
    name = f"bridge_stop_{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}_dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "2"}
    sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    app = make_app(moto_server, name, redis_url, sqs={"visibility_timeout": 1})
    sends = record(app.broker.client, "SendMessage")

    @app.task("boom")
    def boom() -> int:
        raise ValueError("boom")

    sig = app.signature("boom", retry_count=1)
    sig.stop_task_deletion_on_error = True
    with worker_thread(app, 2):
        app.send(sig)
        [parked] = receive_all(sqs, dlq, 1)  # failed twice: SQS's redrive moved it, as for Go
    retry = json.loads(sends[1]["MessageBody"])
    assert retry["RetryCount"] == 0 and retry["SQSReceiptHandle"]  # set on decode, as Go
    assert json.loads(parked["Body"])["UUID"] == sig.uuid
    assert state_of(app, sig.uuid) == FAILURE


# ---------------------------------------------------------------------------- reaching SQS

def test_ping_names_the_endpoint_and_the_fix(moto_server: MotoServer, queue: str) -> None:
    dead = SqsBroker("sqs://127.0.0.1:9", Config(default_queue=queue))
    with pytest.raises(Unreachable) as refused:
        dead.ping()
    text = str(refused.value)
    assert "\n" not in text and "127.0.0.1:9" in text and "start the SQS endpoint" in text
    missing = SqsBroker(moto_server.sqs_broker_url, Config(default_queue="no_such_queue"))
    with pytest.raises(Unreachable, match="no_such_queue does not exist: create it"):
        missing.ping()
    SqsBroker(moto_server.sqs_broker_url, Config(default_queue=queue)).ping()


def test_broker_urls_as_machinery_and_the_endpoint_from_the_environment(
        moto_server: MotoServer, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = moto_server.endpoint.rsplit(":", 1)[1]
    short = broker_from_config(Config(broker=f"sqs://127.0.0.1:{port}", default_queue=queue))
    assert isinstance(short, SqsBroker)
    short.publish([Signature(uuid="task_a", name="add", headers={})])
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    aws = broker_from_config(Config(
        broker="https://sqs.us-east-1.amazonaws.com/123456789012", default_queue=queue))
    assert isinstance(aws, SqsBroker) and aws.location.region == "us-east-1"
    [delivery] = aws.fetch(queue, 1, WAIT)
    assert json.loads(delivery.body)["UUID"] == "task_a"
    aws.ack([delivery])
    aws.close()


def test_missing_boto3_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an absent package looks like
    with pytest.raises(ConfigError, match=r"needs boto3: pip install 'machinery-bridge\[sqs\]'"):
        broker_from_config(Config(broker="sqs://127.0.0.1:9"))


# ---------------------------------------------------------------------------- processes

@pytest.fixture
def worker_env(moto_server: MotoServer, redis_url: str, queue: str) -> dict[str, str]:
    return {**os.environ, **moto_server.env(), "BRIDGE_TEST_SQS_BROKER": moto_server.sqs_broker_url,
            "BRIDGE_TEST_REDIS": redis_url, "BRIDGE_TEST_QUEUE": queue, "PYTHONPATH": str(ROOT)}


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.integration.sqs_sample_app",
         "-l", "warning", *args], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_sigkill_mid_batch_loses_nothing(moto_server: MotoServer, queue: str, redis_url: str,
                                         worker_env: dict[str, str],
                                         stopped: list[subprocess.Popen[bytes]]) -> None:
    app = make_app(moto_server, queue, redis_url)
    results = app.send_batch([app.signature("sleep_ms", 20, arg_types=["int64"])
                              for _ in range(300)])
    uuids = [r.task_uuid for r in results]

    def done() -> int:
        return sum(1 for s in app.backend.get_states(uuids) if s is not None and s.is_success())

    first = start_worker(worker_env, "-c", "8")
    stopped.append(first)
    wait_for(lambda: done() >= 40, "the first worker under way")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert done() < 300
    stopped.append(start_worker(worker_env, "-c", "8"))
    wait_for(lambda: done() == 300, "every task")  # the killed worker's batch came back
    app.close()


def test_mbridge_inspect_and_requeue_dead(moto_server: MotoServer, sqs: Any, queue: str,
                                          redis_url: str, worker_env: dict[str, str]) -> None:
    app = make_app(moto_server, queue, redis_url)
    sqs.send_message(QueueUrl=url_of(moto_server, queue), MessageBody="garbage")
    [delivery] = app.broker.fetch(queue, 1, WAIT)
    app.broker.dead_letter(delivery, "undecodable message: not JSON")
    app.broker.publish([Signature(uuid="task_w", name="add", headers={})])

    def mbridge(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "bridge.cli", *args, "-A",
                              "tests.integration.sqs_sample_app"], env=worker_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout

    shown = mbridge("inspect")
    assert f"queue {queue}: 1 waiting" in shown
    assert "dead letters: 1" in shown and "undecodable message: not JSON" in shown
    assert "requeued 1 message(s)" in mbridge("requeue-dead")
    bodies = {m["Body"] for m in receive_all(sqs, url_of(moto_server, queue), 2)}
    assert "garbage" in bodies
    app.close()
