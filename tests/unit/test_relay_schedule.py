"""How often the relay reads the states of what it still owes a result for."""

from __future__ import annotations

import pytest

from bridge.relay.loop import next_read_at


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
