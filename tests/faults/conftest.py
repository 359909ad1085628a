"""The fault tests' own redis-server, stopped and started under the tools they test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.controlled_redis import ControlledRedis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlledRedis]:
    """A private redis-server (data kept across its restarts), closed after the test."""
    (tmp_path / "redis").mkdir()
    node = ControlledRedis(tmp_path / "redis")
    node.start()
    try:
        yield node
    finally:
        node.close()
