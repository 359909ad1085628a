"""``mbridge migrate`` on a real redis-server: both directions, delayed and unacked messages,
filters, untranslatable messages, results, dry runs, and crash recovery (SIGKILL included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from click.testing import CliRunner

from bridge.backends.celery_redis import CeleryRedisBackend, TaskMeta
from bridge.backends.redis import RedisBackend
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.brokers.redis import RedisBroker
from bridge.cli.migrate import EXIT_LEFT_BEHIND
from bridge.cli.migrate import migrate as migrate_command
from bridge.endpoints import Endpoint, format_endpoint, parse_endpoint
from bridge.migrate import migrate
from bridge.migrate.bookkeeping import PREFIX, run_id
from bridge.migrate.sinks import open_sink
from bridge.migrate.sources import open_source
from bridge.migrate.translate import Translator
from bridge.protocol.celery import decode_task, encode_task, new_task
from bridge.protocol.gotime import GoTime, unix_nano
from bridge.protocol.kombu_envelope import decode_envelope, to_envelope
from bridge.protocol.machinery import PENDING, SUCCESS, Arg, Signature, TaskResult, TaskState
from bridge.schema import TaskSchema
from tests.redis_servers import with_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def db_url(redis_url: str) -> Iterator[str]:
    """A database of the session's server, flushed before and after the test."""
    url = with_db(redis_url, 5)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def celery_ep(url: str, queue: str = "celery", **extra: str) -> Endpoint:
    query = "".join(f"&{k}={v}" for k, v in extra.items())
    return parse_endpoint(f"celery+{url}?queue={queue}{query}")


def machinery_ep(url: str, queue: str = "machinery_tasks") -> Endpoint:
    return parse_endpoint(f"machinery+{url}?queue={queue}")


def publish_celery(url: str, queue: str, tasks: list[Any]) -> None:
    broker = CeleryRedisBroker.from_url(url)
    broker.publish_messages(queue, [encode_task(t) for t in tasks])
    broker.close()


def celery_queue(url: str, queue: str) -> list[Any]:
    """The tasks waiting in a Celery queue, in consumption order."""
    broker = CeleryRedisBroker.from_url(url)
    out = [decode_task(decode_envelope(raw).message) for raw in broker.peek(queue, 10**6)]
    broker.close()
    return out


def machinery_queue(url: str, queue: str) -> list[Signature]:
    client = redis.Redis.from_url(url)
    out = [Signature.from_json(raw) for raw in client.lrange(queue, 0, -1)]
    client.close()
    return out


def sig(name: str, *values: int, eta: datetime | None = None, queue: str = "") -> Signature:
    return Signature(uuid=f"task_{uuid.uuid4()}", name=name, routing_key=queue,
                     args=[Arg(type="int64", value=v) for v in values],
                     eta=GoTime.from_datetime(eta) if eta else None)


def snapshot(url: str) -> dict[bytes, Any]:
    """Every key with its type and value (to prove a dry run writes nothing)."""
    client = redis.Redis.from_url(url)
    out: dict[bytes, Any] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = sorted(client.smembers(key))
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        else:
            out[key] = client.get(key)
    client.close()
    return out


def bookkeeping(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    keys = sorted(client.scan_iter(f"{PREFIX}*"))
    client.close()
    return keys


# ------------------------------------------------------------------------------ directions


def test_celery_to_machinery_keeps_order_args_and_ids(db_url: str) -> None:
    tasks = [new_task("add", [i, 2 * i]) for i in range(2500)]
    publish_celery(db_url, "celery", tasks)
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), batch=300)
    assert (report.moved, report.untranslatable, report.left_behind) == (2500, 0, 0)
    moved = machinery_queue(db_url, "go_q")
    assert [s.uuid for s in moved] == [t.id for t in tasks]
    assert moved[7].name == "add" and moved[7].routing_key == "go_q"
    assert [(a.type, a.value) for a in moved[7].args or []] == [("int64", 7), ("int64", 14)]
    assert celery_queue(db_url, "celery") == []
    assert bookkeeping(db_url) == []


