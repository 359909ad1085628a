"""A backlog's take from kombu's Redis layout with the messages kept out of Lua.

The take script (``celery_redis_layout.TAKE``) reads every message into Lua, finds its tag
there and writes kombu's ``unacked`` record from Lua: each 1 KB message is copied into Lua
and out of it three times, most of the Redis time a relayed message costs (16.5 of its
~25 µs; ``python -m bench.relay_levers``). Here a take is three steps instead:

1. ``WINDOW`` (a script that reads no message): the acks; then, when this worker's staging
   list is empty, the next window of up to ``count`` messages of the first non-empty list
   is copied unread into the staging list (``SORT ... STORE``, in the list's order), sized
   there (``MEMORY USAGE``, as the take script's gate sizes a window) and trimmed off the
   list; the worker's lease is renewed. A plain ``LRANGE`` of the staging list follows in
   the same round trip. While they are staged, a crash leaves them to ``recover_staged``
   (or this worker's ``close``), as a blocked wait's staged message: the next bridge
   consumer of the queue gives them back once the lease ends; kombu's own
   ``restore_visible`` does not know the staging list.
2. The client finds each message's tag, exchange and routing key where kombu writes them
   (the take script's ``quick_fields``) and asks which tags are unacked already (``HMGET``).
3. One ``MULTI``: kombu's records (``HSET``) and index entries (``ZADD NX``), the tags of
   this take (``taken``), and the staging list trimmed of what was recorded. It is sent
   with the next take (the same connection, so it runs first) or before any other call of
   the broker: the batch in hand is relayed meanwhile.

The longest run of messages the client can record exactly as the take script would (same
bytes: plain ASCII tag, exchange and routing key, within ``max_message_bytes``, a tag seen
once) is taken this way; whatever follows stays staged, and the next take, finding the
staging list not empty, is the take script, which parks or records it as it always did.
The records, index and ``taken`` values are the take script's bytes (tests/integration/
test_celery_redis_window.py holds the two to the same keys).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis

from bridge.brokers.celery_redis_layout import CeleryKeys
from bridge.brokers.redis_dead import READ_BUDGET, SHORT_LIST
from bridge.redislane import Lane, Packed

_hiredis_pack = hiredis.pack_command

__all__ = ["WINDOW", "Taken", "WindowTake", "end_fields"]

WINDOW = f"""
-- KEYS: unacked, unacked_index, staging list, lease, then the queue's lists in consumption
-- order. ARGV: count, lease ms, then delivery tags to ack first. Returns how many messages
-- were staged: 0 none waiting, -1 the staging list is not empty, -2 the window is too large
-- to read at once (the take script sizes them one by one).
local count, lease_ms = tonumber(ARGV[1]), ARGV[2]
for i = 3, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, last))
  redis.call('ZREM', KEYS[2], unpack(ARGV, i, last))
end
local staging = KEYS[3]
if redis.call('EXISTS', staging) == 1 then return -1 end
local function held(key)
  return tonumber(redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) or 0
end
for k = 5, #KEYS do
  local list = KEYS[k]
  local len = redis.call('LLEN', list)
  if len > 0 then
    local n = math.min(count, len)
    if len <= {SHORT_LIST} and held(list) > {READ_BUDGET} then return -2 end
    redis.call('SORT', list, 'BY', 'nosort', 'LIMIT', len - n, n, 'STORE', staging)
    if held(staging) > {READ_BUDGET} then
      redis.call('DEL', staging)
      return -2
    end
    redis.call('LTRIM', list, 0, -n - 1)
    redis.call('SET', KEYS[4], '1', 'PX', lease_ms)
    return n
  end
