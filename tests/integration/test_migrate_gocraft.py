"""``mbridge migrate`` to and from gocraft/work on a real redis-server: a job's args map is a
Celery call's kwargs and machinery's named Args (the schema's ``kwargs`` give order and Go
types), scheduled jobs keep their run-at, what cannot move stays or is parked in gocraft's
dead set with its reason. Go peers run what was migrated in
tests/interop/test_migrate_gocraft_live.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from click.testing import CliRunner

from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.cli.migrate import migrate as migrate_command
from bridge.config import ConfigError
from bridge.endpoints import Endpoint, parse_endpoint
from bridge.gocraft import Enqueuer, GocraftJob
from bridge.gocraft.keys import GocraftKeys
from bridge.migrate import migrate
from bridge.protocol.celery import decode_task, encode_task, new_task
from bridge.protocol.kombu_envelope import decode_envelope
from bridge.protocol.machinery import Arg, Signature
from bridge.schema import TaskSchema
from tests.redis_servers import with_db

SCHEMA = TaskSchema.from_dict({"tasks": {"greet": {"kwargs": {"i": "int64", "s": "string"}}}})


@pytest.fixture()
def db_url(redis_url: str) -> Iterator[str]:
    url = with_db(redis_url, 6)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def gocraft_ep(url: str, job: str = "", ns: str = "work") -> Endpoint:
    return parse_endpoint(f"gocraft+{url}?namespace={ns}" + (f"&queue={job}" if job else ""))


def test_gocraft_to_machinery_typed_by_the_schema(db_url: str) -> None:
    client = redis.Redis.from_url(db_url)
    enqueuer = Enqueuer(client, "work")
    jobs = [enqueuer.enqueue("greet", {"s": f"<{n}>", "i": n}) for n in range(5)]
    run_at, later = enqueuer.enqueue_in("greet", 600, {"i": 9, "s": "later"})
    bad = enqueuer.enqueue("greet", {"i": "nine", "s": "x"})  # not an int64: stays
    other = enqueuer.enqueue("other", {"x": 1})  # another job: not this source's
    report = migrate(gocraft_ep(db_url, "greet"),
                     parse_endpoint(f"machinery+{db_url}?queue=go_tasks"), schema=SCHEMA)
    assert (report.moved, report.untranslatable, report.delayed) == (6, 1, 1), report.render()
    sigs = [Signature.from_json(raw) for raw in cast("list[bytes]", client.lrange("go_tasks", 0,
                                                                                  -1))]
    assert [s.uuid for s in sigs] == [f"task_{job.id}" for job in jobs]  # oldest first
    assert sigs[0].args == [Arg(name="i", type="int64", value=0),
                            Arg(name="s", type="string", value="<0>")]
    assert all(s.routing_key == "go_tasks" for s in sigs)
    [(member, score)] = client.zrange("delayed_tasks", 0, -1, withscores=True)
    delayed = Signature.from_json(member)
    assert delayed.uuid == f"task_{later.id}" and delayed.eta is not None
    assert int(delayed.eta.timestamp()) == run_at and int(score // 1e9) == run_at
    keys = GocraftKeys("work")
    assert client.lrange(keys.jobs("greet"), 0, -1) == [bad.encode()]  # set aside, given back
    assert client.lrange(keys.jobs("other"), 0, -1) == [other.encode()]
    assert "nine" in report.render()


def test_gocraft_to_celery_and_parking_in_the_dead_set(db_url: str) -> None:
    client = redis.Redis.from_url(db_url)
    enqueuer = Enqueuer(client, "gw")
    job = enqueuer.enqueue("greet", {"i": 1, "s": "hi", "ratio": 0.5})
    client.lpush(GocraftKeys("gw").jobs("greet"), b"{not a job")
    report = migrate(gocraft_ep(db_url, "greet", "gw"),
                     parse_endpoint(f"celery+{db_url}?queue=py"), park=True)
    assert (report.moved, report.parked) == (1, 1), report.render()
    broker = CeleryRedisBroker.from_url(db_url, None)
    try:
        [raw] = cast("list[bytes]", client.lrange("py", 0, -1))
        task = decode_task(decode_envelope(raw).message)
    finally:
        broker.close()
    assert (task.name, task.id, task.args, task.kwargs) == ("greet", job.id, [],
                                                            {"i": 1, "s": "hi", "ratio": 0.5})
    assert client.lrange("gw:bridge:unreadable", 0, -1) == [b"{not a job"]
    assert client.llen(GocraftKeys("gw").jobs("greet")) == 0


def test_machinery_and_celery_to_gocraft(db_url: str) -> None:
    client = redis.Redis.from_url(db_url)
    named = Signature(uuid="task_a", name="greet", routing_key="m",
                      args=[Arg(name="i", type="int64", value=7), Arg(name="s", type="string",
                                                                      value="x")])
    positional = Signature(uuid="task_b", name="greet", routing_key="m",
                           args=[Arg(name="", type="int64", value=8),
                                 Arg(name="", type="string", value="y")])
    unnamed = Signature(uuid="task_c", name="anon", routing_key="m",
                        args=[Arg(name="", type="int64", value=1)])
    client.rpush("m", named.to_json(), positional.to_json(), unnamed.to_json())
    report = migrate(parse_endpoint(f"machinery+{db_url}?queue=m"), gocraft_ep(db_url),
                     schema=SCHEMA, park=True)
    assert (report.moved, report.parked) == (2, 1), report.render()
    keys = GocraftKeys("work")
    jobs = [GocraftJob.decode(raw) for raw in cast("list[bytes]",
                                                   client.lrange(keys.jobs("greet"), 0, -1))]
    assert sorted((j.id, cast(dict[str, Any], j.args)["i"]) for j in jobs) == [("a", 7),
                                                                            ("b", 8)]
    assert all(j.args == {"i": j.args["i"], "s": j.args["s"]} for j in jobs if j.args)
    assert client.sismember(keys.known_jobs, "greet")

    celery = CeleryRedisBroker.from_url(db_url, None)
    try:
        celery.publish_messages("c", [encode_task(new_task("greet", [], {"i": 3, "s": "k"})),
                                      encode_task(new_task("greet", [1, "p"]))])
    finally:
        celery.close()
    report = migrate(parse_endpoint(f"celery+{db_url}?queue=c"), gocraft_ep(db_url))
    assert (report.moved, report.untranslatable) == (1, 1), report.render()
    assert "named args only" in report.render()
    assert {cast(dict[str, Any], GocraftJob.decode(raw).args)["i"] for raw in
            cast("list[bytes]", client.lrange(keys.jobs("greet"), 0, -1))} == {7, 8, 3}


def test_gocraft_endpoints_refuse_what_they_cannot_do(db_url: str) -> None:
    with pytest.raises(ConfigError, match="names its job"):
        migrate(gocraft_ep(db_url), parse_endpoint(f"machinery+{db_url}?queue=q"))
    with pytest.raises(ConfigError, match="keeps no results"):
        migrate(gocraft_ep(db_url, "greet"), parse_endpoint(f"celery+{db_url}?queue=q"),
                results=True)
    result = CliRunner().invoke(migrate_command, [
        f"gocraft+{db_url}?queue=greet&namespace=w{uuid.uuid4().hex[:6]}",
        f"machinery+{db_url}?queue=q", "--dry-run"])
    assert result.exit_code == 0, result.output
