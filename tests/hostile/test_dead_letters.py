"""Dead lists: a cap with the oldest dropped (bodies kept aside with them) and a warning, a
large body kept aside and replayed byte for byte, and ``mbridge inspect`` reading a page."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_dead import INLINE_MAX
from bridge.brokers.redis_keys import QueueKeys
from bridge.config import Config
from tests.hostile.harness import celery_envelope

ROOT = Path(__file__).resolve().parents[2]


def _machinery(url: str, **options: object) -> RedisBroker:
    queue = f"hd_{uuid.uuid4().hex[:8]}"
    return RedisBroker(url, Config(broker=url, default_queue=queue), **options)  # type: ignore[arg-type]


def test_the_cap_drops_the_oldest_with_their_bodies(redis_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = _machinery(redis_url, max_dead_letters=5, max_message_bytes=INLINE_MAX * 4)
    queue = broker.default_queue
    try:
        big = b"\xff" * (INLINE_MAX * 2)  # kept aside: a body_ref
        broker.publish_raw(queue, [big, *[b"bad %d" % n for n in range(7)]])
        with caplog.at_level(logging.WARNING):
            for delivery in broker.fetch(queue, 10, 0):
                broker.dead_letter(delivery, f"bad: {delivery.body[:6]!r}")
        dead = broker.dead_letters(queue)
        assert [e["body"] for e in dead] == [f"bad {n}" for n in range(2, 7)]
        assert broker.dead_count(queue) == 5
        assert not list(client.scan_iter(f"bridge:deadbody:{{{queue}}}:*"))  # went with it
        assert any("at their cap of 5: dropped the" in r.getMessage() for r in caplog.records)
    finally:
        broker.close()


def test_a_large_body_is_kept_aside_and_replayed_byte_for_byte(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = _machinery(redis_url, max_message_bytes=INLINE_MAX * 4)
    queue = broker.default_queue
    try:
        body = bytes(range(256)) * (INLINE_MAX // 128)  # not UTF-8, > INLINE_MAX
        huge = b"\xfe" * (INLINE_MAX * 5)  # over max_message_bytes: parked by the fetch
        broker.publish_raw(queue, [body, huge])
        [delivery] = broker.fetch(queue, 2, 0)
        broker.dead_letter(delivery, "not a Signature")
        entries = {e["reason"].split(" ")[0]: e for e in broker.dead_letters(queue)}
        assert entries["message"]["size"] >= len(huge), entries  # sized unread: an estimate
        assert "exceeds max_message_bytes" in entries["message"]["reason"]
        assert entries["not"]["size"] == len(body)
        assert all("body_ref" in e and "body" not in e for e in entries.values()), entries
        assert broker.replay_dead(queue) == 2  # in parking order: the huge one first
        assert client.lrange(queue, 0, -1) == [huge, body]
        assert broker.dead_count(queue) == 0
        assert not list(client.scan_iter(f"bridge:deadbody:{{{queue}}}:*"))
    finally:
        broker.close()


def test_celery_dead_list_cap_and_replay(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = f"hdc_{uuid.uuid4().hex[:8]}"
    broker = CeleryRedisBroker.from_url(redis_url, max_dead_letters=3,
                                        max_message_bytes=INLINE_MAX * 4)
    try:
        client.lpush(queue, *[b"garbage %d" % n for n in range(5)], b"\xfa" * INLINE_MAX * 2,
                     b"\xfb" * INLINE_MAX * 8)
        assert broker.fetch(queue, 10, 0) == []
        dead = broker.dead_letters(queue)
        assert len(dead) == 3 and broker.dead_count(queue) == 3
        assert "exceeds max_message_bytes" in dead[-1]["reason"], dead  # the newest last
        good = celery_envelope("h.record", ["x"])
        client.lpush(queue, good)
        assert [d.body for d in broker.fetch(queue, 10, 0)] == [good]
        assert broker.replay_dead(queue) == 3
        assert len(client.keys(f"bridge:celery:deadbody:{queue}:*")) == 0
    finally:
        broker.close()


def test_delete_takes_the_oldest_with_their_kept_bodies(redis_url: str) -> None:
    """``delete_dead`` (mbridge ui's Delete) on both Redis layouts: the oldest first, a body
    kept aside goes with its entry, the rest stay."""
    client = redis.Redis.from_url(redis_url)
    broker = _machinery(redis_url, max_message_bytes=INLINE_MAX * 4)
    queue = broker.default_queue
    celery_queue = f"hdd_{uuid.uuid4().hex[:8]}"
    celery = CeleryRedisBroker.from_url(redis_url, max_message_bytes=INLINE_MAX * 4)
    try:
        broker.publish_raw(queue, [b"\xfe" * (INLINE_MAX * 2), b"small one", b"small two"])
        for delivery in broker.fetch(queue, 3, 0):
            broker.dead_letter(delivery, "bad")
        assert broker.delete_dead(queue, 2) == 2
        assert [e["body"] for e in broker.dead_letters(queue)] == ["small two"]
        assert not list(client.scan_iter(f"bridge:deadbody:{{{queue}}}:*"))
        assert client.llen(queue) == 0  # deleted, not replayed

        client.lpush(celery_queue, b"garbage 1", b"\xfa" * INLINE_MAX * 2, b"garbage 2")
        assert celery.fetch(celery_queue, 10, 0) == []
        assert celery.dead_count(celery_queue) == 3
        assert celery.delete_dead(celery_queue) == 3
        assert celery.dead_count(celery_queue) == 0 and client.llen(celery_queue) == 0
        assert len(client.keys(f"bridge:celery:deadbody:{celery_queue}:*")) == 0
    finally:
        broker.close()
        celery.close()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_inspect_reads_a_page_of_dead_letters(redis_url: str, tmp_path: Path) -> None:
    """2,000 dead letters of 12 KB each: inspect says how many and shows a page; before, it
    read the whole list (1.8 GB RSS for 2,109 larger ones)."""
    client = redis.Redis.from_url(redis_url)
    queue = f"hi_{uuid.uuid4().hex[:8]}"
    dead = QueueKeys.of(queue).dead
    entry = b'{"queue":"q","reason":"bad","time":"t","body":"' + b"x" * 12_000 + b'"}'
    for _ in range(4):
        client.rpush(dead, *[entry] * 500)
    config = tmp_path / "config.yml"
    config.write_text(f"broker: {redis_url}\nresult_backend: {redis_url}\n"
                      f"default_queue: {queue}\n")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", (
        # VmHWM, not ru_maxrss: the latter keeps the forked copy of this (large) pytest
        # process from before exec, and measured the test runner instead of inspect
        "import sys; from bridge.cli import main\n"
        "try:\n    main()\nfinally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
        "    print('peak', hwm[0].split()[1], file=sys.stderr)\n"), "inspect", "--config",
        str(config), "-Q", queue],
        cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    peak_mb = int(err.decode().split("peak")[-1].split()[0]) / 1024
    print(f"\ninspect: {time.monotonic() - start:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert "dead letters: 2000" in out.decode(), (out, err)
    assert peak_mb < 150, peak_mb