def test_machinery_to_celery_and_back_is_lossless(db_url: str) -> None:
    sigs = [sig("tasks.add", i, 1, queue="machinery_tasks") for i in range(1200)]
    broker = RedisBroker(db_url)
    broker.publish(sigs)
    broker.close()
    originals = machinery_queue(db_url, "machinery_tasks")
    report = migrate(machinery_ep(db_url), celery_ep(db_url, "cq"), batch=500)
    assert report.moved == 1200
    tasks = celery_queue(db_url, "cq")
    assert [t.id for t in tasks] == [s.uuid for s in sigs]
    assert (tasks[3].name, tasks[3].args) == ("tasks.add", [3, 1])
    migrate(celery_ep(db_url, "cq"), machinery_ep(db_url, "machinery_tasks"))
    assert machinery_queue(db_url, "machinery_tasks") == originals


def test_queue_renames_within_one_protocol(db_url: str) -> None:
    publish_celery(db_url, "a", [new_task("x", [1]) for _ in range(10)])
    assert migrate(celery_ep(db_url, "a"), celery_ep(db_url, "b")).moved == 10
    assert len(celery_queue(db_url, "b")) == 10
    broker = RedisBroker(db_url)
    broker.publish([sig("add", 1, queue="m1") for _ in range(10)])
    broker.close()
    assert migrate(machinery_ep(db_url, "m1"), machinery_ep(db_url, "m2")).moved == 10
    assert {s.routing_key for s in machinery_queue(db_url, "m2")} == {"m2"}


# ------------------------------------------------------------------------------ delayed


def test_delayed_messages_keep_their_eta(db_url: str) -> None:
    eta = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    first = new_task("add", [1, 2], eta=eta)
    publish_celery(db_url, "celery", [first])
    # one of our delayed requeues (bridge:celery:delayed:<queue>), due an hour later
    later = new_task("add", [3, 4])
    broker = CeleryRedisBroker.from_url(db_url)
    broker.client.zadd(broker.keys.delayed("celery"), {
        to_envelope(encode_task(later), routing_key="celery"):
            (eta + timedelta(hours=1)).timestamp()})
    broker.close()
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"))
    assert (report.moved, report.delayed) == (2, 2)  # the Celery ETA counts too
    client = redis.Redis.from_url(db_url)
    members = cast("list[tuple[bytes, float]]",
                   client.zrange("delayed_tasks", 0, -1, withscores=True))
    by_id = {Signature.from_json(m).uuid: (Signature.from_json(m), s) for m, s in members}
    moved, score = by_id[first.id]
    assert moved.eta == eta and score == float(unix_nano(eta))
    moved, score = by_id[later.id]
    assert moved.eta == eta + timedelta(hours=1) and score == float(unix_nano(moved.eta))
    assert machinery_queue(db_url, "go_q") == []

    # and back: Go's delayed ZSET members of this queue become Celery ETA messages; the
    # members of other queues stay where they are
    other = sig("add", 9, eta=eta, queue="elsewhere")
    mbroker = RedisBroker(db_url)
    mbroker.publish([other])
    mbroker.close()
    report = migrate(machinery_ep(db_url, "go_q"), celery_ep(db_url, "back"))
    assert (report.moved, report.delayed) == (2, 2)
    etas = sorted(t.eta for t in celery_queue(db_url, "back"))
    assert etas == [eta, eta + timedelta(hours=1)]
    left = cast("list[bytes]", client.zrange("delayed_tasks", 0, -1))
    assert [Signature.from_json(m).uuid for m in left] == [other.uuid]


# ------------------------------------------------------------------------------ filters, bad input


def test_task_filter_moves_only_named_tasks_and_keeps_the_rest_in_order(db_url: str) -> None:
    tasks = [new_task("add" if i % 3 == 0 else f"other{i % 2}", [i]) for i in range(3000)]
    publish_celery(db_url, "celery", tasks)
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), tasks=["add"], batch=256)
    assert report.moved == 1000 and report.filtered == 2000
    assert report.tasks["add"].moved == 1000 and report.tasks["other1"].filtered == 1000
    assert {s.name for s in machinery_queue(db_url, "go_q")} == {"add"}
    assert [t.id for t in celery_queue(db_url, "celery")] == [
        t.id for t in tasks if t.name != "add"]
    assert bookkeeping(db_url) == []


