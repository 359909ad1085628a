"""``mbridge worker --processes N``: whole workers side by side under one supervisor, each
serving the queue; a dead one replaced with nothing lost; signals passed on once."""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.redislane import SPIN_ENV
from tests.proc_tree import alive, parents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(redis_url: str) -> Iterator[dict[str, str]]:
    queue = f"procs_{uuid.uuid4().hex[:8]}"
    yield {**os.environ, "BRIDGE_TEST_REDIS": redis_url, "BRIDGE_TEST_QUEUE": queue,
           "PYTHONPATH": str(ROOT)}


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Bridge]:
    url = env["BRIDGE_TEST_REDIS"]
    config = Config(broker=url, result_backend=url, default_queue=env["BRIDGE_TEST_QUEUE"])
    bridge = Bridge(config, broker=RedisBroker(url, config), backend=RedisBackend(url, config))
    yield bridge
    bridge.close()


def start(env: dict[str, str], *args: str, cores: set[int] | None = None
          ) -> subprocess.Popen[bytes]:
    """``mbridge worker ARGS`` on the sample app; with ``cores``, pinned to those CPUs."""
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "worker", "-A", "tests.integration.sample_app",
         "-l", "info", "--recover-after", "2", *args], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores))


def workers_of(supervisor: int, count: int, timeout: float = 30.0) -> list[int]:
    """The supervisor's worker processes, once ``count`` of them run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(p for p, parent in parents().items() if parent == supervisor and alive(p))
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{supervisor} did not run {count} worker processes")


def spin_of(pid: int) -> str | None:
    """A process's reply spin setting, as it was started."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = item.decode().partition("=")
        if name == SPIN_ENV:
            return value
    return None


def states(app: Bridge, uuids: list[str]) -> list[str]:
    return [s.state if s is not None else "PENDING" for s in app.backend.get_states(uuids)]


def wait_states(app: Bridge, uuids: list[str], state: str, count: int,
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while states(app, uuids).count(state) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states(app, uuids).count(state) >= count, states(app, uuids)


def test_every_worker_process_serves_and_one_signal_finishes_running_tasks(
        env: dict[str, str], app: Bridge) -> None:
    supervisor = start(env, "--processes", "2", "-c", "2")
    try:
        pids = workers_of(supervisor.pid, 2)
        results = app.send_batch([app.signature("pid_after", 30, arg_types=["int64"])
                                  for _ in range(60)])
        served = {result.get(timeout=60) for result in results}
        assert served == set(pids)  # both took tasks from the one queue
        # Ctrl-C in a terminal reaches the supervisor alone; passed on once, it lets the
        # running tasks finish (twice would hand them back unfinished)
        slow = app.send_batch([app.signature("sleep_ms", 1500, arg_types=["int64"])
                               for _ in range(6)])
        uuids = [r.task_uuid for r in slow]
        wait_states(app, uuids, "STARTED", 4)
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=30) == 0
        done = states(app, uuids).count("SUCCESS")
        assert done >= 4
        waiting = redis.Redis.from_url(env["BRIDGE_TEST_REDIS"]).llen(env["BRIDGE_TEST_QUEUE"])
        assert done + waiting == 6
        assert not any(alive(pid) for pid in pids)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


