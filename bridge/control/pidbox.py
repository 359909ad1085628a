"""Celery's pidbox mailbox on the Celery broker, served in a thread with a kombu connection
of its own: the queue ``<hostname>.celery.pidbox`` bound to the fanout exchange
``celery.pidbox``, replies to ``reply.celery.pidbox``, declared as Celery's worker declares
them (message TTL 300 s, queue expiry 10 s), so stock ``celery inspect/control/status`` and
Flower reach this worker. The same connection carries the worker's Celery events when they
are enabled (bridge.control.events). Reconnects with back-off, saying so once."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from kombu import Connection

from bridge.config import redact_url
from bridge.control.client import celery_mailbox
from bridge.control.commands import PANEL, ControlState, Shutdown
from bridge.outage import Backoff, Outage

log = logging.getLogger("bridge.control")


class RemoteControl:
    """Serves the remote-control commands of PANEL for ``state.hostname``."""

    def __init__(self, broker_url: str, state: ControlState, *, namespace: str = "celery",
                 transport_options: dict[str, Any] | None = None,
                 accept: tuple[str, ...] = ("json",), queue_ttl: float = 300.0,
                 queue_expires: float = 10.0, events: Any = None,
                 serve_commands: bool = True) -> None:
        self.broker_url = broker_url
        self.state = state
        self.transport_options = dict(transport_options or {})
        self.mailbox = celery_mailbox(namespace, accept, queue_ttl, queue_expires)
        self.events = events
        self.serve_commands = serve_commands
        """False: only the events ride this connection (--no-remote-control with -E)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-remote-control",
                                        daemon=True)
        self._announced = False
        self.ready = threading.Event()
        """Set once the mailbox queue is declared and consumed (tests wait for it)."""

    def start(self) -> RemoteControl:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        # the worker loop says "unreachable" and "reconnected" for this broker already
        outage = Outage(f"Celery remote control ({redact_url(self.broker_url)})", log,
                        Backoff(first=0.5, cap=30.0), level=logging.DEBUG)
        while not self._stopping.is_set():
            try:
                self._serve(outage)
            except Shutdown:
                return
            except Exception as exc:  # an outage, or a bug: once, back off, go on
                self.ready.clear()
                self._stopping.wait(outage.failed(exc))

    def _serve(self, outage: Outage) -> None:
        with Connection(self.broker_url, transport_options=self.transport_options,
                        connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            mailbox = self.mailbox(connection)
            node = mailbox.Node(self.state.hostname, state=self.state, channel=channel,
                                handlers=PANEL)
            consumer = node.listen(channel=channel) if self.serve_commands else None
            if self.events is not None:
                self.events.attach(connection)
            outage.succeeded()
            self.ready.set()
            log.log(logging.DEBUG if self._announced else logging.INFO, "Celery %s for %s on %s",
                    "remote control" if self.serve_commands else "events",
                    self.state.hostname, redact_url(self.broker_url))
            self._announced = True
            try:
                while not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        if consumer is not None:
                            connection.drain_events(timeout=0.5)
                        else:
                            self._stopping.wait(0.5)
                    if self.events is not None:
                        self.events.flush()
            except Shutdown:
                self._stopping.set()
                raise
            finally:
                if self.events is not None:
                    if self._stopping.is_set():
                        self.events.offline()
                    self.events.detach()
                if consumer is not None:
                    with contextlib.suppress(Exception):  # the connection may be gone already
                        consumer.cancel()
