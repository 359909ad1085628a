"""A hot path's own Redis connection: several commands in one round trip, with less client
CPU than redis-py's pool and pipeline machinery (used by the Redis broker and backend)."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple, cast

import redis
from hiredis import pack_command as _hiredis_pack  # redis[hiredis] is a dependency
from redis.commands.core import Script

from bridge.redisconn import RedisClient
from bridge.resp import pack_large

SPIN_ENV = "BRIDGE_REDIS_SPIN_US"
"""The environment variable that sets the reply spin, in µs (0: off)."""
SPIN_NS = int(os.environ.get(SPIN_ENV, "100")) * 1000
"""How long a lane's round trip polls for its reply before its read blocks (0: never)."""


class Packed(NamedTuple):
    """Commands already in RESP (``replies`` of them), sent by :meth:`Lane.begin` as they are:
    a caller that writes large values builds their bytes once instead of packing them."""

    data: bytes
    replies: int


class Lane:
    """One pooled connection kept for a hot path, driven without redis-py's per-command
    machinery (pool checkout and its readiness poll, metrics, locks): ~50 µs less client CPU
    per round trip.

    The bytes on the wire are the ones a client or a pipeline sends for the same commands,
    the retry policy is the connection's own (``redisconn``'s), and replies are read as a
    non-transactional pipeline reads them. One caller at a time: :meth:`run` returns None
    when the lane is busy (another thread) or unavailable (Cluster), and the caller uses
    its client as usual.
    """

    def __init__(self, client: RedisClient) -> None:
        self._pool: redis.ConnectionPool | None = (
            client.connection_pool if isinstance(client, redis.Redis) else None)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._skips: bool | None = None  # does the server take CLIENT REPLY SKIP?
        self._poller: Any = None  # a poll object for the connection's socket
        self._polled: Any = None  # the socket it polls
        self._spins_to_skip = 0  # round trips without a spin, after one that ran out
        self._spins_skipped = 0

    def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """Every command's reply (a ResponseError in place of a failed command's), in one
        round trip; None when the caller must use its client instead."""
        return self._on_lane(lambda conn: self._round_trip(conn, commands))

    def run_counted(self, commands: Sequence[Sequence[Any]]) -> tuple[list[Any] | None, int]:
        """:meth:`run`, and how many times the commands were sent (more than once: a try
        whose reply was lost, so they may have run twice)."""
        sent = 0

        def trip(conn: Any) -> list[Any]:
            nonlocal sent
            sent += 1
            return self._round_trip(conn, commands)

        return self._on_lane(trip), sent

    def begin(self, commands: Iterable[Sequence[Any]]) -> Pending | None:
        """Send ``commands`` now (each as soon as it is made) and read their replies later
        (:meth:`Pending.read`), so the server runs them while the caller works; the lane
        stays busy until then. The first send has the connection's retry policy; a lost
        reply is not sent again. None when the caller must use its client instead (then
        ``commands`` is not consumed)."""
        conn = self._acquire()
        if conn is None:
            return None
        count = 0
        try:
            for command in commands:
                packed = [command.data] if isinstance(command, Packed) else pack(conn, [command])
                if count:
                    conn.send_packed_command(packed)
                else:  # a stale pooled connection reconnects here
                    conn.retry.call_with_retry(partial(conn.send_packed_command, packed),
                                               lambda _error: conn.disconnect())
                count += command.replies if isinstance(command, Packed) else 1
        except BaseException:
            if count:  # replies nobody will read: the connection is out of step
                conn.disconnect()
            self._lock.release()
            raise
        return Pending(self, conn, count)

    def _on_lane(self, trip: Callable[[Any], list[Any]]) -> list[Any] | None:
        """``trip(connection)`` on the lane's connection, with its retry policy; None when
        the lane is busy (another thread) or unavailable (Cluster)."""
        conn = self._acquire()
        if conn is None:
            return None
        try:
            return cast("list[Any]", conn.retry.call_with_retry(
                lambda: trip(conn), lambda _error: conn.disconnect()))
        finally:
            self._lock.release()

    def _acquire(self) -> Any:
        """The lane's connection, locked for the caller (who releases ``_lock``); None when
        the lane is busy or unavailable."""
        if self._pool is None or not self._lock.acquire(blocking=False):
            return None
        if self._conn is None:
            try:
                self._conn = self._pool.get_connection()
            except BaseException:
                self._lock.release()
                raise
        elif self._readable_now(self._conn):  # the server closed it (a restart) or it is out
            self._conn.disconnect()  # of step: a write could half-succeed, so reconnect now
        return self._conn

    def _readable_now(self, conn: Any) -> bool:
        """Whether the idle connection's socket has something to read before anything was
        sent: the server's end of file, after a restart or an idle timeout. A first write to
        such a socket succeeds and the next one breaks, half-way through a batch."""
        sock = conn._sock
        return sock is not None and bool(self._poller_of(sock).poll(0))

    def _poller_of(self, sock: Any) -> Any:
        """A poll object watching ``sock`` for input (made again when the socket changes)."""
        if self._polled is not sock:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            self._polled = sock
        return self._poller

    def _round_trip(self, conn: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        conn.send_packed_command(pack(conn, commands))
        return self._replies(conn, len(commands))

    def _replies(self, conn: Any, count: int) -> list[Any]:
        """``count`` replies, a ResponseError in place of a failed command's."""
        self._spin_for_reply(conn)
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def _spin_for_reply(self, conn: Any) -> None:
        """Wait up to ``SPIN_NS`` for the reply by polling the socket (the thread stays awake)
        before the read blocks: a sleeping thread's wake-up costs this VM ~40 µs a round
        trip, longer than Redis takes to answer. Go's netpoller spins the same way.

        Adaptive, like a spinning mutex: a spin that ran out (a busy server, a blocking
        command, an idle queue) turns spinning off for the next 1, 2, 4 ... 64 round trips;
        a reply caught spinning turns it back on. So a loaded worker does not burn a core
        polling, and an idle one sleeps in its blocking reads."""
        sock = conn._sock
        if sock is None or SPIN_NS <= 0:
            return
        if self._spins_skipped < self._spins_to_skip:
            self._spins_skipped += 1
            return
        poller = self._poller_of(sock)
        deadline = time.perf_counter_ns() + SPIN_NS
        while not poller.poll(0):
            if time.perf_counter_ns() >= deadline:  # ran out: skip more spins before the next
                self._spins_to_skip = min(2 * self._spins_to_skip + 1, 64)
                self._spins_skipped = 0
                return
        self._spins_to_skip = self._spins_skipped = 0

    def run_quiet(self, commands: Sequence[Sequence[Any]], quiet: Collection[int]
                  ) -> list[Any] | None:
        """Like :meth:`run`, but the replies of the commands at the indexes ``quiet`` are
        never sent back (``CLIENT REPLY SKIP`` before each: a blocking move's reply is the
        message it moved, which may be huge); the other replies in order. Where the server
        refuses ``CLIENT REPLY`` (a proxy, an ACL) they are read and dropped instead. None
        when the caller must use its client instead."""
        return self._on_lane(lambda conn: self._quiet_trip(conn, commands, quiet))

    def _quiet_trip(self, conn: Any, commands: Sequence[Sequence[Any]], quiet: Collection[int]
                    ) -> list[Any]:
        if self._skips is None:
            self._skips = _skips_replies(conn)
        packed: list[Sequence[Any]] = []
        for index, command in enumerate(commands):
            if index in quiet and self._skips:
                packed.append(("CLIENT", "REPLY", "SKIP"))
            packed.append(command)
        conn.send_packed_command(pack(conn, packed))
        replies: list[Any] = []
        for index in range(len(commands)):
            if index in quiet and self._skips:
                continue
            try:
                reply = conn.read_response()
            except redis.ResponseError as exc:
                reply = exc
            if index not in quiet:
                replies.append(reply)
        return replies

    def close(self) -> None:
        """Give the connection back to the pool."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pool is not None:
                self._pool.release(conn)


class Pending:
    """The replies of commands a lane sent (:meth:`Lane.begin`), read once."""

    def __init__(self, lane: Lane, conn: Any, count: int) -> None:
        self._lane = lane
        self._conn: Any = conn
        self._count = count

    def read(self) -> list[Any]:
        """Every command's reply (a ResponseError in place of a failed command's); frees the
        lane. A connection error drops the connection (what the commands did stays done)."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("these replies were read already")
        try:
            return self._lane._replies(conn, self._count)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._lane._lock.release()


