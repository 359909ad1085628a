"""The relay's quick translations (bridge.protocol.celery_quick) leave Redis exactly as the
exact path does. Celery → machinery: the same machinery messages in the same order, the
same PENDING states, in-flight records, Celery metas and dead letters, for Celery's own
captured messages (canvas, ETAs, expiry, pickle and msgpack among them) and a batch of
plain calls. machinery → Celery: the same Celery messages, RECEIVED states and in-flight
records for those messages' Signatures and Go's own. The plain calls take the quick way."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.endpoints import parse_endpoint
from bridge.migrate.translate import Translator
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.celery_quick import quick_back, quick_message
from bridge.protocol.kombu_envelope import to_envelope
from bridge.relay import RelayOptions, reverse
from bridge.relay.forward import CeleryToMachinery

FIXTURES = Path(__file__).resolve().parents[2] / "compat_fixtures"
GOLDEN = FIXTURES / "celery"
ENVELOPES = [line.encode() for path in sorted(GOLDEN.glob("*.jsonl"))
             for line in path.read_text().splitlines() if line.strip()]
_TIMES = re.compile(rb'"CreatedAt":"[^"]*"|"t":\s*[0-9.e+]+|"date_done":\s*"[^"]*"'
                    rb'|"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)?"'
                    rb'|"delivery_tag": "[^"]*"')
"""What differs between two runs: times and the random delivery tags of new envelopes."""


def plain_calls() -> list[bytes]:
    calls = [([i, "x", i % 2 == 0, i / 4], {"k": i}) for i in range(40)]
    return [to_envelope(encode_task(new_task("tasks.add", args, kwargs,
                                             group="g1" if i % 5 == 0 else None,
                                             ignore_result=i % 7 == 0, priority=i % 3)),
                        routing_key="cq") for i, (args, kwargs) in enumerate(calls)]


def broken() -> list[bytes]:
    """Items a fetch takes but cannot hand over as kombu messages: parked either way."""
    one, two = plain_calls()[:2]
    tail = two[two.rindex(b'"delivery_info"'):-1]
    return [
        b"not json at all",
        b'{"body": "", "headers": {}}',
        one.replace(b'"body_encoding": "base64"', b'"body_encoding": "rot13"', 1),
        # properties.delivery_tag is two's; the take reads another at the very end
        two[:-1] + b', "pad": "' + b"p" * 600 + b'", "x": {'
        + tail.replace(b'"delivery_tag": "', b'"delivery_tag": "B') + b"}",
    ]


def relay_all(url: str, envelopes: list[bytes], quick: bool, *, one_trip: bool = True
              ) -> tuple[dict[bytes, Any], int]:
    """Relay ``envelopes`` (in order) once with the quick path on or off (and PENDING +
    publish in one script, or the two-step way); Redis's whole content afterwards (times
    blanked) and how many took the quick way."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.lpush("cq", *envelopes)
    side = CeleryToMachinery.open(parse_endpoint(f"celery+{url}?queue=cq"),
                                  parse_endpoint(f"machinery+{url}?queue=mq"),
                                  RelayOptions(), "quicktest")
    assert side._raw_source is side.source and not side.source.decode_on_fetch
    assert side._one_trip is not None
    if not one_trip:
        side._one_trip = None
    if not quick:  # the exact path, messages decoded as they are fetched
        side._raw_source = None
        side.source.decode_on_fetch = True
    taken = 0

    def count(deliveries: list[Any]) -> None:
        nonlocal taken
        taken += sum(1 for d in deliveries if CeleryToMachinery._quick(side, d) is not None)

    return drain(side, "cq", client, count), taken


def drain(side: Any, queue: str, client: redis.Redis,
          seen: Callable[[list[Any]], None] = lambda deliveries: None) -> dict[bytes, Any]:
    """Relay everything on ``queue`` with ``side``; then Redis's content."""
    try:
        while deliveries := side.source.fetch(queue, 25, 0.2):
            seen(deliveries)
            side.source.ack(side.relay(deliveries))
        return dump(client, side.source.worker_id.encode())
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
        out[key] = b"<time>" if b"heartbeat:" in key else _blank(value, consumer)
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
                             ([*calls[:5], *ENVELOPES[:20]], None),
                             ([calls[0], *broken(), calls[1]], 2)):
        quick, taken = relay_all(private_redis_url, envelopes, quick=True)
        exact, _ = relay_all(private_redis_url, envelopes, quick=False)
        assert 0 < taken <= len(envelopes)
        if plain is not None:
            assert taken == plain
        assert_same(quick, exact)
        if plain == 2:
            assert len(quick[b"bridge:celery:dead:cq"]) == len(broken())


