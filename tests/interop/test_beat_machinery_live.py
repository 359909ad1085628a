"""A real Go machinery v2 server's RegisterPeriodicTask and two ``mbridge beat`` processes
on the same name and spec (``@every 1s``): machinery's Redis lock lets one send per tick,
whoever takes it."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.integration.test_beat_processes import (
    assert_once_per_tick,
    beats,
    machinery_created_seconds,
    wait_for,
)

pytestmark = pytest.mark.go
TICKS = 8


@contextmanager
def go_periodic(binary: Path, broker: str, queue: str, name: str, spec: str,
                log_path: Path) -> Iterator[None]:
    """``harness periodic``: RegisterPeriodicTask(spec, name, echo("go")) until the end."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(binary), "periodic", "--broker", broker, "--queue", queue,
                                 "--name", name, "--spec", spec, "--task", "echo",
                                 "--arg", "string=go"], stdout=subprocess.PIPE, stderr=log,
                                text=True)
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert "periodic ready" in ready, f"the Go server did not start: {ready!r}"
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_go_register_periodic_task_and_two_beats_send_once_per_tick(
        harness: dict[str, Path], tmp_path: Path, private_redis_url: str) -> None:
    binary = harness["v2"]
    tag = uuid.uuid4().hex[:8]
    queue, name, spec = f"periodic_{tag}", f"every-second-{tag}", "@every 1s"
    config = tmp_path / "config.yml"
    config.write_text(f"broker: {private_redis_url}\nresult_backend: {private_redis_url}\n"
                      f"default_queue: {queue}\n")
    schedule = tmp_path / "schedule.yml"
    schedule.write_text(f"""
- name: {name}
  system: machinery
  machinery_program: {binary.name}
  task: echo
  args: ["py"]
  arg_types: [string]
  cron: "{spec}"
""")
    client = redis.Redis.from_url(private_redis_url)
    with go_periodic(binary, private_redis_url, queue, name, spec, tmp_path / "go.log"), \
            beats(2, schedule, config, tmp_path):
        wait_for(f"{TICKS} ticks", lambda: client.llen(queue) >= TICKS)
        lock = client.get(f"machinery_lock_{binary.name}{name}{spec}")

    assert lock is not None and lock.isdigit()  # the one key both sides took
    assert_once_per_tick(machinery_created_seconds(client, queue), TICKS)
    senders = [json.loads(raw)["Args"][0]["Value"] for raw in client.lrange(queue, 0, -1)]
    print("sent by", {who: senders.count(who) for who in ("go", "py")})
    assert set(senders) <= {"go", "py"}
