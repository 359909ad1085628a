"""Parking runs at the speed of the good path: bad input never costs a wait per message, so
a flood of garbage cannot delay good tasks for long."""

from __future__ import annotations

import logging
import time

import pytest

from tests.hostile.harness import served, wait_for

COUNT = 3000


def test_parking_keeps_up_with_the_good_path(redis_url: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # a log line per parked message is not the point here
    with served(redis_url, concurrency=8) as worker:
        start = time.monotonic()
        worker.push_machinery(*[b"not json %d" % n for n in range(COUNT)])
        wait_for(lambda: worker.client.llen(f"bridge:dead:{{{worker.machinery_queue}}}")
                 >= COUNT, 120, f"{COUNT} parked messages")
        parking = COUNT / (time.monotonic() - start)
        start = time.monotonic()
        keys = worker.machinery_good(COUNT)
        worker.wait_ran(keys, 120)
        good = COUNT / (time.monotonic() - start)
        print(f"\nparked {parking:.0f}/s, good tasks {good:.0f}/s")
        assert parking >= 0.4 * good, (parking, good)  # ~1x measured; shared cores are noisy
