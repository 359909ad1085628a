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


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real RabbitMQ: $BRIDGE_TEST_AMQP_URL if set, else a private rabbitmq-server.

    Never skipped: without rabbitmq-server installed (``.ci/setup`` installs it) this fails.
    """
    from tests.rabbitmq import rabbitmq_url

    with rabbitmq_url(tmp_path_factory.mktemp("rabbitmq")) as url:
        yield url
