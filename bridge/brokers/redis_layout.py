"""machinery's Redis layout plus our reliable-fetch bookkeeping: the broker's operations.

machinery's own keys, byte-compatible with Go producers and workers on the same Redis:

* ``<queue>``: a LIST of raw Signature JSON per routing key; producers RPUSH, consumers take
  from the head (Go: BLPOP).
* ``<delayed_tasks_key>`` (default ``delayed_tasks``): one ZSET of Signature JSON scored by the
  ETA in Unix nanoseconds, shared by every queue and worker.

Ours, all under ``bridge:`` (Go workers never read them). ``<tq>`` is the queue name wrapped in a
Cluster hash tag, ``{<queue>}``, unless it already carries one, so every key of a queue lives in
the queue's own slot:

* ``bridge:processing:<tq>:<worker>``: LIST of the messages a worker holds (fetched, not yet
  acked); a message is moved there atomically from the queue head (LMOVE / script).
* ``bridge:heartbeat:<tq>:<worker>``: a string with a TTL, refreshed while the worker lives.
* ``bridge:workers:<tq>``: SET of the worker ids that may hold messages of the queue.
* ``bridge:dead:<tq>``: LIST of dead-letter envelopes, JSON ``{"queue", "reason", "time",
  "body" | "body_b64" | "body_ref"}``. Undecodable delayed tasks go to
  ``bridge:dead:<tagged delayed key>``. A large parked body is kept aside in
  ``bridge:deadbody:<tq>:<n>`` (``n`` from ``bridge:deadseq:<tq>``); the dead list is capped
  (see :mod:`bridge.brokers.redis_dead`).
* ``bridge:wait:<tq>:<worker>``: what a blocked fetch moved (one message, unread: its reply
  is skipped), taken by the next script call; ``bridge:stage:<tq>:<worker>``: a one-item
  list where a script sizes a message before reading it (empty between calls).
* ``bridge:window:<tq>:<worker>:<slot>``: a batch taken whole without Lua reading it, held
  like the processing list until acked (:mod:`bridge.brokers.redis_window`; the relay).

Needs Redis >= 6.2 (BLMOVE) for consuming; publishing works with any version.

The Lua scripts are in :mod:`bridge.brokers.redis_scripts`, the key names in
:mod:`bridge.brokers.redis_keys`, the dead-letter envelope in :mod:`bridge.brokers.dead_letters`.
Every script touches only keys of one slot, except MOVE_DUE (the delayed ZSET and the target
queues) and a delayed requeue (processing list and ZSET); on Cluster those two fall back to a
pop-then-push from the client (see :class:`RedisLayout`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import redis.cluster

from bridge.brokers.dead_letters import envelope_parts, now_rfc3339, read_envelope
from bridge.brokers.redis_dead import DROPS, default_max_dead_letters, gate_bytes
from bridge.brokers.redis_keys import EPOCH_KEY, WINDOW_SLOTS, QueueKeys, routing_key_of
from bridge.brokers.redis_scripts import Scripts
from bridge.errors import clip
from bridge.redisconn import RedisClient
from bridge.redislane import Lane, run_script, run_script_later

log = logging.getLogger(__name__)

MOVE_BATCH = 500
"""Delayed tasks moved per script call (a call blocks Redis while it runs)."""
MOVE_ROUNDS = 8
"""Script calls per ``move_due``: at most MOVE_BATCH * MOVE_ROUNDS tasks per call."""
REPLAY_BATCH = 500

# ------------------------------------------------------------------------------ operations


class RedisLayout:
    """Every Redis operation of the broker, in machinery's layout plus our bookkeeping.

    Atomic on a single node, Sentinel, and (per slot) Cluster: fetch, ack, requeue to the
    queue, dead-letter, recovery, replay. On Cluster the delayed mover pops due tasks in one
    script and pushes them from the client (a crash in between loses that batch), and a delayed
    requeue adds to the ZSET before removing from the processing list (a crash in between
    duplicates the message).
    """

    def __init__(self, client: RedisClient, *, default_queue: str, delayed_key: str,
                 worker_id: str, heartbeat_ttl: float, delayed_poll: float,
                 max_block: float | None, max_message_bytes: int = 16 * 2**20,
                 max_dead_letters: int | None = None) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes
        self.gate = gate_bytes(max_message_bytes)  # 0 when the server refuses SORT/MEMORY
        self.max_dead_letters = (default_max_dead_letters() if max_dead_letters is None
                                 else max_dead_letters)
        self.scripts = Scripts(client)
        self.lane = Lane(client)
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        self.default_queue = default_queue
        self.delayed_key = delayed_key
        self.delayed_dead = QueueKeys.of(delayed_key).dead
        self.worker_id = worker_id
        self.heartbeat_ttl = heartbeat_ttl
        self._beaten = False  # a heartbeat went out: the epoch key exists since
        self.delayed_poll = delayed_poll
        self.max_block = max_block
        self._lock = threading.Lock()
        self._consumed: dict[str, QueueKeys] = {}
        self._processing: dict[str, str] = {}
        self._next = {"heartbeat": 0.0, "recover": 0.0, "move": 0.0}
        self.window_order: Callable[[str], list[str]] | None = None
        """This worker's windows of a queue, oldest first (the order they go back in on
        ``release``); None: slot order (a dead worker's windows go back in slot order)."""

    # -------------------------------------------------------------- producing

    def push(self, lists: Mapping[str, Sequence[bytes]],
             delayed: Sequence[tuple[int, bytes]] = ()) -> None:
        """RPUSH bodies to their lists and ZADD delayed ones, in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for queue, bodies in lists.items():
            for start in range(0, len(bodies), 10_000):
                pipe.rpush(queue, *bodies[start:start + 10_000])
        if delayed:
            pipe.zadd(self.delayed_key, {body: score for score, body in delayed})
        pipe.execute()

    # -------------------------------------------------------------- consuming

    def consumes(self, queue: str) -> bool:
        """Whether this worker is registered on ``queue`` (what it holds is recovered)."""
        return queue in self._consumed

    def processing_key(self, queue: str) -> str:
        """This worker's processing list for ``queue``."""
        key = self._processing.get(queue)
        if key is None:
            key = self._processing[queue] = QueueKeys.of(queue).processing(self.worker_id)
        return key

    def take(self, queue: str, count: int, timeout: float,
             acks: Sequence[bytes] = ()) -> list[bytes]:
        """Move up to ``count`` messages to this worker's processing list, waiting for the first.

        ``acks`` (bodies held from this queue) are forgotten first, in the same call. One
        round trip when messages are waiting; else a blocked BLMOVE into this worker's wait
        list, its reply skipped, and the script in the same round trip (no message ever
        reaches this process before the script has sized it). Oversized messages are
        parked by the script, unread (see :mod:`bridge.brokers.redis_dead`).
        """
        self.consume(queue)
        processing = self.processing_key(queue)
        if count < 1:
            if acks:
                self.ack((processing, body) for body in acks)
            return []
        items = self._take_now(queue, count, acks)
        if items or timeout <= 0:
            return items
        return self._wait(queue, count, timeout)

    def take_later(self, queue: str, count: int, acks: Sequence[bytes] = ()
                   ) -> Callable[[], list[bytes]] | None:
        """:meth:`take` without waiting, sent now and read by the call returned; None when
        the lane is busy or ``queue`` is not consumed yet (nothing sent)."""
        if count < 1 or queue not in self._consumed:
            return None
        keys, args = self._take_args(queue, count, acks)
        later = run_script_later(self.lane, self.scripts.take, keys, args)
        if later is None:
            return None

        def read() -> list[bytes]:
            try:
                return self._taken(queue, later())
            except redis.ResponseError:  # an ACL refusing SORT/MEMORY: _take_now, ungated
                return self._take_now(queue, count, acks)
        return read

    def _take_args(self, queue: str, count: int, acks: Sequence[bytes]
                   ) -> tuple[list[str], list[Any]]:
        keys = QueueKeys.of(queue)
        return ([queue, self.processing_key(queue), keys.dead, keys.stage(self.worker_id),
                 keys.wait(self.worker_id), keys.dead_seq],
                [count, self.max_message_bytes, self.gate, now_rfc3339(),
                 self.max_dead_letters, keys.dead_body_prefix, *acks])

    def _take_now(self, queue: str, count: int, acks: Sequence[bytes] = ()) -> list[bytes]:
        keys, args = self._take_args(queue, count, acks)
        try:
            reply = run_script(self.lane, self.scripts.take, keys, args)
        except redis.ResponseError as exc:
            if not self._ungated(exc):
                raise
            keys, args = self._take_args(queue, count, acks)
            reply = run_script(self.lane, self.scripts.take, keys, args)
        return self._taken(queue, reply)

    def _ungated(self, exc: redis.ResponseError) -> bool:
        """A server that refuses SORT or MEMORY to scripts (an ACL): size messages after
        reading them instead (said once). True when the call may be made again."""
        text = str(exc).upper()
        if self.gate and "NOPERM" in text and ("SORT" in text or "MEMORY" in text):
            log.warning("Redis refuses SORT or MEMORY to our scripts (%s): messages are read "
                        "before their size is checked", exc)
            self.gate = 0
            return True
        return False

    def _taken(self, queue: str, reply: Any) -> list[bytes]:
        items, reasons, dropped = reply
        for reason in reasons:
            log.warning("parked a message of %s: %s", queue,
                        reason.decode("utf-8", "replace"))
        DROPS.dropped(QueueKeys.of(queue).dead, int(dropped), self.max_dead_letters)
        return cast("list[bytes]", items)

    def _wait(self, queue: str, count: int, timeout: float) -> list[bytes]:
        """Block up to ``timeout`` for a message, in slices shorter than the socket
        timeout: BLMOVE into the wait list (reply skipped), then the take script."""
        deadline = time.monotonic() + timeout
        wait_key = QueueKeys.of(queue).wait(self.worker_id)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            wait = max(min(left, self.max_block) if self.max_block else left, 0.01)
            keys, args = self._take_args(queue, count, ())
            replies = self.lane.run_quiet([
                ("BLMOVE", queue, wait_key, "LEFT", "RIGHT", wait),
                ("EVALSHA", self.scripts.take.sha, len(keys), *keys, *args)], quiet={0})
            if replies is None or isinstance(replies[0], redis.ResponseError):
                if replies is None:  # Cluster: the moved message comes back whole here
                    self.client.blmove(queue, wait_key, wait,  # type: ignore[arg-type]
                                       "LEFT", "RIGHT")
                items = self._take_now(queue, count)  # loads the script, or raises
            else:
                items = self._taken(queue, replies[0])
            if items:
                return items

    def ack(self, held: Iterable[tuple[str, bytes]]) -> None:
        """Forget messages: each ``(processing_key, body)`` (ACK: LUA_FORGET); one call per list."""
        by_list: dict[str, list[bytes]] = {}
        for processing, body in held:
            by_list.setdefault(processing, []).append(body)
        if len(by_list) == 1 and not self.cluster:
            ((processing, bodies),) = by_list.items()
            run_script(self.lane, self.scripts.ack, (processing,), bodies)
            return
        pipe = self.client.pipeline(transaction=False)
        for processing, bodies in by_list.items():
            for body in bodies:
                pipe.lrem(processing, 1, body)  # type: ignore[arg-type]
        pipe.execute()

    def put_back(self, processing: str, queue: str, body: bytes, *, head: bool) -> bool:
        """Atomically from the processing list back to the queue (head or tail)."""
        how = "lpush" if head else "rpush"
        return self._move_out(processing, queue, body, how, body)

    def delay(self, processing: str, body: bytes, eta_ns: int) -> bool:
        """Atomically from the processing list into the delayed ZSET at ``eta_ns``."""
        if self.cluster:  # different slots: add first, so a crash duplicates, never loses
            self.client.zadd(self.delayed_key, {body: eta_ns})
            return bool(self.client.lrem(processing, 1, body))  # type: ignore[arg-type]
        return self._move_out(processing, self.delayed_key, body, "zadd", body, eta_ns)

    def park(self, processing: str, queue: str, body: bytes, reason: str, *,
             held: bool = True) -> bool:
        """Atomically from the processing list (unless not ``held``) to the queue's
        dead-letter list, whose cap may drop its oldest entries."""
        keys = QueueKeys.of(queue)
        dropped = int(self.scripts.park(
            keys=[processing, keys.dead, keys.dead_seq],
            args=[body, clip(reason), now_rfc3339(), self.max_dead_letters,
                  keys.dead_body_prefix, queue, "1" if held else "0"]))
        if dropped < 0:
            log.debug("message no longer held in %s (acked or recovered)", processing)
            return False
        DROPS.dropped(keys.dead, dropped, self.max_dead_letters)
        return True

    def _move_out(self, processing: str, dest: str, body: bytes, how: str, value: bytes,
                  score: int = 0) -> bool:
        done = self.scripts.move_out(keys=[processing, dest], args=[body, how, value, score])
        if not done:
            log.debug("message no longer held in %s (acked or recovered)", processing)
        return bool(done)

    # -------------------------------------------------------------- workers

    def consume(self, queue: str) -> QueueKeys:
        """Register this worker on ``queue`` (first time: recover leftovers and dead workers)."""
        keys = self._consumed.get(queue)
        if keys is not None:
            return keys
        with self._lock:
            keys = self._consumed.get(queue)
            if keys is None:
                keys = QueueKeys.of(queue)
                self._recover_worker(keys, self.worker_id, force=True)  # a previous run's
                self._beat([keys])
                self._consumed[queue] = keys
        self.recover(queue)
        return keys

    def heartbeat(self) -> None:
        """Refresh this worker's heartbeat (and registry entry) on every consumed queue."""
        self._beat(list(self._consumed.values()))

    def _beat(self, queues: Sequence[QueueKeys]) -> None:
        if not queues:
            return
        ttl_ms = max(int(self.heartbeat_ttl * 1000), 1)
        pipe = self.client.pipeline(transaction=False)
        for keys in queues:
            pipe.sadd(keys.workers, self.worker_id)
            pipe.set(keys.heartbeat(self.worker_id), str(int(time.time())), px=ttl_ms)
        pipe.set(EPOCH_KEY, "1", nx=True)  # set once, never expires: gone = data lost
        recreated = pipe.execute()[-1]
        if recreated and self._beaten:
            log.warning("Redis came back empty (its data was lost, or it was flushed): the "
                        "messages it held are gone; this worker registers again and goes on")
        self._beaten = True

    def recover(self, queue: str) -> int:
        """Return the messages of workers whose heartbeat expired to the head of ``queue``."""
        keys = QueueKeys.of(queue)
        members = cast("set[bytes]", self.client.smembers(keys.workers))
        others = [m.decode("utf-8", "replace") for m in members]
        others = [w for w in others if w != self.worker_id]
        if not others:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for worker in others:
            pipe.exists(keys.heartbeat(worker))
        alive = pipe.execute()
        moved = 0
        for worker, is_alive in zip(others, alive, strict=True):
            if not is_alive:
                moved += max(self._recover_worker(keys, worker, force=False), 0)
        if moved:
            log.warning("recovered %d message(s) of dead workers to %s", moved, queue)
        return moved

    def _recover_worker(self, keys: QueueKeys, worker: str, *, force: bool) -> int:
        windows = (self.window_order(keys.queue) if worker == self.worker_id
                   and self.window_order is not None else keys.windows(worker))
        return cast(int, self.scripts.recover(
            keys=[keys.processing(worker), keys.heartbeat(worker), keys.queue, keys.workers,
                  keys.wait(worker), *windows],
            args=[worker, "1" if force else "0"]))

    def release(self) -> int:
        """Give back everything this worker holds (to the queue heads) and leave the registries."""
        with self._lock:
            consumed, self._consumed = list(self._consumed.values()), {}
        return sum(self._recover_worker(keys, self.worker_id, force=True) for keys in consumed)

    def processing(self, queue: str) -> dict[str, int]:
        """Messages held per registered worker of ``queue``."""
        return {worker: held for worker, (held, _) in self.worker_health(queue).items()}

    def worker_health(self, queue: str) -> dict[str, tuple[int, bool]]:
        """Per registered worker of ``queue``: messages held, and whether its heartbeat is
        alive (a gone worker's messages go back to the queue at the next recovery)."""
        keys = QueueKeys.of(queue)
        workers = sorted(m.decode("utf-8", "replace") for m in
                         cast("set[bytes]", self.client.smembers(keys.workers)))
        pipe = self.client.pipeline(transaction=False)
        for worker in workers:
            pipe.exists(keys.heartbeat(worker))
            for held in (keys.processing(worker), *keys.windows(worker)):
                pipe.llen(held)
        found = cast("list[int]", pipe.execute())
        step = 2 + WINDOW_SLOTS
        return {worker: (sum(found[step * n + 1:step * (n + 1)]), bool(found[step * n]))
                for n, worker in enumerate(workers)}

    # -------------------------------------------------------------- delayed tasks

    def move_due(self, now_ns: int | None = None) -> int:
        """Move due delayed tasks to their queues (bounded); returns how many were moved."""
        now = time.time_ns() if now_ns is None else now_ns
        total = 0
        for _ in range(MOVE_ROUNDS):
            moved, seen = self._move_cluster(now) if self.cluster else self._move_script(now)
            total += moved
            if seen < MOVE_BATCH:
                break
        return total

    def _move_script(self, now: int) -> tuple[int, int]:
        keys = QueueKeys.of(self.delayed_key)
        moved, dead, dropped = cast("list[int]", self.scripts.move_due(
            keys=[self.delayed_key, self.delayed_dead, keys.dead_seq],
            args=[now, MOVE_BATCH, self.default_queue, now_rfc3339(), keys.dead_body_prefix,
                  self.max_dead_letters, self.max_message_bytes]))
        if dead:
            log.warning("parked %d undecodable delayed task(s) in %s", dead, self.delayed_dead)
        DROPS.dropped(self.delayed_dead, dropped, self.max_dead_letters)
        return moved, moved + dead

    def _move_cluster(self, now: int) -> tuple[int, int]:
        due = cast("list[bytes]", self.scripts.pop_due(keys=[self.delayed_key],
                                                       args=[now, MOVE_BATCH]))
        lists: dict[str, list[bytes]] = {}
        dead: list[bytes] = []
        for member in due:
            queue = routing_key_of(member, self.default_queue)
            if queue is None:
                dead.append(member)
            else:
                lists.setdefault(queue, []).append(member)
        self.push(lists)
        for member in dead:
            self.park(self.delayed_dead, self.delayed_key, member, "undecodable delayed task",
                      held=False)
        return len(due) - len(dead), len(due)

    # -------------------------------------------------------------- upkeep

    def maintain(self) -> None:
        """Heartbeat, delayed mover and recovery, each when due (call as often as you like)."""
        now = time.monotonic()
        if self._due("heartbeat", now, self.heartbeat_ttl / 3):
            self.heartbeat()
        if self._due("move", now, self.delayed_poll):
            self.move_due()
        if self._due("recover", now, min(max(self.heartbeat_ttl / 4, 0.2), 2.0)):
            for queue in list(self._consumed):
                self.recover(queue)

    def _due(self, what: str, now: float, period: float) -> bool:
        if now < self._next[what]:
            return False
        self._next[what] = now + period
        return True

    # -------------------------------------------------------------- inspection, dead letters

    def dead_letters(self, queue: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        """Dead-letter entries of ``queue`` (LRANGE semantics for start/stop)."""
        raw = cast("list[bytes]", self.client.lrange(QueueKeys.of(queue).dead, start, stop))
        return [read_envelope(entry) for entry in raw]

    def replay_dead(self, queue: str, count: int = 0) -> int:
        """Move up to ``count`` (0: all) dead letters back to ``queue``'s tail, raw bytes.

        The delayed key's dead list goes back into the ZSET, due now.
        """
        return self._take_dead(queue, count, "zadd" if queue == self.delayed_key else "rpush")

    def delete_dead(self, queue: str, count: int = 0) -> int:
        """Delete the oldest ``count`` (0: all) dead letters of ``queue`` (and kept bodies)."""
        return self._take_dead(queue, count, "drop")

    def _take_dead(self, queue: str, count: int, how: str) -> int:
        dead = QueueKeys.of(queue).dead
        total = 0
        if count <= 0:  # what is parked now: a live worker may park a replayed one again
            count = int(self.client.llen(dead))
        while total < count:
            size = min(REPLAY_BATCH, count - total)
            entries = cast("list[bytes]", self.client.lrange(dead, 0, size - 1))
            if not entries:
                break
            args: list[bytes | str | int] = [how, time.time_ns()]
            for entry in entries:
                args += [entry, *envelope_parts(entry)]
            moved = cast(int, self.scripts.replay(keys=[dead, queue], args=args))
            total += moved
            if moved == 0:
                break
        return total

    def dead_count(self, queue: str) -> int:
        """Dead letters parked for ``queue``."""
        return int(self.client.llen(QueueKeys.of(queue).dead))

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        return self.client.llen(queue)

    def delayed_count(self) -> int:
        """Tasks waiting in the delayed ZSET."""
        return self.client.zcard(self.delayed_key)

    def peek(self, queue: str, count: int) -> list[bytes]:
        """The first ``count`` waiting messages of ``queue``, left in place."""
        if count < 1:
            return []
        return cast("list[bytes]", self.client.lrange(queue, 0, count - 1))
