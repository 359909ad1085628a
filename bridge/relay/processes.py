"""``mbridge relay --processes N``: N relays side by side on one pair of queues.

Each process is a whole relay (fetch, publish, carry back the results it owes) with a
bookkeeping name of its own: the run's ``NAME``, its helpers ``NAME.2`` ... ``NAME.N``, so
each finds its results in flight again after a restart. The run's process starts the
helpers, starts one again when it dies (with back-off, said once a death), stops them
gracefully when it stops, and at start takes over the ids in flight of helpers that a
smaller N no longer runs. Helpers report outages at DEBUG: the run's process, which uses
the same servers, says them once. A helper whose run's process is gone stops after its
turn (it watches a pipe that closes then).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from bridge.endpoints import Endpoint
from bridge.heap import freeze_loaded
from bridge.logformat import configure
from bridge.outage import Backoff, one_line
from bridge.process_slots import how_it_ended
from bridge.redisconn import RedisClient
from bridge.relay.loop import Relay, open_relay, relay_name
from bridge.relay.track import RelayOptions, inflight_key

__all__ = ["adopt_orphans", "helper_name", "run_side_by_side"]

log = logging.getLogger("bridge.relay")

_CONTEXT = multiprocessing.get_context("forkserver")
_STOP_WAIT = 60.0
"""Seconds a helper gets to finish its turn and give back what it holds when stopped."""
_SETTLED = 60.0
"""Seconds a helper must have run for its back-off to start again from the first step."""


def helper_name(name: str, index: int) -> str:
    """The bookkeeping name of helper ``index`` (2, 3, ...) of the relay ``name``."""
    return f"{name}.{index}"


def adopt_orphans(client: RedisClient, name: str, processes: int) -> int:
    """Move the ids in flight of helpers beyond ``processes`` into ``name``'s hash (run
    before the relay loads it); returns how many were taken over."""
    head, tail = inflight_key(f"{name}."), ":inflight"
    head = head[:-len(tail)]
    glob = re.sub(r"([\[\]*?\\])", r"\\\1", head) + "*" + tail
    taken = 0
    for key in list(client.scan_iter(match=glob, count=1000)):
        text = key.decode() if isinstance(key, bytes) else str(key)
        index = text[len(head):-len(tail)]
        if not (text.startswith(head) and text.endswith(tail) and index.isdigit()
                and int(index) > processes):
            continue
        entries = dict(client.hscan_iter(text, count=1000))
        if entries:
            client.hset(inflight_key(name), mapping=entries)
        client.delete(text)
        taken += len(entries)
    if taken:
        log.info("took over %d results in flight of relay processes no longer run", taken)
    return taken


@dataclass(frozen=True, slots=True)
class HelperSpec:
    """What a helper needs to open its own relay (sent to it pickled)."""

    source: Endpoint
    target: Endpoint
    options: RelayOptions
    loglevel: str
    log_format: str


def _helper(spec: HelperSpec, alive: Connection) -> None:
    """A helper process: one relay under its own name until stopped or orphaned."""
    configure(spec.loglevel, spec.log_format)
    try:
        relay = open_relay(spec.source, spec.target, spec.options)
    except Exception as exc:  # a broker that connects when opened, and is down: try later
        log.warning("relay process %s could not start: %s", spec.options.name, one_line(exc))
        sys.exit(1)
    relay.outage_level = logging.DEBUG

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        relay.stop()

    threading.Thread(target=watch, daemon=True).start()
    freeze_loaded()
    relay.run()


class _Helper:
    def __init__(self, spec: HelperSpec) -> None:
        self.spec = spec
        self.process: BaseProcess | None = None
        self._alive: Connection | None = None
        self.backoff = Backoff(first=1.0, cap=60.0)
        self.restart_at = 0.0
        self.started_at = 0.0
        self.stopped = False
        """It exited 0 (stopped by a signal of its own): not started again."""

    @property
    def name(self) -> str:
        return self.spec.options.name

    def start(self) -> None:
        self.started_at = time.monotonic()
        theirs, self._alive = _CONTEXT.Pipe(duplex=False)
        self.process = _CONTEXT.Process(target=_helper, args=(self.spec, theirs), daemon=True,
                                        name=f"bridge-relay-{self.name}")
        self.process.start()
        theirs.close()

    def stop(self) -> None:
        """Ask it to finish its turn and give back what it holds; kill it if it hangs."""
        process = self.process
        if process is None:
            return
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
        process.join(_STOP_WAIT)
        if process.is_alive():
            log.warning("relay process %s did not stop in %.0f s: killed (broker recovery "
                        "gives back what it held)", self.name, _STOP_WAIT)
            process.kill()
            process.join(5)
        if self._alive is not None:
            self._alive.close()


class _Supervisor(threading.Thread):
    """Starts the helpers and starts a dead one again, with back-off."""

    def __init__(self, helpers: list[_Helper]) -> None:
        super().__init__(name="bridge-relay-supervisor", daemon=True)
        self.helpers = helpers
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            with self._lock:
                if self.stopping.is_set():
                    return
                for helper in self.helpers:
                    self._check(helper)

    def _check(self, helper: _Helper) -> None:
        process = helper.process
        if process is None or process.is_alive() or helper.stopped:
            if process is not None and time.monotonic() - helper.started_at > _SETTLED:
                helper.backoff.reset()  # it ran a while: a next death starts from 1 s again
            return
        if process.exitcode == 0:  # stopped by a signal of its own (Ctrl-C, kill): leave it
            helper.stopped = True
            log.info("relay process %s stopped", helper.name)
            return
        now = time.monotonic()
        if helper.restart_at == 0.0:
            helper.restart_at = now + helper.backoff.next()
            log.warning("relay process %s exited (%s): starting it again in %.1f s",
                        helper.name, how_it_ended(process.exitcode), helper.restart_at - now)
        elif now >= helper.restart_at:
            helper.restart_at = 0.0
            helper.start()

    def stop_all(self) -> None:
        with self._lock:
            self.stopping.set()
        for helper in self.helpers:
            helper.stop()


def run_side_by_side(source: Endpoint, target: Endpoint, options: RelayOptions,
                     processes: int, *, loglevel: str = "info",
                     log_format: str = "plain") -> int:
    """Run ``processes`` relays from ``source`` to ``target`` until stopped (SIGTERM or
    SIGINT stop them all gracefully); returns the exit status 0. With one, it is the relay
    alone (having taken over what helpers of an earlier run owed)."""
    name = options.name or relay_name(source, target)
    options = replace(options, window_take=options.window_take or processes > 1)
    relay: Relay = open_relay(source, target, replace(options, name=name))
    adopt_orphans(relay.inflight.client, name, processes)
    helpers = [_Helper(HelperSpec(source, target, replace(options, name=helper_name(name, n)),
                                  loglevel, log_format)) for n in range(2, processes + 1)]
    for helper in helpers:
        helper.start()
    supervisor = _Supervisor(helpers)
    if helpers:  # one relay alone: nothing to watch
        supervisor.start()
        log.info("relaying with %d processes side by side (bookkeeping %s, %s.2 ... %s.%d)",
                 processes, name, name, name, processes)
    freeze_loaded()
    try:
        return relay.run()
    finally:
        supervisor.stop_all()