def test_untranslatable_messages_stay_with_reasons_or_are_parked(db_url: str) -> None:
    good = [new_task("add", [i, 1]) for i in range(50)]
    bad = [new_task("add", [{"not": "typed"}]), new_task("add", [None]),
           new_task("mul", [[1, "x"]])]
    tasks = good[:20] + bad + good[20:]
    publish_celery(db_url, "celery", tasks)
    broker = CeleryRedisBroker.from_url(db_url)
    broker.client.lpush("celery", b"not an envelope")
    broker.close()
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), batch=7)
    assert report.moved == 50 and report.untranslatable == 4 and report.left_behind == 4
    reasons = {(task, reason) for task, reason in report.reasons}
    assert any(t == "add" and "dict values have no machinery Go type" in r for t, r in reasons)
    assert any(t == "?" and "not a kombu envelope" in r for t, r in reasons)
    assert "mul" in report.render() and "cannot migrate" in report.render()
    client = redis.Redis.from_url(db_url)
    assert client.lrange("celery", 0, 0) == [b"not an envelope"]  # still last, as before
    first3 = CeleryRedisBroker.from_url(db_url).peek("celery", 3)
    assert [decode_task(decode_envelope(raw).message).id for raw in first3] == [
        t.id for t in bad]
    # a second run looks at each once more and ends (no loop); --park parks them
    again = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), park=True)
    assert (again.seen, again.moved, again.parked, again.left_behind) == (4, 0, 4, 0)
    dead = CeleryRedisBroker.from_url(db_url).dead_letters("celery")
    assert len(dead) == 4 and all(entry["reason"] for entry in dead)
    assert client.llen("celery") == 0 and len(machinery_queue(db_url, "go_q")) == 50


def test_schema_types_args_for_go_and_refuses_what_does_not_fit(db_url: str,
                                                                tmp_path: Path) -> None:
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text("tasks:\n  scale:\n    args: [int8, float32]\n")
    publish_celery(db_url, "celery", [new_task("scale", [3, 1.5]), new_task("scale", [300, 1])])
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"),
                     schema=TaskSchema.load(schema_file))
    assert report.moved == 1 and report.untranslatable == 1
    (moved,) = machinery_queue(db_url, "go_q")
    assert [(a.type, a.value) for a in moved.args or []] == [("int8", 3), ("float32", 1.5)]
    assert any("out of range for int8" in r for _, r in report.reasons)


# ------------------------------------------------------------------------------ dry run, copy


def test_dry_run_changes_nothing_and_counts_per_task(db_url: str) -> None:
    publish_celery(db_url, "celery", [new_task("add", [i]) for i in range(30)]
                   + [new_task("bad", [{"a": 1}])]
                   + [new_task("later", [1], countdown=600)])
    before = snapshot(db_url)
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), dry_run=True, batch=8)
    assert snapshot(db_url) == before
    assert report.mode == "dry-run" and report.moved == 31 and report.untranslatable == 1
    assert report.tasks["add"].moved == 30 and report.tasks["bad"].untranslatable == 1
    result = CliRunner().invoke(migrate_command, [
        format_endpoint(celery_ep(db_url)), format_endpoint(machinery_ep(db_url, "go_q")),
        "--dry-run", "--json", "-q"])
    assert result.exit_code == EXIT_LEFT_BEHIND, result.output  # "bad" could not move
    data = json.loads(result.output)
    assert data["tasks"]["later"]["moved"] == 1 and data["reasons"][0]["task"] == "bad"
    assert data["delayed"] == 1  # the countdown: an ETA still ahead
    assert snapshot(db_url) == before


def test_copy_leaves_the_source_untouched(db_url: str) -> None:
    broker = RedisBroker(db_url)
    broker.publish([sig("tasks.add", i, i, queue="machinery_tasks") for i in range(40)])
    broker.close()
    before = snapshot(db_url)
    report = migrate(machinery_ep(db_url), celery_ep(db_url, "cq"), copy=True, batch=16)
    assert report.moved == 40 and len(celery_queue(db_url, "cq")) == 40
    after = snapshot(db_url)
    assert {k: v for k, v in after.items() if k in before} == before


# ------------------------------------------------------------------------------ unacked, results


