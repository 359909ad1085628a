"""The task log on a real Redis: success, retry and failure at INFO with name, id and run
time; the exception type, and its traceback at DEBUG; ``--log-format json`` from the
command, for machinery and Celery messages alike."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery

from bridge.app import Bridge
from bridge.config import Config
from bridge.result import TaskFailed
from tests.worker_thread import worker_thread

ROOT = Path(__file__).resolve().parents[2]


def _app(redis_url: str) -> Bridge:
    queue = f"log_{uuid.uuid4().hex[:8]}"
    app = Bridge(Config(broker=redis_url, result_backend=redis_url, default_queue=queue))

    @app.task("add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task("boom")
    def boom() -> None:
        raise ValueError("it broke")

    return app


def _lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bridge.task" and task_id in r.getMessage()]


def test_success_retry_and_failure_lines(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    app = _app(redis_url)
    with worker_thread(app, 2):
        ok = app.send_task("add", 40, 2)
        assert ok.get(timeout=15) == 42
        failed = app.send_task("boom", retry_count=1)
        with pytest.raises(TaskFailed):
            failed.get(timeout=15)
        time.sleep(0.2)  # the last line is written as the message is acknowledged
    [success] = _lines(caplog, ok.task_uuid)
    assert success.levelno == logging.INFO
    assert re.fullmatch(rf"Task add\[{ok.task_uuid}\] succeeded in \d+\.\d{{6}}s: 42",
                        success.getMessage())
    assert success.__dict__["runtime"] >= 0 and success.__dict__["event"] == "succeeded"
    retry, failure = _lines(caplog, failed.task_uuid)
    assert retry.levelno == logging.INFO
    assert retry.getMessage() == (f"Task boom[{failed.task_uuid}] retry: Retry in 1s: "
                                  "ValueError('it broke')")
    assert failure.levelno == logging.ERROR
    assert re.fullmatch(rf"Task boom\[{failed.task_uuid}\] raised unexpected in \d+\.\d+s: "
                        r"ValueError\('it broke'\)", failure.getMessage())
    assert failure.exc_info is None  # one line at INFO: the traceback is for DEBUG


def test_failure_traceback_at_debug(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge")
    app = _app(redis_url)
    with worker_thread(app, 2):
        failed = app.send_task("boom")
        with pytest.raises(TaskFailed):
            failed.get(timeout=15)
        time.sleep(0.2)
    received, failure = _lines(caplog, failed.task_uuid)
    assert received.getMessage() == f"Task boom[{failed.task_uuid}] received"
    assert failure.exc_info is not None and failure.exc_info[0] is ValueError
    assert 'raise ValueError("it broke")' in caplog.text


def test_json_log_format_from_the_command(tmp_path: Path, redis_url: str) -> None:
    """``mbridge worker --log-format json -l debug``: every stderr line is a JSON object; the
    task lines carry task_id, task_name, queue, event and runtime; a failure its traceback."""
    queue = f"jlog_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CELERY_TEST_BROKER": redis_url, "CELERY_TEST_BACKEND": redis_url,
           "PYTHONPATH": str(ROOT)}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "--celery-app", "tests.celery_app",
             "--celery-queue", queue, "--no-machinery", "-c", "2", "--log-format", "json",
             "-l", "debug"], stdout=subprocess.DEVNULL, stderr=out, env=env, cwd=ROOT)
    client = Celery("jlog-client", broker=redis_url, backend=redis_url)
    try:
        ok = client.send_task("tasks.add", (40, 2), queue=queue)
        assert ok.get(timeout=30) == 42
        bad = client.send_task("tasks.fail", ("no luck",), queue=queue)
        with pytest.raises(ValueError):
            bad.get(timeout=30)
        again = client.send_task("tasks.retry_twice", (7,), queue=queue)
        assert again.get(timeout=30) == 7
        time.sleep(0.3)
    finally:
        gc.collect()
        client.backend.result_consumer.stop()
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    ok_id, bad_id, again_id = ok.id, bad.id, again.id
    del ok, bad, again
    gc.collect()
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    by_event = {(r.get("task_id"), r.get("event")): r for r in records if "event" in r}
    success = by_event[(ok_id, "succeeded")]
    assert success["task_name"] == "tasks.add" and success["queue"] == queue
    assert success["level"] == "INFO" and success["runtime"] >= 0
    assert success["message"].endswith(": 42")
    assert (ok_id, "received") in by_event
    failure = by_event[(bad_id, "failed")]
    assert failure["level"] == "ERROR" and "ValueError('no luck')" in failure["message"]
    assert "Traceback" in failure["exception"] and "ValueError: no luck" in failure["exception"]
    retried = by_event[(again_id, "retried")]  # Celery's own words for its Retry
    assert retried["message"] == (f"Task tasks.retry_twice[{again_id}] retry: Retry in 0.2s: "
                                  "KeyError('not yet')")
