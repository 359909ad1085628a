"""``mbridge beat``'s locks and missed-tick rules on a real Redis: machinery's periodic-task
lock byte for byte, our Celery tick lock, what each system does with ticks missed while no
beat ran, and outages said once."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.beat.gocraft import GocraftPass
from bridge.beat.locks import CeleryTickLock, MachineryLock, record_last
from bridge.beat.loop import Beat, Job, TickJob
from bridge.beat.model import Entry, parse_entries
from bridge.beat.senders import CelerySender, Connections, MachinerySender
from bridge.config import Config
from bridge.outage import Backoff, Outage


def one(url: str, **raw: Any) -> tuple[Entry, Config]:
    config = Config(broker=url, result_backend=url, default_queue=f"q{time.time_ns()}")
    return parse_entries([{"name": f"e{time.time_ns()}", **raw}], config)[0], config


def test_machinery_lock_is_gos_key_value_and_expiry(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    entry, _ = one(private_redis_url, system="machinery", cron="*/5 * * * *",
                   machinery_program="server")
    assert entry.machinery_lock_key == f"machinery_lock_server{entry.name}*/5 * * * *"
    now_ns = time.time_ns()
    next_run = (now_ns // 1_000_000_000) + 60.0
    first, second = MachineryLock(client, entry), MachineryLock(client, entry)
    assert first.acquire(next_run, now_ns)
    assert not second.acquire(next_run, now_ns)
    value = client.get(entry.machinery_lock_key)
    assert value == str(int(next_run) * 1_000_000_000 - 1).encode()  # nextRun ns - 1
    assert 0 < client.pttl(entry.machinery_lock_key) <= (int(next_run * 1e9) - now_ns) // 10**6
    assert first.acquire(next_run, now_ns)  # a retry of the tick this process holds

    # Go's GET/GETSET path: a stored time that has passed is taken over
    client.set(entry.machinery_lock_key, str(now_ns - 5))
    assert second.acquire(next_run, now_ns)
    assert client.get(entry.machinery_lock_key) == value and client.pttl(
        entry.machinery_lock_key) > 0
    client.set(entry.machinery_lock_key, "not a number")  # Go's Atoi fails: no lock
    assert not MachineryLock(client, entry).acquire(next_run + 60, now_ns)


def test_celery_tick_lock_is_once_per_tick_and_reentrant(private_redis_url: str) -> None:
    client = redis.Redis.from_url(private_redis_url)
    entry, _ = one(private_redis_url, system="celery", every=10)
    a, b = CeleryTickLock(client, entry), CeleryTickLock(client, entry)
    assert a.acquire(100.0, 110.0) and not b.acquire(100.0, 110.0)
    assert a.acquire(100.0, 110.0)  # the holder, retrying after an outage
    assert b.acquire(110.0, 120.0) and not a.acquire(110.0, 120.0)
    assert 59_000 < client.pttl(a.key(100.0)) <= 60_000  # at least a minute
    assert a.key(100.0) == f"mbridge_beat:{{celery:{entry.name}}}:tick:100"


def test_missed_ticks_celery_sends_the_latest_once_machinery_skips(
        private_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bridge.beat")
    client = redis.Redis.from_url(private_redis_url)
    celery, config = one(private_redis_url, system="celery", every=1, queue="missed_c")
    machinery, _ = one(private_redis_url, system="machinery", every=1)
    connections = Connections(config)
    now = float(int(time.time()))
    for entry in (celery, machinery):
        record_last(client, entry, now - 30)  # the last beat sent 30 ticks ago
    jobs: list[Job] = [TickJob(CelerySender(celery, connections), Outage("c", logging.getLogger())),
                       TickJob(MachinerySender(machinery, connections),
                               Outage("m", logging.getLogger()))]
    beat = Beat(jobs, clock=lambda: now + 0.5)
    beat.turn()  # start: report
    beat.turn()  # Celery's overdue tick runs now, machinery's next one is in the future
    assert client.llen("missed_c") == 1 and client.llen(config.default_queue) == 0
    text = caplog.text
    assert "30 tick(s) since" in text and "sending it once now, as Celery beat does" in text
    assert "skipped, as machinery's scheduler (robfig/cron) does" in text
    connections.close()


def test_gocraft_reports_ticks_no_enqueuer_scheduled(
        private_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(private_redis_url)
    entry, _ = one(private_redis_url, system="gocraft", cron="0 * * * * *", namespace="gm")
    minute = time.time() // 60 * 60
    now = minute + 30.5  # within a minute: the next 4 minutes hold 4 ticks
    client.set("gm:last_periodic_enqueue", int(now) - 600)  # 10 min ago: 6 min uncovered
    enqueuer = GocraftPass(client, "gm", [entry])
    enqueuer.report_missed(now)
    assert "were never scheduled" in caplog.text and "as gocraft does" in caplog.text
    assert enqueuer.run(now) == 4 and enqueuer.run(now) == 0  # 4 minutes ahead, once
    assert int(client.get("gm:last_periodic_enqueue") or 0) == int(now)
    # in a minute's first second, Go's Next(now) (strictly after) and Before(now + 4 min)
    # leave 3: the tick at now and the one at the horizon are not walked
    assert GocraftPass(client, "gb", [entry]).run(minute + 0.5) == 3


class Flaky(Job):
    """Fails ``failures`` times with a connection error, then runs."""

    def __init__(self, failures: int, outage: Outage) -> None:
        super().__init__("flaky", outage)
        self.failures = failures
        self.runs = 0

    def start(self, now: float) -> float:
        return now

    def run(self, due: float, now: float) -> float:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Connection refused")
        self.runs += 1
        return now + 1000


def test_an_outage_is_said_once_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    job = Flaky(3, Outage("beat: redis://x", logging.getLogger("bridge.beat"),
                          Backoff(first=0.01, cap=0.02)))
    beat = Beat([job], clock=lambda: clock[0])
    for _ in range(8):
        beat.turn()
        clock[0] += 1
    assert job.runs == 1
    assert caplog.text.count("unreachable") == 1 and caplog.text.count("reconnected") == 1


def test_sigterm_stops_a_beat_with_an_unreachable_broker(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from bridge.localredis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    (tmp_path / "c.yml").write_text(f"broker: {url}\nresult_backend: {url}\n")
    (tmp_path / "s.yml").write_text("- {name: m, system: machinery, task: t, every: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "beat", "--schedule",
                             str(tmp_path / "s.yml"), "--config", str(tmp_path / "c.yml")],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # bounded by the test timeout
        lines.append(line)
        if "unreachable" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, "".join(lines) + out
    assert "cannot be reached" in "".join(lines)
