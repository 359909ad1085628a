"""``mbridge migrate`` on SQS (moto's server mode): Celery-on-SQS messages (a real Celery 5.6.2
producer's and our codec's, in kombu's SQS layout) moved to machinery-on-SQS, then run by a Go
machinery v2 worker; and machinery-on-SQS back to Celery-on-SQS. SQS moves are at least once
(a killed run's received messages come back after their visibility timeout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from celery import Celery

from bridge.backends.redis import RedisBackend
from bridge.brokers.celery_sqs import CelerySqsBroker
from bridge.protocol.celery import decode_task, encode_task, new_task
from bridge.protocol.machinery import SUCCESS, Arg, Signature
from tests.backend_servers import MotoServer
from tests.interop.go_processes import go_worker
from tests.interop.test_live_sqs import fresh_queue, go_env
from tests.interop.test_migrate_live import wait_all

pytestmark = pytest.mark.go

ROOT = Path(__file__).resolve().parents[2]
TOTAL = int(os.environ.get("BRIDGE_SQS_MIGRATE_COUNT", "1000"))
"""Messages moved. The issue asks for 10,000 (set BRIDGE_SQS_MIGRATE_COUNT=10000 on a fast
host): moto's server is the bottleneck here (about 200 ms per SendMessageBatch, and a
ReceiveMessage that slows down with the queue's depth, 1-2 s at 1,000 messages, on a loaded
2-core host). Measured here: 500 in 85 s; 1,000 in 190 s (publish 26 s, migrate 95 s, Go v2
69 s); 2,000 did not finish within the 600 s test timeout."""


def kombu_url(moto: MotoServer) -> str:
    return f"sqs://{moto.access_key}:{moto.secret_key}@{moto.endpoint.split('://', 1)[1]}"


def celery_side(moto: MotoServer, queue: str, redis_url: str) -> str:
    return (f"celery+{kombu_url(moto)}?queue={queue}&backend={redis_url}"
            f"&region={moto.region}&wait_time_seconds=1")


def migrate(args: Sequence[str], moto: MotoServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "migrate", *args, "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=go_env(moto))


def test_celery_sqs_migrated_to_machinery_sqs_run_by_go(harness: dict[str, Path],
                                                        moto_server: MotoServer,
                                                        redis_url: str) -> None:
    src_queue = f"cel.sqs.{uuid.uuid4().hex[:8]}"
    dst_queue = fresh_queue(moto_server)
    by_celery = min(200, TOTAL)
    expected: dict[str, int] = {}
    app = Celery("sqs-producer", broker=kombu_url(moto_server), backend=redis_url)
    app.conf.broker_transport_options = {"region": moto_server.region, "is_secure": False}
    with app.producer_or_acquire() as producer:
        for i in range(by_celery):
            result = app.send_task("add", args=[i, 1], queue=src_queue, producer=producer)
            expected[result.id] = i + 1
    app.close()
    broker = CelerySqsBroker(kombu_url(moto_server), region=moto_server.region,
                             wait_time_seconds=1)
    started = time.monotonic()
    for start in range(by_celery, TOTAL, 1000):
        tasks = [new_task("add", [i, 1]) for i in range(start, min(start + 1000, TOTAL))]
        broker.publish_messages(src_queue, [encode_task(t) for t in tasks])
        expected.update((t.id, t.args[0] + 1) for t in tasks)
    published = time.monotonic() - started
    started = time.monotonic()
    done = migrate([celery_side(moto_server, src_queue, redis_url),
                    f"machinery+{moto_server.sqs_broker_url}?queue={dst_queue}"
                    f"&backend={redis_url}", "--batch", "500"], moto_server)
    moved = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert broker.queue_depth(src_queue) == 0
    broker.close()
    backend = RedisBackend(redis_url)

    def succeeded(chunk: list[str]) -> list[bool]:
        states = backend.get_states(chunk)
        return [s is not None and s.state == SUCCESS and s.results is not None
                and s.results[0].value == expected[i] for i, s in zip(chunk, states, strict=True)]

    started = time.monotonic()
    with go_worker(harness["v2"], moto_server.sqs_broker_url, dst_queue, 16, backend=redis_url,
                   extra=("--sqs-wait", "1"), env=go_env(moto_server)):
        missing = wait_all(succeeded, list(expected), timeout=1200)
    ran = time.monotonic() - started
    print(f"{TOTAL} messages: published {published:.1f} s, migrated {moved:.1f} s, "
          f"run by Go v2 {ran:.1f} s")
    assert missing == [], f"{len(missing)} tasks not completed by Go, e.g. {missing[:3]}"


def test_machinery_sqs_migrated_to_celery_sqs(moto_server: MotoServer, redis_url: str) -> None:
    src_queue = fresh_queue(moto_server)
    dst_queue = f"cel.back.{uuid.uuid4().hex[:8]}"
    sqs = moto_server.client("sqs")
    url = f"{moto_server.sqs_broker_url}/{src_queue}"
    sigs = [Signature(uuid=f"task_{uuid.uuid4()}", name="add", routing_key=src_queue,
                      args=[Arg(type="int64", value=i), Arg(type="int64", value=2)])
            for i in range(300)]
    for start in range(0, len(sigs), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": s.to_json().decode()}
            for n, s in enumerate(sigs[start:start + 10])])
    done = migrate([f"machinery+{moto_server.sqs_broker_url}?queue={src_queue}"
                    f"&backend={redis_url}", celery_side(moto_server, dst_queue, redis_url),
                    "--batch", "100"], moto_server)
    assert done.returncode == 0, done.stdout + done.stderr
    broker = CelerySqsBroker(kombu_url(moto_server), region=moto_server.region,
                             wait_time_seconds=1)
    try:
        got: dict[str, list[object]] = {}
        deadline = time.monotonic() + 120
        while len(got) < len(sigs) and time.monotonic() < deadline:
            deliveries = broker.fetch(dst_queue, 100, 2.0)
            for delivery in deliveries:
                assert delivery.message is not None
                task = decode_task(delivery.message)
                got[task.id] = list(task.args)
            broker.ack(deliveries)
        assert got == {s.uuid: [i, 2] for i, s in enumerate(sigs)}
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert json.loads(attributes["Attributes"]["ApproximateNumberOfMessages"]) == 0
    finally:
        broker.close()
