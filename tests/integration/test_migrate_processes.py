"""``mbridge migrate --processes N`` on a real redis-server: helpers move the source side
by side, taking batches from one shared allowance; every message arrives once, their
reports add up, and a run killed anywhere (its own process, or one helper) is finished by
running it again."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.endpoints import format_endpoint
from bridge.migrate import MAX_REASONS, MigrationReport, migrate
from bridge.migrate.bookkeeping import RunKeys, run_id
from bridge.migrate.sources import Allowance
from bridge.protocol.celery import new_task
from tests.integration.test_migrate import (
    bookkeeping,
    celery_ep,
    celery_queue,
    machinery_ep,
    machinery_queue,
    publish_celery,
)
from tests.proc_tree import grandchildren
from tests.redis_servers import with_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def db_url(redis_url: str) -> Iterator[str]:
    """A database of the session's server of its own, flushed before and after the test."""
    url = with_db(redis_url, 10)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _take_all(allowance: Allowance, most: int, took: Connection) -> None:
    taken = []
    while count := allowance.take(most):
        taken.append(count)
    took.send(taken)


def test_an_allowance_shared_by_processes_is_taken_once_in_all() -> None:
    """Three processes and this one take batches of 7 from one allowance of 1,000: each
    take is at most 7, and together they take exactly 1,000 (nothing twice, none left)."""
    context = multiprocessing.get_context("forkserver")
    allowance = Allowance(1000, context)
    pipes = [context.Pipe(duplex=False) for _ in range(3)]
    procs = [context.Process(target=_take_all, args=(allowance, 7, sender))
             for _, sender in pipes]
    for proc in procs:
        proc.start()
    mine = []
    while count := allowance.take(7):
        mine.append(count)
    theirs = [receiver.recv() for receiver, _ in pipes]
    for proc in procs:
        proc.join(30)
    takes = mine + [count for taken in theirs for count in taken]
    assert sum(takes) == 1000 and max(takes) <= 7, (mine, theirs)
    assert allowance.take(7) == 0
    alone = Allowance(10)  # one process: a plain count
    assert [alone.take(4), alone.take(4), alone.take(4), alone.take(4)] == [4, 4, 2, 0]


def test_reports_add_up_within_the_cap_of_reasons() -> None:
    run, helper = MigrationReport("a", "b", "move"), MigrationReport("a", "b", "move")
    run.seen, helper.seen, helper.moved = 5, 7, 6
    for n in range(MAX_REASONS):
        run.reason("add", f"reason {n}")
    helper.reason("add", "reason 1", 3)
    helper.reason("mul", "new", 2)
    helper.task("mul").untranslatable = 2
    helper.notes.append("a note")
    view = run.merged([helper])
    assert (view.seen, view.moved, run.seen) == (12, 6, 5)  # merged leaves the run's alone
    assert view.reasons[("add", "reason 1")] == 4 and view.reasons[("mul", "(other reasons)")] == 2
    assert view.tasks["mul"].untranslatable == 2 and "mul" not in run.tasks
    assert view.notes == ["a note"] and run.notes == []


def test_processes_move_every_message_once_and_add_up_their_reports(db_url: str) -> None:
    eta = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    good = [new_task("add", [i, 1]) for i in range(6000)]
    bad = [new_task("add", [{"not": "typed"}]) for _ in range(6)]
    later = [new_task("mul", [i, 2], eta=eta) for i in range(3)]
    tasks = list(good)
    for n, task in enumerate(bad):  # spread over the batches every process takes
        tasks.insert(1000 * n + 500, task)
    publish_celery(db_url, "celery", tasks + later)
    seen: list[MigrationReport] = []
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), batch=250, processes=3,
                     progress=seen.append)
    assert (report.seen, report.moved, report.delayed) == (6009, 6003, 3)
    assert (report.untranslatable, report.left_behind) == (6, 6)
    assert report.tasks["add"].moved == 6000 and report.tasks["add"].untranslatable == 6
    assert report.tasks["mul"].moved == 3
    assert sum(count for (_, _), count in report.reasons.items()) == 6
    assert any("moved by 3 processes" in note for note in report.notes)
    assert seen and seen[-1].moved == 6003  # the progress line counts the helpers' too
    ids = [s.uuid for s in machinery_queue(db_url, "go_q")]
    assert len(ids) == 6000 and set(ids) == {t.id for t in good}  # once each
    delayed = redis.Redis.from_url(db_url).zcard("delayed_tasks")
    assert delayed == 3
    assert sorted(t.id for t in celery_queue(db_url, "celery")) == sorted(t.id for t in bad)
    assert bookkeeping(db_url) == []


