"""redis-server's CPU a relayed message, by what the relay asks of it: our Lua scripts beside
the same writes as plain commands, so the next lever on the relay's Redis share is measured.

Run: ``python -m bench.relay_levers [--messages 50000] [--rounds 3] [--redis URL]``.

* **Celery take + ack, our script**: ``CeleryRedisBroker.fetch`` in batches of 500 with the
  last batch's acks, as the relay takes (kombu's ``unacked`` record and index entry written
  by the script, the size gate, duplicate tags parked).
* **the same through a staging list**: a short script copies the window unread into a
  staging list (``SORT ... STORE``, as the size gate does now), sizes it and trims the queue;
  the client reads the staging list with a plain ``LRANGE``, finds each tag, and writes the
  records with ``HSETNX`` (a tag unacked already is not written over), the index with one
  ``ZADD`` and the acks with one ``HDEL`` and ``ZREM``, in one ``MULTI``. Not what the
  relay does: what a take without the items passing through Lua would cost Redis.
* **machinery take + ack, our script**: ``RedisBroker.fetch_later`` in batches of 500 with
  the last batch's acks, as the relay's way back took until 2026-12-06 (the take script
  reads each message into Lua and pushes it onto the processing list; the ack sends every
  body back to be compared).
* **machinery take + ack, windows**: the same calls with ``window_take`` on, as the relay
  takes now (``bridge.brokers.redis_window``: ``SORT ... STORE`` into a window, a plain
  ``LRANGE``, a window acked whole deleted with the next take).
* **PENDING + publish, our script**: ``OneTripSend.send_many`` (the relay's and
  ``send_batch``'s one-trip script, 200 tasks a call).
* **the same as plain commands**: ``SET ... EX NX`` for each state in one ``MULTI``, then
  one ``RPUSH`` of the messages whose state was written (a second round trip).

Each row is redis-server's CPU (its own INFO) over the whole run, divided by the messages.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from statistics import median
from typing import cast

import redis

from bench.migrate_bench import publish
from bench.proc_cpu import redis_cpu_seconds
from bridge.backends.base import now_utc
from bridge.backends.redis import RedisBackend
from bridge.brokers.base import Delivery
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.localredis import local_redis
from bridge.protocol.celery_quick import quick_signature
from bridge.protocol.machinery import Arg, Signature
from bridge.protocol.state_bytes import pending_jsons
from bridge.redis_send import CHUNK, OneTripSend

BATCH = 500
QUEUE = "celery_levers"

_TAKE_WINDOW = """
local stored = redis.call('SORT', KEYS[1], 'BY', 'nosort', 'DESC', 'LIMIT', 0, ARGV[1],
                          'STORE', KEYS[2])
if stored == 0 then return 0 end
if (tonumber(redis.call('MEMORY', 'USAGE', KEYS[2], 'SAMPLES', '0')) or 0) > tonumber(ARGV[2])
then
  redis.call('DEL', KEYS[2])
  return -1
end
redis.call('LTRIM', KEYS[1], 0, -stored - 1)
return stored
"""


def _spent(client: redis.Redis, messages: int, run: Callable[[], None]) -> float:
    before = redis_cpu_seconds(client)
    run()
    return (redis_cpu_seconds(client) - before) / messages * 1e6


def take_by_script(url: str, messages: int) -> float:
    """redis-server µs a message: the relay's Celery take and ack."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(url, QUEUE, messages)
    broker = CeleryRedisBroker.from_url(url)
    broker.decode_on_fetch = False

    def run() -> None:
        acks: list[Delivery] = []
        got = 0
        while got < messages:
            acks = broker.fetch(QUEUE, BATCH, 0.1, ack=acks)
            got += len(acks)
        broker.ack(acks)

    try:
        return _spent(client, messages, run)
    finally:
        broker.close()


