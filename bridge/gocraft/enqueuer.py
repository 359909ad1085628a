"""gocraft/work's enqueuer in Python (``enqueue.go``): the same bytes on the same keys, so
a Go worker pool runs what we enqueue and ``workwebui`` lists it."""

from __future__ import annotations

import time
from typing import Any

from bridge.gocraft.job import GocraftJob, now_epoch, unique_key
from bridge.gocraft.keys import GocraftKeys
from bridge.gocraft.scripts import ENQUEUE_UNIQUE
from bridge.redisconn import RedisClient
from bridge.redislane import Lane

KNOWN_JOBS_EVERY = 300.0
"""Seconds between two ``SADD known_jobs`` of one name (gocraft's cache)."""


class Enqueuer:
    """``work.NewEnqueuer(namespace, pool)``: Enqueue, EnqueueIn and the unique variants."""

    def __init__(self, client: RedisClient, namespace: str = "work") -> None:
        self.client = client
        self.keys = GocraftKeys(namespace)
        self._unique = client.register_script(ENQUEUE_UNIQUE)
        self.lane = Lane(client)
        self._known: dict[str, float] = {}

    def enqueue(self, name: str, args: dict[str, Any] | None = None) -> GocraftJob:
        """LPUSH a new job onto ``<ns>:jobs:<name>`` (on the enqueuer's own connection when
        no other thread uses it: less client work per call than a pooled command)."""
        job = GocraftJob.new(name, args)
        command = ("LPUSH", self.keys.jobs(name), job.encode())
        replies = self.lane.run([command])
        if replies is None:
            self.client.lpush(*command[1:])
        elif isinstance(replies[0], Exception):
            raise replies[0]
        self._add_known(name)
        return job

    def enqueue_batch(self, name: str, many_args: list[dict[str, Any] | None]
                      ) -> list[GocraftJob]:
        """Many jobs of one name in one round trip (Go has no batch call; the bytes are the
        same as ``len(many_args)`` Enqueue calls)."""
        jobs = [GocraftJob.new(name, args) for args in many_args]
        if jobs:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(jobs), 10_000):
                pipe.lpush(self.keys.jobs(name), *[job.encode() for job in
                                                   jobs[start:start + 10_000]])
            pipe.execute()
            self._add_known(name)
        return jobs

    def enqueue_in(self, name: str, seconds: int, args: dict[str, Any] | None = None
                   ) -> tuple[int, GocraftJob]:
        """ZADD the job to ``<ns>:scheduled`` at now + ``seconds``; (run_at, job)."""
        job = GocraftJob.new(name, args)
        run_at = job.t + int(seconds)
        self.client.zadd(self.keys.scheduled, {job.encode(): run_at})
        self._add_known(name)
        return run_at, job

    def enqueue_at(self, name: str, run_at: int, args: dict[str, Any] | None = None
                   ) -> GocraftJob:
        """At an absolute epoch second (gocraft has none: ``ZADD scheduled`` directly)."""
        job = GocraftJob.new(name, args)
        self.client.zadd(self.keys.scheduled, {job.encode(): int(run_at)})
        self._add_known(name)
        return job

    def enqueue_unique(self, name: str, args: dict[str, Any] | None = None
                       ) -> GocraftJob | None:
        """Enqueue unless an identical job (same name and args) is queued or scheduled;
        None for a duplicate, as Go returns a nil job."""
        return self._enqueue_unique(name, args, None, None)

    def enqueue_unique_in(self, name: str, seconds: int, args: dict[str, Any] | None = None
                          ) -> tuple[int, GocraftJob] | None:
        run_at = now_epoch() + int(seconds)
        job = self._enqueue_unique(name, args, None, run_at)
        return None if job is None else (run_at, job)

    def enqueue_unique_by_key(self, name: str, args: dict[str, Any] | None,
                              key_map: dict[str, Any]) -> GocraftJob | None:
        """Unique on ``key_map``, not the args; a duplicate replaces the queued job's args
        (gocraft HEAD's ``EnqueueUniqueByKey``)."""
        return self._enqueue_unique(name, args, key_map, None)

    def enqueue_unique_in_by_key(self, name: str, seconds: int, args: dict[str, Any] | None,
                                 key_map: dict[str, Any]) -> tuple[int, GocraftJob] | None:
        run_at = now_epoch() + int(seconds)
        job = self._enqueue_unique(name, args, key_map, run_at)
        return None if job is None else (run_at, job)

    def _enqueue_unique(self, name: str, args: dict[str, Any] | None,
                        key_map: dict[str, Any] | None, run_at: int | None
                        ) -> GocraftJob | None:
        by_key = key_map is not None
        key = unique_key(self.keys, name, key_map if by_key else args)
        job = GocraftJob(name=name, id=GocraftJob.new(name).id, t=now_epoch(), args=args,
                         unique=True, unique_key=key)
        body = job.encode()
        target = self.keys.scheduled if run_at is not None else self.keys.jobs(name)
        extra = [] if run_at is None else [run_at]
        outcome = self._unique(keys=[target, key], args=[body, body if by_key else "1", *extra])
        self._add_known(name)
        return job if outcome in (b"ok", "ok") else None

    def close(self) -> None:
        """Give the enqueuer's connection back to the client's pool."""
        self.lane.close()

    def _add_known(self, name: str) -> None:
        now = time.monotonic()
        if self._known.get(name, 0.0) > now:
            return
        self.client.sadd(self.keys.known_jobs, name)
        self._known[name] = now + KNOWN_JOBS_EVERY
