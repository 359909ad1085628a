"""Start a real ``celery worker`` (Celery 5, solo or prefork) as a subprocess for a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def celery_worker(broker: str, backend: str, *, queues: Sequence[str] = ("celery",),
                  pool: str = "solo", concurrency: int = 1, app: str = "tests.celery_app",
                  extra_env: dict[str, str] | None = None, log_path: Path | None = None,
                  ready_timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A app worker`` until the block ends (SIGTERM, then SIGKILL).

    Yields once the worker logs "ready"; its log goes to ``log_path`` (or a
    temporary file) so a failing test can show it.
    """
    env = {**os.environ, "CELERY_TEST_BROKER": broker, "CELERY_TEST_BACKEND": backend,
           "PYTHONPATH": str(ROOT), **(extra_env or {})}
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    log_file = log_path or tmp / f"celery-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", pool,
             "--concurrency", str(concurrency), "-Q", ",".join(queues), "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"test{os.getpid()}-{time.monotonic_ns()}@%h"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        try:
            _wait_ready(proc, log_file, ready_timeout)
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (Celery's warm shutdown), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text(errors="replace")
        if " ready." in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"celery worker not ready in {timeout}s:\n"
                       f"{log_file.read_text(errors='replace')[-3000:]}")