def test_unacked_orphans_older_than_the_visibility_timeout_move(db_url: str) -> None:
    publish_celery(db_url, "celery", [new_task("add", [i, 1]) for i in range(5)])
    consumer = CeleryRedisBroker.from_url(db_url, None, worker_id="dead-celery-worker")
    held = consumer.fetch("celery", 3, 0)  # a worker takes 3 and dies (never acks)
    assert len(held) == 3
    consumer.client.close()
    src = celery_ep(db_url, visibility_timeout="3600")
    report = migrate(src, machinery_ep(db_url, "go_q"), include_unacked=True)
    assert report.moved == 2 and report.unacked_restored == 0  # not old enough yet
    report = migrate(src, machinery_ep(db_url, "go_q"), include_unacked=True,
                     unacked_older_than=0)
    assert report.unacked_restored == 3 and report.moved == 3
    assert len(machinery_queue(db_url, "go_q")) == 5
    assert CeleryRedisBroker.from_url(db_url).unacked() == []


def test_results_carry_states_both_ways(db_url: str) -> None:
    done, retried, waiting = (new_task("add", [1, 2]) for _ in range(3))
    publish_celery(db_url, "celery", [done, retried, waiting])
    cbackend = CeleryRedisBackend.from_url(db_url)
    cbackend.store_many([TaskMeta(done.id, "SUCCESS", 3),
                         TaskMeta(retried.id, "RETRY", {"exc_type": "KeyError",
                                                        "exc_message": ["not yet"],
                                                        "exc_module": "builtins"})])
    report = migrate(celery_ep(db_url), machinery_ep(db_url, "go_q"), results=True)
    assert report.results_carried == 2 and report.results_pending == 3
    mbackend = RedisBackend(db_url)
    states = {s.task_uuid: s for s in mbackend.get_states([done.id, retried.id, waiting.id])
              if s is not None}
    assert states[done.id].state == SUCCESS and states[done.id].task_name == "add"
    assert states[done.id].results == [TaskResult("int64", 3)]
    assert states[retried.id].state == "RETRY" and states[retried.id].error == (
        "KeyError: not yet")
    assert states[waiting.id].state == PENDING and states[waiting.id].task_name == "add"

    # machinery -> Celery (one database, so the Celery metas are those written above):
    # SUCCESS stays, RETRY is rewritten, FAILURE becomes Celery's exception dict
    mbackend.set_states([TaskState(waiting.id, "add", "FAILURE", error="boom")])
    report = migrate(machinery_ep(db_url, "go_q"), celery_ep(db_url, "cq"), results=True)
    assert report.moved == 3 and report.results_carried == 2
    assert cbackend.get_meta(done.id)["result"] == 3
    failure = cbackend.get_meta(waiting.id)
    assert failure["status"] == "FAILURE" and failure["result"]["exc_message"] == ["boom"]
    assert cbackend.get_meta(retried.id)["result"]["exc_message"] == ["KeyError: not yet"]


# ------------------------------------------------------------------------------ crash recovery


def test_a_batch_published_before_the_crash_is_not_published_again(db_url: str) -> None:
    publish_celery(db_url, "celery", [new_task("add", [i, 1]) for i in range(30)])
    src, dst = celery_ep(db_url), machinery_ep(db_url, "go_q")
    run = run_id(format_endpoint(src), format_endpoint(dst))
    source, sink = open_source(src, run), open_sink(dst, run)
    translator = Translator("celery", "machinery", "go_q")
    assert source.store is not None
    # run 1 "dies" after publishing batch A and before finishing it; batch B was only taken
    claims = source.claim(10, False)
    batch_a, held_a = next(claims)
    batch_b, held_b = next(claims)
    sink.publish([source.translate(h, translator) for h in held_a], batch_a)
    source.close()
    sink.close()
    assert len(machinery_queue(db_url, "go_q")) == 10
    report = migrate(src, dst)
    assert report.resumed_batches == 2 and report.already_published == 10
    ids = [s.uuid for s in machinery_queue(db_url, "go_q")]
    assert len(ids) == 30 == len(set(ids))
    assert bookkeeping(db_url) == [] and batch_a != batch_b and len(held_b) == 10


