"""The Go harness as a process: a machinery worker until the block ends, a producer run."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def go_worker(binary: Path, broker: str, queue: str, concurrency: int = 8, *,
              backend: str | None = None, extra: Sequence[str] = (),
              env: Mapping[str, str] | None = None,
              log_path: Path | None = None) -> Iterator[None]:
    """``harness worker`` on ``broker`` (Redis, AMQP or SQS), results in ``backend`` (default:
    the broker's Redis), until the block ends; yields once it printed ``worker ready``.
    ``extra`` are more harness flags (``--redis``, ``--sqs-endpoint``...), ``env`` the
    process environment (default: inherited). machinery's log goes to ``log_path``, else
    into $BRIDGE_GO_LOG_DIR when set (debugging a test), else nowhere."""
    log_dir = os.environ.get("BRIDGE_GO_LOG_DIR")
    if log_path is None and log_dir:
        log_path = Path(log_dir) / f"go-worker-{queue}.log"
    log = open(log_path, "w") if log_path else None  # noqa: SIM115
    proc = subprocess.Popen([str(binary), "worker", "--broker", broker, "--backend",
                             backend or broker, "--queue", queue, "--concurrency",
                             str(concurrency), *extra],
                            stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True,
                            env=None if env is None else dict(env))
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
        if log is not None:
            log.close()


def go_produce(binary: Path, broker: str, queue: str, scenario: str, *extra: str,
               backend: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``harness produce``: Go sends the scenario and checks every result; its report.
    ``extra`` flags come last (a later ``--timeout`` wins)."""
    run = subprocess.run([str(binary), "produce", "--broker", broker, "--backend",
                          backend or broker, "--queue", queue, "--scenario", scenario,
                          "--timeout", "60", *extra],
                         capture_output=True, text=True, timeout=600,
                         env=None if env is None else dict(env))
    failures = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert not failures, "\n".join(failures)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert ", 0 failed" in run.stdout.splitlines()[-1]
    return run.stdout