_PLAIN_ARGS = frozenset({bytes, str, int, float})
_LARGE = 64
"""Commands with more arguments than this are written by :func:`bridge.resp.pack_large`
(a batch script's thousands of arguments in about a third of hiredis's time)."""


def pack(conn: Any, commands: Sequence[Sequence[Any]]) -> Any:
    """The commands' RESP bytes: what ``conn.pack_commands`` sends, made by hiredis (a large
    command by :func:`bridge.resp.pack_large`) when redis-py's encoder would only hand each
    argument on to it (UTF-8, strict; plain bytes, str, int and float arguments):
    redis-py's per-argument encoding costs about 1 µs an argument, and a batch's script
    call has four or five per task. Several commands go as one buffer: redis-py sends each
    item of the list with a ``sendall`` of its own, a system call of ~16 µs on a VM."""
    encoder = conn.encoder
    if encoder.encoding != "utf-8" or encoder.encoding_errors != "strict":
        return conn.pack_commands(commands)
    packed = []
    for command in commands:
        name = command[0]
        if (type(name) is not str or " " in name
                or not set(map(type, command)) <= _PLAIN_ARGS):
            return conn.pack_commands(commands)  # redis-py's own checks and errors
        try:
            packed.append(pack_large(command) if len(command) > _LARGE
                          else _hiredis_pack(tuple(command)))
        except UnicodeEncodeError:  # a lone surrogate: redis-py's own error
            return conn.pack_commands(commands)
    return [b"".join(packed)] if len(packed) > 1 else packed


