"""Capture golden Celery task messages from a real Celery producer.

Runs Celery (the pinned 5.6.2 / kombu 5.6.2) against a private redis-server,
sends one case at a time with ``app.send_task`` or canvas ``apply_async`` and
saves exactly what lands in Redis: every item of every list (``LRANGE``), the
kombu envelope JSON byte for byte, one line per message, in send order.

    python compat_fixtures/celery/capture.py            # rewrites the goldens here
    python compat_fixtures/celery/capture.py --out DIR

``manifest.json`` records, per case, the file, the Redis list each message was
pushed to, the producing call, the app settings and the fixed ids used.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import celery
import kombu
import redis
from celery import Celery, chain, chord, group, signature

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from bridge.localredis import local_redis  # noqa: E402

ETA = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
EXPIRES = datetime(2030, 1, 2, 4, 4, 5, tzinfo=UTC)


def tid(n: int) -> str:
    """A fixed, readable task id for case ``n``."""
    return f"00000000-0000-4000-8000-{n:012d}"


def make_app(url: str, **conf: Any) -> Celery:
    app = Celery("capture", broker=url, backend=url.rsplit("/", 1)[0] + "/1")
    app.conf.update(accept_content=["json", "msgpack", "pickle"], **conf)

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.echo")
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    return app


Case = tuple[str, str, dict[str, Any], Callable[[Celery], object]]


def _sig(app: Celery, name: str, *args: Any, **options: Any) -> Any:
    return signature(name, args=args, app=app, **options)


CASES: list[Case] = [
    ("v2_json_args_kwargs", "send_task('tasks.add', (2, 3), {'scale': 1.5})", {},
     lambda a: a.send_task("tasks.add", (2, 3), {"scale": 1.5}, task_id=tid(1))),
    ("v1_json_args_kwargs", "send_task('tasks.add', (2, 3), {'scale': 1.5}), task_protocol=1",
     {"task_protocol": 1},
     lambda a: a.send_task("tasks.add", (2, 3), {"scale": 1.5}, task_id=tid(2))),
    ("v2_msgpack", "send_task('tasks.add', (2, 3), {'name': 'x', 'blob': b'\\x00\\xff'}, "
     "serializer='msgpack')", {},
     lambda a: a.send_task("tasks.add", (2, 3), {"name": "x", "blob": b"\x00\xff"},
                           task_id=tid(3), serializer="msgpack")),
    ("v1_msgpack", "send_task('tasks.add', [1, 'a'], serializer='msgpack'), task_protocol=1",
     {"task_protocol": 1},
     lambda a: a.send_task("tasks.add", [1, "a"], task_id=tid(4), serializer="msgpack")),
    ("v2_countdown_expires", "send_task('tasks.add', (1, 2), countdown=10, expires=60)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(5), countdown=10, expires=60)),
    ("v2_eta_expires_datetime", "send_task('tasks.add', (1, 2), eta=ETA, expires=EXPIRES)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(6), eta=ETA, expires=EXPIRES)),
    ("v2_eta_naive", "send_task('tasks.add', (1, 2), eta=<naive datetime>)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(7),
                           eta=ETA.replace(tzinfo=None))),
    ("v2_countdown_new_york", "send_task('tasks.add', (1, 2), countdown=30), "
     "timezone='America/New_York'", {"timezone": "America/New_York"},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(8), countdown=30)),
    ("v1_countdown_expires", "send_task('tasks.add', (1, 2), countdown=10, expires=60), "
     "task_protocol=1", {"task_protocol": 1},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(9), countdown=10, expires=60)),
    ("v2_priority", "send_task('tasks.add', (1, 2), priority=5)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(10), priority=5)),
    ("v2_custom_headers", "send_task('tasks.add', (1, 2), headers={'x-tenant': 'acme', "
     "'trace': {'span': 7}})", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(11),
                           headers={"x-tenant": "acme", "trace": {"span": 7}})),
    ("v1_custom_headers", "send_task('tasks.add', (1, 2), headers={'x-tenant': 'acme'}), "
     "task_protocol=1", {"task_protocol": 1},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(12),
                           headers={"x-tenant": "acme"})),
    ("v2_link_link_error", "add.apply_async((2, 3), link=echo.s(), "
     "link_error=echo.si('err'))", {},
     lambda a: a.tasks["tasks.add"].apply_async(
         (2, 3), task_id=tid(13), link=_sig(a, "tasks.echo"),
         link_error=_sig(a, "tasks.echo", "err", immutable=True))),
    ("v2_link_options", "add.apply_async((2, 3), link=echo.s().set(queue='q1', countdown=5, "
     "priority=3, task_id=...))", {},
     lambda a: a.tasks["tasks.add"].apply_async(
         (2, 3), task_id=tid(14),
         link=_sig(a, "tasks.echo", 1).set(queue="q1", countdown=5, priority=3,
                                           task_id=tid(114)))),
    ("v1_link", "add.apply_async((2, 3), link=echo.s()), task_protocol=1", {"task_protocol": 1},
     lambda a: a.tasks["tasks.add"].apply_async((2, 3), task_id=tid(15),
                                                link=_sig(a, "tasks.echo"))),
    ("v2_chain3", "(add.s(1, 2) | add.s(3) | echo.si('x')).apply_async()", {},
     lambda a: chain(_sig(a, "tasks.add", 1, 2), _sig(a, "tasks.add", 3),
                     _sig(a, "tasks.echo", "x", immutable=True)).apply_async()),
    ("v2_group", "group(add.s(1, 1), add.s(2, 2)).apply_async()", {},
     lambda a: group(_sig(a, "tasks.add", 1, 1), _sig(a, "tasks.add", 2, 2)).apply_async()),
    ("v2_chord", "chord([add.s(1, 1), add.s(2, 2)], echo.s()).apply_async()", {},
     lambda a: chord([_sig(a, "tasks.add", 1, 1), _sig(a, "tasks.add", 2, 2)],
                     _sig(a, "tasks.echo")).apply_async()),
    ("v2_chain_with_group", "(add.s(1, 2) | group(echo.s(), echo.s()) | echo.s())"
     ".apply_async()", {},
     lambda a: chain(_sig(a, "tasks.add", 1, 2),
                     group(_sig(a, "tasks.echo"), _sig(a, "tasks.echo")),
                     _sig(a, "tasks.echo")).apply_async()),
    ("v2_link_group", "add.apply_async((1, 2), link=group(echo.s(), echo.s()))", {},
     lambda a: a.tasks["tasks.add"].apply_async(
         (1, 2), task_id=tid(16),
         link=group(_sig(a, "tasks.echo"), _sig(a, "tasks.echo")))),
    ("v2_markers", "send_task('tasks.echo', kwargs={datetime, date, time, UUID, Decimal, "
     "bytes, non-UTF-8 bytes})", {},
     lambda a: a.send_task("tasks.echo", (), {
         "when": ETA, "day": date(2030, 1, 2), "clock": time(3, 4, 5),
         "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
         "amount": Decimal("1.10"), "text": b"abc", "blob": b"\x00\xff"}, task_id=tid(17))),
    ("v2_timelimit", "send_task('tasks.add', (1, 2), time_limit=30, soft_time_limit=20)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(18), time_limit=30,
                           soft_time_limit=20)),
    ("v2_zlib", "send_task('tasks.add', (1, 2), compression='zlib')", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(19), compression="zlib")),
    ("v2_bz2", "send_task('tasks.add', (1, 2), compression='bzip2')", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(20), compression="bzip2")),
    ("v2_lzma", "send_task('tasks.add', (1, 2), compression='lzma')", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(21), compression="lzma")),
    ("v2_queue_shadow_root", "send_task('tasks.add', (1, 2), queue='other', shadow='adder', "
     "root_id=..., parent_id=..., group_id=..., group_index=3, retries=2)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(22), queue="other",
                           shadow="adder", root_id=tid(900), parent_id=tid(901),
                           group_id=tid(902), group_index=3, retries=2)),
    ("v2_pickle", "send_task('tasks.add', (1, 2), serializer='pickle')", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(23), serializer="pickle")),
    ("v2_ignore_result", "send_task('tasks.add', (1, 2), ignore_result=True)", {},
     lambda a: a.send_task("tasks.add", (1, 2), task_id=tid(24), ignore_result=True)),
    ("v2_delay_unicode", "add.delay('héllo ☃', 'x' * 1100)", {},
     lambda a: a.tasks["tasks.add"].apply_async(("héllo ☃", "x" * 1100), task_id=tid(25))),
]


def _lists(client: redis.Redis) -> dict[str, list[bytes]]:
    found = {}
    for key in sorted(client.keys()):
        if client.type(key) == b"list":
            items = client.lrange(key, 0, -1)
            found[key.decode("latin-1")] = list(reversed(items))  # LPUSH: oldest is last
    return found


def capture(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "celery": celery.__version__, "kombu": kombu.__version__,
        "python": sys.version.split()[0],
        "format": "one kombu Redis envelope per line, exactly as LRANGE returned it, "
                  "in send order",
        "cases": {},
    }
    with local_redis() as url:
        broker = redis.Redis.from_url(url)
        for name, call, conf, send in CASES:
            broker.flushall()
            app = make_app(url, **conf)
            try:
                send(app)
            finally:
                app.close()
            lists = _lists(broker)
            lines = [item for items in lists.values() for item in items]
            (out / f"{name}.jsonl").write_bytes(b"".join(item + b"\n" for item in lines))
            manifest["cases"][name] = {
                "file": f"{name}.jsonl",
                "call": call,
                "conf": conf,
                "lists": {key: len(items) for key, items in lists.items()},
            }
            print(f"{name}: {len(lines)} message(s) in {sorted(lists)}")
    manifest["fixed"] = {"ETA": ETA.isoformat(), "EXPIRES": EXPIRES.isoformat(),
                         "task_id(n)": tid(0)[:-12] + "<n as 12 digits>",
                         "captured": (datetime.now(UTC) - timedelta(0)).date().isoformat()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    capture(parser.parse_args().out)


if __name__ == "__main__":
    main()
