"""Runs registered Python functions for gocraft/work jobs, with gocraft's semantics: the
function is the one registered under the job's ``name``; the job's args map comes as
keyword arguments (typed by the function's annotations, as Go's ``ArgInt64``… read them);
an error or exception is a failure, retried after gocraft's back-off until ``max_fails``
attempts, then kept in the dead set (or dropped with ``skip_dead``); a job nobody here
registered goes straight to dead (``stray job: no handler``, as Go's worker); unique jobs
free their key when they start. Middleware runs around each job, in the task thread.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from bridge.brokers.base import Delivery
from bridge.errors import ArgTranslationError
from bridge.gocraft.job import GocraftJob, backoff, now_epoch, unique_key
from bridge.gocraft.options import JobOptions
from bridge.gocraft.pool import GocraftPool, Held
from bridge.handlers.base import Handler, Host, Job, Outcome
from bridge.observe import FAILED, RECEIVED, RETRIED, SUCCEEDED
from bridge.outage import Endpoint, is_outage
from bridge.protocol.gojson import JSONNumber
from bridge.task import RegisteredTask
from bridge.types import to_python

log = logging.getLogger("bridge.gocraft")

Middleware = Callable[[GocraftJob, Callable[[], Any]], Any]
"""``middleware(job, next)``: call ``next()`` to go on (its return is the job's), raise to
fail the job, or return without calling it to skip the job (gocraft's ``NextMiddlewareFunc``)."""

STRAY = "stray job: no handler"


class GocraftHandler(Handler):
    """One gocraft/work pool (every job name it serves) in the worker loop."""

    protocol = "gocraft"

    def __init__(self, host: Host, pool: GocraftPool, url: str,
                 middleware: Sequence[Middleware] = ()) -> None:
        super().__init__(host, pool, f"gocraft:{pool.keys.namespace}")
        self.pool = pool
        self.url = url
        self.middleware = list(middleware)
        capped = any(options.max_concurrency for options in pool.jobs.values())
        self.prefetch_multiplier = 1 if capped else 4
        """Jobs fetched per thread: a cap counts fetched jobs as running (the lock), so with
        one, no more than the threads can run; without, a few more per round trip."""

    def endpoints(self) -> list[Endpoint]:
        return [("gocraft/work Redis", self.url, "--gocraft-redis (default: the broker)",
                 self._ping)]

    def _ping(self) -> None:
        self.pool.client.ping()

    def step(self, finished: list[Outcome], deliveries: list[Delivery]) -> list[Job]:
        """Fates of the finished jobs (applied with their completion, at the next fetch),
        then the new jobs: unique keys freed and slots observed in one round trip."""
        finished, deliveries = self.with_carried(finished, deliveries)
        for outcome in finished:
            self._finish(outcome)
        try:
            return self._start_jobs(deliveries)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.carry([], deliveries, exc)
            return []

    # ------------------------------------------------------------------ finishing

    def _finish(self, outcome: Outcome) -> None:
        job, returned, error = outcome
        held: Held = job.delivery.tag
        gocraft_job: GocraftJob = job.context
        if error is None:
            self.report(SUCCEEDED, job, result=returned)
        elif not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit in a job: not a job error
        else:
            held.fate = self._fate(job, gocraft_job, error)
        self.host.done(self, job.delivery)

    def _fate(self, job: Job, gocraft_job: GocraftJob, error: Exception
              ) -> tuple[str, int, bytes] | None:
        options = self.pool.jobs.get(gocraft_job.name, JobOptions())
        now = now_epoch()
        failed = gocraft_job.failed(_error_text(error), now)
        if options.attempts - failed.fails > 0:
            delay = (options.backoff or backoff)(failed.fails)
            self.report(RETRIED, job, exception=error, retry_in=float(delay))
            return self.pool.keys.retry, now + delay, failed.encode()
        self.report(FAILED, job, exception=error, reason=f"failed {failed.fails} time(s)")
        if options.skip_dead:
            return None
        return self.pool.keys.dead, now, failed.encode()

    # ------------------------------------------------------------------ starting

    def _start_jobs(self, deliveries: list[Delivery]) -> list[Job]:
        decoded: list[tuple[Delivery, GocraftJob]] = []
        for delivery in deliveries:
            self.host.hold(self, delivery)
            try:
                decoded.append((delivery, GocraftJob.decode(delivery.body)))
            except ValueError as exc:
                log.error("gocraft/work %s: %s; parked", delivery.queue, exc)
                self.report_unrun(FAILED, "", delivery.queue, self.queue, str(exc))
                self.host.park(self, delivery, str(exc))
        uniques = [(d, j) for d, j in decoded if j.unique]
        pipe = self.pool.client.pipeline(transaction=False)
        for _, gocraft_job in uniques:
            pipe.getdel(gocraft_job.unique_key or unique_key(self.pool.keys, gocraft_job.name,
                                                             gocraft_job.args))
        stored = pipe.execute() if uniques else []
        replaced = {id(d): _stored_job(value, j) for (d, j), value in zip(uniques, stored,
                                                                          strict=True)}
        jobs: list[Job] = []
        for delivery, gocraft_job in decoded:
            job = self._prepare(delivery, replaced.get(id(delivery)) or gocraft_job)
            if job is not None:
                jobs.append(job)
        return jobs

    def _prepare(self, delivery: Delivery, gocraft_job: GocraftJob) -> Job | None:
        held: Held = delivery.tag
        task = self.host.app.tasks.get(gocraft_job.name)
        if task is None or gocraft_job.name not in self.pool.jobs:
            log.error("gocraft/work job %s (%s): %s; into the dead set", gocraft_job.id,
                      gocraft_job.name, STRAY)
            now = now_epoch()
            held.fate = (self.pool.keys.dead, now, gocraft_job.failed(STRAY, now).encode())
            self.report_unrun(FAILED, gocraft_job.id, gocraft_job.name, delivery.queue, STRAY)
            self.host.done(self, delivery)
            return None
        job = Job(delivery=delivery, handler=self, task=task, args=[],
                  kwargs=dict(gocraft_job.args or {}), context=gocraft_job,
                  task_id=gocraft_job.id)
        self.report(RECEIVED, job)
        return job

    def close(self) -> None:
        """Leave the namespace as a stopped Go pool does (heartbeat and observations gone)."""
        self.pool.close()

    def call(self, job: Job, run: Callable[[Job], Any]) -> Any:
        """In the task thread: the args typed for the function, then the middleware chain
        around it."""
        gocraft_job: GocraftJob = job.context
        self.pool.started(gocraft_job)
        try:
            job.kwargs = typed_kwargs(job.task, gocraft_job.args or {})
            chain: Callable[[], Any] = lambda: run(job)  # noqa: E731
            for middleware in reversed(self.middleware):
                chain = _link(middleware, gocraft_job, chain)
            return chain()
        finally:
            self.pool.ended()


def _link(middleware: Middleware, job: GocraftJob, after: Callable[[], Any]
          ) -> Callable[[], Any]:
    return lambda: middleware(job, after)


def _stored_job(value: Any, queued: GocraftJob) -> GocraftJob | None:
    """A by-key unique job's stored JSON replaces the queued one (its newer args); ``1`` or
    nothing keeps the queued job."""
    if not value or value in (b"1", "1"):
        return None
    try:
        return GocraftJob.decode(value)
    except ValueError:
        log.warning("unique key of gocraft/work job %s holds no job: running the queued one",
                    queued.id)
        return None


def typed_kwargs(task: RegisteredTask, args: dict[str, Any]) -> dict[str, Any]:
    """The job's args as the function's keyword arguments: only the names it takes (unless
    it takes ``**kwargs``), each converted to its annotated Go type with range checks (an
    integral float for an int, as Go's ``ArgInt64`` accepts). A value that does not fit
    raises :class:`ArgTranslationError` (the job fails, as a Go ``ArgError`` would)."""
    parameters, takes_any, named = _parameters(task.func)
    types = dict(zip(named, task.param_types, strict=False))
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name not in parameters and not takes_any:
            continue
        if isinstance(value, JSONNumber):
            value = float(value)
        wanted = types.get(name)
        if wanted is not None:
            if "int" in wanted and isinstance(value, float):
                if not value.is_integer():
                    raise ArgTranslationError(f"{value!r} is not an integer", go_type=wanted,
                                              value=value, name=name)
                value = int(value)
            value = to_python(wanted, value, name=name)
        out[name] = value
    return out


@functools.lru_cache(maxsize=1024)
def _parameters(func: Callable[..., Any]) -> tuple[frozenset[str], bool, tuple[str, ...]]:
    """A function's parameter names, whether it takes ``**kwargs``, and the names an arg
    can be given by, in order (read once per function, not per job)."""
    parameters = inspect.signature(func).parameters
    return (frozenset(parameters), any(p.kind is p.VAR_KEYWORD for p in parameters.values()),
            tuple(n for n, p in parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)))


def _error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__
