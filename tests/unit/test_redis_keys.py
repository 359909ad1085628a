"""Our Redis bookkeeping keys stay in their queue's Cluster slot; logs never show passwords."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from bridge.brokers.redis_keys import slot_tagged
from bridge.config import redact_url


@pytest.mark.parametrize("queue", ["machinery_tasks", "a}b", "{}x", "x{y}z", "}{", "é}"])
def test_bookkeeping_prefix_shares_the_queue_slot(queue: str) -> None:
    prefix = slot_tagged(queue)
    assert key_slot(f"bridge:processing:{prefix}:worker".encode()) == key_slot(queue.encode())


def test_credentials_on_several_addresses_are_all_hidden() -> None:
    shown = redact_url("redis://S3CRET@h1,u:S3CRET@h2")
    assert "S3CRET" not in shown
