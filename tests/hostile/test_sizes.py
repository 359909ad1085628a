"""Oversized messages: parked unread by a real worker process, whose memory stays flat, and
Redis is blocked no longer than by the one copy any consumer's pop of them costs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bridge.brokers.redis_keys import QueueKeys
from bridge.protocol.machinery import Arg, Signature, new_uuid
from tests.hostile.harness import celery_envelope, wait_for

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextmanager
def _worker(url: str, queue: str, celery_queue: str, log: Path) -> Iterator[int]:
    env = {**os.environ, "BRIDGE_HOSTILE_REDIS": url, "BRIDGE_HOSTILE_QUEUE": queue}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.hostile.hostile_app",
             "-c", "4", "--celery-queue", celery_queue, "--celery-broker", url,
             "--celery-backend", url], env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield proc.pid
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)


def _push_elsewhere(url: str, key: str, size: int, side: str) -> None:
    """Push ``size`` bytes of non-UTF-8 garbage from another process (this one's memory
    stays out of the measure)."""
    code = ("import redis, sys; r = redis.Redis.from_url(sys.argv[1]); "
            "getattr(r, sys.argv[4])(sys.argv[2], b'\\xff' * int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, url, key, str(size), side], check=True)


@contextmanager
def _script_times(client: redis.Redis) -> Iterator[list[float]]:
    """The durations (s) of the scripts Redis ran during the block, from its SLOWLOG."""
    client.config_set("slowlog-log-slower-than", 1000)  # µs
    client.config_set("slowlog-max-len", 10000)
    client.slowlog_reset()
    times: list[float] = []
    yield times
    for entry in client.slowlog_get(10000):
        name = entry["command"].split()[0].upper()
        if name in (b"EVALSHA", b"EVAL", b"FCALL"):
            times.append(entry["duration"] / 1e6)
    client.config_set("slowlog-log-slower-than", 10000)


def _native_copy_seconds(client: redis.Redis, url: str, size: int) -> float:
    """How long Redis itself takes to move one ``size``-byte item that is not alone in its
    list (LMOVE, reply skipped), from its SLOWLOG: the copy any consumer of it pays."""
    key, dst = f"scratch:{uuid.uuid4().hex}", f"scratch:{uuid.uuid4().hex}"
    _push_elsewhere(url, key, size, "rpush")
    client.rpush(key, b"small")
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    conn = client.connection_pool.get_connection()
    conn.send_packed_command(conn.pack_commands([
        ("CLIENT", "REPLY", "SKIP"), ("LMOVE", key, dst, "LEFT", "RIGHT"), ("PING",)]))
    conn.read_response()
    client.connection_pool.release(conn)
    seconds = max(e["duration"] for e in client.slowlog_get(100)
                  if e["command"].upper().startswith(b"LMOVE")) / 1e6
    client.config_set("slowlog-log-slower-than", 10000)
    client.delete(key, dst)
    return float(seconds)


def _runs(client: redis.Redis, queue: str) -> list[bytes]:
    return client.lrange(f"hostile:runs:{queue}", 0, -1)


def _signature(key: str) -> bytes:
    return Signature(uuid=new_uuid(), name="h.record", args=[Arg("", "string", key)]).to_json()


def test_oversized_messages_are_parked_unread(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    queue, cq = f"hs_{uuid.uuid4().hex[:8]}", f"hsc_{uuid.uuid4().hex[:8]}"
    floor = _native_copy_seconds(client, redis_url, 100 * MB)
    with _worker(redis_url, queue, cq, tmp_path / "worker.log") as pid:
        good = [f"g{n}" for n in range(6)]
        client.rpush(queue, *[_signature(k) for k in good[:3]])
        wait_for(lambda: len(_runs(client, queue)) == 3, 60, "the worker to start")
        baseline = _peak_rss_mb(pid)
        with _script_times(client) as scripts:
            _push_elsewhere(redis_url, queue, 200 * MB, "rpush")  # machinery: Go's RPUSH
            _push_elsewhere(redis_url, cq, 100 * MB, "lpush")     # Celery: kombu's LPUSH
            for key in good[3:]:
                client.lpush(cq, celery_envelope("h.record", [key]))
            wait_for(lambda: client.llen(QueueKeys.of(queue).dead) == 1
                     and client.llen(f"bridge:celery:dead:{cq}") == 1, 120,
                     "both oversized messages to be parked")
            wait_for(lambda: len(_runs(client, queue)) == 6, 60, "the good tasks")
        grown = _peak_rss_mb(pid) - baseline
    longest = max(scripts, default=0.0)
    print(f"\nworker peak RSS +{grown:.0f} MB; longest script {longest * 1000:.0f} ms "
          f"(Redis moving the 100 MB item itself: {floor * 1000:.0f} ms)")
    assert grown < 64, grown
    assert sorted(_runs(client, queue)) == [k.encode() for k in good]
    for dead in (QueueKeys.of(queue).dead, f"bridge:celery:dead:{cq}"):
        [entry] = client.lrange(dead, 0, -1)
        assert len(entry) < 1000 and b"body_ref" in entry and b"exceeds max_message_bytes" \
            in entry, entry[:300]
    # no script reads or scans them: at most the one copy Redis makes of an item that is
    # not alone in its list (the 100 MB one here), as a consumer's own pop would
    assert longest < 1.5 * floor + 0.05, (longest, floor)


def test_many_medium_bad_items_never_block_redis(redis_url: str, tmp_path: Path) -> None:
    """1 MB of non-UTF-8 garbage each, between good tasks: parked, scripts stay short."""
    client = redis.Redis.from_url(redis_url)
    queue, cq = f"hs_{uuid.uuid4().hex[:8]}", f"hsc_{uuid.uuid4().hex[:8]}"
    with _worker(redis_url, queue, cq, tmp_path / "worker.log"), \
            _script_times(client) as scripts:
        good = []
        for n in range(20):
            client.lpush(cq, b"\xfe" * MB)
            client.rpush(queue, b"\xfe" * MB)
            good.append(f"k{n}")
            client.rpush(queue, _signature(f"k{n}"))
        wait_for(lambda: client.llen(QueueKeys.of(queue).dead) == 20
                 and client.llen(f"bridge:celery:dead:{cq}") == 20, 120, "40 parked")
        wait_for(lambda: len(_runs(client, queue)) == 20, 60, "the good tasks")
    longest = max(scripts, default=0.0)
    print(f"\nlongest script {longest * 1000:.1f} ms")
    assert sorted(_runs(client, queue)) == sorted(k.encode() for k in good)
    assert longest < 0.1, longest  # wall time on shared cores; 1 MB read per call at most