def _skips_replies(conn: Any) -> bool:
    """Whether the server honours ``CLIENT REPLY SKIP`` on this connection (asked once)."""
    conn.send_packed_command(conn.pack_commands(
        [("CLIENT", "REPLY", "SKIP"), ("ECHO", "skipped"), ("ECHO", "read")]))
    try:
        conn.read_response()  # "read" when skipped, else CLIENT's error and both echoes
    except redis.ResponseError:
        conn.read_response()
        conn.read_response()
        return False
    return True


def mget(lane: Lane, client: Any, keys: Sequence[Any]) -> list[bytes | None]:
    """``MGET keys`` through ``lane`` when it is free (packed by ``pack``: redis-py's
    encoding of a thousand keys costs ~1 µs each), else the client's way."""
    if not keys:
        return []
    replies = lane.run([("MGET", *keys)])
    if replies is None:  # another thread has the lane, or a Cluster
        return cast("list[bytes | None]", client.mget(keys))
    if isinstance(replies[0], Exception):
        raise replies[0]
    return cast("list[bytes | None]", replies[0])


def run_script(lane: Lane, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script(keys, args)``, through ``lane`` when it is free; a script Redis does not know
    yet (NOSCRIPT: nothing ran) goes the client's way, which loads it."""
    replies = lane.run([("EVALSHA", script.sha, len(keys), *keys, *args)])
    if replies is not None:
        reply = replies[0]
        if not isinstance(reply, redis.ResponseError):
            return reply
        if not isinstance(reply, redis.exceptions.NoScriptError):
            raise reply
    return script(keys=keys, args=args)


def run_script_later(lane: Lane, script: Script, keys: Sequence[Any], args: Sequence[Any]
                     ) -> Callable[[], Any] | None:
    """:func:`run_script` sent now through ``lane`` and read by the call returned (which
    raises a failed script's error); None when the lane is busy (nothing sent)."""
    pending = lane.begin([("EVALSHA", script.sha, len(keys), *keys, *args)])
    if pending is None:
        return None

    def read() -> Any:
        (reply,) = pending.read()
        if isinstance(reply, redis.exceptions.NoScriptError):  # nothing ran: the client's
            return script(keys=keys, args=args)  # way loads it
        if isinstance(reply, Exception):
            raise reply
        return reply
    return read
