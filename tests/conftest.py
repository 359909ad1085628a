"""Shared fixtures: real servers, started once per test session."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

from bridge.localredis import local_redis

if TYPE_CHECKING:
    from tests.backend_servers import Memcached, MongoServer, MotoServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $BRIDGE_TEST_REDIS_URL if set, else a private redis-server."""
    configured = os.environ.get("BRIDGE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    with local_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
        # Celery's AsyncResults live in reference cycles and unsubscribe in __del__: collect
        # them while this server runs (after it stops, each fails to reconnect, and a
        # session run of a few files ended with pytest itself failing on those errors)
        gc.collect()


@pytest.fixture()
def private_redis_url() -> Iterator[str]:
    """A redis-server of this test's own, for tests that read shared keys (``delayed_tasks``,
    counters) and must not see what earlier tests left in the session's Redis."""
    with local_redis() as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real RabbitMQ: $BRIDGE_TEST_AMQP_URL if set, else a private rabbitmq-server.

    Never skipped: without rabbitmq-server installed (``.ci/setup`` installs it) this fails.
    """
    from tests.rabbitmq import rabbitmq_url

    with rabbitmq_url(tmp_path_factory.mktemp("rabbitmq")) as url:
        yield url


# ------------------------------------------------------------------ backend servers
# memcached, moto (SQS, DynamoDB) and FerretDB (MongoDB wire): tests/backend_servers.py.
# Where the program is missing they skip; with $CI set (CI services set CI=true) that is
# a failure: .ci/setup installs all three.

Server = TypeVar("Server", "Memcached", "MotoServer", "MongoServer")


def in_ci() -> bool:
    """Is $CI set (to anything but an empty, "0" or "false")?"""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def absent(reason: str) -> NoReturn:
    """A test server's program is not installed: skip, or fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} [$CI is set, so this is a failure]", pytrace=False)
    pytest.skip(reason)


def _serve(start: Callable[[Path], Server], workdir: Path) -> Iterator[Server]:
    """Start a private server (absent program: :func:`absent`) and stop it afterwards."""
    from tests.backend_servers import ServerAbsent

    try:
        server: Server | None = start(workdir)
    except ServerAbsent as exc:
        server, reason = None, str(exc)
    if server is None:
        absent(reason)  # outside the except: no "during handling" chain in the report
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memcached]:
    """A real memcached: $BRIDGE_TEST_MEMCACHE_URL (memcache://host:port) if set, else a
    private one. ``.url`` is machinery's backend URL, ``.address`` pymemcache's."""
    from tests.backend_servers import Memcached, start_memcached

    configured = os.environ.get("BRIDGE_TEST_MEMCACHE_URL")
    if configured:
        host, _, port = configured.removeprefix("memcache://").partition(":")
        yield Memcached(host, int(port or 11211))
        return
    yield from _serve(start_memcached, tmp_path_factory.mktemp("memcached"))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's server mode for SQS and DynamoDB: $BRIDGE_TEST_AWS_ENDPOINT if set, else a
    private one. ``.endpoint``, ``.client(service)``, ``.env()``, ``.sqs_broker_url``."""
    from tests.backend_servers import MotoServer, start_moto

    configured = os.environ.get("BRIDGE_TEST_AWS_ENDPOINT")
    if configured:
        yield MotoServer(configured.rstrip("/"))
        return
    yield from _serve(start_moto, tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A MongoDB-wire server: $BRIDGE_TEST_MONGODB_URL if set, else a private FerretDB (SQLite
    storage). ``.url`` is a mongodb:// URI; ``.ferretdb`` FerretDB's version ("" for MongoDB)."""
    from tests.backend_servers import MongoServer, server_flavour, start_ferretdb

    configured = os.environ.get("BRIDGE_TEST_MONGODB_URL")
    if configured:
        yield MongoServer(configured, ferretdb=server_flavour(configured))
        return
    yield from _serve(start_ferretdb, tmp_path_factory.mktemp("ferretdb"))


# ------------------------------------------------------------------ Celery's own suite
# tests/celery_suite/test_celery_suite.py waits most of an hour on Celery's integration
# suite: when it is collected, both runs start in the background now, and the test moves
# to the end of the session to collect them.

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    suite = [item for item in items if item.nodeid.startswith("tests/celery_suite/")]
    if not suite or config.option.collectonly:
        return
    from tests.celery_suite.suite import STARTED, Comparison

    for item in suite:
        items.remove(item)
        items.append(item)
    config.stash[STARTED] = Comparison().start()


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests.celery_suite.suite import STARTED

    comparison = config.stash.get(STARTED, None)
    if comparison is not None:
        comparison.stop()
