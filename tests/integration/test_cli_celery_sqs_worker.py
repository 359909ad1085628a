"""`mbridge worker --celery-app` whose broker_url is ``sqs://`` (moto's server mode): a real
Celery 5.6.2 client on kombu's SQS transport served by the command, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from celery import Celery

from tests.backend_servers import MotoServer
from tests.integration.test_celery_sqs_broker import close_producer, kombu_url, transport

ROOT = Path(__file__).resolve().parents[2]


def test_worker_command_serves_a_celery_app_on_sqs(tmp_path: Path, moto_server: MotoServer,
                                                    redis_url: str) -> None:
    queue = f"cli.sqs.{uuid.uuid4().hex[:8]}"
    broker = kombu_url(moto_server)
    aws = {k: v for k, v in moto_server.env().items() if k != "AWS_ENDPOINT_URL"}
    env = {**os.environ, **aws, "CELERY_TEST_BROKER": broker, "CELERY_TEST_BACKEND": redis_url,
           "PYTHONPATH": str(ROOT), "BROKER": redis_url, "RESULT_BACKEND": redis_url}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "--celery-app", "tests.celery_app",
             "--celery-queue", queue, "--no-machinery", "-c", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    client = Celery("cli-sqs-client", broker=broker, backend=redis_url)
    client.conf.broker_transport_options = transport(moto_server)
    try:
        assert client.send_task("tasks.add", (40, 2), queue=queue).get(timeout=60) == 42
        assert client.send_task("tasks.concat", ("a", "b"), {"sep": "-"},
                                queue=queue).get(timeout=60) == "a-b"
    finally:
        close_producer(client)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    text = log.read_text()
    assert status == 0, text
    assert f"Celery queues {queue}" in text and "sqs://testing:***@" in text
    assert "worker stopped" in text
