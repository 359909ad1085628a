"""Fault injection for the other long-running commands: ``mbridge migrate``, ``mbridge relay``
and a producer's ``AsyncResult.get``, with their Redis restarted under them. Each goes on by
itself, says "unreachable" and "reconnected" once, and loses nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from bridge.app import Bridge
from bridge.backends.base import new_state
from bridge.backends.redis import RedisBackend
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.migrate.bookkeeping import RunKeys, run_id
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.machinery import SUCCESS, Signature, TaskResult
from tests.faults.controlled_redis import ControlledRedis

ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def restart(server: ControlledRedis, log: Path | None = None, down: float = 5.0) -> None:
    """Stop (data kept), start again once ``log`` says "unreachable" (redis-py's own
    retries, up to ~5.3 s of back-off, absorb a shorter outage without a word), or after
    ``down`` seconds when there is no log to read."""
    said = log.read_text().count("unreachable") if log is not None and log.exists() else 0
    server.stop()  # (the tool may say so before this returns: counted before)
    if log is None:
        time.sleep(down)
    else:
        wait_for("the tool to say Redis is unreachable",
                 lambda: log.read_text().count("unreachable") > said, 30)
    server.start()


def publish_celery(url: str, queue: str, count: int) -> set[str]:
    broker = CeleryRedisBroker.from_url(url)
    tasks = [new_task("add", [i, 1]) for i in range(count)]
    for start in range(0, count, 5000):
        broker.publish_messages(queue, [encode_task(t) for t in tasks[start:start + 5000]])
    broker.close()
    return {t.id for t in tasks}


@pytest.mark.parametrize("processes", [1, 3])
def test_migrate_resumes_after_its_redis_restarts(server: ControlledRedis, tmp_path: Path,
                                                  processes: int) -> None:
    url = server.url
    ids = publish_celery(url, "cel", 20_000 * processes)
    log = tmp_path / "migrate.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "migrate", f"celery+{url}?queue=cel",
             f"machinery+{url}?queue=mach", "--batch", "200", "-q",
             "--processes", str(processes)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(url)
    wait_for("the first batches", lambda: client.llen("mach") >= 2000, 120)
    batches = RunKeys(run_id(f"celery+{url}?queue=cel", f"machinery+{url}?queue=mach")).batches
    wait_for("every process with a batch in hand",  # the helpers too, when there are
             lambda: client.scard(batches) >= processes, 120)
    client.close()
    restart(server, log)
    assert proc.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("unreachable") == text.count("reconnected") == 1, text
    client = redis.Redis.from_url(url)
    moved = [json.loads(raw)["UUID"] for raw in client.lrange("mach", 0, -1)]
    assert len(moved) == len(ids) and set(moved) == ids  # Redis to Redis: exactly once
    assert client.llen("cel") == 0
    client.close()


@pytest.mark.parametrize("processes", [1, 2])
def test_relay_goes_on_after_its_redis_restarts(server: ControlledRedis, tmp_path: Path,
                                                processes: int) -> None:
    url = server.url
    log = tmp_path / "relay.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "relay", "--from", f"celery+{url}?queue=cel",
             "--to", f"machinery+{url}?queue=mach", "--processes", str(processes)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        first = publish_celery(url, "cel", 500)
        client = redis.Redis.from_url(url)
        wait_for("the first messages", lambda: client.llen("mach") >= 500, 60)
        client.close()
        restart(server)
        second = publish_celery(url, "cel", 500)
        client = redis.Redis.from_url(url)
        wait_for("the messages sent after the restart", lambda: client.llen("mach") >= 1000,
                 120)
        relayed = [json.loads(raw)["UUID"] for raw in client.lrange("mach", 0, -1)]
        client.close()
        assert set(relayed) == first | second
        assert proc.poll() is None, log.read_text()
        # a helper can relay the second half while the run's process still backs off: stop
        # only once it has said it is back (or never said it was gone)
        wait_for("the relay to say it reconnected", lambda: log.read_text().count(
            "unreachable") <= log.read_text().count("reconnected"), 60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("unreachable") == text.count("reconnected") <= 1, text


def test_async_result_get_waits_through_a_restart(server: ControlledRedis,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    url = server.url
    config = Config(broker=url, result_backend=url, default_queue="q")
    app = Bridge(config, broker=RedisBroker(url, config), backend=RedisBackend(url, config))
    app.register("add", lambda a, b: a + b)
    result = app.send_task("add", 2, 3)

    def finish_after_restart() -> None:
        restart(server)
        writer = RedisBackend(url, config)
        writer.set_state(new_state(Signature(uuid=result.task_uuid), SUCCESS,
                                   [TaskResult("int64", 5)]))
        writer.close()

    caplog.set_level(logging.WARNING, logger="bridge.result")
    thread = threading.Thread(target=finish_after_restart)
    thread.start()
    time.sleep(0.5)
    assert result.get(timeout=60) == 5
    thread.join()
    messages = [r.getMessage() for r in caplog.records]
    # once each way, or not at all where redis-py's own retries bridged the restart
    assert sum("unreachable" in m for m in messages) == sum(
        "reconnected" in m for m in messages) <= 1, messages
    app.close()


def stop_while_down(server: ControlledRedis, proc: subprocess.Popen[bytes], log: Path
                    ) -> None:
    """Stop Redis, then the relay once it has said so: it exits 0 in a few lines (one for
    each thing it could not do, no traceback, no line per held message)."""
    try:
        said = log.read_text().count("unreachable")
        server.stop()
        wait_for("the relay to say Redis is unreachable",
                 lambda: log.read_text().count("unreachable") > said, 30)
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "relay stopped" in text, text
    assert len(text.splitlines()) < 20, text


def relay_a_backlog(url: str, log: Path, *options: str, source: str = "celery:cel",
                    target: str = "machinery:mach") -> subprocess.Popen[bytes]:
    """``mbridge relay`` of ``source`` to ``target`` (``protocol:queue``: Celery queue
    ``cel`` to machinery queue ``mach``) in batches of 100, logging to ``log``, once it has
    relayed 2,000."""
    (src, src_queue), (dst, dst_queue) = source.split(":"), target.split(":")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "relay", "--from",
             f"{src}+{url}?queue={src_queue}", "--to", f"{dst}+{url}?queue={dst_queue}",
             "--batch", "100", *options],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(url)
    try:
        wait_for("relaying to start", lambda: client.llen(dst_queue) >= 2_000, 60)
    except AssertionError:
        proc.kill()
        raise
    finally:
        client.close()
    return proc


@pytest.mark.parametrize("processes", [1, 2])
def test_relay_of_a_backlog_loses_nothing_when_redis_restarts_mid_batch(
        server: ControlledRedis, tmp_path: Path, processes: int) -> None:
    """Batches are taken ahead and sent without waiting: a restart while they are in flight
    leaves each message relayed (once or again) or waiting in its queue, never lost."""
    url = server.url
    log = tmp_path / "relay.log"
    sent = publish_celery(url, "cel", 30_000)
    proc = relay_a_backlog(url, log, "--processes", str(processes))
    try:
        restart(server, log)
        client = redis.Redis.from_url(url)
        try:
            wait_for("the backlog", lambda: client.llen("cel") == 0
                     and client.hlen("unacked") == 0, 120)
        except AssertionError:
            raise AssertionError(f"waiting {client.llen('cel')}, unacked "
                                 f"{client.hlen('unacked')}, relayed {client.llen('mach')}; "
                                 f"{log.read_text()[-3000:]}") from None
        relayed = {json.loads(raw)["UUID"] for raw in client.lrange("mach", 0, -1)}
        assert relayed == sent, f"{len(sent - relayed)} not relayed"
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text


@pytest.mark.parametrize("processes", [1, 2])  # 2: the window take (celery_redis_window)
def test_a_relay_stopped_while_redis_is_down_says_so_in_a_few_lines(
        server: ControlledRedis, tmp_path: Path, processes: int) -> None:
    """SIGTERM during an outage: the relay stops at once, one line for each thing it could
    not do (no traceback, no line per held message); what it held waits in kombu's unacked
    for the broker's recovery, what a take cut between its steps left staged goes back with
    the next consumer's start, and what it never took waits in its queue."""
    url = server.url
    log = tmp_path / "relay.log"
    sent = publish_celery(url, "cel", 20_000)
    stop_while_down(server, relay_a_backlog(url, log, "--processes", str(processes)), log)
    server.start()
    client = redis.Redis.from_url(url)
    if any(client.scan_iter("bridge:celery:staging:cel:*")):  # a take cut between its steps:
        wait_for("the relay's lease to end", lambda: not any(  # the next consumer's start
            client.scan_iter("bridge:celery:lease:cel:*")), 30)  # gives it back
        consumer = CeleryRedisBroker.from_url(url)
        consumer.fetch("cel", 0, 0)
        consumer.close()
    assert not any(client.scan_iter("bridge:celery:staging:cel:*"))
    relayed = {json.loads(raw)["UUID"] for raw in client.lrange("mach", 0, -1)}
    waiting = {json.loads(raw)["headers"]["id"] for raw in client.lrange("cel", 0, -1)}
    held = {json.loads(record)[0]["headers"]["id"] for record in client.hvals("unacked")}
    client.close()
    assert sent <= relayed | waiting | held, f"{len(sent - relayed - waiting - held)} lost"