def test_quick_calls_sent_the_two_step_way_leave_redis_as_the_exact_ones(
        private_redis_url: str) -> None:
    calls = plain_calls()
    envelopes = [*calls[:5], *ENVELOPES[:20], *calls[5:]]
    quick, taken = relay_all(private_redis_url, envelopes, quick=True, one_trip=False)
    exact, _ = relay_all(private_redis_url, envelopes, quick=False)
    assert taken >= len(calls)  # some captured ones are plain calls too
    assert_same(quick, exact)


def signatures() -> list[bytes]:
    """machinery messages: Celery's captured calls and the plain ones, translated, and Go's
    own Signatures."""
    exact = Translator("celery", "machinery", "mq")
    exact.quick = False
    bodies = [exact.from_envelope(raw).body for raw in [*ENVELOPES, *plain_calls()]]
    go = sorted((FIXTURES / "machinery").glob("v*/signature_*.json"))
    return [body for body in bodies if body] + [path.read_bytes().strip() for path in go]


def relay_back(url: str, bodies: list[bytes], quick: bool,
               monkeypatch: pytest.MonkeyPatch, *, one_trip: bool = True,
               prepare: Callable[[redis.Redis], None] = lambda client: None,
               read_back: list[int] | None = None) -> tuple[dict[bytes, Any], int]:
    client = redis.Redis.from_url(url)
    client.flushall()
    prepare(client)
    client.rpush("mq", *bodies)
    side = reverse.MachineryToCelery.open(parse_endpoint(f"machinery+{url}?queue=mq"),
                                          parse_endpoint(f"celery+{url}?queue=cq"),
                                          RelayOptions(), "quicktest")
    assert side._one_trip is not None  # one Redis database: RECEIVED + LPUSH in one script
    if not one_trip:
        side._one_trip = None
    taken = 0

    def counted(sig: Any) -> Any:
        nonlocal taken
        message = quick_message(sig) if quick else None
        taken += message is not None
        return message

    def counted_back(body: bytes) -> Any:  # the quick way that makes no Signature
        nonlocal taken
        found = quick_back(body) if quick else None
        taken += found is not None
        if read_back is not None:
            read_back.append(found is not None)
        return found

    monkeypatch.setattr(reverse, "quick_message", counted)
    monkeypatch.setattr(reverse, "quick_back", counted_back)
    return drain(side, "mq", client), taken


def test_the_quick_relay_back_leaves_redis_as_the_exact_one(
        private_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = signatures()
    read_back: list[int] = []
    quick, taken = relay_back(private_redis_url, bodies, True, monkeypatch,
                              read_back=read_back)
    exact, _ = relay_back(private_redis_url, bodies, False, monkeypatch)
    assert taken >= len(plain_calls())
    assert sum(read_back) >= len(plain_calls()) // 2  # most without a Signature
    assert_same(quick, exact)


def test_received_and_publish_in_one_script_leave_redis_as_two_steps(
        private_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = signatures()
    ids = [json.loads(body).get("UUID") for body in bodies]
    foreign, odd = ids[3], ids[5]

    def keys_in_the_way(client: redis.Redis) -> None:
        client.hset(foreign, "field", "value")  # not a task state: refused, parked
        client.set(odd, b'{"TaskUUID":"' + odd.encode() + b'","State":"PENDING"}')  # careful

    one, _ = relay_back(private_redis_url, bodies, True, monkeypatch, prepare=keys_in_the_way)
    two, _ = relay_back(private_redis_url, bodies, True, monkeypatch, one_trip=False,
                        prepare=keys_in_the_way)
    # the task whose stored state needs the careful write is published after the others
    # of its batch (as machinery's one-trip send leaves it): the same messages
    one[b"cq"], two[b"cq"] = sorted(one[b"cq"]), sorted(two[b"cq"])
    assert_same(one, two)
    assert len(one[b"bridge:dead:{mq}"]) == 1 and one[foreign.encode()] == [[b"field", b"value"]]


def assert_same(quick: dict[bytes, Any], exact: dict[bytes, Any]) -> None:
    assert quick.keys() == exact.keys()
    for key in quick:
        assert quick[key] == exact[key], key
