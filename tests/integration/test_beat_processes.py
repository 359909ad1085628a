"""``mbridge beat`` as subprocesses, and reading back what they sent: helpers (no tests)
shared by the beat integration and interop tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def beats(count: int, schedule: Path, config: Path, log_dir: Path) -> Iterator[list[Path]]:
    """``count`` ``mbridge beat`` processes until the block ends, then SIGTERM: each must
    exit 0. Yields their log files."""
    logs = [log_dir / f"beat-{i}.log" for i in range(count)]
    with ExitStack() as stack:
        procs = []
        for path in logs:
            out = stack.enter_context(open(path, "w"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "beat", "--schedule", str(schedule),
                 "--config", str(config), "-l", "info"], stdout=out, stderr=out, cwd=ROOT))
        try:
            yield logs
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = []
            for proc in procs:
                try:
                    codes.append(proc.wait(timeout=30))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(None)
        tails = [(c, p.read_text()[-2000:]) for c, p in zip(codes, logs, strict=True)]
        assert codes == [0] * count, tails


def wait_for(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``done`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def machinery_created_seconds(client: redis.Redis, queue: str) -> list[str]:
    """For each machinery message in ``queue``: the second its PENDING state was written
    (``CreatedAt`` in the Redis backend), as ``YYYY-MM-DDTHH:MM:SS``."""
    seconds = []
    for raw in client.lrange(queue, 0, -1):
        uuid = json.loads(raw)["UUID"]
        state = json.loads(client.get(uuid) or b"{}")
        seconds.append(state["CreatedAt"][:19])
    return seconds


def assert_once_per_tick(ticks: Sequence[str | int], at_least: int) -> None:
    """Every tick seen once, none skipped between the first and the last (ticks are whole
    seconds, as ISO text or Unix seconds)."""
    counts = Counter(ticks)
    assert [t for t, n in counts.items() if n != 1] == [], counts
    seconds = sorted(_epoch(t) for t in counts)
    assert len(seconds) >= at_least, seconds
    assert seconds == list(range(seconds[0], seconds[-1] + 1)), f"a tick was skipped: {seconds}"


def _epoch(tick: str | int) -> int:
    if isinstance(tick, int):
        return tick
    from datetime import UTC, datetime

    return int(datetime.fromisoformat(tick).replace(tzinfo=UTC).timestamp())
