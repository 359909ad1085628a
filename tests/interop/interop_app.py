"""The interop task set on the Python side: the same names and semantics as the Go harness
(compat_fixtures/README.md, "Interop task set"), so Go producers and workers can't tell."""

from __future__ import annotations

import time
from typing import Any

import redis

from bridge import RetryLater
from bridge.app import Bridge
from bridge.config import Config
from bridge.demo import demo_app
from bridge.types import SUPPORTED_TYPES


def echo_task_name(go_type: str) -> str:
    """``[]int8`` → ``echo_slice_int8``; ``[]byte`` → ``echo_bytes``."""
    if go_type == "[]byte":
        return "echo_bytes"
    return "echo_" + go_type.replace("[]", "slice_", 1)


def make_app(url: str, queue: str, **config: Any) -> Bridge:
    """An app serving the interop task set (the demo's add, multiply, concat and the rest)
    on the Redis at ``url`` (broker, backend and counters; ``config`` overrides, e.g.
    another ``result_backend``)."""
    settings: dict[str, Any] = {"broker": url, "result_backend": url, "default_queue": queue}
    app = demo_app(Config(**{**settings, **config}))  # add, multiply, concat
    counters = redis.Redis.from_url(url)

    @app.task("fail")
    def fail(message: str) -> None:
        raise RuntimeError(message)

    @app.task("sleep_ms")
    def sleep_ms(ms: int) -> int:
        time.sleep(ms / 1000)
        return ms

    @app.task("count_call")
    def count_call(key: str, *values: int) -> int:
        counters.incr(key)
        return sum(values)

    @app.task("retry_later")
    def retry_later(key: str) -> int:
        count = int(counters.incr(key))
        if count < 3:
            raise RetryLater("not yet", 1.0)
        return count

    @app.task("stamp")
    def stamp(key: str) -> int:
        now_ms = time.time_ns() // 1_000_000
        counters.rpush(key, now_ms)
        return now_ms

    @app.task("noop")
    def noop() -> None:
        return None

    for go_type in SUPPORTED_TYPES:
        task = app.register(echo_task_name(go_type), _echo)
        task.param_types, task.result_types = [go_type], [go_type]
    return app


def _echo(value: Any) -> Any:
    return value