def test_a_small_queue_is_moved_by_the_run_alone(db_url: str) -> None:
    publish_celery(db_url, "celery", [new_task("add", [i]) for i in range(100)])
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), processes=4)
    assert report.moved == 100 and not any("processes" in n for n in report.notes)
    assert len(machinery_queue(db_url, "go_q")) == 100


def _two_databases(redis_url: str, total: int) -> tuple[list[str], redis.Redis, set[str]]:
    src_url, dst_url = with_db(redis_url, 8), with_db(redis_url, 9)
    for url in (src_url, dst_url):
        redis.Redis.from_url(url).flushdb()
    tasks = [new_task("add", [i, 1]) for i in range(total)]
    for start in range(0, total, 5000):
        publish_celery(src_url, "celery", tasks[start:start + 5000])
    command = [sys.executable, "-m", "bridge.cli", "migrate",
               format_endpoint(celery_ep(src_url)), format_endpoint(machinery_ep(dst_url)),
               "--batch", "300", "--processes", "3", "-q"]
    return command, redis.Redis.from_url(dst_url), {t.id for t in tasks}


def _source_url(command: list[str]) -> str:
    """The Redis URL of a ``migrate`` command's ``celery+`` source."""
    return command[4].split("celery+", 1)[1].split("?", 1)[0]


def _moved_once(command: list[str], dst: redis.Redis, ids: set[str]) -> None:
    """Run ``command`` again: it finishes, resuming the batches left in flight (a process
    killed between two batches leaves none), and every message is in the destination once."""
    src_url = _source_url(command)
    src = redis.Redis.from_url(src_url)
    left = src.scard(RunKeys(run_id(command[4], command[5])).batches)
    src.close()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("resumed batches" in done.stdout) == (left > 0), (left, done.stdout)
    moved = [json.loads(raw)["UUID"] for raw in dst.lrange("machinery_tasks", 0, -1)]
    assert len(moved) == len(ids) and set(moved) == ids  # none lost, none twice
    assert CeleryRedisBroker.from_url(src_url).queue_depth("celery") == 0
    assert bookkeeping(src_url) == []


def _wait_all_busy(command: list[str]) -> None:
    """Until the run's three processes each hold a batch (the helpers have started)."""
    src = redis.Redis.from_url(_source_url(command))
    batches = RunKeys(run_id(command[4], command[5])).batches
    deadline = time.monotonic() + 120
    while src.scard(batches) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    src.close()


def test_sigkill_of_the_run_stops_its_helpers_and_a_rerun_finishes_once(redis_url: str) -> None:
    command, dst, ids = _two_databases(redis_url, 30_000)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_all_busy(command)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the helpers read EOF on their pipe and exit at once
    after_kill = dst.llen("machinery_tasks")
    time.sleep(1.0)
    assert dst.llen("machinery_tasks") == after_kill, "a helper outlived its run"
    assert 0 < after_kill < len(ids), "killed too late to prove it"
    _moved_once(command, dst, ids)


def test_a_killed_helper_fails_the_run_in_one_line_and_a_rerun_finishes(
        redis_url: str) -> None:
    command, dst, ids = _two_databases(redis_url, 30_000)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_all_busy(command)
    helpers = grandchildren(proc.pid)
    assert len(helpers) == 2, helpers
    os.kill(helpers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "a helper process of the migration died (killed by SIGKILL)" in err, err
    assert "run the same command again" in err and "Traceback" not in err, err
    assert 0 < dst.llen("machinery_tasks") < len(ids), "killed too late to prove it"
    _moved_once(command, dst, ids)


def test_a_rabbitmq_source_is_read_by_one_process(db_url: str, amqp_url: str) -> None:
    from bridge.brokers.celery_amqp import CeleryAmqpBroker
    from bridge.endpoints import parse_endpoint
    from bridge.protocol.celery import encode_task

    queue = f"celery_p_{os.getpid()}"
    broker = CeleryAmqpBroker.from_url(amqp_url)
    broker.publish_messages(queue, [encode_task(new_task("add", [i])) for i in range(40)])
    broker.close()
    src = parse_endpoint(f"celery+{amqp_url}?queue={queue}&backend={db_url}")
    report = migrate(src, machinery_ep(db_url, "go_q"), processes=3)
    assert report.moved == 40
    assert any("read by one process" in note for note in report.notes)
    assert len(machinery_queue(db_url, "go_q")) == 40