def take_by_plain_commands(url: str, messages: int) -> float:
    """redis-server µs a message: the same take through a staging list (module docstring)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(url, QUEUE, messages)
    window = client.register_script(_TAKE_WINDOW)
    marker = b'"delivery_tag": "'

    def run() -> None:
        got, acked = 0, cast("list[bytes]", [])
        while got < messages:
            if int(window(keys=[QUEUE, "stage"], args=[BATCH, 8 << 20])) <= 0:
                break
            items = cast("list[bytes]", client.lrange("stage", 0, -1))
            got += len(items)
            tags: list[bytes] = []
            now = time.time()
            pipe = client.pipeline(transaction=True)
            for item in items:
                at = item.rfind(marker) + len(marker)
                tag = item[at:item.index(b'"', at)]
                tags.append(tag)
                pipe.hsetnx("unacked", tag, b"[" + item + b', "", "' + QUEUE.encode() + b'"]')
            pipe.zadd("unacked_index", dict.fromkeys(tags, now))
            if acked:
                pipe.hdel("unacked", *acked)
                pipe.zrem("unacked_index", *acked)
            pipe.delete("stage")
            pipe.execute()
            acked = tags
        if acked:
            client.hdel("unacked", *acked)
            client.zrem("unacked_index", *acked)

    return _spent(client, messages, run)


def _machinery_take(url: str, messages: int, window: bool) -> float:
    """redis-server µs a message: the relay's machinery take and ack, 1 KB Signatures."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish(url, QUEUE, 1000)
    one = quick_signature(cast(bytes, client.lindex(QUEUE, 0)), "machinery_levers",
                          ("json",))
    assert one is not None, "the bench's Celery call is a plain one"
    client.delete(QUEUE)
    for start in range(0, messages, 10_000):
        client.rpush("machinery_levers", *[one.body.replace(b'"UUID":"', b'"UUID":"%08d' % i, 1)
                                           for i in range(start, min(start + 10_000, messages))])
    broker = RedisBroker(url, Config(broker=url, result_backend=url,
                                     default_queue="machinery_levers"))
    broker.window_take = window
    broker.fetch("machinery_levers", 0, 0)  # consuming: fetch_later takes from here on

    def run() -> None:
        acks: list[Delivery] = []
        while True:
            read = broker.fetch_later("machinery_levers", BATCH, acks)
            assert read is not None, "the broker's lane is free"
            acks = read()
            if not acks:
                break

    try:
        return _spent(client, messages, run)
    finally:
        broker.close()


def machinery_take_by_script(url: str, messages: int) -> float:
    """redis-server µs a message: the take script and its ack by body."""
    return _machinery_take(url, messages, window=False)


def machinery_take_by_windows(url: str, messages: int) -> float:
    """redis-server µs a message: windows, each deleted with the next take."""
    return _machinery_take(url, messages, window=True)


def _signatures(messages: int) -> list[Signature]:
    return [Signature(uuid=f"task_{uuid.uuid4()}", name="add", routing_key="machinery_levers",
                      args=[Arg("", "int64", i), Arg("", "int64", 1)])
            for i in range(messages)]


def publish_by_script(url: str, messages: int) -> float:
    """redis-server µs a message: PENDING + RPUSH by the one-trip script."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    config = Config(broker=url, result_backend=url, default_queue="machinery_levers")
    backend, broker = RedisBackend(url, config), RedisBroker(url, config)
    sender = OneTripSend.between(backend, broker)
    assert sender is not None, "the backend and broker share this Redis"
    signatures = _signatures(messages)
    try:
        def run() -> None:
            sender.send_many(signatures)

        return _spent(client, messages, run)
    finally:
        backend.close()
        broker.close()


def publish_by_plain_commands(url: str, messages: int) -> float:
    """redis-server µs a message: the same writes without a script (module docstring)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    signatures = _signatures(messages)
    bodies = [sig.to_json() for sig in signatures]

    def run() -> None:
        for start in range(0, messages, CHUNK):
            chunk = signatures[start:start + CHUNK]
            states = pending_jsons([(sig.uuid, sig.name) for sig in chunk], now_utc())
            pipe = client.pipeline(transaction=True)
            for sig, state in zip(chunk, states, strict=True):
                pipe.set(sig.uuid, state, ex=86400, nx=True)
            written = pipe.execute()
            client.rpush("machinery_levers", *[body for body, ok in
                                               zip(bodies[start:start + CHUNK], written,
                                                   strict=True) if ok])

    return _spent(client, messages, run)


ROWS: list[tuple[str, Callable[[str, int], float]]] = [
    ("Celery take + ack, our script", take_by_script),
    ("Celery take + ack, staging list + plain commands", take_by_plain_commands),
    ("machinery take + ack, our script", machinery_take_by_script),
    ("machinery take + ack, windows", machinery_take_by_windows),
    ("PENDING + publish, our one-trip script", publish_by_script),
    ("PENDING + publish, MULTI SET NX + RPUSH", publish_by_plain_commands),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default="", help="a Redis URL (its database is FLUSHED)")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        figures: dict[str, list[float]] = {label: [] for label, _ in ROWS}
        for _ in range(args.rounds):  # the rows take turns, so a slow spell hits them all
            for label, row in ROWS:
                figures[label].append(row(url, args.messages))
        redis.Redis.from_url(url).flushdb()
    print(f"{'redis-server CPU us/msg':<52}{'median':>8}  rounds")
    for label, values in figures.items():
        print(f"{label:<52}{median(values):>8.1f}  "
              + " ".join(f"{value:.1f}" for value in values))


if __name__ == "__main__":
    main()
