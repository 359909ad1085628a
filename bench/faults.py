"""Fault harness: our worker, Go machinery v2's and Celery 5's under the same faults.

For every scenario, each worker in turn gets a fresh redis-server (and RabbitMQ node where
the scenario needs one), the same workload of ``record(key, ms)`` tasks and the same fault
at the same point (after a number of tasks ran). Every run of ``record`` appends its key
to a file outside the broker (one O_APPEND write), so executions are counted the same way
for all three:

* ours: ``python -m bridge.cli worker -A tests.faults.fault_app`` (machinery messages on
  ``fault_tasks``, sent by our producer, byte-for-byte what Go's SendTask sends);
* go: ``compat_fixtures/bin/harness-v2 worker`` (machinery v2's own worker; its ``record``
  task is in compat_fixtures/harness/interop_fault.go) on the same messages;
* celery: ``celery -A bench.fault_celery_app worker`` (prefork, acks_late) on Celery's
  own queue ``celery``, Celery-protocol messages sent by Celery's ``send_task``, on
  Redis or on RabbitMQ with Celery's pyamqp layout.

The table per scenario: sent; ran exactly once; ran more than once (tasks, and extra runs
in the notes); lost (never ran, not in the broker any more); gone with the broker (never
ran, and was in Redis when it was restarted empty); queued (never ran, still in the broker
at the end: e.g. Celery's ``unacked`` hash, given back after its 1 h visibility timeout);
self-recovered (the same worker process, never restarted, ran probe tasks sent after the
fault); drain (seconds from the fault to the first run of the last task that ran; ``*``
where some never ran). Times are wall-clock on whatever machine runs this: noisy.

Run (after ``bash .ci/setup`` and ``compat_fixtures/build.sh``)::

    python -m bench.faults                         # every scenario, every worker
    python -m bench.faults --scenarios kill-alone,redis-pause --workers ours,go --tasks 200
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.faults / tests.rabbitmq when run as a script

from tests.faults.controlled_redis import ControlledRedis  # noqa: E402
from tests.rabbitmq import RabbitMQ  # noqa: E402

HARNESS = ROOT / "compat_fixtures" / "bin" / "harness-v2"
CONCURRENCY = 4
MACHINERY_QUEUE = "fault_tasks"
CELERY_QUEUE = "celery"
KEY = re.compile(r"\b(?:fk|fp)\d{6}\b")
SETTLE = 15.0
"""After every task ran, watch this long for late re-runs (our recovery is due 10-12 s
after a death, RabbitMQ's redelivery at once)."""
QUIET = 30.0
"""With tasks still missing: give up once nothing ran for this long..."""
MIN_WINDOW = 45.0
"""...and at least this long after the fault (a recovery that is due must be seen)."""
CAP = 240.0
PROBES = 8
IDLE_NOTE = 50.0
"""Noted when a worker with nothing to do sends this many Redis commands a second."""
PROBE_TIMEOUT = 30.0


# ---------------------------------------------------------------------------- workers


class Kind:
    """One contender: how its worker is started and how its messages are sent."""

    name = ""
    queue = MACHINERY_QUEUE

    def command(self, run: Run, tag: str) -> list[str]:
        raise NotImplementedError

    def send(self, run: Run, keys: list[str], ms: int) -> None:
        raise NotImplementedError


class Machinery(Kind):
    """Machinery messages from our producer (the same bytes Go's SendTask writes)."""

    def send(self, run: Run, keys: list[str], ms: int) -> None:
        from bridge.app import Bridge
        from bridge.backends.redis import RedisBackend
        from bridge.brokers.redis import RedisBroker
        from bridge.config import AMQPConfig, Config

        url = run.redis.url
        config = Config(broker=run.machinery_broker, result_backend=url,
                        default_queue=MACHINERY_QUEUE,
                        amqp=AMQPConfig(binding_key=MACHINERY_QUEUE))
        if run.rabbit is None:
            app = Bridge(config, broker=RedisBroker(url, config),
                         backend=RedisBackend(url, config))
        else:
            app = Bridge(config)
        try:
            for offset in range(0, len(keys), 1000):
                app.send_batch([app.signature("record", key, ms)
                                for key in keys[offset:offset + 1000]])
        finally:
            app.close()


class Ours(Machinery):
    name = "ours"

    def command(self, run: Run, tag: str) -> list[str]:
        return [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.faults.fault_app",
                "-c", str(CONCURRENCY), "-l", "info"]


class Go(Machinery):
    name = "go"

    def command(self, run: Run, tag: str) -> list[str]:
        return [str(HARNESS), "worker", "--broker", run.machinery_broker, "--backend",
                run.redis.url, "--redis", run.redis.url, "--queue", MACHINERY_QUEUE,
                "--concurrency", str(CONCURRENCY), "--tag", f"fault-go-{tag}"]


class CeleryKind(Kind):
    name = "celery"
    queue = CELERY_QUEUE

    def command(self, run: Run, tag: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.fault_celery_app", "worker",
                "--pool", "prefork", "--concurrency", str(CONCURRENCY), "-Q", CELERY_QUEUE,
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-n", f"fault-{tag}-{os.getpid()}@%h"]

    def send(self, run: Run, keys: list[str], ms: int) -> None:
        from celery import Celery

        # no result backend on the producer side: send_task then only publishes (the
        # worker stores results in $BRIDGE_FAULT_REDIS as usual)
        app = Celery("fault_producer", broker=run.celery_broker)
        try:
            with app.producer_or_acquire() as producer:
                for key in keys:
                    app.send_task("record", args=[key, ms], queue=CELERY_QUEUE,
                                  producer=producer)
        finally:
            app.close()


KINDS: dict[str, Kind] = {k.name: k for k in (Ours(), Go(), CeleryKind())}


# ---------------------------------------------------------------------------- one run


@dataclass
class Outcome:
    kind: str
    sent: int = 0
    once: int = 0
    more: int = 0
    extra_runs: int = 0
    lost: int = 0
    gone: int = 0
    queued: int = 0
    recovered: str = ""
    drain: float | None = None
    incomplete: bool = False
    failed: bool = False
    notes: list[str] = field(default_factory=list)


class Run:
    """One worker kind under one scenario: its servers, worker processes and counts."""

    def __init__(self, kind: Kind, tmp: Path, *, rabbit: bool) -> None:
        self.kind = kind
        self.tmp = tmp
        (tmp / "redis").mkdir(parents=True)
        self.redis = ControlledRedis(tmp / "redis")
        self.redis.start()
        self.rabbit: RabbitMQ | None = None
        if rabbit:
            self.rabbit = RabbitMQ(tmp / "rabbitmq")
            self.rabbit.workdir.mkdir()
            self.rabbit.start()
        self.runs = tmp / "runs.txt"
        self.runs.touch()
        self._offset = 0
        self.counts: Counter[str] = Counter()
        self.first: dict[str, float] = {}
        self.last_run = 0.0
        self.sent: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.main: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.notes: list[str] = []
        self.env = {**os.environ, "BRIDGE_FAULT_REDIS": self.redis.url,
                    "BRIDGE_FAULT_BROKER": (self.celery_broker if kind.name == "celery"
                                            else self.machinery_broker),
                    "BRIDGE_FAULT_RUNS": str(self.runs),
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}

    # -- URLs

    @property
    def machinery_broker(self) -> str:
        if self.rabbit is None:
            return self.redis.url
        return f"amqp://guest:guest@127.0.0.1:{self.rabbit.port}/"

    @property
    def celery_broker(self) -> str:
        if self.rabbit is None:
            return self.redis.url
        return f"pyamqp://guest:guest@127.0.0.1:{self.rabbit.port}//"

    # -- tasks and workers

    def send(self, count: int, ms: int, prefix: str = "fk") -> list[str]:
        start = sum(1 for key in self.sent if key.startswith(prefix))
        keys = [f"{prefix}{start + n:06d}" for n in range(count)]
        self.kind.send(self, keys, ms)
        self.sent += keys
        return keys

    def start_worker(self, tag: str) -> subprocess.Popen[bytes]:
        """A worker process in its own session (a SIGKILL takes its whole group, as a dying
        container or machine would: Celery's pool children too)."""
        with open(self.tmp / f"worker-{tag}.log", "ab") as log:
            proc = subprocess.Popen(self.kind.command(self, tag), env=self.env, cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        if self.main is None:
            self.main = proc
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def poll(self) -> None:
        with open(self.runs, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        now = time.monotonic()
        for line in data[:end].decode().split():
            self.counts[line] += 1
            self.first.setdefault(line, now)
            self.last_run = now

    def ran(self, prefix: str = "fk") -> int:
        self.poll()
        return sum(1 for key in self.counts if key.startswith(prefix))

    def wait_runs(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ran() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind.name}: {count} runs not reached in {timeout} s"
                                   f" (logs in {self.tmp})")
            time.sleep(0.05)

    def supervise(self, tag: str) -> None:
        """Restart the watched worker if it exited (a supervisor would): noted, and it no
        longer counts as self-recovered."""
        if self.main is not None and self.main.poll() is not None:
            self.notes.append(f"worker exited rc={self.main.returncode} at "
                              f"+{time.monotonic() - self.fault_at:.1f} s; restarted")
            self.restarts += 1
            self.main = None
            self.main = self.start_worker(f"{tag}-restart{self.restarts}")

    fault_at = 0.0

    def mark_fault(self) -> None:
        """Now is the fault (what ran so far is seen as having run before it)."""
        self.poll()
        self.fault_at = time.monotonic()

    def drain(self, keys: list[str], gone: set[str], supervise: bool = True) -> None:
        """Watch until every task ran (or is gone) and SETTLE passed quietly, or nothing
        ran for QUIET (and MIN_WINDOW since the fault passed), or CAP."""
        while True:
            time.sleep(0.1)
            self.poll()
            if supervise:
                self.supervise("main")
            now = time.monotonic()
            quiet = now - max(self.last_run, self.fault_at)
            done = all(self.counts[key] or key in gone for key in keys)
            if done and quiet >= SETTLE:
                return
            if not done and quiet >= QUIET and now - self.fault_at >= MIN_WINDOW:
                return
            if now - self.fault_at >= CAP:
                return

    def probe(self) -> str:
        """Self-recovery: the watched worker, never restarted, runs tasks sent now."""
        if self.restarts:
            return "no (restarted)"
        if self.main is None or self.main.poll() is not None:
            return f"no (exited rc={self.main.returncode if self.main else '?'})"
        try:
            keys = self.send(PROBES, 10, prefix="fp")
        except Exception as exc:
            return f"no (probe not sent: {type(exc).__name__})"
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            self.poll()
            if all(self.counts[key] for key in keys):
                return "yes"
            if self.main.poll() is not None:
                return f"no (exited rc={self.main.returncode})"
            time.sleep(0.1)
        return f"no (probe not run in {PROBE_TIMEOUT:.0f} s)"

    def idle_rate(self, seconds: float = 3.0) -> float:
        """Redis commands per second now that the work is done (a worker waiting for
        tasks sends a few; one that spins, thousands)."""
        client = redis.Redis.from_url(self.redis.url, socket_timeout=10)
        try:
            def calls() -> int:
                stats = client.info("commandstats")
                return sum(int(v["calls"]) for v in stats.values())
            before, began = calls(), time.monotonic()
            time.sleep(seconds)
            return (calls() - before - 1) / (time.monotonic() - began)
        finally:
            client.close()

    # -- what is still in the broker

    def redis_keys(self) -> dict[str, str]:
        """Task keys in Redis lists, hashes and sorted sets (queues, processing lists,
        Celery's unacked hash, delayed sets), not in string values (results hold keys):
        each with the name of the Redis key holding it."""
        client = redis.Redis.from_url(self.redis.url, socket_timeout=10)
        found: dict[str, str] = {}
        readers: dict[Any, Callable[[bytes], Any]] = {
            b"list": lambda name: client.lrange(name, 0, -1),
            b"hash": client.hvals,
            b"zset": lambda name: client.zrange(name, 0, -1),
        }
        try:
            for name in client.scan_iter(count=1000):
                read = readers.get(client.type(name))
                if read is None:
                    continue
                where = name.decode(errors="replace")
                for value in read(name):
                    found.update(dict.fromkeys(keys_in(value), where))
        finally:
            client.close()
        return found

    def rabbit_ready(self) -> int:
        """Messages ready in the worker's RabbitMQ queue (unknown keys)."""
        import amqp

        assert self.rabbit is not None
        conn = amqp.Connection(f"127.0.0.1:{self.rabbit.port}", userid="guest",
                               password="guest", connect_timeout=5)
        conn.connect()
        try:
            channel = conn.channel()
            return int(channel.queue_declare(self.kind.queue, passive=True).message_count)
        finally:
            conn.close()

    # -- the end

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind

    def close(self) -> None:
        self.stop_all()
        with contextlib.suppress(Exception):
            self.redis.close()
        if self.rabbit is not None:
            with contextlib.suppress(Exception):
                self.rabbit.stop()

    def judge(self, keys: list[str], gone: set[str], queued: dict[str, str] | None = None,
              queued_count: int = 0) -> Outcome:
        self.poll()
        out = Outcome(self.kind.name, sent=len(keys))
        queued = queued or {}
        held: Counter[str] = Counter()
        unknown_queued = queued_count
        for key in keys:
            runs = self.counts[key]
            if runs == 1:
                out.once += 1
            elif runs > 1:
                out.more += 1
                out.extra_runs += runs - 1
            elif key in gone:
                out.gone += 1
            elif key in queued:
                out.queued += 1
                held[queued[key]] += 1
            elif unknown_queued > 0:
                out.queued += 1
                unknown_queued -= 1
            else:
                out.lost += 1
        times = [self.first[key] - self.fault_at for key in keys if key in self.first]
        out.drain = max(0.0, max(times)) if times else None
        out.incomplete = out.lost + out.queued > 0
        out.notes = list(self.notes)
        if held:
            out.notes.append("queued in " + ", ".join(
                f"{where} ({count})" for where, count in held.most_common()))
        if out.extra_runs != out.more:
            out.notes.append(f"{out.extra_runs} extra runs")
        if out.more:
            ages = sorted(self.fault_at - self.first[key] for key in keys
                          if self.counts[key] > 1 and self.first[key] < self.fault_at)
            span = f" ({ages[0]:.2f}-{ages[-1]:.2f} s before it)" if ages else ""
            out.notes.append(f"of the {out.more} run twice+, {len(ages)} had finished before "
                             f"the fault{span}")
        return out


def keys_in(value: bytes | str) -> set[str]:
    """Task keys in one stored message: in its text, or in a kombu envelope's base64 body
    (Celery's queue items and the ``[envelope, exchange, routing_key]`` of ``unacked``)."""
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    found = set(KEY.findall(text))
    try:
        decoded = json.loads(text)
    except ValueError:
        return found
    stack = [decoded]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            body = item.get("body")
            props = item.get("properties")
            if isinstance(body, str) and isinstance(props, dict) and (
                    props.get("body_encoding") == "base64"):
                with contextlib.suppress(ValueError):
                    found |= set(KEY.findall(base64.b64decode(body).decode("utf-8",
                                                                           "replace")))
            stack.extend(v for v in item.values() if isinstance(v, (list, dict)))
    return found


# ---------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    ms: int
    broker: str  # "redis" or "rabbitmq"
    body: Callable[[Run, int, int], Outcome]
    tasks: Callable[[int], int] = lambda n: n


def _snapshot_paused(run: Run) -> set[str]:
    """The task keys in Redis right before it goes away: writes paused (the fault starts
    there) while it is read."""
    client = redis.Redis.from_url(run.redis.url, socket_timeout=10)
    try:
        client.client_pause(10000, all=False)  # CLIENT PAUSE 10000 WRITE
        run.mark_fault()
        return set(run.redis_keys())
    finally:
        client.close()


def _end(run: Run, keys: list[str], gone: set[str] | None = None) -> Outcome:
    gone = gone or set()
    with contextlib.suppress(redis.RedisError):
        rate = run.idle_rate()
        if rate >= IDLE_NOTE:
            run.notes.append(f"idle after the drain: {rate:.0f} Redis commands/s")
    if run.rabbit is None:
        return run.judge(keys, gone, queued=run.redis_keys())
    return run.judge(keys, gone, queued_count=run.rabbit_ready())


def kill_alone(run: Run, tasks: int, ms: int) -> Outcome:
    keys = run.send(tasks, ms)
    first = run.start_worker("a")
    run.wait_runs(40)
    run.mark_fault()
    run.kill(first)
    time.sleep(1)
    run.main = None
    run.start_worker("restarted")  # as a supervisor would
    run.drain(keys, set(), supervise=False)
    out = _end(run, keys)
    out.recovered = "n/a (killed)"
    return out


def kill_second(run: Run, tasks: int, ms: int) -> Outcome:
    keys = run.send(tasks, ms)
    first = run.start_worker("a")
    run.start_worker("b")
    run.wait_runs(40)
    run.mark_fault()
    run.kill(first)
    run.main = run.procs[1]
    run.drain(keys, set(), supervise=False)
    out = _end(run, keys)
    out.recovered = "n/a (killed)"
    return out


def redis_restart(keep_data: bool) -> Callable[[Run, int, int], Outcome]:
    def body(run: Run, tasks: int, ms: int) -> Outcome:
        keys = run.send(tasks, ms)
        run.start_worker("main")
        run.wait_runs(50)
        gone: set[str] = set()
        if keep_data:
            run.mark_fault()
        else:
            gone = _snapshot_paused(run)
        run.redis.stop(keep_data=keep_data)
        time.sleep(5)
        run.redis.start()
        run.drain(keys, gone)
        out = _end(run, keys, gone)
        out.recovered = run.probe()
        return out
    return body


def redis_pause(run: Run, tasks: int, ms: int) -> Outcome:
    keys = run.send(tasks, ms)
    run.start_worker("main")
    run.wait_runs(50)
    run.mark_fault()
    run.redis.pause()
    time.sleep(10)
    run.redis.resume()
    run.drain(keys, set())
    out = _end(run, keys)
    out.recovered = run.probe()
    return out


def rabbit_restart(hard: bool) -> Callable[[Run, int, int], Outcome]:
    def body(run: Run, tasks: int, ms: int) -> Outcome:
        node = run.rabbit
        assert node is not None and node.popen is not None
        keys = run.send(tasks, ms)
        run.start_worker("main")
        run.wait_runs(max(50, tasks // 3))
        run.mark_fault()
        if hard:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.popen.pid, signal.SIGKILL)
            node.popen.wait(timeout=30)
            if node.console is not None:
                node.console.close()
            _wait_port_free(node.port)  # the killed beam may outlive the start script
        else:
            node.stop()
        time.sleep(3)
        node.start()
        run.drain(keys, set())
        out = _end(run, keys)
        out.recovered = run.probe()
        return out
    return body


def _wait_port_free(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.1)


def sigterm_long(run: Run, tasks: int, ms: int) -> Outcome:
    keys = run.send(tasks, ms)
    first = run.start_worker("a")
    run.wait_runs(CONCURRENCY)  # the first round done; the second is running
    time.sleep(1)
    run.mark_fault()
    before = run.ran()
    first.send_signal(signal.SIGTERM)
    try:
        rc: int | str = first.wait(timeout=120)
        took = f"{time.monotonic() - run.fault_at:.1f} s"
    except subprocess.TimeoutExpired:
        run.kill(first)
        rc, took = "none (killed after 120 s)", "-"
    finished = run.ran() - before
    run.notes.append(f"SIGTERM: exit rc={rc} after {took}, {finished} tasks finished "
                     "in between")
    run.main = None
    run.start_worker("restarted")  # the rest is served by the next worker
    run.drain(keys, set(), supervise=False)
    out = _end(run, keys)
    out.recovered = f"n/a (exit {rc})"
    return out


SCENARIOS = [
    Scenario("kill-alone", "worker SIGKILLed after 40 runs, restarted 1 s later", 200,
             "redis", kill_alone),
    Scenario("kill-second", "two workers; one SIGKILLed after 40 runs, the other goes on",
             200, "redis", kill_second),
    Scenario("redis-restart", "Redis stopped after 50 runs, restarted with its data 5 s "
             "later", 40, "redis", redis_restart(True)),
    Scenario("redis-empty", "Redis stopped after 50 runs, restarted empty 5 s later", 40,
             "redis", redis_restart(False)),
    Scenario("redis-pause", "Redis paused (SIGSTOP) 10 s after 50 runs, then SIGCONT", 40,
             "redis", redis_pause),
    Scenario("rabbitmq-restart", "RabbitMQ stopped (SIGTERM, clean) after a third of the "
             "runs, restarted 3 s later (same node, data)", 40, "rabbitmq",
             rabbit_restart(False)),
    Scenario("rabbitmq-kill", "RabbitMQ SIGKILLed after a third of the runs, restarted 3 s "
             "later (same node, data)", 40, "rabbitmq", rabbit_restart(True)),
    Scenario("sigterm-long", "SIGTERM while 3 s tasks run (after the first round + 1 s); "
             "a new worker then serves the rest", 3000, "redis", sigterm_long,
             tasks=lambda n: 3 * CONCURRENCY),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------------------- report

COLUMNS = ("worker", "sent", "once", "twice+", "lost", "gone", "queued", "self-recovered",
           "drain s")


def table(scenario: Scenario, tasks: int, outcomes: list[Outcome]) -> str:
    rows: list[tuple[str, ...]] = [COLUMNS]
    for out in outcomes:
        if out.failed:
            rows.append((out.kind, *["-"] * (len(COLUMNS) - 1)))
            continue
        drain = "-" if out.drain is None else f"{out.drain:.1f}" + ("*" if out.incomplete
                                                                    else "")
        rows.append((out.kind, str(out.sent), str(out.once), str(out.more), str(out.lost),
                     str(out.gone), str(out.queued), out.recovered, drain))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"== {scenario.name}: {scenario.title}; {tasks} tasks of {scenario.ms} ms, "
             f"concurrency {CONCURRENCY}, {scenario.broker}"]
    for row in rows:
        cells = [cell.ljust(w) if i in (0, 7) else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    for out in outcomes:
        if out.notes:
            lines.append(f"  {out.kind}: " + "; ".join(out.notes))
    return "\n".join(lines)


def _git(*args: str) -> str | None:
    """``git args`` in ROOT: its output, None outside a repository."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def header() -> str:
    def version(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    code = _git("rev-parse", "--short", "HEAD")
    if code is None:
        stamp = ROOT / "COMMIT"  # a `git archive` snapshot: its commit written beside it
        code = stamp.read_text().strip() if stamp.exists() else "?"
    elif _git("status", "--porcelain", "--", "bridge"):
        code += " + uncommitted changes in bridge/"
    rabbit = "?"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                              capture_output=True, text=True, timeout=30, check=False)
        rabbit = done.stdout.strip() or "?"
    return "\n".join([
        f"bench/faults.py, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
        f"{os.cpu_count()} cores, load average at start {load}; Python "
        f"{platform.python_version()}; bridge code: commit {code}",
        f"ours: bridge worker -c {CONCURRENCY} (threads); go: harness-v2 "
        f"({version([str(HARNESS), 'version'])}) --concurrency {CONCURRENCY}; celery: "
        f"{version([sys.executable, '-m', 'celery', '--version'])} prefork -c {CONCURRENCY},"
        " acks_late",
        f"redis-server {version(['redis-server', '--version']).split()[2][2:]}, "
        f"rabbitmq-server {rabbit}",
        "columns: once = ran exactly once; twice+ = ran more than once; lost = never ran and"
        " not in the broker; gone = never ran, was in Redis when it came back empty; queued"
        " = never ran, still in the broker at the end; self-recovered = the same process ran"
        f" {PROBES} probe tasks sent after the fault; drain = s from the fault to the last "
        "task's first run (* = some never ran). Times are wall clock on a loaded machine.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(BY_NAME),
                        help=f"comma-separated, of: {', '.join(BY_NAME)}")
    parser.add_argument("--tasks", type=int, default=300,
                        help="tasks per run (sigterm-long: 3 rounds of the concurrency)")
    parser.add_argument("--workers", default="ours,go,celery", help="ours,go,celery")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    kinds = [n.strip() for n in args.workers.split(",") if n.strip()]
    for name in names:
        if name not in BY_NAME:
            parser.error(f"unknown scenario {name!r} (one of {', '.join(BY_NAME)})")
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"unknown worker {kind!r} (ours, go, celery)")
    if "go" in kinds and not HARNESS.exists():
        parser.error(f"{HARNESS} is missing: run compat_fixtures/build.sh")

    base = Path(tempfile.mkdtemp(prefix="bridge-faults-"))
    print(header(), flush=True)
    print(f"(logs: {base})", file=sys.stderr, flush=True)
    try:
        for name in names:
            scenario = BY_NAME[name]
            tasks = scenario.tasks(args.tasks)
            outcomes = []
            for kind in kinds:
                run = Run(KINDS[kind], base / name / kind,
                          rabbit=scenario.broker == "rabbitmq")
                try:
                    outcomes.append(scenario.body(run, tasks, scenario.ms))
                except Exception as exc:
                    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                    outcomes.append(Outcome(kind, failed=True,
                                            notes=[f"run failed: {reason}"]))
                finally:
                    run.close()
            print("\n" + table(scenario, tasks, outcomes), flush=True)
    finally:
        if args.keep:
            print(f"(logs kept in {base})", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
