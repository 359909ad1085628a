"""``--celery-app`` for relay and migrate (the app's broker, result backend, default queue
and accept list), the warning where a Celery result backend is only guessed, the worker
honouring the app's ``accept_content``, and migrate's first hour: a Ctrl-C that says what
is held and how to finish, a warning for an empty or misspelt queue."""

from __future__ import annotations

import gc
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
from celery import Celery

from bridge.cli.sides import open_sides
from bridge.endpoints import format_endpoint
from bridge.migrate import held_messages, migrate
from bridge.migrate.bookkeeping import run_id
from bridge.migrate.sources import open_source
from bridge.protocol.celery import encode_task, new_task
from tests.integration.test_cli_errors import command_env, mbridge
from tests.integration.test_migrate import celery_ep, machinery_ep, publish_celery
from tests.redis_servers import with_db

CELERY_APP = """\
from celery import Celery

app = Celery("first_hour", broker={broker!r}, backend={backend!r})
app.conf.update(task_default_queue="jobs", accept_content=["json"],
                result_accept_content=["json"], broker_connection_retry_on_startup=True)


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y
"""


class Urls:
    def __init__(self, redis_url: str) -> None:
        self.broker, self.backend = with_db(redis_url, 8), with_db(redis_url, 9)


@pytest.fixture
def urls(redis_url: str) -> Iterator[Urls]:
    """The Celery app's broker and backend: two databases, flushed before and after."""
    found = Urls(redis_url)
    clients = [redis.Redis.from_url(u) for u in (found.broker, found.backend)]
    for client in clients:
        client.flushdb()
    yield found
    for client in clients:
        client.flushdb()
        client.close()


