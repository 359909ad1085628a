"""``mbridge migrate`` Celery-on-SQS → machinery-on-SQS with the migrator SIGKILLed mid-way
(moto's server mode): the re-run after the visibility timeout moves the rest, nothing is lost
(SQS moves are at least once: a batch published but not yet deleted moves twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bridge.brokers.celery_sqs import CelerySqsBroker
from bridge.protocol.celery import encode_task, new_task
from tests.backend_servers import MotoServer
from tests.integration.test_celery_sqs_broker import kombu_url

ROOT = Path(__file__).resolve().parents[2]
VISIBILITY = 5


def test_killed_migration_loses_nothing(moto_server: MotoServer, redis_url: str) -> None:
    src_queue, dst_queue = f"kill.{uuid.uuid4().hex[:8]}", f"dst_{uuid.uuid4().hex[:8]}"
    sqs = moto_server.client("sqs")
    dst_url = sqs.create_queue(QueueName=dst_queue)["QueueUrl"]
    broker = CelerySqsBroker(kombu_url(moto_server), region=moto_server.region,
                             wait_time_seconds=1, visibility_timeout=VISIBILITY)
    tasks = [new_task("add", [i, 1]) for i in range(300)]
    broker.publish_messages(src_queue, [encode_task(t) for t in tasks])
    args = [sys.executable, "-m", "bridge.cli", "migrate",
            f"celery+{kombu_url(moto_server)}?queue={src_queue}&backend={redis_url}"
            f"&region={moto_server.region}&wait_time_seconds=1",
            f"machinery+{moto_server.sqs_broker_url}?queue={dst_queue}&backend={redis_url}",
            "--batch", "50", "-q"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def depth(url: str, name: str = "ApproximateNumberOfMessages") -> int:
        return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])
                   ["Attributes"][name])

    deadline = time.monotonic() + 300
    while depth(dst_url) < 60 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert depth(dst_url) < len(tasks), "the migrator was not killed mid-way"
    time.sleep(VISIBILITY + 1)  # what the killed run held comes back
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert broker.queue_depth(src_queue) == 0
    assert depth(broker.sqs.urls(broker.name(src_queue)),
                 "ApproximateNumberOfMessagesNotVisible") == 0
    broker.close()
    seen: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=dst_url, MaxNumberOfMessages=10,
                                  WaitTimeSeconds=1).get("Messages", [])
        if not got:
            break
        seen += [json.loads(m["Body"])["UUID"] for m in got]
    assert set(seen) == {t.id for t in tasks}  # every one, a few perhaps twice
    assert len(seen) - len(tasks) <= 50
