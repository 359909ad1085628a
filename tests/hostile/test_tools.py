"""``mbridge migrate`` and ``mbridge relay`` on hostile messages: a huge integer, a chain
nested 300 deep, a bad kombu marker, an id naming another application's key. Each is
parked (or, without --park, left in the source) with its reason; the good ones move; the
tool goes on, and a second run has nothing left to choke on."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis_keys import QueueKeys
from bridge.endpoints import parse_endpoint
from bridge.migrate import migrate
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.kombu_envelope import to_envelope
from bridge.protocol.machinery import Arg, Signature, new_uuid
from bridge.relay import RelayOptions, open_relay
from bridge.schema import TaskSchema
from tests.hostile.harness import wait_for

HUGE = "1" * 100_000
SCHEMA = TaskSchema.from_dict({"tasks": {"tasks.add": {"args": ["int64", "int64"]}}})


def _fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _raw_envelope(headers: dict[str, Any], body: bytes) -> bytes:
    envelope = {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": headers,
                "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "celery"},
                               "priority": 0}}
    return json.dumps(envelope).encode()


def _headers(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "tasks.add", "id": task_id, "root_id": task_id,
            "parent_id": None, "group": None, "retries": 0, **extra}


def hostile_celery(client: redis.Redis) -> dict[str, bytes]:
    """Bad Celery envelopes by what is wrong with them; ``foreign`` is a valid task whose
    id names a hash of another application."""
    foreign = f"foreign-tools-{uuid.uuid4()}"
    client.hset(foreign, mapping={"owner": "another app"})
    embed = b'{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
    return {
        "huge integer": _raw_envelope(_headers(str(uuid.uuid4())),
                                      b"[[" + HUGE.encode() + b", 1], {}, " + embed + b"]"),
        "bad marker": _raw_envelope(_headers(str(uuid.uuid4()),
                                             x={"__type__": "datetime", "__value__": "x"}),
                                    b"[[1, 2], {}, " + embed + b"]"),
        "foreign key": to_envelope(encode_task(new_task("tasks.add", [1, 2], task_id=foreign)),
                                   routing_key="celery"),
    }


def _chain(depth: int) -> bytes:
    inner: dict[str, Any] = {"UUID": new_uuid(), "Name": "tasks.add"}
    for _ in range(depth):
        inner = {"UUID": new_uuid(), "Name": "tasks.add", "OnSuccess": [inner]}
    return json.dumps(inner).encode()


def hostile_machinery(client: redis.Redis) -> dict[str, bytes]:
    foreign = f"foreign-tools-{uuid.uuid4()}"
    client.hset(foreign, mapping={"owner": "another app"})
    return {
        "huge retry count": b'{"UUID":"%s","Name":"tasks.add","RetryCount":%s}' % (
            new_uuid().encode(), b"7" * 4301),
        "deep chain": _chain(300),
        "foreign key": Signature(uuid=foreign, name="tasks.add",
                                 args=[Arg("", "int64", 1), Arg("", "int64", 2)]).to_json(),
    }


def _good_celery(count: int) -> list[bytes]:
    return [to_envelope(encode_task(new_task("tasks.add", [n, 1])), routing_key="celery")
            for n in range(count)]


def _good_machinery(count: int) -> list[bytes]:
    return [Signature(uuid=new_uuid(), name="tasks.add",
                      args=[Arg("", "int64", n), Arg("", "int64", 1)]).to_json()
            for n in range(count)]


def _reasons(client: redis.Redis, dead: str) -> list[str]:
    return [json.loads(raw)["reason"] for raw in client.lrange(dead, 0, -1)]


def test_migrate_parks_hostile_messages_and_goes_on(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cq, mq = _fresh("tc"), _fresh("tm")
    bad = hostile_celery(client)
    client.lpush(cq, *_good_celery(3), *bad.values(), *_good_celery(3))
    src = parse_endpoint(f"celery+{redis_url}?queue={cq}")
    dst = parse_endpoint(f"machinery+{redis_url}?queue={mq}")
    report = migrate(src, dst, schema=SCHEMA, results=True, park=True, batch=4)
    assert (report.moved, report.parked) == (6, 3), report.render()
    assert client.llen(mq) == 6 and client.llen(cq) == 0
    reasons = _reasons(client, f"bridge:celery:dead:{cq}")
    assert len(reasons) == 3, reasons
    assert any("digits" in r or "out of range" in r for r in reasons), reasons
    assert any("'datetime' marker" in r for r in reasons), reasons
    assert any("no task state is written over it" in r for r in reasons), reasons
    again = migrate(src, dst, schema=SCHEMA, results=True, park=True)
    assert (again.moved, again.parked, again.seen) == (0, 0, 0), again.render()
    assert not client.keys("bridge:migrate:*hold*")


def test_migrate_machinery_to_celery_without_park_leaves_them_in_place(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cq, mq = _fresh("tc"), _fresh("tm")
    bad = hostile_machinery(client)
    client.rpush(mq, *_good_machinery(2), *bad.values(), *_good_machinery(2))
    src = parse_endpoint(f"machinery+{redis_url}?queue={mq}")
    dst = parse_endpoint(f"celery+{redis_url}?queue={cq}")
    report = migrate(src, dst, results=True, batch=3)
    # the foreign key is only a machinery key: its Celery meta is celery-task-meta-<id>
    assert (report.moved, report.untranslatable) == (5, 2), report.render()
    left = client.lrange(mq, 0, -1)
    assert left == [bad["huge retry count"], bad["deep chain"]]  # in place, none lost
    text = report.render()
    assert "RetryCount of type int" in text and "more than 100 levels" in text, text
    again = migrate(src, dst, results=True)
    assert (again.moved, again.untranslatable) == (0, 2), again.render()


@contextmanager
def _relay(source: str, target: str) -> Iterator[None]:
    relay = open_relay(parse_endpoint(source), parse_endpoint(target),
                       RelayOptions(poll_interval=0.05, fetch_timeout=0.2, schema=SCHEMA))
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield
        assert thread.is_alive(), "the relay stopped"
        assert not relay.side.held(), "messages still held"
    finally:
        relay.stop()
        thread.join(timeout=20)


def test_relay_parks_hostile_messages_both_ways(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cq, mq, cq2, mq2 = (_fresh(p) for p in ("rc", "rm", "rc2", "rm2"))
    forward = (f"celery+{redis_url}?queue={cq}", f"machinery+{redis_url}?queue={mq}")
    reverse = (f"machinery+{redis_url}?queue={mq2}", f"celery+{redis_url}?queue={cq2}")
    bad_c, bad_m = hostile_celery(client), hostile_machinery(client)
    with _relay(*forward), _relay(*reverse):
        client.lpush(cq, *_good_celery(3), *bad_c.values(), *_good_celery(3))
        client.rpush(mq2, *_good_machinery(3), *bad_m.values(), *_good_machinery(3))
        wait_for(lambda: client.llen(mq) == 6 and client.llen(f"bridge:celery:dead:{cq}") == 3,
                 60, "Celery → machinery: 6 relayed, 3 parked")
        wait_for(lambda: CeleryRedisBroker.from_url(redis_url).queue_depth(cq2) == 6
                 and client.llen(QueueKeys.of(mq2).dead) == 3, 60,
                 "machinery → Celery: 6 relayed, 3 parked")
        time.sleep(0.5)
        client.lpush(cq, *_good_celery(1))  # and it goes on
        wait_for(lambda: client.llen(mq) == 7, 30, "a later message relayed")
    forward_reasons = _reasons(client, f"bridge:celery:dead:{cq}")
    reverse_reasons = _reasons(client, QueueKeys.of(mq2).dead)
    assert any("'datetime' marker" in r for r in forward_reasons), forward_reasons
    assert any("no task state is written over it" in r for r in forward_reasons)
    assert any("more than 100 levels" in r for r in reverse_reasons), reverse_reasons
    assert any("no task state is written over it" in r for r in reverse_reasons)
    for key in client.keys("foreign-tools-*"):  # never written over
        assert client.type(key) == b"hash"


def test_the_migrate_command_reports_instead_of_failing(redis_url: str) -> None:
    """The real command: exit 3 with the reasons listed (was: rc 1, a traceback, the batch
    in a hold key); --park moves the rest and parks them, exit 0; nothing held after."""
    import subprocess
    import sys
    from pathlib import Path

    client = redis.Redis.from_url(redis_url)
    cq, mq = _fresh("tc"), _fresh("tm")
    bad = hostile_celery(client)
    client.lpush(cq, *_good_celery(2), *bad.values(), *_good_celery(2))
    schema = Path(__file__).parent / "schema.yml"
    command = [sys.executable, "-m", "bridge.cli", "migrate", "--results",
               f"celery+{redis_url}?queue={cq}", f"machinery+{redis_url}?queue={mq}"]
    root = Path(__file__).resolve().parents[2]
    try:
        schema.write_text("tasks:\n  tasks.add:\n    args: [int64, int64]\n")
        first = subprocess.run([*command, "--schema", str(schema)], cwd=root,
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 3, first.stdout + first.stderr
        assert "'datetime' marker" in first.stdout and "no task state is written over it" \
            in first.stdout, first.stdout
        assert client.llen(mq) == 4 and client.llen(cq) == 3
        second = subprocess.run([*command, "--schema", str(schema), "--park"], cwd=root,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert client.llen(cq) == 0 and client.llen(f"bridge:celery:dead:{cq}") == 3
    finally:
        schema.unlink(missing_ok=True)
    assert not client.keys("bridge:migrate:*hold*")