@pytest.fixture
def app_dir(tmp_path: Path, urls: Urls, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding ``first_hour_celery.py`` (importable from the tests too)."""
    (tmp_path / "first_hour_celery.py").write_text(
        CELERY_APP.format(broker=urls.broker, backend=urls.backend))
    (tmp_path / "rpc_celery.py").write_text(
        CELERY_APP.format(broker=urls.broker, backend="rpc://"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("first_hour_celery", "rpc_celery"):
        sys.modules.pop(name, None)
    return tmp_path


# ------------------------------------------------------------------ the two sides


def test_sides_complete_from_the_celery_app(app_dir: Path, urls: Urls) -> None:
    go = f"machinery+{urls.broker}?queue=go"
    sides = open_sides("celery", go, "first_hour_celery:app", flags=("SRC", "DST"),
                       results=True)
    assert (sides.source.broker_url, sides.source.queue) == (urls.broker, "jobs")
    assert sides.source.backend_url == urls.backend  # not the broker's database
    assert sides.accept == ("json",)
    other = open_sides("celery?queue=images", go, "first_hour_celery:app",
                       flags=("SRC", "DST"), results=True)
    assert other.source.queue == "images" and other.source.backend_url == urls.backend
    given = open_sides(f"celery+{urls.broker}?backend={urls.broker}", go,
                       "first_hour_celery:app", flags=("SRC", "DST"), results=True)
    assert given.source.backend_url == urls.broker and given.source.queue == "jobs"


def test_a_bare_celery_side_needs_the_app(urls: Urls) -> None:
    with pytest.raises(click.UsageError, match="a bare 'celery' side takes the broker of "
                                               "--celery-app"):
        open_sides("celery", f"machinery+{urls.broker}", None, flags=("--from", "--to"),
                   results=True)


def test_a_backend_the_relay_cannot_use(app_dir: Path, urls: Urls) -> None:
    with pytest.raises(click.UsageError, match=r"result_backend rpc:// cannot be read or "
                                               r"written here \(Redis only\)"):
        open_sides("celery", f"machinery+{urls.broker}", "rpc_celery:app",
                   flags=("--from", "--to"), results=True)


def test_a_guessed_celery_backend_is_a_warning(urls: Urls,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    celery, go = f"celery+{urls.broker}?queue=celery", f"machinery+{urls.broker}?queue=go"
    open_sides(celery, go, None, flags=("--from", "--to"), results=True)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("Warning: --from: no backend= given, so Celery results are "
                              f"taken to be in the broker's database {urls.broker}")
    assert "add &backend=URL (or --celery-app)" in warning and "\n" not in warning
    open_sides(go, f"{celery}&backend={urls.backend}", None, flags=("--from", "--to"),
               results=True)
    open_sides(celery, go, None, flags=("SRC", "DST"), results=False)  # migrate w/o --results
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ accept_content


def test_migrate_takes_the_app_queue_and_refuses_what_it_does_not_accept(
        app_dir: Path, urls: Urls) -> None:
    publish_celery(urls.broker, "jobs", [new_task("tasks.add", [1, 2])])
    broker_client = redis.Redis.from_url(urls.broker)
    msgpack = encode_task(new_task("tasks.add", [3, 4]), serializer="msgpack")
    from bridge.brokers.celery_redis import CeleryRedisBroker

    broker = CeleryRedisBroker.from_url(urls.broker)
    broker.publish_messages("jobs", [msgpack])
    broker.close()
    rc, out = mbridge("migrate", "--celery-app", "first_hour_celery:app", "celery",
                      f"machinery+{urls.broker}?queue=go", "-q", cwd=app_dir)
    assert rc == 3, out  # the msgpack one stays
    assert "moved 1" in out and "content type application/x-msgpack (msgpack) refused" in out
    assert broker_client.llen("go") == 1
    broker_client.close()


def test_worker_honours_accept_content(app_dir: Path, urls: Urls, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker", "--celery-app",
             "first_hour_celery:app", "--no-machinery", "-c", "2"], cwd=app_dir,
            stdout=out, stderr=subprocess.STDOUT, env=command_env())
    client = Celery("first-hour-client", broker=urls.broker, backend=urls.backend)
    try:
        assert client.send_task("tasks.add", (40, 2), queue="jobs").get(timeout=60) == 42
        refused = client.send_task("tasks.add", (1, 2), queue="jobs", serializer="msgpack")
        with pytest.raises(Exception, match="refused"):
            refused.get(timeout=60)
    finally:
        gc.collect()
        client.backend.result_consumer.stop()
        client.close()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    assert status == 0, log.read_text()
    assert "Warning" not in log.read_text()  # --no-machinery: no machinery config wanted


def test_relay_honours_accept_content(urls: Urls) -> None:
    from bridge.brokers.celery_redis import CeleryRedisBroker
    from tests.integration.test_relay import eventually, relay_for, running

    broker = CeleryRedisBroker.from_url(urls.broker)
    msgpack = new_task("tasks.add", [1, 2])
    broker.publish_messages("jobs", [encode_task(msgpack, serializer="msgpack"),
                                     encode_task(new_task("tasks.add", [3, 4]))])
    relay = relay_for(urls.broker, "celery:jobs", "machinery:go", accept=("json",))
    with running(relay):
        eventually(lambda: relay.stats["relayed"] == 1 and relay.stats["parked"] == 1)
    [dead] = broker.dead_letters("jobs")
    assert "content type application/x-msgpack (msgpack) refused" in dead["reason"]
    broker.close()


# ------------------------------------------------------------------ migrate's first hour


def test_migrate_warns_for_an_empty_or_misspelt_queue(urls: Urls) -> None:
    publish_celery(urls.broker, "celery", [new_task("tasks.add", [1, 2])])
    rc, out = mbridge("migrate", f"celery+{urls.broker}?queue=celerry",
                      f"machinery+{urls.broker}?queue=go", "-q")
    assert rc == 0, out
    assert (f"Warning: celery queue 'celerry' on {urls.broker}: nothing is waiting there: the "
            "queue is empty or does not exist (check ?queue= in SRC") in out


def test_held_messages_of_an_unfinished_batch(urls: Urls) -> None:
    publish_celery(urls.broker, "celery", [new_task("tasks.add", [i, 1]) for i in range(25)])
    src, dst = celery_ep(urls.broker), machinery_ep(urls.broker, "go")
    source = open_source(src, run_id(format_endpoint(src), format_endpoint(dst)))
    _, held = next(iter(source.claim(10, True)))  # taken, never published: a killed run
    source.close()
    assert len(held) == 10 and held_messages(src, dst) == 10
    assert migrate(src, dst).moved == 25 and held_messages(src, dst) == 0


def test_migrate_interrupted_says_what_it_holds_and_a_rerun_finishes(
        urls: Urls, tmp_path: Path) -> None:
    total = 40_000
    for start in range(0, total, 5000):
        publish_celery(urls.broker, "celery",
                       [new_task("tasks.add", [i, 1]) for i in range(start, start + 5000)])
    args = ["migrate", f"celery+{urls.broker}?queue=celery",
            f"machinery+{urls.broker}?queue=go", "--batch", "5"]
    log = tmp_path / "migrate.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=command_env())
    deadline = time.monotonic() + 120
    while "looked at" not in log.read_text() and proc.poll() is None:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "Aborted" not in text, text
    assert "note: interrupted (Ctrl-C): counts up to the last finished batch" in text
    assert re.search(r"interrupted \(Ctrl-C\): ([\d,]+ messages held — re-run the same command "
                     r"to finish|nothing held — re-run the same command to move the rest)",
                     text), text
    rc, out = mbridge(*args, "-q", timeout=600)
    assert rc == 0, out
    client = redis.Redis.from_url(urls.broker)
    assert client.llen("go") == total and client.llen("celery") == 0
    client.close()