@pytest.mark.parametrize(("user_spin", "expected"), [(None, "0"), ("50", "50")])
def test_workers_without_two_cores_each_do_not_spin_for_replies(
        env: dict[str, str], user_spin: str | None, expected: str) -> None:
    env = {k: v for k, v in env.items() if k != SPIN_ENV}
    if user_spin is not None:
        env[SPIN_ENV] = user_spin  # the user's setting is kept
    one_core = {min(os.sched_getaffinity(0))}  # 2 workers on it: half a core each
    supervisor = start(env, "--processes", "2", "-c", "1", cores=one_core)
    try:
        pids = workers_of(supervisor.pid, 2)
        assert [spin_of(pid) for pid in pids] == [expected, expected]
        assert spin_of(supervisor.pid) == user_spin  # the supervisor's own is untouched
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_dead_worker_process_is_replaced_and_its_tasks_run(
        env: dict[str, str], app: Bridge) -> None:
    supervisor = start(env, "--processes", "2", "-c", "2")
    try:
        first, second = workers_of(supervisor.pid, 2)
        results = app.send_batch([app.signature("sleep_ms", 400, arg_types=["int64"])
                                  for _ in range(16)])
        uuids = [r.task_uuid for r in results]
        wait_states(app, uuids, "STARTED", 4)
        os.kill(first, signal.SIGKILL)
        wait_states(app, uuids, "SUCCESS", 16, timeout=90)  # the dead one's come back
        replaced = workers_of(supervisor.pid, 2)
        assert second in replaced and first not in replaced
        supervisor.send_signal(signal.SIGTERM)
        err = supervisor.communicate(timeout=30)[1].decode()  # drained while it stops
        assert supervisor.returncode == 0
        assert f"worker process 1 (pid {first}) died (killed by SIGKILL)" in err
        assert f"INFO [worker-2] bridge: worker process 2 of 2 (pid {second})" in err
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_workers_stop_when_the_supervisor_is_killed(env: dict[str, str]) -> None:
    supervisor = start(env, "--processes", "2", "-c", "1")
    try:
        pids = workers_of(supervisor.pid, 2)
    finally:
        supervisor.kill()
    supervisor.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def _taken_port_next_to_a_free_one() -> socket.socket:
    """A listening socket on a port below the kernel's ephemeral range (where no outgoing
    connection takes one) whose next port was free a moment ago: worker 2 listens there."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", port))
            with socket.socket() as neighbour:
                neighbour.bind(("127.0.0.1", port + 1))
        except OSError:
            taken.close()
            continue
        taken.listen()
        return taken
    raise AssertionError("no port below 32000 with a free neighbour")


def test_a_configuration_error_stops_every_worker_process(env: dict[str, str]) -> None:
    # worker 1's metrics port is taken: it says so and exits 2 (worker 2 listens on the
    # next port and runs); the supervisor stops worker 2 instead of restarting worker 1
    with _taken_port_next_to_a_free_one() as taken:
        port = taken.getsockname()[1]
        supervisor = start(env, "--processes", "2", "--metrics-port", str(port))
        try:  # stderr drained while it runs: a full pipe would stop its log lines
            err = supervisor.communicate(timeout=60)[1].decode()
            assert supervisor.returncode == 2
        finally:
            if supervisor.poll() is None:  # its workers get SIGTERM from the kernel
                supervisor.kill()
    assert f"--metrics-port {port}: cannot listen" in err, err
    assert "worker process 1 exited with a usage or configuration error" in err, err


def test_each_worker_process_is_a_celery_node_of_its_own(redis_url: str) -> None:
    """Celery's stock ``inspect ping`` hears every worker process under its own node name,
    and a Celery client's tasks are served by them."""
    from celery import Celery

    queue, name = f"procs_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex[:6]}@testhost"
    env = {**os.environ, "CELERY_TEST_BROKER": redis_url, "CELERY_TEST_BACKEND": redis_url,
           "PYTHONPATH": str(ROOT)}
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "worker", "--celery-app", "tests.celery_app",
         "--celery-queue", queue, "--no-machinery", "-c", "2", "-n", name, "--processes", "2",
         "-l", "warning"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    client = Celery("procs-client", broker=redis_url, backend=redis_url)
    celery = str(Path(sys.executable).with_name("celery"))
    nodes = {f"pw-{name[3:9]}-{i}@testhost" for i in (1, 2)}
    try:
        heard: set[str] = set()
        deadline = time.monotonic() + 60
        while heard != nodes and time.monotonic() < deadline:
            run = subprocess.run([celery, "-A", "tests.celery_app", "inspect", "ping", "-t", "2",
                                  "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=60)
            heard = set(json.loads(run.stdout)) if run.returncode == 0 else set()
        assert heard == nodes
        results = [client.send_task("tasks.add", (i, i), queue=queue) for i in range(10)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
        del results
    finally:
        gc.collect()  # the results' __del__ now, while their Redis is up
        client.backend.result_consumer.stop()
        client.close()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
