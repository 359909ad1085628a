"""``mbridge beat``'s schedule file and cron/interval evaluation: robfig/cron v3's syntax,
time zones and DST, the per-system checks, machinery's lock key, gocraft's job bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.beat.cron import CronSchedule, EverySchedule, parse_duration, parse_schedule
from bridge.beat.gocraft import periodic_job
from bridge.beat.model import parse_entries
from bridge.config import Config, ConfigError

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = Config(broker="redis://localhost:6379/3", default_queue="q")


def ts(*fields: int, tz: Any = UTC) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[arg-type,misc]


def local(t: float, tz: Any) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def walk(cron: str, start: float, n: int, timezone: str | None = None) -> list[float]:
    schedule = parse_schedule(cron, None, timezone, "test")
    out, t = [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(t)
    return out


# ------------------------------------------------------------------ cron syntax


def test_five_fields_are_minutes_six_have_seconds_first() -> None:
    start = ts(2024, 1, 1, 12, 0, 0)
    assert walk("*/15 * * * *", start, 2) == [start + 900, start + 1800]
    assert walk("*/1 * * * * *", start + 0.25, 3) == [start + 1, start + 2, start + 3]
    assert walk("30 0 * * * *", start, 2) == [start + 30, start + 3630]


@pytest.mark.parametrize(("descriptor", "after"), [
    ("@hourly", ts(2024, 1, 1, 13)), ("@daily", ts(2024, 1, 2)), ("@midnight", ts(2024, 1, 2)),
    ("@weekly", ts(2024, 1, 7)), ("@monthly", ts(2024, 2, 1)), ("@yearly", ts(2025, 1, 1)),
    ("@annually", ts(2025, 1, 1)),
])
def test_robfig_descriptors(descriptor: str, after: float) -> None:
    assert walk(descriptor, ts(2024, 1, 1, 12, 30), 1) == [after]


def test_every_is_on_multiples_of_the_period_and_robfig_next_counts_from_now() -> None:
    schedule = parse_schedule("@every 1m30s", None, None, "test")
    assert isinstance(schedule, EverySchedule) and schedule.period == 90
    assert schedule.next_after(1000.5) == 1080 and schedule.at_or_before(1000.5) == 990
    assert schedule.robfig_next(1000.5) == 1090  # ConstantDelaySchedule: now - nanos + delay
    assert parse_schedule(None, 10, None, "test").spec == "@every 10s"
    assert parse_schedule(None, "5m", None, "test").spec == "@every 5m"
    assert parse_duration("1.5h", "x") == 5400 and parse_duration("250ms", "x") == 0.25


@pytest.mark.parametrize(("cron", "every", "message"), [
    ("* * * *", None, "not valid"), ("0 0 0 * * * *", None, "not valid"),
    ("61 * * * *", None, "not valid"), ("@fortnightly", None, "unknown descriptor"),
    (None, None, "one of cron: or every:"), ("* * * * *", 5, "one of cron: or every:"),
    (None, "soon", "not a duration"), (None, 0.5, "under a second"),
    ("CRON_TZ=Mars/Olympus 0 * * * *", None, "unknown time zone"),
])
def test_bad_schedules_are_one_line(cron: str | None, every: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_schedule(cron, every, None, "entry 'x'")


# ------------------------------------------------------------------ time zones, DST


def test_timezone_and_cron_tz_prefix() -> None:
    summer, winter = ts(2024, 7, 1), ts(2024, 1, 1)
    assert local(walk("0 9 * * *", summer, 1, "Europe/Berlin")[0], UTC) == \
        "2024-07-01T07:00:00+00:00"
    assert local(walk("0 9 * * *", winter, 1, "Europe/Berlin")[0], UTC) == \
        "2024-01-01T08:00:00+00:00"
    assert walk("CRON_TZ=Europe/Berlin 0 9 * * *", summer, 1) == \
        walk("TZ=Europe/Berlin 0 9 * * *", summer, 1) == walk("0 9 * * *", summer, 1,
                                                               "Europe/Berlin")
    schedule = parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *", None, None, "x")
    assert schedule.spec == "CRON_TZ=Asia/Tokyo 0 9 * * *"  # verbatim: lock key, gocraft id
    with pytest.raises(ConfigError, match="keep one"):
        parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *", None, "Europe/Berlin", "x")


def test_spring_forward_skips_a_time_that_does_not_exist_as_robfig_does() -> None:
    ticks = walk("30 2 * * *", ts(2024, 3, 9, 12, tz=NY), 2, "America/New_York")
    assert [local(t, NY) for t in ticks] == ["2024-03-11T02:30:00-04:00",
                                             "2024-03-12T02:30:00-04:00"]
    hourly = walk("0 * * * *", ts(2024, 3, 10, 0, 30, tz=NY), 3, "America/New_York")
    assert [t - hourly[0] for t in hourly] == [0, 3600, 7200]  # 01:00 EST, 03:00, 04:00 EDT


def test_fall_back_runs_the_repeated_hour_twice_as_robfig_does() -> None:
    ticks = walk("30 1 * * *", ts(2024, 11, 2, 12, tz=NY), 3, "America/New_York")
    assert [local(t, NY) for t in ticks] == ["2024-11-03T01:30:00-04:00",
                                             "2024-11-03T01:30:00-05:00",
                                             "2024-11-04T01:30:00-05:00"]


def test_ticks_count_and_latest_over_a_dst_day() -> None:
    schedule = parse_schedule("0 * * * *", None, "Europe/Berlin", "x")
    assert isinstance(schedule, CronSchedule)
    start, end = ts(2024, 10, 27, 0, tz=BERLIN), ts(2024, 10, 28, 0, tz=BERLIN)
    assert schedule.count(start, end) == 25  # the fall-back day has 25 hours
    assert schedule.latest(start, end - 1) == end - 3600
    assert schedule.latest(end - 1, end - 0.5) is None


# ------------------------------------------------------------------ the file


def entries(*raw: dict[str, Any], **top: Any) -> list[Any]:
    return parse_entries({"entries": list(raw), **top}, CONFIG)


def test_entries_take_defaults_and_the_config_broker() -> None:
    machinery, celery, gocraft = entries(
        {"name": "m", "system": "machinery", "task": "add", "args": [1, 2],
         "arg_types": ["int64", "int8"], "cron": "*/5 * * * *", "machinery_program": "srv"},
        {"name": "c", "system": "celery", "task": "proj.add", "args": [1], "kwargs": {"y": 2},
         "every": "30s", "broker": "amqp://guest:guest@rabbit//", "lock": "redis://r:6379/1"},
        {"name": "g", "system": "gocraft", "job": "clean", "cron": "0 0 * * * *",
         "namespace": "app"},
        defaults={"timezone": "Europe/Berlin"})
    assert machinery.broker == machinery.lock == CONFIG.broker
    assert machinery.arg_types == ("int64", "int8") and machinery.args == (1, 2)
    assert machinery.machinery_lock_key == "machinery_lock_srvm*/5 * * * *"
    assert celery.kwargs == {"y": 2} and celery.lock == "redis://r:6379/1"
    assert gocraft.task == "clean" and gocraft.broker == CONFIG.broker
    assert gocraft.namespace == "app"
    assert isinstance(machinery.schedule, CronSchedule) and machinery.schedule.tz == BERLIN


@pytest.mark.parametrize(("raw", "message"), [
    ({"system": "gocraft", "cron": "* * * * *", "args": {"a": 1}}, "cannot carry args"),
    ({"system": "gocraft", "cron": "* * * * *", "queue": "q"}, "gocraft has no queues"),
    ({"system": "sidekiq", "cron": "* * * * *"}, "system: must be one of"),
    ({"system": "machinery", "cron": "* * * * *", "kwargs": {}}, "unknown key"),
    ({"system": "machinery", "cron": "* * * * *", "args": [1], "arg_types": []},
     "one Go type per arg"),
    ({"system": "celery", "cron": "* * * * *", "broker": "amqp://h//"}, "needs Redis"),
    ({"system": "celery", "cron": "* * * * *", "kwargs": [1]}, "kwargs: must be a mapping"),
])
def test_bad_entries_are_one_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        entries({"name": "x", **raw})


def test_names_are_unique_per_system_and_the_file_is_not_empty() -> None:
    one = {"name": "x", "system": "celery", "every": 5}
    with pytest.raises(ConfigError, match="must be unique"):
        entries(one, one)
    with pytest.raises(ConfigError, match="no entries"):
        parse_entries([], CONFIG)
    assert len(parse_entries([one], CONFIG)) == 1  # a bare list is a file too


def test_gocraft_periodic_job_bytes_are_gos() -> None:
    # gocraft-work.md §2: the bytes Go's encoding/json writes for a periodic job
    assert periodic_job("calculate_caches", "0 0 * * * *", 1700002800) == (
        b'{"name":"calculate_caches","id":"periodic:calculate_caches:0 0 * * * *:1700002800",'
        b'"t":1700002800,"args":null}')
    assert periodic_job("a<b>&", "@every 1s", 1) == (
        b'{"name":"a\\u003cb\\u003e\\u0026","id":"periodic:a\\u003cb\\u003e\\u0026:@every 1s:1",'
        b'"t":1,"args":null}')
