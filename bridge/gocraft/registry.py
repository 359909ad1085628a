"""What an app declares for its gocraft/work pool, beside its tasks: job options per name
and middleware (gocraft's ``JobWithOptions`` and ``Middleware``)::

    from bridge.gocraft import JobOptions, job_options, middleware

    job_options(app, "send_email", JobOptions(max_fails=3, max_concurrency=2))

    @middleware(app)
    def log_jobs(job, next):
        log.info("starting %s", job.name)
        return next()

``mbridge worker --gocraft-job`` options win over these.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from bridge.app import Bridge
from bridge.gocraft.options import JobOptions

Middleware = Callable[[Any, Callable[[], Any]], Any]

_OPTIONS: weakref.WeakKeyDictionary[Bridge, dict[str, JobOptions]] = weakref.WeakKeyDictionary()
_MIDDLEWARE: weakref.WeakKeyDictionary[Bridge, list[Middleware]] = weakref.WeakKeyDictionary()


def job_options(app: Bridge, name: str, options: JobOptions) -> None:
    """Options of job ``name`` (registered with ``@app.task(name)``) in gocraft/work pools."""
    _OPTIONS.setdefault(app, {})[name] = options


def middleware(app: Bridge) -> Callable[[Middleware], Middleware]:
    """Register ``func(job, next)`` to run around every gocraft/work job, in order."""

    def register(func: Middleware) -> Middleware:
        _MIDDLEWARE.setdefault(app, []).append(func)
        return func

    return register


def options_of(app: Bridge) -> dict[str, JobOptions]:
    return dict(_OPTIONS.get(app, {}))


def middleware_of(app: Bridge) -> list[Middleware]:
    return list(_MIDDLEWARE.get(app, []))
