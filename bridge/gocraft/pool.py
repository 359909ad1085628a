"""A gocraft/work worker pool's side of Redis, for the worker loop: fetch (gocraft's fetch
script semantics, a batch at a time), completion, give-back and upkeep (heartbeat,
requeuer, dead-pool reaper), on gocraft's exact layout so Go pools, ours and ``workwebui``
share one namespace (reference: gocraft-work.md §4–§8).

A delivery's ``tag`` is a :class:`Held`: its job name, and the fate (retry, dead) the
handler decided, applied atomically with the completion (gocraft's ``MULTI``: ``LREM`` the
exact popped bytes, ``DECR`` the lock, this pool's lock_info share ``-1``, then the
``ZADD``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import redis

from bridge.brokers.base import Consumer, Delivery
from bridge.gocraft.job import GocraftJob, new_id, now_epoch
from bridge.gocraft.keys import GocraftKeys
from bridge.gocraft.options import JobOptions, sample_order
from bridge.gocraft.reaper import Reaper
from bridge.gocraft.scripts import COMPLETE, FETCH, REQUEUE
from bridge.protocol import gojson
from bridge.redisconn import RedisClient
from bridge.redislane import Lane

log = logging.getLogger("bridge.gocraft")

HEARTBEAT_EVERY = 5.0
"""Seconds between two heartbeats (gocraft's; its reapers call a pool dead after 10 s)."""
REQUEUE_EVERY = 1.0
"""Seconds between two requeuer passes over the retry and scheduled sets (gocraft's tick)."""
POLL_CAP = 0.1
"""Longest sleep between two fetches of an idle pool (gocraft's is 5 s)."""
OBSERVATION_TTL = 86_400


@dataclass(slots=True)
class Held:
    """What a fetched job needs at completion: its name, the fate the handler chose."""

    name: str
    fate: tuple[str, int, bytes] | None = None
    """(retry or dead set key, score, job JSON) to ZADD with the completion."""


class GocraftPool(Consumer):
    """One worker pool of namespace ``namespace`` serving ``jobs`` (name → options)."""

    def __init__(self, client: RedisClient, namespace: str, jobs: Mapping[str, JobOptions],
                 concurrency: int) -> None:
        if not jobs:
            raise ValueError("a gocraft/work pool needs at least one job name")
        self.client = client
        self.keys = GocraftKeys(namespace)
        self.jobs = dict(jobs)
        self.concurrency = concurrency
        self.pool_id = new_id()
        self.worker_ids = sorted(new_id() for _ in range(concurrency))
        self.started_at = now_epoch()
        self.lane = Lane(client)
        self._fetch_sha = client.register_script(FETCH).sha
        self._complete_sha = client.register_script(COMPLETE).sha
        self._requeue = client.register_script(REQUEUE)
        self._running: dict[str, Observed] = {}
        """Per gocraft "worker" (a task thread) that is busy: its job, start time and
        check-in."""
        self._dirty: set[str] = set()
        """Workers whose state changed since it was last written (the latest state is
        written, as Go's observer coalesces)."""
        self._checked_in: set[str] = set()  # workers whose written hash holds a check-in
        self._slots: dict[int, str] = {}  # task thread → worker id
        self._observe_lock = threading.Lock()
        self._held: Counter[tuple[str, bytes]] = Counter()
        """Jobs handed out and not seen completed (to find what a lost reply took)."""
        self._retried = False
        self.reaper = Reaper(client, self.keys, self.pool_id, list(self.jobs))
        self._started = False
        self._next_requeue = 0.0
        self._stopping = threading.Event()
        self._beater: threading.Thread | None = None
        self._unreadable_said = False

    # ------------------------------------------------------------------ start, stop

    def start(self) -> None:
        """What a Go pool does on Start(): known jobs, concurrency caps, a first heartbeat,
        then a heartbeat every 5 s from a thread of its own (a busy loop never lets Go's
        reapers take us for dead)."""
        if self._started:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.keys.known_jobs, *self.jobs)
        for name, options in self.jobs.items():
            pipe.set(self.keys.max_concurrency(name), options.max_concurrency)
        pipe.execute()
        self.heartbeat()
        self._started = True
        self._beater = threading.Thread(target=self._beat, name="gocraft-heartbeat",
                                        daemon=True)
        self._beater.start()

    def heartbeat(self) -> None:
        """``SADD worker_pools`` and the heartbeat hash, as gocraft's heartbeater writes."""
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.keys.worker_pools, self.pool_id)
        pipe.hset(self.keys.heartbeat(self.pool_id), mapping={
            "heartbeat_at": now_epoch(), "started_at": self.started_at,
            "job_names": ",".join(sorted(self.jobs)), "concurrency": self.concurrency,
            "worker_ids": ",".join(self.worker_ids), "host": _hostname(),
            "pid": os.getpid()})
        pipe.execute()

    def _beat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_EVERY):
            try:
                self.heartbeat()
            except redis.RedisError as exc:  # the loop reports outages; try again later
                log.debug("gocraft heartbeat failed: %s", exc)

    def close(self) -> None:
        """A clean stop: leave ``worker_pools``, drop the heartbeat and observations."""
        self._stopping.set()
        self.lane.close()
        if not self._started:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.srem(self.keys.worker_pools, self.pool_id)
            pipe.delete(self.keys.heartbeat(self.pool_id),
                        *[self.keys.observation(w) for w in self.worker_ids])
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not unregister gocraft pool %s (%s): Go's reapers will",
                        self.pool_id, exc)

    # ------------------------------------------------------------------ fetching

    def fetch(self, queue: str, max_count: int, timeout: float,
              ack: Sequence[Delivery] = ()) -> list[Delivery]:
        """Up to ``max_count`` jobs, polling (gocraft has no blocking fetch) up to
        ``timeout`` s with sleeps growing to 0.1 s. ``ack`` are completed, and the
        observations written, in the same round trip as the first try."""
        self.start()
        deadline = time.monotonic() + timeout
        sleep = 0.005
        completions = self._completions(ack)
        while True:
            taken = self._round_trip(completions, max_count)
            completions = []
            left = deadline - time.monotonic()
            if taken or left <= 0:
                return taken
            time.sleep(min(sleep, left))
            sleep = min(sleep * 2, POLL_CAP)

    def _round_trip(self, completions: list[tuple[Delivery, tuple[str, str, int, bytes]]],
                    count: int) -> list[Delivery]:
        """Completions, pending observations and a fetch of ``count`` in one round trip."""
        commands: list[tuple[Any, ...]] = []
        if completions:
            commands.append(self._complete_command(completions))
        with self._observe_lock:
            dirty, self._dirty = self._dirty, set()
            observed = {worker: self._running.get(worker) for worker in dirty}
        commands += self._observation_commands(observed)
        fetch_at = -1
        if count > 0:
            fetch_at = len(commands)
            commands.append(self._fetch_command(count))
        if not commands:
            return []
        try:
            replies = self._run(commands)
        except BaseException:
            with self._observe_lock:  # written with the next round trip, as they are then
                self._dirty |= dirty
            raise
        for worker, state in observed.items():
            if state is not None and state.checkin is not None:
                self._checked_in.add(worker)
            else:
                self._checked_in.discard(worker)
        for delivery, _ in completions:
            self._forget(delivery)
        taken = self._deliveries(replies[fetch_at]) if fetch_at >= 0 else []
        for delivery in taken:
            self._held[(delivery.queue, delivery.body)] += 1
        if self._retried:  # a try whose reply was lost may have taken jobs: run them too
            self._retried = False
            taken += self._unknown(Counter(self._held))
        return taken

    def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands in one round trip on the lane (a pipeline when it is busy), each
        script Redis lost (a restart) loaded and its command sent again; a command's error
        raised."""
        replies, sent = self.lane.run_counted(commands)
        if replies is None:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies, sent = pipe.execute(raise_on_error=False), 1
        self._retried = self._retried or sent > 1
        for index, reply in enumerate(replies):
            if isinstance(reply, redis.exceptions.NoScriptError):
                self.client.script_load(FETCH if commands[index][1] == self._fetch_sha
                                        else COMPLETE)
                replies[index] = cast(Any, self.client).execute_command(*commands[index])
            elif isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def _fetch_command(self, count: int) -> tuple[Any, ...]:
        names = list(self.jobs)
        keys: list[str] = []
        for name in names:
            keys += [self.keys.jobs(name), self.keys.in_progress(name, self.pool_id),
                     self.keys.paused(name), self.keys.lock(name), self.keys.lock_info(name),
                     self.keys.max_concurrency(name)]
        orders: list[int] = []
        if len(names) == 1:
            orders = [0] * count
        else:
            index = {name: n for n, name in enumerate(names)}
            priorities = [(name, self.jobs[name].priority) for name in names]
            for _ in range(count):
                orders += [index[name] for name in sample_order(priorities)]
        return ("EVALSHA", self._fetch_sha, len(keys), *keys, self.pool_id, len(names), count,
                *orders)

    def _deliveries(self, reply: Any) -> list[Delivery]:
        names = list(self.jobs)
        return [Delivery(body=reply[n], queue=names[int(reply[n + 1])],
                         tag=Held(names[int(reply[n + 1])]))
                for n in range(0, len(reply), 2)]

    # ------------------------------------------------------------------ completing

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Complete jobs, each with the fate its handler chose (and the pending
        observations), in one round trip."""
        self._round_trip(self._completions(deliveries), 0)

    def _completions(self, deliveries: Sequence[Delivery]
                     ) -> list[tuple[Delivery, tuple[str, str, int, bytes]]]:
        out = []
        for delivery in deliveries:
            fate = _held(delivery).fate
            if fate is None:
                out.append((delivery, ("", "", 0, b"")))
            else:
                key, score, body = fate
                out.append((delivery, (key, "zadd", score, body)))
        return out

    def _complete_command(self, items: list[tuple[Delivery, tuple[str, str, int, bytes]]]
                          ) -> tuple[Any, ...]:
        keys: list[str] = []
        args: list[Any] = [self.pool_id]
        for delivery, (target, how, score, value) in items:
            name = _held(delivery).name
            held = self.keys.in_progress(name, self.pool_id)
            keys += [held, self.keys.lock(name), self.keys.lock_info(name), target or held]
            args += [delivery.body, how, score, value]
        return ("EVALSHA", self._complete_sha, len(keys), *keys, *args)

    def _forget(self, delivery: Delivery) -> None:
        key = (delivery.queue, delivery.body)
        if self._held[key] > 1:
            self._held[key] -= 1
        else:
            self._held.pop(key, None)

    def requeue(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Back where the next fetch takes it first (the list's right end), unchanged; or
        into the scheduled set ``delay`` s from now."""
        name = _held(delivery).name
        if delay > 0:
            item = (self.keys.scheduled, "zadd", now_epoch() + int(delay + 0.999),
                    delivery.body)
        else:
            item = (self.keys.jobs(name), "rpush", 0, delivery.body)
        self._round_trip([(delivery, item)], 0)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Into gocraft's dead set (workwebui shows it, with its retry button) with the
        reason as the job's error; bytes that are no job go to ``<ns>:bridge:unreadable``
        (kept raw for an operator: the dead set must hold jobs, workwebui decodes it)."""
        try:
            job = GocraftJob.decode(delivery.body)
        except ValueError:
            item = (self.keys.prefix + "bridge:unreadable", "lpush", 0, delivery.body)
        else:
            now = now_epoch()
            item = (self.keys.dead, "zadd", now, job.failed(reason, now).encode())
        self._round_trip([(delivery, item)], 0)

    def unknown_held(self, queue: str, known: Sequence[Delivery]) -> list[Delivery]:
        """Jobs in this pool's in-progress lists that the worker never received (a fetch
        whose reply was lost): run them now. ``known`` are what the worker holds."""
        return self._unknown(Counter((d.queue, d.body) for d in known))

    def _unknown(self, seen: Counter[tuple[str, bytes]]) -> list[Delivery]:
        """In-progress jobs beyond ``seen`` (what is known to be held), as deliveries."""
        found: list[Delivery] = []
        for name in self.jobs:
            raw = cast("list[bytes]", self.client.lrange(
                self.keys.in_progress(name, self.pool_id), 0, -1))
            for body in raw:
                if seen[(name, body)] > 0:
                    seen[(name, body)] -= 1
                else:
                    found.append(Delivery(body=body, queue=name, tag=Held(name)))
        for delivery in found:
            self._held[(delivery.queue, delivery.body)] += 1
        return found

    # ------------------------------------------------------------------ upkeep

    def maintain(self) -> None:
        """Observations not sent yet (every thread busy: no fetch carries them), the
        requeuer each second (retry and scheduled sets), the reaper when due."""
        self.start()
        if self._dirty:
            self._round_trip([], 0)
        now = time.monotonic()
        if now >= self._next_requeue:
            self._next_requeue = now + REQUEUE_EVERY
            self.requeue_due()
        self.reaper.maybe_reap()

    def requeue_due(self) -> int:
        """Due retry and scheduled jobs of our names onto their lists; others stay."""
        served = [self.keys.jobs(name) for name in self.jobs]
        moved = 0
        for zset in (self.keys.retry, self.keys.scheduled):
            count, unreadable = cast("list[int]", self._requeue(
                keys=[zset, *served],
                args=[self.keys.jobs_prefix, now_epoch(), 1000]))
            moved += int(count)
            if unreadable and not self._unreadable_said:
                self._unreadable_said = True
                log.warning("%s holds %d due member(s) that are not gocraft jobs: left "
                            "there (gocraft's own requeuer fails on them)", zset, unreadable)
        return moved

    def started(self, job: GocraftJob) -> None:
        """In a task thread: it runs ``job`` (its observation is written with the next
        round trip; each thread is one gocraft "worker" of this pool)."""
        _current.pool = self
        with self._observe_lock:
            worker = self._slots.get(threading.get_ident())
            if worker is None:
                if len(self._slots) >= len(self.worker_ids):
                    return
                worker = self._slots[threading.get_ident()] = self.worker_ids[len(self._slots)]
            self._running[worker] = Observed(job, now_epoch())
            self._dirty.add(worker)

    def checkin(self, message: str) -> None:
        """In a task thread: gocraft's ``job.Checkin(msg)`` (workwebui shows the message and
        its time beside the busy worker; written with the next round trip)."""
        with self._observe_lock:
            worker = self._slots.get(threading.get_ident())
            running = self._running.get(worker or "")
            if worker is not None and running is not None:
                self._running[worker] = running._replace(checkin=str(message),
                                                         checkin_at=now_epoch())
                self._dirty.add(worker)

    def ended(self) -> None:
        """In a task thread: its job is over (the observation is deleted, unless the next
        job's replaces it first)."""
        _current.pool = None
        with self._observe_lock:
            worker = self._slots.get(threading.get_ident())
            if worker is not None:
                self._running.pop(worker, None)
                self._dirty.add(worker)

    def _observation_commands(self, observed: dict[str, Observed | None]
                              ) -> list[tuple[Any, ...]]:
        """gocraft's observer hashes (workwebui's busy workers): a busy worker's job and its
        check-in, kept a day; an idle worker's hash deleted."""
        commands: list[tuple[Any, ...]] = []
        idle = [self.keys.observation(w) for w, state in observed.items() if state is None]
        if idle:
            commands.append(("DEL", *idle))
        for worker, state in observed.items():
            if state is not None:
                job = state.job
                key = self.keys.observation(worker)
                args = "" if job.args is None else job_args_json(job)
                fields: tuple[Any, ...] = ("job_name", job.name, "job_id", job.id,
                                           "started_at", state.since, "args", args)
                if state.checkin is not None:
                    fields += ("checkin", state.checkin, "checkin_at", state.checkin_at)
                elif worker in self._checked_in:  # another job now: its check-in is gone
                    commands.append(("HDEL", key, "checkin", "checkin_at"))
                commands += [("HSET", key, *fields), ("EXPIRE", key, OBSERVATION_TTL)]
        return commands


class Observed(NamedTuple):
    """What a busy gocraft "worker" shows: its job, since when, and its last check-in."""

    job: GocraftJob
    since: int
    checkin: str | None = None
    checkin_at: int | None = None


_current = threading.local()


def checkin(message: str) -> None:
    """gocraft's ``job.Checkin(msg)``, from a job function (or middleware) running in a
    ``mbridge worker --gocraft`` thread: workwebui shows ``message`` and its time with the
    busy worker until the job ends. Outside such a job it raises RuntimeError."""
    pool: GocraftPool | None = getattr(_current, "pool", None)
    if pool is None:
        raise RuntimeError("checkin() is for a gocraft/work job running in its worker thread")
    pool.checkin(message)


def job_args_json(job: GocraftJob) -> str:
    """The args as the observer writes them (Go's JSON of the map)."""
    return gojson.dumps(job.args).decode("utf-8")


def _held(delivery: Delivery) -> Held:
    tag = delivery.tag
    if not isinstance(tag, Held):
        raise TypeError("not a gocraft/work delivery")
    return tag


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "hostname_errored"
