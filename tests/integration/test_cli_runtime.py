"""`mbridge send / result / inspect / requeue-dead` against a real Redis, driven by a
machinery config.yml."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis
from click.testing import CliRunner

from bridge.cli import main


def write_config(tmp_path: Path, redis_url: str) -> tuple[str, str]:
    queue = f"cli_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "config.yml"
    path.write_text(f"broker: {redis_url}\nresult_backend: {redis_url}\n"
                    f"default_queue: {queue}\nresults_expire_in: 600\n")
    return str(path), queue


def test_send_result_inspect_and_requeue_dead(tmp_path: Path, redis_url: str) -> None:
    config, queue = write_config(tmp_path, redis_url)
    runner = CliRunner()
    sent = runner.invoke(main, ["send", "--config", config, "add", "1", "300", "-t", "int64",
                                "-t", "int16"])
    assert sent.exit_code == 0, sent.output
    task_uuid = sent.output.strip()
    client = redis.Redis.from_url(redis_url)
    assert client.llen(queue) == 1

    state = runner.invoke(main, ["result", "--config", config, task_uuid])
    assert state.exit_code == 0 and "PENDING" in state.output and "'add'" in state.output

    client.rpush(queue, b"{broken")
    from bridge.brokers.redis import RedisBroker
    from bridge.config import Config

    broker = RedisBroker(redis_url, Config.from_yaml(config))
    held = broker.fetch(queue, 2, 0)
    broker.dead_letter(next(d for d in held if d.body == b"{broken"), "undecodable: test")
    broker.requeue(next(d for d in held if d.body != b"{broken"))
    broker.close()

    shown = runner.invoke(main, ["inspect", "--config", config])
    assert shown.exit_code == 0, shown.output
    assert f"queue {queue}: 1 waiting" in shown.output
    assert "dead letters: 1" in shown.output and "undecodable: test" in shown.output
    assert "[1] int16 = 300" in shown.output  # the decoded peek, typed

    replayed = runner.invoke(main, ["requeue-dead", "--config", config])
    assert replayed.exit_code == 0 and "requeued 1 message" in replayed.output
    assert client.lrange(queue, 0, -1)[-1] == b"{broken"  # byte for byte

    bad = runner.invoke(main, ["send", "--config", config, "add", "1", "-t", "int8x"])
    assert bad.exit_code == 1 and "int8x is not one of supported types" in bad.output
    waited = runner.invoke(main, ["result", "--config", config, "task_nope", "--wait", "0.2"])
    assert waited.exit_code == 1 and "no state is stored" in waited.output
