"""The hot path's Redis connection (bridge.redislane) on a real redis-server: hiredis-packed
commands are the bytes redis-py sends, streamed commands all run in order, and the reply
spin backs off when it runs out (an idle blocking read sleeps) and comes back when replies
are quick."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from bridge import redislane
from bridge.redislane import Lane, pack


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


def test_streamed_commands_all_run_in_order(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    lane = Lane(client)
    key = f"lane_{uuid.uuid4().hex[:8]}"
    made: list[int] = []

    def commands() -> Any:
        for index in range(500):
            made.append(index)
            yield ("RPUSH", key, index)

    replies = lane.run_streamed(commands())
    assert replies == list(range(1, 501)) and made == list(range(500))
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
