"""`mbridge decode` on files, stdin and real Redis keys."""

from __future__ import annotations

from pathlib import Path

import redis
from click.testing import CliRunner

from bridge.cli import main
from bridge.protocol.gotime import parse_rfc3339
from bridge.protocol.machinery import Signature, TaskState
from bridge.types import to_arg, to_result

SIG = Signature(
    uuid="task_1", name="add", routing_key="machinery_tasks", headers={},
    args=[to_arg(7, "int8", "a"), to_arg(b"\x00\xff"), to_arg(["x", "<y>"])],
    on_success=[Signature(uuid="task_2", name="mul")],
)


def test_decode_file_shows_typed_args(tmp_path: Path) -> None:
    path = tmp_path / "msg.json"
    path.write_bytes(SIG.to_json())
    result = CliRunner().invoke(main, ["decode", str(path), "--raw"])
    assert result.exit_code == 0, result.output
    assert "[0] a int8 = 7" in result.output
    assert "[1] []byte = b'\\x00\\xff'" in result.output
    assert "[2] []string = ['x', '<y>']" in result.output
    assert "Signature task_2 'mul'" in result.output
    assert SIG.to_json().decode() in result.output


def test_decode_stdin_state_and_bad_message() -> None:
    state = TaskState("task_1", "add", "SUCCESS", [to_result(3)])
    result = CliRunner().invoke(main, ["decode"], input=state.to_json())
    assert result.exit_code == 0 and "[0] int64 = 3" in result.output
    bad = CliRunner().invoke(main, ["decode", "-"], input=b'{"RetryCount": 1.5}')
    assert bad.exit_code == 1
    assert "Signature.RetryCount of type int" in bad.output


def test_decode_from_redis_queue_zset_and_state(private_redis_url: str) -> None:
    # a Redis of its own: it writes machinery's shared delayed_tasks set, which a relay or
    # worker of a later test would take from (the ZSET score 1.0 is due at once)
    redis_url = private_redis_url
    client = redis.Redis.from_url(redis_url)
    client.delete("q", "delayed_tasks", "task_1")
    client.rpush("q", Signature(uuid="first", name="a").to_json(), SIG.to_json())
    delayed = Signature(uuid="later", name="b", eta=parse_rfc3339("2030-01-01T00:00:00.5Z"))
    client.zadd("delayed_tasks", {delayed.to_json(): 1.0})
    client.set("task_1", TaskState("task_1", "add", "FAILURE", error="boom").to_json())
    runner = CliRunner()
    queued = runner.invoke(main, ["decode", "--redis", "q", "--index", "1", "--url", redis_url])
    assert queued.exit_code == 0 and "[0] a int8 = 7" in queued.output
    zset = runner.invoke(main, ["decode", "--redis", "delayed_tasks", "--url", redis_url])
    assert "eta: 2030-01-01T00:00:00.5Z" in zset.output
    state = runner.invoke(main, ["decode", "--redis", "task_1"], env={"BROKER": redis_url})
    assert state.exit_code == 0 and "error: boom" in state.output
    missing = runner.invoke(main, ["decode", "--redis", "nope", "--url", redis_url])
    assert missing.exit_code == 1 and "no key 'nope'" in missing.output
