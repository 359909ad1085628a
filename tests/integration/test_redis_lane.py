"""The hot path's Redis connection (bridge.redislane) on a real redis-server: hiredis-packed
commands are the bytes redis-py sends, streamed commands all run in order, and the reply
spin backs off when it runs out (an idle blocking read sleeps) and comes back when replies
are quick."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bridge import redislane
from bridge.redislane import Lane, pack, run_script_later


def test_packed_bytes_are_redis_py_s(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    conn = client.connection_pool.get_connection()
    commands: list[tuple[Any, ...]] = [
        ("SET", "ключ", "é" * 3, "EX", 60), ("EVALSHA", "ab" * 20, 2, "k1", "k2", 3600, "P",
                                            b'{"a":1}', b"", ""),
        ("ZADD", "z", 1.5, b"m"), ("CLIENT", "REPLY", "SKIP")]
    assert b"".join(pack(conn, commands)) == b"".join(conn.pack_commands(commands))
    odd = [("SET", "k", memoryview(b"v"))]  # not plain: redis-py packs it
    assert b"".join(pack(conn, odd)) == b"".join(conn.pack_commands(odd))
    client.connection_pool.release(conn)
    client.close()


def test_a_large_command_is_redis_py_s_bytes_and_runs(private_redis_url: str) -> None:
    # past redislane._LARGE arguments, bridge.resp writes the command, not hiredis
    client = redis.Redis.from_url(private_redis_url)
    key = f"lane_{uuid.uuid4().hex[:8]}"
    values: list[Any] = [b"x" * 1300, "é" * 7, b"", 0, -(2**70), 2.5] * 200
    command = ("RPUSH", key, *values)
    conn = client.connection_pool.get_connection()
    assert len(command) > redislane._LARGE
    assert b"".join(pack(conn, [command])) == b"".join(conn.pack_commands([command]))
    client.connection_pool.release(conn)
    lane = Lane(client)
    assert lane.run([command, ("LRANGE", key, 0, -1)]) == [
        len(values), [v if type(v) is bytes else str(v).encode() for v in values]]
    lane.close()
    client.close()


def test_streamed_commands_all_run_in_order(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    key = f"lane_{uuid.uuid4().hex[:8]}"
    made: list[int] = []

    def commands() -> Any:
        for index in range(500):
            made.append(index)
            yield ("RPUSH", key, index)

    pending = lane.begin(commands())
    assert pending is not None and made == list(range(500))  # each sent as it was made
    assert pending.read() == list(range(1, 501))
    assert [int(v) for v in client.lrange(key, 0, -1)] == list(range(500))
    lane.close()
    client.close()


def test_the_spin_backs_off_when_it_runs_out(private_redis_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redislane, "SPIN_NS", 5_000_000_000)  # the first PING's reply is
    client = redis.Redis.from_url(private_redis_url)         # caught however slow the VM
    lane = Lane(client)
    assert lane.run([("PING",)]) == [b"PONG"]
    assert (lane._spins_to_skip, lane._spins_skipped) == (0, 0)
    monkeypatch.setattr(redislane, "SPIN_NS", 1_000_000)  # 1 ms: far less than the BLPOP
    key = f"empty_{uuid.uuid4().hex[:8]}"
    seen = []
    for _ in range(7):  # each blocking read that spins outlasts the spin: skip more after
        assert lane.run([("BLPOP", key, 0.05)]) == [None]
        seen.append(lane._spins_to_skip)
    assert seen == [1, 1, 3, 3, 3, 3, 7]
    for _ in range(7):  # the skipped round trips do not spin
        lane.run([("PING",)])
    assert lane._spins_skipped == 7
    monkeypatch.setattr(redislane, "SPIN_NS", 5_000_000_000)  # a PING's reply comes first
    lane.run([("PING",)])  # a reply caught spinning: spinning is back on
    assert (lane._spins_to_skip, lane._spins_skipped) == (0, 0)
    lane.close()
    client.close()


def test_commands_begun_run_while_the_caller_works_and_are_read_later(
        private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    key = f"begun_{uuid.uuid4().hex[:8]}"
    pending = lane.begin([("RPUSH", key, "a", "b"), ("LPOP", key), ("INCR", key)])
    assert pending is not None
    _until(lambda: client.llen(key) == 1)  # ran before any read
    assert client.lrange(key, 0, -1) == [b"b"]
    assert lane.run([("PING",)]) is None and lane.begin([("PING",)]) is None  # busy
    replies = pending.read()
    assert replies[:2] == [2, b"a"] and isinstance(replies[2], redis.ResponseError)
    assert lane.run([("LLEN", key)]) == [1]  # free again
    with pytest.raises(RuntimeError, match="read already"):
        pending.read()
    lane.close()
    client.close()


def test_a_connection_lost_before_the_read_raises_and_frees_the_lane(
        private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    name = f"lost_{uuid.uuid4().hex[:8]}"
    pending = lane.begin([("CLIENT", "SETNAME", name), ("BLPOP", f"{name}_never", 5)])
    assert pending is not None
    _until(lambda: _client_id(client, name) != "")  # blocked there
    client.client_kill_filter(_id=_client_id(client, name))
    with pytest.raises(redis.ConnectionError):
        pending.read()
    assert lane.run([("PING",)]) == [b"PONG"]  # reconnected
    lane.close()
    client.close()


def test_an_idle_connection_the_server_closed_is_replaced_before_commands_are_begun(
        private_redis_url: str) -> None:
    # after a restart the lane's socket has the server's end of file: a first write to it
    # succeeds and the commands would be lost (or the next write breaks half-way through)
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    name = f"idle_{uuid.uuid4().hex[:8]}"
    assert lane.run([("CLIENT", "SETNAME", name)]) == [b"OK"]
    client.client_kill_filter(_id=_client_id(client, name))
    _until(lambda: _client_id(client, name) == "")  # closed: its end of file is sent
    key = f"{name}_list"
    pending = lane.begin([("RPUSH", key, "a"), ("RPUSH", key, "b")])
    assert pending is not None
    assert pending.read() == [1, 2]
    assert client.lrange(key, 0, -1) == [b"a", b"b"]
    lane.close()
    client.close()


def _client_id(client: redis.Redis, name: str) -> str:
    return next((str(c["id"]) for c in client.client_list() if c.get("name") == name), "")


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_script_read_later_runs_once_even_when_redis_forgot_it(
        private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    key = f"later_{uuid.uuid4().hex[:8]}"
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    client.script_flush()  # NOSCRIPT: nothing ran, then the client's way loads and runs it
    later = run_script_later(lane, script, [key], [])
    assert later is not None and later() == 1 and client.get(key) == b"1"
    later = run_script_later(lane, script, [key], [])
    assert later is not None and later() == 2
    failing = client.register_script("return redis.error_reply('boom')")
    later = run_script_later(lane, failing, [], [])
    assert later is not None
    with pytest.raises(redis.ResponseError, match="boom"):
        later()
    assert lane.run([("PING",)]) == [b"PONG"]
    lane.close()
    client.close()
