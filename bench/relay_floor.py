"""Floors for relaying Celery → machinery on this machine, beside the relay's own figures.

Run: ``python -m bench.relay_floor [--messages 100000] [--redis URL]``.

* **bare layout**: redis-server's CPU a message for the writes the two layouts need and
  nothing else: kombu's ``unacked`` record and index entry for each message taken (HSET,
  ZADD), machinery's PENDING state (SET EX) and message (RPUSH), the acknowledgement (HDEL,
  ZREM), sent as plain pipelined commands (variadic where Redis allows) without Lua, checks,
  dead letters or tracking.
* **bare codec**: Python's CPU a message to read a kombu envelope and its body with msgspec
  and write a machinery Signature and PENDING state with msgspec, without type checks,
  Go's escaping, schemas or canvas.

A relay that did no more than that would need both figures a message; ``mbridge relay``'s
own (``python -m bench.migrate_bench --relay N``) print next to them here, from the same
Redis, so the gap is read in one run.
"""

from __future__ import annotations

import argparse
import base64
import time
from contextlib import ExitStack
from typing import Any, cast

import msgspec
import redis

from bench.migrate_bench import publish, relay_leg
from bench.proc_cpu import redis_cpu_seconds
from bridge.localredis import local_redis

BATCH = 500

_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()


def bare_translate(raw: bytes) -> tuple[str, str, bytes, bytes]:
    """A kombu envelope's delivery tag, and the Signature's UUID, JSON and PENDING state."""
    envelope = _DECODE.decode(raw)
    body = _DECODE.decode(base64.b64decode(envelope["body"]))
    headers = envelope["headers"]
    uuid = "task_" + headers["id"]
    signature = {
        "UUID": uuid, "Name": headers["task"], "RoutingKey": "machinery_floor", "ETA": None,
        "GroupUUID": "", "GroupTaskCount": 0, "Priority": 0, "Immutable": False,
        "RetryCount": 0, "RetryTimeout": 0, "OnSuccess": None, "OnError": None,
        "ChordCallback": None, "BrokerMessageGroupId": "", "SQSReceiptHandle": "",
        "StopTaskDeletionOnError": False, "IgnoreWhenTaskNotRegistered": False,
        "Args": [{"Name": "", "Type": "int64", "Value": value} for value in body[0]],
        "Headers": {}}
    state = {"TaskUUID": uuid, "TaskName": headers["task"], "State": "PENDING",
             "Results": None, "Error": "", "CreatedAt": "2026-12-06T10:00:00.123456Z",
             "TTL": 0}
    return (envelope["properties"]["delivery_tag"], uuid, _ENCODE.encode(signature),
            _ENCODE.encode(state))


def codec_floor(raws: list[bytes]) -> tuple[float, list[tuple[str, str, bytes, bytes]]]:
    """Python CPU µs a message of :func:`bare_translate`, and its results."""
    started = time.process_time()
    translated = [bare_translate(raw) for raw in raws]
    return (time.process_time() - started) / len(raws) * 1e6, translated


def layout_floor(client: redis.Redis, queue: str,
                 translated: list[tuple[str, str, bytes, bytes]]) -> tuple[float, float]:
    """redis-server's CPU µs a message for the bare layout's writes over ``queue``, and the
    messages a second this one process moved them."""
    before, started = redis_cpu_seconds(client), time.perf_counter()
    pipe = client.pipeline(transaction=False)
    now = time.time()
    for start in range(0, len(translated), BATCH):
        taken = client.rpop(queue, BATCH) or []
        part = translated[start:start + len(taken)]
        for (tag, _, _, _), raw in zip(part, taken, strict=True):
            pipe.hset("unacked", tag, raw)
            pipe.zadd("unacked_index", {tag: now})
        pipe.execute()
        for _, uuid, _, state in part:
            pipe.set(uuid, state, ex=86400)
        pipe.rpush("machinery_floor", *[signature for _, _, signature, _ in part])
        tags = [tag for tag, _, _, _ in part]
        pipe.hdel("unacked", *tags)
        pipe.zrem("unacked_index", *tags)
        pipe.execute()
    elapsed = time.perf_counter() - started
    spent = redis_cpu_seconds(client) - before
    return spent / len(translated) * 1e6, len(translated) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--redis", default="", help="a Redis URL (its database is FLUSHED)")
    args = parser.parse_args()
    rows: list[tuple[str, Any]] = []
    with ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        client = redis.Redis.from_url(url)
        client.flushdb()
        publish(url, "celery_floor", args.messages)
        raws = cast("list[bytes]", client.lrange("celery_floor", 0, -1))[::-1]  # taking order
        python_us, translated = codec_floor(raws)
        redis_us, rate = layout_floor(client, "celery_floor", translated)
        rows.append(("bare codec: Python CPU us/msg", f"{python_us:.1f}"))
        rows.append(("bare layout: redis-server CPU us/msg", f"{redis_us:.1f}"))
        rows.append(("bare layout, one process, redis-py pipelines: msg/s", f"{rate:,.0f}"))
        client.flushdb()
        publish(url, "celery_relay", args.messages)
        leg = relay_leg(url, f"celery+{url}?queue=celery_relay",
                        f"machinery+{url}?queue=machinery_relay", "machinery_relay",
                        args.messages)
        rows.append(("mbridge relay -P 1: relay CPU us/msg", f"{leg['relay_us']:.1f}"))
        rows.append(("mbridge relay -P 1: redis-server CPU us/msg", f"{leg['redis_us']:.1f}"))
        rows.append(("mbridge relay -P 1: msg/s", f"{leg['rate']:,.0f}"))
        client.flushdb()
        client.close()
    for label, value in rows:
        print(f"{label:<56}{value:>10}")


if __name__ == "__main__":
    main()
