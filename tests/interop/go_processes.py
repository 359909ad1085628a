"""The Go harness as a process: a machinery worker until the block ends, a producer run."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def go_worker(binary: Path, broker: str, queue: str, concurrency: int = 8, *,
              backend: str | None = None) -> Iterator[None]:
    """``harness worker`` on ``broker`` (Redis or AMQP), results in ``backend`` (default: the
    broker's Redis), until the block ends; yields once it printed ``worker ready``."""
    proc = subprocess.Popen([str(binary), "worker", "--broker", broker, "--backend",
                             backend or broker, "--queue", queue, "--concurrency",
                             str(concurrency)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert "worker ready" in ready, f"the Go worker did not start: {ready!r}"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def go_produce(binary: Path, broker: str, queue: str, scenario: str, *extra: str,
               backend: str | None = None) -> str:
    """``harness produce``: Go sends the scenario and checks every result; its report."""
    run = subprocess.run([str(binary), "produce", "--broker", broker, "--backend",
                          backend or broker, "--queue", queue, "--scenario", scenario,
                          "--timeout", "60", *extra],
                         capture_output=True, text=True, timeout=600)
    failures = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert not failures, "\n".join(failures)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert ", 0 failed" in run.stdout.splitlines()[-1]
    return run.stdout
