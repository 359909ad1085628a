"""A worker whose loop is stuck still stops on SIGTERM: the stop watch logs every thread's
stack (the main thread first), returns what the worker held and ends the process, within
its bound (shortened here to 2 s). The loop is stuck for real: a post-task hook, which runs
in the loop, waits on an Event no one sets (an unbounded wait, as a deadlock would be)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from bridge.app import Bridge
from bridge.config import Config

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, threading
import bridge.stop_watch
from bridge.app import Bridge
from bridge.config import Config
from bridge.worker import Worker, WorkerOptions

bridge.stop_watch.ANSWER_WITHIN = 2.0
app = Bridge(Config(broker=sys.argv[1], result_backend=sys.argv[1], default_queue=sys.argv[2]))

@app.task("stuck")
def stuck() -> str:
    return "ran"

def wait_for_ever(signature):
    print("hook entered", flush=True)
    threading.Event().wait()

Worker(app, WorkerOptions(concurrency=1, graceful_timeout=1.0),
       post_task=wait_for_ever).run()
"""


def test_a_stuck_loop_still_stops_and_gives_back_what_it_held(redis_url: str,
                                                               tmp_path: Path) -> None:
    queue = "stop_watch_tasks"
    app = Bridge(Config(broker=redis_url, result_backend=redis_url, default_queue=queue))
    try:
        app.send(app.signature("stuck"))
    finally:
        app.close()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, redis_url, queue],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "hook entered" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "did not answer the stop signal in 2 s" in text, text
    stacks = text.split("the main one first:", 1)[1]
    assert stacks.lstrip().startswith("thread MainThread:"), text
    main_thread = stacks.lstrip().split("\nthread ", 1)[0]
    assert "wait_for_ever" in main_thread, text  # where the loop is stuck, shown first
    # the message it held (the hook runs before the ack) is back in its queue
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(queue) == 1
        assert '"Name":"stuck"' in str(client.lindex(queue, 0))
    finally:
        client.delete(queue)
        client.close()
