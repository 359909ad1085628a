"""``mbridge worker --metrics-port``, scraped as Prometheus would: task counts and run times,
queue depth and held messages while a backlog drains, and a health endpoint that fails
while the worker's Redis is down and recovers with it (counted as one outage, one
reconnect)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bridge.localredis import free_port
from tests.faults.test_worker_outages import Run, run  # noqa: F401 - the fixture


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_and_health_through_a_backlog_and_an_outage(run: Run) -> None:  # noqa: F811
    port = free_port()
    run.start_worker("--metrics-port", str(port), "--metrics-interval", "0.2")
    run.wait_for("the health endpoint", lambda: _get(f"http://127.0.0.1:{port}/health")[0]
                 == 200, 30)
    keys = run.send_slow(60, 50)  # 60 × 50 ms on 4 threads: about 0.8 s of backlog
    depth_seen = held_seen = 0.0
    queue = {"queue": "fault_tasks", "protocol": "machinery"}
    deadline = time.monotonic() + 30
    while run.succeeded(keys) < len(keys) and time.monotonic() < deadline:
        now = _samples(port)
        depth_seen = max(depth_seen, _value(now, "bridge_queue_depth", **queue))
        held_seen = max(held_seen, _value(now, "bridge_queue_held", **queue))
        time.sleep(0.05)
    assert run.succeeded(keys) == len(keys)
    assert depth_seen > 0 and held_seen > 0, (depth_seen, held_seen)
    task = {"task": "record", "protocol": "machinery"}
    run.wait_for("the last outcome counted", lambda: _value(
        _samples(port), "bridge_tasks_total", **task, outcome="succeeded") == len(keys), 10)
    samples = _samples(port)
    assert _value(samples, "bridge_tasks_received_total", **task) == len(keys)
    assert _value(samples, "bridge_task_runtime_seconds_count", **task) == len(keys)
    assert _value(samples, "bridge_task_runtime_seconds_sum", **task) >= len(keys) * 0.05
    run.wait_for("the drained queue sampled", lambda: _value(
        _samples(port), "bridge_queue_depth", **queue) == 0, 10)
    assert _value(samples, "bridge_broker_up") == 1

    run.redis.stop()
    run.wait_for("health to fail", lambda: _get(f"http://127.0.0.1:{port}/health")[0] == 503,
                 20)
    status, body = _get(f"http://127.0.0.1:{port}/health")
    detail = json.loads(body)
    assert status == 503 and detail["status"] == "failing"
    assert detail["broker"].startswith("unreachable for"), detail
    assert _value(_samples(port), "bridge_broker_up") == 0
    run.redis.start()
    run.wait_for("health to come back", lambda: _get(f"http://127.0.0.1:{port}/health")[0]
                 == 200, 60)
    samples = _samples(port)
    assert _value(samples, "bridge_broker_outages_total") == 1
    assert _value(samples, "bridge_broker_reconnects_total") == 1
    assert _value(samples, "bridge_broker_up") == 1
    assert _get(f"http://127.0.0.1:{port}/nothing")[0] == 404
    assert run.stop_worker() == 0
