"""``mbridge worker --gocraft NAMESPACE``: the gocraft/work pool a worker serves beside (or
instead of) its machinery and Celery queues."""

from __future__ import annotations

from bridge.app import Bridge
from bridge.config import redact_url
from bridge.config.keys import ConfigError
from bridge.gocraft.options import JobOptions
from bridge.gocraft.pool import GocraftPool
from bridge.gocraft.registry import middleware_of, options_of
from bridge.handlers.gocraft import GocraftHandler
from bridge.redisconn import connect
from bridge.worker import HandlerFactory, Worker


def gocraft_factory(app: Bridge, namespace: str, url: str | None, job_specs: tuple[str, ...],
                    concurrency: int) -> tuple[HandlerFactory, str]:
    """The handler factory of a gocraft/work pool, and a line saying what it serves."""
    url = url or app.config.broker
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"gocraft/work lives in Redis, not {redact_url(url)}: give "
                          "--gocraft-redis redis://host:port/db")
    if job_specs:  # the command line's options win over the app's job_options
        jobs = dict(JobOptions.parse(spec) for spec in job_specs)
    else:
        registered = options_of(app)
        jobs = {name: registered.get(name, JobOptions()) for name in app.tasks}
    missing = sorted(name for name in jobs if name not in app.tasks)
    if missing:
        raise ConfigError(f"--gocraft-job names tasks the app does not register: "
                          f"{', '.join(missing)} (register them with @app.task)")
    if not jobs:
        raise ConfigError("no gocraft/work job to serve: register tasks with @app.task")
    client = connect(url, app.config.redis)
    pool = GocraftPool(client, namespace, jobs, concurrency)

    def make(worker: Worker) -> GocraftHandler:
        return GocraftHandler(worker, pool, url, middleware_of(app))

    return make, (f"gocraft/work namespace {namespace!r} on {redact_url(url)}: pool "
                  f"{pool.pool_id}, jobs {', '.join(sorted(jobs))}")
