"""The relay's quick translation of plain Celery calls (bridge.protocol.celery_quick) leaves
Redis exactly as the exact path does: the same machinery messages in the same order, the
same PENDING states, in-flight records, Celery metas and dead letters, for Celery's own
captured messages (canvas, ETAs, expiry, pickle and msgpack among them) and a batch of
plain calls; and the plain calls do take the quick way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import redis

from bridge.endpoints import parse_endpoint
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.kombu_envelope import to_envelope
from bridge.relay import RelayOptions
from bridge.relay.forward import CeleryToMachinery

GOLDEN = Path(__file__).resolve().parents[2] / "compat_fixtures" / "celery"
ENVELOPES = [line.encode() for path in sorted(GOLDEN.glob("*.jsonl"))
             for line in path.read_text().splitlines() if line.strip()]
_TIMES = re.compile(rb'"CreatedAt":"[^"]*"|"t":\s*[0-9.e+]+|"date_done":\s*"[^"]*"'
                    rb'|"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)?"')


def plain_calls() -> list[bytes]:
    calls = [([i, "x", i % 2 == 0, i / 4], {"k": i}) for i in range(40)]
    return [to_envelope(encode_task(new_task("tasks.add", args, kwargs,
                                             group="g1" if i % 5 == 0 else None,
                                             ignore_result=i % 7 == 0, priority=i % 3)),
                        routing_key="cq") for i, (args, kwargs) in enumerate(calls)]


def relay_all(url: str, envelopes: list[bytes], quick: bool) -> tuple[dict[bytes, Any], int]:
    """Relay ``envelopes`` (in order) once with the quick path on or off; Redis's whole
    content afterwards (times blanked) and how many took the quick way."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.lpush("cq", *envelopes)
    side = CeleryToMachinery.open(parse_endpoint(f"celery+{url}?queue=cq"),
                                  parse_endpoint(f"machinery+{url}?queue=mq"),
                                  RelayOptions(), "quicktest")
    assert side._quick_ok
    side._quick_ok = quick
    taken = 0
    try:
        while deliveries := side.source.fetch("cq", 25, 0.2):
            taken += sum(1 for d in deliveries if CeleryToMachinery._quick(side, d) is not None)
            side.source.ack(side.relay(deliveries))
        return dump(client, side.source.worker_id.encode()), taken
    finally:
        side.source.close()
        side.broker.close()
        client.close()


def dump(client: redis.Redis, consumer: bytes) -> dict[bytes, Any]:
    """Every key's value (the consumer's random id, which names its lease and staging
    records, replaced)."""
    out: dict[bytes, Any] = {}
    for name in sorted(client.keys("*")):
        key = name.replace(consumer, b"<consumer>")
        kind = client.type(name)
        value: Any
        if kind == b"string":
            value = client.get(name)
        elif kind == b"list":
            value = client.lrange(name, 0, -1)
        elif kind == b"zset":
            timed = name == b"delayed_tasks"  # ETAs; elsewhere scores are times of now
            value = client.zrange(name, 0, -1, withscores=timed)
        elif kind == b"hash":
            value = sorted(client.hgetall(name).items())
        else:
            value = sorted(client.smembers(name))
        out[key] = _blank(value, consumer)
    return out


def _blank(value: Any, consumer: bytes) -> Any:
    if isinstance(value, bytes):
        return _TIMES.sub(b"<time>", value.replace(consumer, b"<consumer>"))
    if isinstance(value, list | tuple):
        return [_blank(v, consumer) for v in value]
    return value


def test_the_quick_relay_leaves_redis_as_the_exact_one(private_redis_url: str) -> None:
    calls = plain_calls()
    for envelopes, plain in ((ENVELOPES, None), (calls, len(calls)),
                             ([*calls[:5], *ENVELOPES[:20]], None)):
        quick, taken = relay_all(private_redis_url, envelopes, quick=True)
        exact, none = relay_all(private_redis_url, envelopes, quick=False)
        assert none == 0 and 0 < taken <= len(envelopes)
        if plain is not None:
            assert taken == plain
        assert quick.keys() == exact.keys()
        for key in quick:
            assert quick[key] == exact[key], key
