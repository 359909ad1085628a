"""Prometheus metrics and a health endpoint for ``mbridge worker --metrics-port``.

``/metrics`` (Prometheus text format): tasks by name, protocol and outcome, their run
time, tasks running, queue depth, delayed, held and dead letters per queue (sampled by the
worker loop, never by the scrape), broker outages and reconnects. ``/health``: 200 while the
worker reaches its broker and backend and its loop turns, 503 otherwise, with a JSON body
saying why. Needs the ``metrics`` extra (prometheus_client)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bridge.config import ConfigError
from bridge.observe import FAILED, RECEIVED, REJECTED, RETRIED, REVOKED, SUCCEEDED, TaskEvent

log = logging.getLogger("bridge.metrics")

OUTCOMES = (SUCCEEDED, FAILED, RETRIED, REVOKED, REJECTED)
RUNTIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 300.0)

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the worker is healthy, and what it says about itself (JSON-able)."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("--metrics-port needs prometheus_client: pip install "
                          "'machinery-bridge[metrics]'") from None
    return prometheus_client


class WorkerMetrics:
    """The worker's metrics in a registry of their own (an Observer of bridge.observe)."""

    def __init__(self) -> None:
        prom = _prometheus()
        self.registry = prom.CollectorRegistry()
        labels = ("task", "protocol")
        self.received = prom.Counter("bridge_tasks_received_total",
                                     "Tasks received by this worker.", labels,
                                     registry=self.registry)
        self.outcomes = prom.Counter("bridge_tasks_total",
                                     "Tasks ended, by outcome (succeeded, failed, retried, "
                                     "revoked, rejected).", (*labels, "outcome"),
                                     registry=self.registry)
        self.retries = prom.Counter("bridge_task_retries_total", "Retries asked by tasks.",
                                    labels, registry=self.registry)
        self.runtime = prom.Histogram("bridge_task_runtime_seconds",
                                      "Seconds a task's function ran.", labels,
                                      buckets=RUNTIME_BUCKETS, registry=self.registry)
        self.running = prom.Gauge("bridge_tasks_running", "Tasks in a thread right now.",
                                  registry=self.registry)
        queue_labels = ("queue", "protocol")
        self.queue = {
            "waiting": prom.Gauge("bridge_queue_depth", "Messages waiting in the queue.",
                                  queue_labels, registry=self.registry),
            "delayed": prom.Gauge("bridge_queue_delayed", "Messages delayed (ETA, retry "
                                  "countdown); machinery on Redis: its one delayed_tasks set.",
                                  queue_labels, registry=self.registry),
            "held": prom.Gauge("bridge_queue_held", "Messages taken by workers, not yet "
                               "acknowledged.", queue_labels, registry=self.registry),
            "dead": prom.Gauge("bridge_dead_letters", "Messages parked as dead letters.",
                               queue_labels, registry=self.registry),
        }
        self.broker_up = prom.Gauge("bridge_broker_up", "1 while the broker and backend "
                                    "answer, 0 during an outage.", registry=self.registry)
        self.broker_up.set(1)
        self.outages = prom.Counter("bridge_broker_outages_total", "Broker or backend outages "
                                    "met.", registry=self.registry)
        self.reconnects = prom.Counter("bridge_broker_reconnects_total", "Times the worker "
                                       "reached its broker and backend again after an outage.",
                                       registry=self.registry)
        self._generate = prom.generate_latest
        self.content_type = prom.CONTENT_TYPE_LATEST

    # ------------------------------------------------------------------ the observer

    def task_event(self, event: TaskEvent) -> None:
        labels = (event.name or "unknown", event.protocol)
        if event.kind == RECEIVED:
            self.received.labels(*labels).inc()
            return
        if event.kind not in OUTCOMES:
            return
        self.outcomes.labels(*labels, event.kind).inc()
        if event.kind == RETRIED:
            self.retries.labels(*labels).inc()
        if event.runtime is not None:
            self.runtime.labels(*labels).observe(event.runtime)

    # ------------------------------------------------------------------ from the worker loop

    def sample_queue(self, queue: str, protocol: str, stats: dict[str, int]) -> None:
        for name, value in stats.items():
            gauge = self.queue.get(name)
            if gauge is not None:
                gauge.labels(queue, protocol).set(value)

    def outage_began(self) -> None:
        self.outages.inc()
        self.broker_up.set(0)

    def outage_ended(self) -> None:
        self.reconnects.inc()
        self.broker_up.set(1)

    def exposition(self) -> bytes:
        return bytes(self._generate(self.registry))


class MetricsServer:
    """``/metrics`` and ``/health`` over HTTP, in a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, health: Health, port: int,
                 host: str = "127.0.0.1") -> None:
        self.metrics = metrics
        self.health = health
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="bridge-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /health", self.host, self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/metrics":
                    self._send(200, server.metrics.content_type, server.metrics.exposition())
                elif path in ("/health", "/healthz", "/livez", "/readyz"):
                    ok, detail = server.health()
                    body = json.dumps({"status": "ok" if ok else "failing", **detail},
                                      default=str).encode()
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /health\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        return Handler


def health_of(outage_since: Callable[[], float | None], last_turn: Callable[[], float],
              stall_after: float = 60.0) -> Health:
    """Healthy while no outage is going on and the loop turned within ``stall_after`` s."""
    def health() -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        since = outage_since()
        quiet = now - last_turn()
        detail: dict[str, Any] = {"last_turn_seconds_ago": round(quiet, 3)}
        if since is not None:
            detail["broker"] = f"unreachable for {now - since:.1f} s"
        if quiet > stall_after:
            detail["loop"] = f"no turn for {quiet:.1f} s"
        return since is None and quiet <= stall_after, detail
    return health
