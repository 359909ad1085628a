"""Our gocraft/work pool and enqueuer on a real redis-server, every key checked as Go's
pools, reapers and workwebui read them (gocraft-work.md §1–§9). The same scenarios with
Go's own enqueuer, pool and web UI are in tests/interop/test_gocraft_live.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from bridge.app import Bridge
from bridge.config import Config
from bridge.gocraft import Enqueuer, GocraftJob, JobOptions, middleware
from bridge.gocraft.job import now_epoch
from bridge.gocraft.keys import GocraftKeys
from bridge.gocraft.pool import GocraftPool
from bridge.handlers.gocraft import GocraftHandler
from bridge.worker import Worker
from tests.worker_thread import worker_thread


class Scene:
    """One namespace of its own, an app whose tasks note what ran, and its Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.ns = f"gc{uuid.uuid4().hex[:8]}"
        self.keys = GocraftKeys(self.ns)
        self.enqueuer = Enqueuer(self.client, self.ns)
        self.app = Bridge(Config(broker=url, result_backend=url))
        self.ran: list[tuple[str, Any]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        app = self.app

        @app.task("send_email")
        def send_email(address: str, customer_id: int) -> None:
            self.ran.append(("send_email", (address, customer_id)))

        @app.task("boom")
        def boom() -> None:
            self.ran.append(("boom", None))
            raise RuntimeError("kaboom")

        @app.task("slow")
        def slow(ms: int = 50) -> None:
            with self._lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            time.sleep(ms / 1000)
            with self._lock:
                self.running -= 1
            self.ran.append(("slow", ms))

    def pool(self, jobs: dict[str, JobOptions], concurrency: int = 4) -> GocraftPool:
        return GocraftPool(redis.Redis.from_url(self.url), self.ns, jobs, concurrency)

    @contextmanager
    def serving(self, jobs: dict[str, JobOptions] | None = None, concurrency: int = 4
                ) -> Iterator[GocraftPool]:
        pool = self.pool(jobs or {"send_email": JobOptions()}, concurrency)

        def make(worker: Worker) -> GocraftHandler:
            from bridge.gocraft.registry import middleware_of

            return GocraftHandler(worker, pool, self.url, middleware_of(self.app))

        with worker_thread(self.app, concurrency, handlers=[make], machinery=False):
            yield pool

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def zmembers(self, key: str) -> list[GocraftJob]:
        return [GocraftJob.decode(m) for m in self.client.zrange(key, 0, -1)]


@pytest.fixture
def scene(redis_url: str) -> Iterator[Scene]:
    node = Scene(redis_url)
    try:
        yield node
    finally:
        node.client.close()


def test_python_enqueue_runs_typed_with_middleware_and_leaves_clean_locks(scene: Scene
                                                                           ) -> None:
    seen: list[str] = []

    @middleware(scene.app)
    def note(job: GocraftJob, following: Callable[[], Any]) -> Any:
        seen.append(job.id)
        return following()

    jobs = [scene.enqueuer.enqueue("send_email", {"address": "a@b.c", "customer_id": n,
                                                  "ignored": True}) for n in range(20)]
    assert scene.client.sismember(scene.keys.known_jobs, "send_email")
    with scene.serving() as pool:
        scene.wait("20 jobs", lambda: len(scene.ran) == 20)
        scene.wait("the completions", lambda: scene.client.llen(
            scene.keys.in_progress("send_email", pool.pool_id)) == 0
            and int(scene.client.get(scene.keys.lock("send_email")) or 0) == 0)
        beat = {k.decode(): v.decode() for k, v in
                scene.client.hgetall(scene.keys.heartbeat(pool.pool_id)).items()}
        assert beat["job_names"] == "send_email" and beat["concurrency"] == "4"
        assert len(beat["worker_ids"].split(",")) == 4 and int(beat["pid"]) > 0
        assert abs(int(beat["heartbeat_at"]) - now_epoch()) <= 10
        assert scene.client.sismember(scene.keys.worker_pools, pool.pool_id)
    assert sorted(arg for _, arg in scene.ran) == [("a@b.c", n) for n in range(20)]
    assert sorted(seen) == sorted(job.id for job in jobs)
    assert int(scene.client.hget(scene.keys.lock_info("send_email"), pool.pool_id) or 0) == 0
    # a clean stop leaves the namespace as a stopped Go pool does
    assert not scene.client.sismember(scene.keys.worker_pools, pool.pool_id)
    assert not scene.client.exists(scene.keys.heartbeat(pool.pool_id))


def test_failures_retry_with_backoff_then_dead_or_dropped(scene: Scene) -> None:
    scene.enqueuer.enqueue("boom")
    with scene.serving({"boom": JobOptions(max_fails=2)}):
        scene.wait("the retry entry", lambda: scene.client.zcard(scene.keys.retry) == 1)
        (retried,) = scene.zmembers(scene.keys.retry)
        assert (retried.fails, retried.err) == (1, "kaboom")
        (score,) = [s for _, s in scene.client.zrange(scene.keys.retry, 0, -1, withscores=True)]
        assert 16 <= score - retried.failed_at <= 74  # gocraft's back-off after one failure
        # due now: the requeuer moves it back, the second failure is the last attempt
        scene.client.zadd(scene.keys.retry, {scene.client.zrange(scene.keys.retry, 0, 0)[0]:
                                             now_epoch() - 1})
        scene.wait("the dead entry", lambda: scene.client.zcard(scene.keys.dead) == 1)
    (dead,) = scene.zmembers(scene.keys.dead)
    assert (dead.name, dead.id, dead.fails, dead.err) == ("boom", retried.id, 2, "kaboom")
    assert scene.client.zcard(scene.keys.retry) == 0 and len(scene.ran) == 2

    scene.enqueuer.enqueue("boom")
    with scene.serving({"boom": JobOptions(max_fails=1, skip_dead=True)}):
        scene.wait("the third run", lambda: len(scene.ran) == 3)
        scene.wait("the completion", lambda: int(scene.client.get(
            scene.keys.lock("boom")) or 0) == 0)
    assert scene.client.zcard(scene.keys.dead) == 1 and scene.client.zcard(scene.keys.retry) == 0


def test_scheduled_jobs_and_names_we_do_not_serve(scene: Scene) -> None:
    run_at, _ = scene.enqueuer.enqueue_in("send_email", 1, {"address": "s", "customer_id": 1})
    assert run_at >= now_epoch()
    other = GocraftJob.new("go_only", None)
    scene.client.zadd(scene.keys.scheduled, {other.encode(): now_epoch() - 5})
    with scene.serving():
        scene.wait("the scheduled job", lambda: ("send_email", ("s", 1)) in scene.ran)
        time.sleep(1.2)  # a requeuer pass after it
    # gocraft's requeuer would move a name it does not serve to dead; ours leaves it
    assert [job.id for job in scene.zmembers(scene.keys.scheduled)] == [other.id]
    assert scene.client.zcard(scene.keys.dead) == 0


def test_unique_jobs(scene: Scene) -> None:
    args = {"address": "u", "customer_id": 7}
    first = scene.enqueuer.enqueue_unique("send_email", args)
    assert first is not None and scene.enqueuer.enqueue_unique("send_email", args) is None
    key = first.unique_key
    assert scene.client.get(key) == b"1" and 86_000 < scene.client.ttl(key) <= 86_400
    by_key = scene.enqueuer.enqueue_unique_by_key("send_email", {"address": "old",
                                                                 "customer_id": 1}, {"k": 1})
    assert by_key is not None
    assert scene.enqueuer.enqueue_unique_by_key("send_email", {"address": "new",
                                                               "customer_id": 2}, {"k": 1}) \
        is None  # a duplicate by key: the queued job will run with the newer args
    with scene.serving():
        scene.wait("both jobs", lambda: len(scene.ran) == 2)
    assert sorted(arg for _, arg in scene.ran) == [("new", 2), ("u", 7)]
    assert not scene.client.exists(key)  # freed when the job started
    assert scene.enqueuer.enqueue_unique("send_email", args) is not None


def test_pause_and_max_concurrency_across_two_pools(scene: Scene) -> None:
    scene.client.set(scene.keys.paused("slow"), "0")  # any value pauses, "0" too
    for _ in range(12):
        scene.enqueuer.enqueue("slow", {"ms": 60})
    capped = {"slow": JobOptions(max_concurrency=2)}
    with scene.serving(capped, concurrency=4), scene.serving(capped, concurrency=4):
        time.sleep(0.5)
        assert scene.ran == [] and scene.client.llen(scene.keys.jobs("slow")) == 12
        scene.client.delete(scene.keys.paused("slow"))
        scene.wait("12 slow jobs", lambda: len(scene.ran) == 12)
    assert scene.most_at_once == 2  # 8 threads in two pools, the namespace-wide cap holds
    assert scene.client.get(scene.keys.max_concurrency("slow")) == b"2"
    assert int(scene.client.get(scene.keys.lock("slow")) or 0) == 0


def test_a_dead_pools_jobs_come_back_and_its_locks_go(scene: Scene) -> None:
    dead = "d" * 24
    job = GocraftJob.new("send_email", {"address": "orphan", "customer_id": 5})
    scene.client.lpush(scene.keys.in_progress("send_email", dead), job.encode())
    scene.client.sadd(scene.keys.worker_pools, dead, "e" * 24)  # e…: no heartbeat at all
    scene.client.hset(scene.keys.heartbeat(dead), mapping={
        "heartbeat_at": now_epoch() - 60, "job_names": "send_email"})
    scene.client.set(scene.keys.lock("send_email"), 1)
    scene.client.hset(scene.keys.lock_info("send_email"), mapping={dead: 1, "e" * 24: 2})
    scene.client.incrby(scene.keys.lock("send_email"), 2)
    pool = scene.pool({"send_email": JobOptions()})
    assert pool.reaper.dead_pools() == {dead: ["send_email"], "e" * 24: None}
    assert pool.reaper.reap() == 1
    assert scene.client.lrange(scene.keys.jobs("send_email"), 0, -1) == [job.encode()]
    assert scene.client.smembers(scene.keys.worker_pools) == set()
    assert not scene.client.exists(scene.keys.heartbeat(dead))
    assert int(scene.client.get(scene.keys.lock("send_email")) or 0) == 0
    assert scene.client.hgetall(scene.keys.lock_info("send_email")) == {}
    with scene.serving():
        scene.wait("the orphan", lambda: ("send_email", ("orphan", 5)) in scene.ran)


def test_bad_jobs_are_parked_and_strays_go_dead(scene: Scene) -> None:
    scene.client.lpush(scene.keys.jobs("send_email"), b"{not json")
    stray = GocraftJob.new("nobody_here", None)
    scene.client.lpush(scene.keys.jobs("send_email"), stray.encode())
    scene.enqueuer.enqueue("send_email", {"address": "after", "customer_id": 1})
    bad_type = scene.enqueuer.enqueue("send_email", {"address": "x", "customer_id": "seven"})
    with scene.serving({"send_email": JobOptions(max_fails=1)}) as pool:
        scene.wait("the good job", lambda: ("send_email", ("after", 1)) in scene.ran)
        scene.wait("two dead", lambda: scene.client.zcard(scene.keys.dead) == 2)
        scene.wait("the completions", lambda: scene.client.llen(
            scene.keys.in_progress("send_email", pool.pool_id)) == 0)
    dead = {job.id: job for job in scene.zmembers(scene.keys.dead)}
    assert dead[stray.id].err == "stray job: no handler"
    assert "seven" in dead[bad_type.id].err and "int" in dead[bad_type.id].err
    assert scene.client.lrange(scene.keys.prefix + "bridge:unreadable", 0, -1) == [b"{not json"]
    assert int(scene.client.get(scene.keys.lock("send_email")) or 0) == 0


def test_observations_while_a_job_runs(scene: Scene) -> None:
    scene.enqueuer.enqueue("slow", {"ms": 1500})
    with scene.serving({"slow": JobOptions()}, concurrency=1) as pool:
        key = scene.keys.observation(pool.worker_ids[0])
        scene.wait("the observation", lambda: scene.client.exists(key) == 1)
        seen = {k.decode(): v.decode() for k, v in scene.client.hgetall(key).items()}
        assert seen["job_name"] == "slow" and seen["args"] == '{"ms":1500}'
        assert 0 < scene.client.ttl(key) <= 86_400
        scene.wait("the job", lambda: len(scene.ran) == 1)
        scene.wait("the observation's end", lambda: scene.client.exists(key) == 0)


def test_checkin_shows_with_the_busy_worker_until_the_next_job(scene: Scene) -> None:
    from bridge.gocraft import checkin

    with pytest.raises(RuntimeError, match="gocraft/work job"):
        checkin("outside any job")
    gates = {"first": threading.Event(), "second": threading.Event()}

    @scene.app.task("progress")
    def progress(step: str) -> None:
        if step == "first":
            checkin("half way")
        gates[step].wait(20)
        scene.ran.append(("progress", step))

    scene.enqueuer.enqueue("progress", {"step": "first"})
    scene.enqueuer.enqueue("progress", {"step": "second"})
    with scene.serving({"progress": JobOptions()}, concurrency=1) as pool:
        key = scene.keys.observation(pool.worker_ids[0])

        def fields() -> dict[str, str]:
            return {k.decode(): v.decode() for k, v in scene.client.hgetall(key).items()}

        scene.wait("the check-in", lambda: fields().get("checkin") == "half way")
        seen = fields()
        assert seen["args"] == '{"step":"first"}'
        assert abs(int(seen["checkin_at"]) - time.time()) < 10
        gates["first"].set()
        scene.wait("the second job", lambda: fields().get("args") == '{"step":"second"}')
        assert "checkin" not in fields() and "checkin_at" not in fields()
        gates["second"].set()
        scene.wait("both jobs", lambda: len(scene.ran) == 2)
        scene.wait("the observation's end", lambda: scene.client.exists(key) == 0)


def test_a_pool_seen_late_is_reaped_as_soon_as_it_counts_as_dead(scene: Scene) -> None:
    late = "f" * 24
    job = GocraftJob.new("send_email", {"address": "late", "customer_id": 6})
    scene.client.lpush(scene.keys.in_progress("send_email", late), job.encode())
    scene.client.sadd(scene.keys.worker_pools, late)
    scene.client.hset(scene.keys.heartbeat(late), mapping={
        "heartbeat_at": now_epoch() - 7, "job_names": "send_email"})  # one beat missed
    reaper = scene.pool({"send_email": JobOptions()}).reaper
    reaper._next = 0.0  # the first reap is due
    assert reaper.maybe_reap() == 0  # not dead yet (10 s), only late
    assert reaper._next - time.monotonic() <= 5  # looked at again then, not a minute later
    scene.wait("the late pool's death", lambda: reaper.maybe_reap() == 1, timeout=10)
    assert scene.client.lrange(scene.keys.jobs("send_email"), 0, -1) == [job.encode()]
    assert late not in {m.decode() for m in scene.client.smembers(scene.keys.worker_pools)}