end
return 0
"""

_FIELDS_AT = b'"delivery_info": {"exchange": "'
_QUICK_WINDOW = 512
_HEAD = (b"", b"delivery_info", b": {", b"exchange", b": ")
_ROUTING = (b", ", b"routing_key", b": ")
_ENCODING = (b"body_encoding", b": ")
_TAG = (b", ", b"delivery_tag", b": ")
_PLAIN = bytes(range(0x20, 0x7F)).translate(None, b'/"\\')
"""Printable ASCII but ``/``, ``"`` and ``\\``: what Lua's cjson writes between quotes as it
is (the take script's patterns exclude the last two)."""

Taken = list[tuple[bytes, bytes]] | None
"""The (message, tag) pairs a take recorded; None: the take script must take now."""


def end_fields(item: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The tag, exchange and routing key kombu writes at an envelope's end where the take
    script's ``quick_fields`` reads them (from the first ``"delivery_info": {"exchange": "``
    of the last 512 bytes to the end: ``"delivery_info": {"exchange": "<ex>",
    "routing_key": "<rk>"}, "priority": <digits>, "body_encoding": "<alnum>",
    "delivery_tag": "<tag>"}}``, no quote or backslash in a value) and cjson writes them as
    they are (printable ASCII but ``/``); else None."""
    at = item.find(_FIELDS_AT, max(len(item) - _QUICK_WINDOW - 1, 0))  # Lua's 1-based from
    if at < 0:
        return None
    tail = item[at:]
    parts = tail.split(b'"')
    if (len(parts) != 21 or tuple(parts[:5]) != _HEAD
            or tuple(parts[6:9]) != _ROUTING or parts[10] != b"}, "
            or parts[11] != b"priority" or tuple(parts[13:15]) != _ENCODING
            or tuple(parts[16:19]) != _TAG or parts[20] != b"}}"):
        return None
    priority, encoding = parts[12], parts[15]
    exchange, routing_key, tag = parts[5], parts[9], parts[19]
    if (not (priority[:2] == b": " and priority[-2:] == b", " and priority[2:-2].isdigit())
            or not (encoding.isalnum() and encoding.isascii()) or not tag
            or (exchange + routing_key + tag).translate(None, _PLAIN)):
        return None
    return tag, exchange, routing_key


class _EndReader:
    """:func:`end_fields` for many envelopes of a few producers, the same answers: the bytes
    from ``"delivery_info"`` to a tag are read in full once, then looked up whole."""

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[bytes, bytes]] = {}

    def __call__(self, item: bytes) -> tuple[bytes, bytes, bytes] | None:
        size = len(item)
        at = item.find(_FIELDS_AT, max(size - _QUICK_WINDOW - 1, 0))
        if at < 0 or not item.endswith(b'"}}'):
            return None
        start = item.rfind(b'"', at, size - 3) + 1
        before, tag = item[at:start], item[start:size - 3]
        known = self._known.get(before)
        if known is not None and tag and not tag.translate(None, _PLAIN):
            return tag, known[0], known[1]
        found = end_fields(item)
        if found is not None:
            if len(self._known) >= 8:
                self._known.clear()
            self._known[before] = found[1], found[2]
        return found


class WindowTake:
    """The steps above for one broker's queues (its keys, worker id and lane)."""

    def __init__(self, client: redis.Redis, lane: Lane, keys: CeleryKeys, worker_id: str,
                 max_message_bytes: int, lease_ms: int) -> None:
        self.client = client
        self.lane = lane
        self.keys = keys
        self.worker_id = worker_id
        self.max_message_bytes = max_message_bytes
        self.lease_ms = lease_ms
        self.script = client.register_script(WINDOW)
        self._loaded = False
        self._fields = _EndReader()
        self.unwritten: list[Packed] = []
        """The last take's MULTI (step 3), not sent yet."""

    def begin(self, queue: str, count: int, acks: Sequence[str]
              ) -> Callable[[], tuple[Taken, bool]] | None:
        """Step 1 (after the last take's step 3, when it waits) sent now; the call returned
        reads it and does step 2: what was taken (None: the take script must take now) and
        whether ``acks`` were acknowledged. None: the lane is busy (nothing sent)."""
        if not self._loaded:
            self.client.script_load(WINDOW)
            self._loaded = True
        staging = self.keys.staging(queue, self.worker_id)
        keys = [self.keys.key(self.keys.unacked), self.keys.key(self.keys.unacked_index),
                staging, self.keys.lease(queue, self.worker_id), *self.keys.lists(queue)]
        take = ("EVALSHA", self.script.sha, len(keys), *keys, count, self.lease_ms, *acks)
        commands: list[Any] = [*self.unwritten, take, ("LRANGE", staging, 0, -1)]
        pending = self.lane.begin(commands)
        if pending is None:
            return None
        self.unwritten = []

        def read() -> tuple[Taken, bool]:
            replies = pending.read()
            self._check_written(replies[:-2])
            staged, items = replies[-2:]
            if isinstance(staged, redis.exceptions.NoScriptError):  # nothing ran
                self._loaded = False
                return None, False
            if isinstance(staged, Exception):
                raise staged
            if isinstance(items, Exception):
                raise items
            if staged <= 0:
                return (None if staged < 0 else []), True
            taken = self._record(queue, staging, items[::-1])
            if staged < count:  # the queue ran short: no take follows at once to carry it
                self.write()
            return taken, True
        return read

    def write(self) -> None:
        """Step 3 of the last take, now (before any other call touches what it writes)."""
        if not self.unwritten:
            return
        commands, self.unwritten = self.unwritten, []
        pending = self.lane.begin(commands)
        if pending is not None:
            self._check_written(pending.read())
            return
        conn: Any = self.client.connection_pool.get_connection()  # the lane is busy
        try:
            conn.send_packed_command([command.data for command in commands])
            self._check_written([conn.read_response() for command in commands
                                 for _ in range(command.replies)])
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self.client.connection_pool.release(conn)

    def _record(self, queue: str, staging: str, items: list[bytes]) -> Taken:
        """Step 2, and step 3's commands kept for later: the longest run of ``items`` (in
        taking order) recorded here, the rest left staged for the take script."""
        fields: list[tuple[bytes, bytes, bytes]] = []
        seen: set[bytes] = set()
        for item in items:
            found = self._fields(item) if len(item) <= self.max_message_bytes else None
            if found is None or found[0] in seen:
                break
            seen.add(found[0])
            fields.append(found)
        if fields:
            unacked = self.keys.key(self.keys.unacked)
            stored = self._unacked_already(unacked, [tag for tag, _, _ in fields])
            if stored is not None:
                del fields[stored:]
        taken = items[:len(fields)]
        if fields:
            self.unwritten = self._commands(queue, staging, taken, fields, len(items))
        return list(zip(taken, [tag for tag, _, _ in fields], strict=True))

    def _unacked_already(self, unacked: str, tags: list[bytes]) -> int | None:
        """The index of the first of ``tags`` kombu's unacked holds, None when none."""
        command = ("HMGET", unacked, *tags)
        replies = self.lane.run([command])
        records = self.client.hmget(unacked, tags) if replies is None else replies[0]
        if isinstance(records, Exception):
            raise records
        for index, record in enumerate(records):
            if record is not None:
                return index
        return None

    def _commands(self, queue: str, staging: str, taken: list[bytes],
                  fields: list[tuple[bytes, bytes, bytes]], staged: int) -> list[Packed]:
        """Step 3 in RESP, each message copied once: the take script's records
        (``[<message>, "<exchange>", "<routing key>"]``), index entries and ``taken``."""
        tags = [tag for tag, _, _ in fields]
        head = [_bulk(b"HSET"), _bulk(self.keys.key(self.keys.unacked).encode())]
        chunks = [b"*%d\r\n" % (2 + 2 * len(taken)), *head]
        ends: dict[tuple[bytes, bytes], bytes] = {}
        sizes: dict[int, bytes] = {}  # a length's RESP head, made once
        for item, (tag, exchange, routing_key) in zip(taken, fields, strict=True):
            end = ends.get((exchange, routing_key))
            if end is None:
                end = ends[exchange, routing_key] = b', "%s", "%s"]\r\n' % (exchange,
                                                                              routing_key)
            tag_head = sizes.get(-len(tag))
            if tag_head is None:
                tag_head = sizes[-len(tag)] = b"$%d\r\n" % len(tag)
            size = len(item) + len(end) - 1  # the record: "[", the message, its end
            record_head = sizes.get(size)
            if record_head is None:
                record_head = sizes[size] = b"\r\n$%d\r\n[" % size
            chunks += (tag_head, tag, record_head, item, end)
        now = repr(time.time()).encode()
        scores: list[bytes] = []
        for tag in tags:
            scores += (now, tag)
        left = staged - len(taken)  # the first ones staged: taken last
        rest: list[tuple[Any, ...]] = [
            ("ZADD", self.keys.key(self.keys.unacked_index), "NX", *scores),
            ("SET", self.keys.taken(queue, self.worker_id), b'["' + b'","'.join(tags) + b'"]',
             "EX", 86400),
            ("LTRIM", staging, 0, left - 1) if left else ("DEL", staging), ("EXEC",)]
        data = b"".join([_hiredis_pack(("MULTI",)), *chunks,
                         *(_hiredis_pack(command) for command in rest)])
        return [Packed(data, 6)]

    @staticmethod
    def _check_written(replies: Sequence[Any]) -> None:
        """Raise what failed in a step 3 (its messages stay staged: the take script takes
        them again)."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if replies:
            for reply in replies[-1] or ():
                if isinstance(reply, Exception):
                    raise reply


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)
