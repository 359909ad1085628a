"""The real gocraft/work v0.5.1 (Go) as processes: enqueuer, worker pool and web UI.

Built once per session from compat_fixtures/gocraft/ (``gocraft_bin``); the pool's handlers
append one JSON line per run to a record file, ``{"pool": "go", "name", "id", "args",
"fails", "t", "end", "mw", "outcome", ...}``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest

from bridge.localredis import free_port
from tests.fixtures import ROOT

GOCRAFT = ROOT / "gocraft"
BINARIES = {"harness": ROOT / "bin" / "gocraft-harness", "workwebui": ROOT / "bin" / "workwebui"}


@pytest.fixture(scope="session")
def gocraft_bin() -> dict[str, Path]:
    """Paths of the built ``gocraft-harness`` ("harness") and ``workwebui`` ("workwebui")."""
    if shutil.which("go") is None:
        pytest.fail("Go is not installed: the gocraft/work tests need it (see .ci/run)",
                    pytrace=False)
    subprocess.run(["bash", str(GOCRAFT / "build.sh")], check=True, timeout=1200)
    for path in BINARIES.values():
        assert path.is_file(), path
    return dict(BINARIES)


def _log(name: str) -> TextIO | None:
    """An open log file in $BRIDGE_GO_LOG_DIR when set (debugging a test), else None."""
    log_dir = os.environ.get("BRIDGE_GO_LOG_DIR")
    return open(Path(log_dir) / name, "w") if log_dir else None


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def go_pool(binary: Path, redis_url: str, ns: str, jobs: Sequence[str], record: Path,
            concurrency: int = 4, periodic: Sequence[str] = (), *,
            extra: Sequence[str] = ()) -> Iterator[subprocess.Popen[str]]:
    """``gocraft-harness pool`` until the block ends (SIGTERM: ``pool.Stop()``); yields the
    process once it printed ``pool ready <pool id>``. ``jobs`` are SPECs
    (``name[:fail|failuntil=K|sleep=MS|panic][,max_fails=N][,skip_dead][,backoff=S]...``),
    ``periodic`` ``"CRONSPEC=NAME"`` (cron v1: six fields, seconds first)."""
    argv = [str(binary), "pool", "--redis", redis_url, "--ns", ns, "--concurrency",
            str(concurrency), "--record", str(record), *extra]
    argv += [arg for spec in jobs for arg in ("--job", spec)]
    argv += [arg for spec in periodic for arg in ("--periodic", spec)]
    log = _log(f"gocraft-pool-{ns}.log")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("pool ready"), f"the gocraft/work pool did not start: {line!r}"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        yield proc
    finally:
        _stop(proc)
        if log is not None:
            log.close()


def go_enqueue(binary: Path, redis_url: str, ns: str, job: str,
               args: Mapping[str, Any] | None = None, *, in_seconds: int | None = None,
               unique: bool = False, count: int | None = None) -> list[dict[str, Any]]:
    """``gocraft-harness enqueue``: Enqueue, EnqueueIn (``in_seconds``), EnqueueUnique or
    EnqueueUniqueIn; its lines ``{"id", "name", "dup"[, "run_at"]}`` (``id`` None for a
    refused duplicate). With ``count`` N jobs (args + ``"n"``), then a rate line."""
    argv = [str(binary), "enqueue", "--redis", redis_url, "--ns", ns, "--job", job]
    if args is not None:
        argv += ["--args", json.dumps(args)]
    if in_seconds is not None:
        argv += ["--in", str(in_seconds)]
    if unique:
        argv.append("--unique")
    if count is not None:
        argv += ["--count", str(count)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@contextmanager
def workwebui(binary: Path, redis_url: str, ns: str) -> Iterator[str]:
    """gocraft/work's own ``workwebui`` on a free port until the block ends; yields its base
    URL (``http://127.0.0.1:PORT``) once ``GET /queues`` answers."""
    base = f"http://127.0.0.1:{free_port()}"
    log = _log(f"gocraft-webui-{ns}.log")
    proc = subprocess.Popen([str(binary), "-redis", redis_url, "-ns", ns, "-listen",
                             base.removeprefix("http://")],
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"workwebui exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"{base}/queues", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "workwebui did not answer GET /queues"
                time.sleep(0.05)
        yield base
    finally:
        _stop(proc)
        if log is not None:
            log.close()


def read_records(record: Path) -> list[dict[str, Any]]:
    """The record file's finished lines (none if it does not exist yet). A line a pool is
    writing right now can be read half-written, so whatever follows the last newline waits
    for the next read."""
    if not record.exists():
        return []
    text = record.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]


def wait_for_records(record: Path, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The record's lines once there are at least ``count`` (an idle Go worker polls only
    every 5 s)."""
    deadline = time.monotonic() + timeout
    while len(lines := read_records(record)) < count:
        assert time.monotonic() < deadline, f"{len(lines)} of {count} runs recorded: {lines}"
        time.sleep(0.05)
    return lines