def test_sigkill_mid_way_then_rerun_delivers_every_message_exactly_once(redis_url: str) -> None:
    src_url, dst_url = with_db(redis_url, 6), with_db(redis_url, 7)  # two databases
    for url in (src_url, dst_url):
        redis.Redis.from_url(url).flushdb()
    total = 20_000
    tasks = [new_task("add", [i, 1]) for i in range(total)]
    for start in range(0, total, 5000):
        publish_celery(src_url, "celery", tasks[start:start + 5000])
    src, dst = format_endpoint(celery_ep(src_url)), format_endpoint(machinery_ep(dst_url))
    command = [sys.executable, "-m", "bridge.cli", "migrate", src, dst, "--batch", "500", "-q"]
    dst_client = redis.Redis.from_url(dst_url)
    for kill_at in (2000, 8000):
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while dst_client.llen("machinery_tasks") < kill_at and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 0 < dst_client.llen("machinery_tasks") < total, "killed too late to prove it"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [json.loads(raw)["UUID"] for raw in dst_client.lrange("machinery_tasks", 0, -1)]
    assert len(ids) == total and set(ids) == {t.id for t in tasks}  # none lost, none twice
    assert CeleryRedisBroker.from_url(src_url).queue_depth("celery") == 0
    assert bookkeeping(src_url) == [] and bookkeeping(dst_url) == []


def test_cli_reports_and_exits_3_when_messages_stay(db_url: str) -> None:
    publish_celery(db_url, "celery", [new_task("add", [1]), new_task("add", [{"x": 1}])])
    result = CliRunner().invoke(migrate_command, [
        format_endpoint(celery_ep(db_url)), format_endpoint(machinery_ep(db_url, "go_q")),
        "-q"])
    assert result.exit_code == EXIT_LEFT_BEHIND, result.output
    assert "moved 1" in result.output and "dict values" in result.output
    bad = CliRunner().invoke(migrate_command, ["nope://x", format_endpoint(celery_ep(db_url))])
    assert bad.exit_code == 2 and "expected celery+" in bad.output


# ------------------------------------------------------------------------------ RabbitMQ


def test_celery_on_rabbitmq_both_ways(db_url: str, amqp_url: str) -> None:
    from bridge.brokers.celery_amqp import CeleryAmqpBroker

    queue = f"mig_{uuid.uuid4().hex[:8]}"
    rabbit = parse_endpoint(f"celery+{amqp_url}?queue={queue}&backend={db_url}")
    broker = RedisBroker(db_url)
    sigs = [sig("tasks.add", i, 1, queue="machinery_tasks") for i in range(300)]
    broker.publish(sigs)
    broker.close()
    report = migrate(machinery_ep(db_url), rabbit, batch=128)
    assert report.moved == 300 and machinery_queue(db_url, "machinery_tasks") == []
    amqp = CeleryAmqpBroker.from_url(amqp_url)
    assert amqp.queue_depth(queue) == 300
    amqp.publish_messages(queue, [encode_task(new_task("add", [{"x": 1}]))])
    amqp.close()
    report = migrate(rabbit, machinery_ep(db_url, "go_q"), batch=128)
    assert report.moved == 300 and report.left_behind == 1
    assert [s.uuid for s in machinery_queue(db_url, "go_q")] == [s.uuid for s in sigs]
    amqp = CeleryAmqpBroker.from_url(amqp_url)
    (left,) = amqp.fetch(queue, 10, 2.0)  # the untranslatable one is back in the queue
    assert left.message is not None and decode_task(left.message).args == [{"x": 1}]
    amqp.close()


def test_machinery_on_rabbitmq_both_ways(db_url: str, amqp_url: str) -> None:
    """machinery's AMQP layout (exchange, binding key = queue) as source and destination."""
    from bridge.brokers.amqp import AmqpBroker

    queue = f"migm_{uuid.uuid4().hex[:8]}"
    rabbit = parse_endpoint(f"machinery+{amqp_url}?queue={queue}&backend={db_url}")
    tasks = [new_task("tasks.add", [i, 1]) for i in range(200)]
    publish_celery(db_url, "celery", tasks)
    report = migrate(celery_ep(db_url), rabbit, batch=64)
    assert report.moved == 200 and celery_queue(db_url, "celery") == []
    amqp = AmqpBroker.from_config(rabbit.machinery_config())
    assert amqp.queue_depth(queue) == 200
    amqp.publish_raw(queue, [b"{not a signature"])
    amqp.close()
    report = migrate(rabbit, celery_ep(db_url, "back"), batch=64)
    assert report.moved == 200 and report.left_behind == 1
    back = celery_queue(db_url, "back")
    assert [(t.id, t.name, t.args) for t in back] == [(t.id, t.name, t.args) for t in tasks]
    amqp = AmqpBroker.from_config(rabbit.machinery_config())
    (left,) = amqp.fetch(queue, 10, 2.0)  # the undecodable one is back in the queue
    assert left.body == b"{not a signature"
    amqp.ack([left])
    amqp.close()
