"""Run Celery's own integration suite (``t/integration`` of the Celery release the tests pin,
unpacked by .ci/setup into ``.celery-suite/``) once with Celery's embedded worker and once
with ours, each against a private redis-server, and compare the outcomes per test.

``python -m tests.celery_suite.suite`` runs it by hand; test_celery_suite.py checks that
every test that passes with Celery's worker passes with ours, apart from EXPECTED_FAILURES:
on Redis (broker and backend) the whole of test_tasks.py and test_canvas.py, on RabbitMQ
(broker; Redis backend) test_tasks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import celery
import pytest

from tests.faults.controlled_redis import ControlledRedis as RedisServer

ROOT = Path(__file__).resolve().parents[2]
SUITE = Path(os.environ.get("BRIDGE_CELERY_SUITE",
                            ROOT / ".celery-suite" / f"celery-{celery.__version__}"))
FILES = ("t/integration/test_tasks.py", "t/integration/test_canvas.py")
RABBITMQ_FILES = ("t/integration/test_tasks.py",)
"""On RabbitMQ a subset: the canvas tests need Redis's native chords (the backend is Redis
in both legs), and the tasks' tests are where the broker shows."""
WORKERS = ("celery", "bridge")
AGAIN = "bridge-again"
"""Ours again, on what passed with Celery's worker only (a flaky test's second chance)."""
LEGS = ("redis", "rabbitmq")
LEG_TIMEOUT = 3000.0

OUT = ROOT / "test-artifacts" / "celery-suite"
STARTED: pytest.StashKey[Comparison] = pytest.StashKey()
"""Where tests/conftest.py keeps the comparison it started in the background."""

EXPECTED_FAILURES: dict[str, str] = {}
"""Tests that pass with Celery's worker and fail with ours, each with the real limit why."""


@dataclass
class Run:
    """One run of the suite: each test's outcome, and how long it took."""

    worker: str
    outcomes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    returncode: int = 0
    log: Path | None = None

    def count(self) -> Counter[str]:
        return Counter(self.outcomes.values())

    def passed(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome == "passed"}

    def summary(self) -> str:
        counts = self.count()
        parts = ", ".join(f"{counts[kind]} {kind}" for kind in
                          ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
                          if counts[kind])
        return f"{self.worker}: {parts} in {self.seconds:.0f} s"


