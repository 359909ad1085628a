"""``mbridge worker --processes N``: N whole workers side by side, to use every core.

Each worker process runs the same command line (its own fetch loop, connections and task
threads), started again with ``BRIDGE_WORKER_PROCESS`` set to its index, 1 to N. Its Celery
node name gets ``-INDEX`` (``bridge-2@host``), and ``--metrics-port P`` becomes
``P + INDEX - 1``. The process that was started only supervises. It passes SIGTERM and
SIGINT on to every worker: the first signal lets running tasks finish, a second returns
everything at once, as for one worker. It starts a fresh worker when one dies, with
back-off, and says so once a death. What a dead worker held goes back to its queue as
after any worker's death: at once on AMQP and SQS, and on Redis when its heartbeat
expires (``--recover-after``). The workers stop when the supervisor dies, even by SIGKILL
(they get SIGTERM from the kernel). With fewer than two cores a worker, the workers do not
spin for Redis's replies (:func:`spin_env`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from bridge.cli.exits import EXIT_USAGE
from bridge.outage import Backoff
from bridge.process_slots import how_it_ended
from bridge.redislane import SPIN_ENV

__all__ = ["ENV", "SPIN_ENV", "die_with_parent", "indexed_node", "indexed_port",
           "process_index", "spin_env", "supervise", "usable_cores"]

log = logging.getLogger("bridge.worker")

ENV = "BRIDGE_WORKER_PROCESS"
"""The environment variable that tells a worker process its index (1 to N)."""
_SETTLED = 60.0
"""Seconds a worker must have run for the back-off of its restarts to start again."""
_PR_SET_PDEATHSIG = 1


def process_index() -> int:
    """This worker's index among ``--processes`` (1 to N); 0 when it runs alone. Read once:
    the variable is removed, so no process this one starts inherits it."""
    value = os.environ.pop(ENV, "")
    return int(value) if value.isdigit() else 0


def indexed_node(node: str, index: int) -> str:
    """Worker ``index``'s Celery node name: ``bridge@host`` → ``bridge-2@host``."""
    if not index:
        return node
    name, at, host = node.partition("@")
    return f"{name}-{index}{at}{host}"


def indexed_port(port: int | None, index: int) -> int | None:
    """Worker ``index``'s metrics port: the next one up per worker (0 stays 0: any port)."""
    if not port or not index:
        return port
    return port + index - 1


def usable_cores() -> int | None:
    """The cores this process may run on (its affinity, as a container sets it), else
    the machine's; None when unknown."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def spin_env(processes: int, cores: int | None) -> dict[str, str]:
    """What the workers' environment adds: no reply spin (``BRIDGE_REDIS_SPIN_US=0``, see
    ``bridge.redislane``) when the processes have less than two cores each, unless the
    variable is set. A spinning loop keeps a core awake while Redis answers on another;
    with fewer cores than that, the spins take the time Redis and the other workers need
    (on 2 cores, 2 workers run 1.2x faster without it, 1 worker 1.25x faster with it)."""
    if SPIN_ENV in os.environ or processes * 2 <= (cores or 1):
        return {}
    return {SPIN_ENV: "0"}


def die_with_parent() -> None:
    """In a new child process, before it runs (``preexec_fn``): SIGTERM when its parent
    dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the workers outlive a killed supervisor
        pass


@dataclass
class _Slot:
    """Worker process ``index``: its process, when it started, its restarts' back-off."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(first=1.0, cap=60.0))


class Supervisor:
    """Starts N worker processes, passes signals on, starts again the ones that die."""

    def __init__(self, processes: int, command: list[str]) -> None:
        self.command = command
        self.env = {**os.environ, **spin_env(processes, usable_cores())}
        self.slots = [_Slot(index) for index in range(1, processes + 1)]
        self._signals: list[int] = []
        self._status = 0

    def _start(self, slot: _Slot) -> None:
        env = {**self.env, ENV: str(slot.index)}
        # a group of its own: a terminal's Ctrl-C reaches the supervisor only, which passes
        # it on once (twice would return every running task at once)
        slot.process = subprocess.Popen(self.command, env=env, process_group=0,
                                        preexec_fn=die_with_parent)
        slot.started = time.monotonic()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # only a flag: the loop passes it on

    def run(self) -> int:
        """Supervise until every worker has exited after a signal; their worst status."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._start(slot)
        log.info("%d worker processes started (pids %s)", len(self.slots),
                 ", ".join(str(slot.process.pid) for slot in self.slots if slot.process))
        passed = 0
        while True:
            while passed < len(self._signals):
                self._pass_on(self._signals[passed])
                passed += 1
            stopping = bool(self._signals)
            for slot in self.slots:
                self._check(slot, stopping)
            if stopping and all(slot.process is None for slot in self.slots):
                return self._status
            time.sleep(0.1)

    def _pass_on(self, signum: int) -> None:
        log.info("signal %s: passing it on to the %d worker processes",
                 signal.Signals(signum).name, len(self.slots))
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)

    def _check(self, slot: _Slot, stopping: bool) -> None:
        """Reap worker ``slot`` if it ended; start it again when it should run."""
        process = slot.process
        if process is None:
            if not stopping and time.monotonic() >= slot.restart_at:
                self._start(slot)
            return
        status = process.poll()
        if status is None:
            return
        slot.process = None
        if stopping:
            self._status = self._status or (status if status > 0 else 0)
            return
        lived = time.monotonic() - slot.started
        if status == EXIT_USAGE and lived < _SETTLED:  # a bad option or config: stop them all
            log.error("worker process %d exited with a usage or configuration error (see "
                      "above): stopping the others", slot.index)
            self._status = EXIT_USAGE
            self._signals.append(signal.SIGTERM)
            return
        if lived >= _SETTLED:
            slot.backoff.reset()
        delay = slot.backoff.next()
        slot.restart_at = time.monotonic() + delay
        log.warning("worker process %d (pid %d) died (%s) after %.0f s: starting a fresh one "
                    "in %.1f s; what it held goes back to its queue", slot.index, process.pid,
                    how_it_ended(status), lived, delay)


def supervise(processes: int) -> int:
    """Run this very command line in ``processes`` worker processes; their exit status."""
    command = [sys.executable, *sys.orig_argv[1:]]
    return Supervisor(processes, command).run()
