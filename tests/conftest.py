"""Shared fixtures: real servers, started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bridge.localredis import local_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $BRIDGE_TEST_REDIS_URL if set, else a private redis-server."""
    configured = os.environ.get("BRIDGE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    with local_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