def start(worker: str, out: Path, broker: str, backend: str, files: tuple[str, ...],
          redis_port: int) -> tuple[subprocess.Popen[bytes], float]:
    """The suite's pytest with ``worker`` ("celery" or "bridge") on ``broker``."""
    if not (SUITE / "t" / "integration" / "conftest.py").exists():
        raise FileNotFoundError(f"Celery's integration suite is not at {SUITE}: run "
                                "bash .ci/setup (it unpacks the Celery release's sdist)")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TEST_BROKER": broker, "TEST_BACKEND": backend,
           "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
           "PYTHONPATH": os.pathsep.join([str(SUITE), str(ROOT)])}
    plugins = ["-p", "celery.contrib.pytest"]
    if worker == "bridge":
        plugins += ["-p", "tests.celery_suite.bridge_worker"]
    # niced: it runs beside the main suite, whose timing-sensitive tests come first
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", *plugins,
               "-p", "no:cacheprovider", "-o", "addopts=", "-o", "python_classes=test_*",
               "--rootdir", str(SUITE),
               "--timeout", "180", "-q", "-rfE", f"--junitxml={out / 'junit.xml'}", *files]
    if os.environ.get("BRIDGE_CELERY_SUITE_K"):  # a part, by hand: -k's expression
        command += ["-k", os.environ["BRIDGE_CELERY_SUITE_K"]]
    with open(out / "pytest.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=SUITE, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    return proc, time.monotonic()


def finish(name: str, out: Path, proc: subprocess.Popen[bytes], began: float,
           timeout: float) -> Run:
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        returncode = proc.wait()
    run = Run(name, seconds=time.monotonic() - began, returncode=returncode,
              log=out / "pytest.log")
    junit = out / "junit.xml"
    if junit.exists():
        run.outcomes = outcomes(junit)
    return run


def outcomes(junit: Path) -> dict[str, str]:
    """Each test's outcome from pytest's JUnit XML: passed, failed, error, skipped, xfailed
    (a subtest that failed fails its test)."""
    found: dict[str, str] = {}
    rank = {"passed": 0, "xfailed": 1, "skipped": 1, "xpassed": 1, "failed": 2, "error": 3}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag == "failure":
                outcome = "failed"
            elif child.tag == "error":
                outcome = "error"
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if "xfail" in kind else "skipped"
        if outcome == "passed" and case.find("properties") is not None:
            outcome = _xpassed(case) or outcome
        if rank[outcome] >= rank.get(found.get(name, "passed"), 0):
            found[name] = outcome
    return found


def _xpassed(case: ElementTree.Element) -> str | None:
    for prop in case.iter("property"):
        if prop.get("name") == "xpassed":
            return "xpassed"
    return None


def node_id(name: str) -> str:
    """pytest's node id of a JUnit name: ``t.integration.test_canvas.test_chain::test_x``
    is ``t/integration/test_canvas.py::test_chain::test_x``."""
    classname, _, test = name.partition("::")
    parts = classname.split(".")
    module = next(i for i, part in enumerate(parts) if part.startswith("test_"))
    path = "/".join(parts[:module + 1]) + ".py"
    return "::".join([path, *parts[module + 1:], test])


def compare(celery_run: Run, bridge_run: Run) -> list[str]:
    """Tests that pass with Celery's worker and not with ours, not expected."""
    return sorted(name for name in celery_run.passed() - bridge_run.passed()
                  if name not in EXPECTED_FAILURES)


class Comparison:
    """Every leg in the background: on Redis both workers side by side, each on a
    redis-server of its own; on RabbitMQ one after the other on one private node."""

    def __init__(self, out: Path = OUT) -> None:
        self.out = out
        self.runs: dict[tuple[str, str], Run] = {}  # (leg, worker): its run
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run_all, name="celery-suite",
                                        daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Comparison:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> dict[tuple[str, str], Run]:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.runs

    def stop(self) -> None:
        self._stopping = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()

    def _run_all(self) -> None:
        try:
            self._on_redis()
            if not self._stopping:
                self._on_rabbitmq()
        except BaseException as exc:  # the test says it
            self.error = exc

    def _on_redis(self) -> None:
        with ExitStack() as stack:
            urls: dict[str, tuple[str, int]] = {}
            for worker in (*WORKERS, AGAIN):
                out = self.out / "redis" / worker
                (out / "redis").mkdir(parents=True, exist_ok=True)
                server = RedisServer(out / "redis", durable=False)
                server.start()
                stack.callback(server.stop)
                urls[worker] = (f"redis://127.0.0.1:{server.port}", server.port)
            started = {}
            for worker in WORKERS:
                url, port = urls[worker]
                started[worker] = start(worker, self.out / "redis" / worker, f"{url}/0",
                                        f"{url}/1", FILES, port)
                self._procs.append(started[worker][0])
            for worker, (proc, began) in started.items():
                self.runs["redis", worker] = finish(f"{worker}'s worker on Redis",
                                                    self.out / "redis" / worker, proc, began,
                                                    LEG_TIMEOUT)
            url, port = urls[AGAIN]
            self._again("redis", f"{url}/0", f"{url}/1", port)

    def _again(self, leg: str, broker: str, backend: str, redis_port: int) -> None:
        """Ours once more on the tests that passed with Celery's worker only: one that
        passes then is flaky (said in the report), not a difference."""
        missing = compare(self.runs[leg, "celery"], self.runs[leg, "bridge"])
        if not missing or self._stopping:
            return
        out = self.out / leg / AGAIN
        proc, began = start("bridge", out, broker, backend, tuple(map(node_id, missing)),
                            redis_port)
        self._procs.append(proc)
        self.runs[leg, AGAIN] = finish(f"bridge's worker on {leg}, again on those",
                                       out, proc, began, LEG_TIMEOUT)

    def _on_rabbitmq(self) -> None:
        from tests.rabbitmq import local_rabbitmq

        base = self.out / "rabbitmq"
        (base / "redis").mkdir(parents=True, exist_ok=True)
        (base / "node").mkdir(parents=True, exist_ok=True)
        with local_rabbitmq(base / "node") as node, ExitStack() as stack:
            server = RedisServer(base / "redis", durable=False)
            server.start()
            stack.callback(server.stop)
            for db, worker in enumerate(WORKERS):
                if self._stopping:
                    return
                backend = f"redis://127.0.0.1:{server.port}/{db + 1}"
                proc, began = start(worker, base / worker, node.url, backend,
                                    RABBITMQ_FILES, server.port)
                self._procs.append(proc)
                self.runs["rabbitmq", worker] = finish(f"{worker}'s worker on RabbitMQ",
                                                       base / worker, proc, began, LEG_TIMEOUT)
            self._again("rabbitmq", node.url, f"redis://127.0.0.1:{server.port}/3",
                        server.port)


def report(runs: dict[tuple[str, str], Run]) -> tuple[list[str], list[str]]:
    """The lines of a report, and the tests that pass with Celery's worker only (twice
    failed with ours)."""
    lines: list[str] = []
    missing: list[str] = []
    for leg in LEGS:
        if (leg, "celery") not in runs or (leg, "bridge") not in runs:
            lines.append(f"{leg}: did not run")
            continue
        celery_run, bridge_run = runs[leg, "celery"], runs[leg, "bridge"]
        lines += [celery_run.summary(), bridge_run.summary()]
        lines += [f"{leg}: expected to fail with ours: {name}: {EXPECTED_FAILURES[name]}"
                  for name in sorted(set(EXPECTED_FAILURES)
                                     & (celery_run.passed() - bridge_run.passed()))]
        again = runs.get((leg, AGAIN))
        for name in compare(celery_run, bridge_run):
            if again is not None and again.outcomes.get(name) == "passed":
                lines.append(f"{leg}: flaky with ours (failed, then passed): {name}")
            else:
                missing.append(f"{leg}: {name}")
    lines += [f"passes with Celery's worker, not ours: {name}" for name in missing]
    return lines, missing


def main() -> int:
    runs = Comparison().start().wait(2 * LEG_TIMEOUT + 600)
    lines, missing = report(runs)
    print("\n".join(lines))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
