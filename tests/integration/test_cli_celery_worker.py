"""`mbridge worker --celery-app`: a real Celery 5 client served by the command, end to end."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parents[2]


def test_worker_command_serves_a_celery_app(tmp_path: Path, redis_url: str) -> None:
    queue = f"cli_celery_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CELERY_TEST_BROKER": redis_url, "CELERY_TEST_BACKEND": redis_url,
           "PYTHONPATH": str(ROOT), "BROKER": redis_url, "RESULT_BACKEND": redis_url}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "--celery-app", "tests.celery_app",
             "--celery-queue", queue, "--no-machinery", "-c", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    client = Celery("cli-client", broker=redis_url, backend=redis_url)
    try:
        assert client.send_task("tasks.add", (40, 2), queue=queue).get(timeout=30) == 42
        assert client.send_task("tasks.concat", ("a", "b"), {"sep": "-"},
                                queue=queue).get(timeout=30) == "a-b"
    finally:
        gc.collect()
        client.backend.result_consumer.stop()
        client.close()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    text = log.read_text()
    assert status == 0, text
    assert f"Celery queues {queue}" in text and "tasks.add" in text
    assert "worker stopped" in text
