"""How often the relay reads the states of what it still owes a result for."""

from __future__ import annotations

import pytest

from bridge.relay.loop import HEAD, ReadSchedule, next_read_at


@pytest.mark.parametrize(("began", "ended", "interval", "expected"), [
    (10.0, 10.01, 0.2, 10.21),   # a quick read: the configured interval
    (10.0, 10.05, 0.2, 10.25),   # four times the read is exactly the interval
    (10.0, 10.5, 0.2, 12.5),     # a long read (a deep backlog): four times its length
    (10.0, 10.0, 0.0, 10.0),     # no interval, nothing to read: at once
])
def test_reading_takes_at_most_a_fifth_of_the_time(began: float, ended: float,
                                                   interval: float, expected: float) -> None:
    at = next_read_at(began, ended, interval)
    assert at == pytest.approx(expected)
    assert ended - began <= (at - began) / 5 + 1e-9


def test_reads_that_find_nothing_ended_wait_longer_up_to_sixteen_intervals() -> None:
    waits = [next_read_at(10.0, 10.0, 0.2, idle) - 10.0 for idle in range(7)]
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 3.2, 3.2])
    # a long read still waits four times its length
    assert next_read_at(10.0, 11.0, 0.2, 1) == pytest.approx(15.0)


def test_a_backlog_nobody_works_on_is_read_whole_ever_more_rarely() -> None:
    schedule = ReadSchedule(0.25)
    now, whole = 0.0, []
    while now < 10.0:
        limit = schedule.due(now, in_flight=50_000)
        if limit == 0:
            whole.append(now)
        if limit is not None:
            assert limit in (0, HEAD)
            schedule.read(limit, now, now, ended_tasks=0)
        now += 0.125
    assert whole == [0.0, 0.5, 1.5, 3.5, 7.5]


def test_the_oldest_are_read_every_interval_and_an_ended_one_resets_the_wait() -> None:
    schedule = ReadSchedule(0.25)
    for now in (0.0, 0.5, 1.5, 3.5):  # four reads of all that found nothing ended
        assert schedule.due(now, 50_000) == 0
        schedule.read(0, now, now, 0)
    assert schedule.all_at == 7.5
    assert schedule.due(3.625, 50_000) is None
    assert schedule.due(3.75, 50_000) == HEAD  # the oldest, an interval after the last read
    schedule.read(HEAD, 3.75, 3.75, ended_tasks=3)
    assert schedule.idle == 0
    assert schedule.all_at == 3.75  # tasks are ending: every id is read again, at once
    assert schedule.due(3.75, 50_000) == 0


def test_few_in_flight_are_all_read_every_interval() -> None:
    schedule = ReadSchedule(0.25)
    for now in (0.0, 0.5, 1.5):
        schedule.read(0, now, now, 0)
    assert schedule.due(1.75, in_flight=HEAD) == 0  # the oldest are all of them
    assert schedule.due(1.75, in_flight=HEAD + 1) == HEAD
