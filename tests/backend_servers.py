"""Private memcached, moto (SQS and DynamoDB) and FerretDB (MongoDB wire) servers for the tests.

Each runs as a plain process on a free 127.0.0.1 port with everything under one work directory;
readiness is polled with a real request (never fixed sleeps), and ``stop()`` ends it. Where the
program is missing, the start functions raise :class:`ServerAbsent` (``tests/conftest.py``
turns that into a skip, or a failure when $CI is set). ``.ci/setup`` installs all three:
memcached from Debian, moto from PyPI (``moto[server]`` in the ``test`` extra) and FerretDB v1
built from the Go module proxy into ``~/.cache/machinery-bridge/bin/ferretdb``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.localredis import free_port
from tests.redis_servers import Process, ServerError, wait_until

HOST = "127.0.0.1"
MOTO_START_TIMEOUT = 60.0
"""moto imports every AWS service it fakes: seconds on a busy machine."""
MOTO_ATOMIC = Path(__file__).with_name("moto_atomic.py")
"""moto's server with atomic SQS and DynamoDB calls (see that module)."""


class ServerAbsent(ServerError):
    """The server's program is not installed here."""


def _spawn(name: str, argv: list[str], workdir: Path, port: int,
           env: dict[str, str] | None = None) -> Process:
    """Start ``argv`` in ``workdir``, its output going to ``<name>.log``."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT)
    return Process(name, popen, log, port=port)


def _started(proc: Process, ready: Callable[[], bool], timeout: float) -> Process:
    """Wait until ``ready()`` (the process stopped and the error raised if it never is)."""
    try:
        wait_until(ready, proc.name, [proc], timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


# ---------------------------------------------------------------------------------- memcached

@dataclass
class Memcached:
    """A memcached; ``url`` is machinery's backend URL form (``memcache://host:port``)."""

    host: str
    port: int
    proc: Process | None = None

    @property
    def url(self) -> str:
        return f"memcache://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` for pymemcache."""
        return (self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _memcached_version(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(b"version\r\n")
        return sock.recv(64).startswith(b"VERSION ")


def start_memcached(workdir: Path) -> Memcached:
    """A private memcached (64 MB, TCP only) on a free loopback port."""
    binary = shutil.which("memcached")
    if binary is None:
        raise ServerAbsent("memcached is not installed (Debian: apt-get install memcached; "
                           ".ci/setup does it)")
    port = free_port()
    argv = [binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", "64", "-v"]
    if os.geteuid() == 0:
        argv += ["-u", getpass.getuser()]  # memcached refuses root without -u
    proc = _spawn("memcached", argv, workdir, port)
    _started(proc, lambda: _memcached_version(HOST, port), timeout=15)
    return Memcached(HOST, port, proc)


# ---------------------------------------------------------------------------------- moto

@dataclass
class MotoServer:
    """moto's server mode: SQS and DynamoDB (and every other AWS API moto fakes) at
    ``endpoint``, with any credentials. ``sqs_broker_url`` is machinery's SQS broker URL form
    (queue URL = broker URL + "/" + queue name)."""

    endpoint: str
    region: str = "us-east-1"
    account_id: str = "123456789012"
    """moto's default account: queue URLs are ``<endpoint>/<account_id>/<queue>``."""
    access_key: str = "testing"
    secret_key: str = "testing"
    proc: Process | None = None

    @property
    def sqs_broker_url(self) -> str:
        return f"{self.endpoint}/{self.account_id}"

    def env(self) -> dict[str, str]:
        """Environment for AWS SDKs (boto3, aws-sdk-go-v2) to talk to this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` bound to this server."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def reset(self) -> None:
        """Forget every queue, table and message (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _http_answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status)


def start_moto(workdir: Path) -> MotoServer:
    """moto's server (this interpreter's moto) on a free loopback port, with its SQS and
    DynamoDB calls made atomic as AWS's are (``tests/moto_atomic.py``)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerAbsent(f"moto's server mode is not installed ({exc}; pip install "
                           "'moto[server]', in the test extra)") from None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    proc = _spawn("moto", [sys.executable, str(MOTO_ATOMIC), "-H", HOST, "-p", str(port)],
                  workdir, port, env=env)
    endpoint = f"http://{HOST}:{port}"
    _started(proc, lambda: _http_answers(f"{endpoint}/moto-api/data.json"),
             timeout=MOTO_START_TIMEOUT)
    return MotoServer(endpoint, proc=proc)


# ---------------------------------------------------------------------------------- FerretDB

def ferretdb_binary() -> str | None:
    """$BRIDGE_FERRETDB, else the build ``.ci/setup`` caches, else ``ferretdb`` on PATH."""
    configured = os.environ.get("BRIDGE_FERRETDB")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = cache / "machinery-bridge" / "bin" / "ferretdb"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("ferretdb")


@dataclass
class MongoServer:
    """A MongoDB-wire server; ``url`` is a ``mongodb://`` URI (machinery's backend URL).
    ``ferretdb`` is FerretDB's version ("" for a real MongoDB given by $BRIDGE_TEST_MONGODB_URL),
    so tests can tell which server's gaps they meet."""

    url: str
    ferretdb: str = ""
    proc: Process | None = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def mongo_admin(url: str, command: str, timeout_ms: int = 5000) -> dict[str, Any]:
    """The reply to one admin ``command`` (e.g. ping, hello, buildInfo), on a new connection."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    with client:
        return dict(client.admin.command(command))


def server_flavour(url: str) -> str:
    """FerretDB's version from ``buildInfo`` ("" for MongoDB itself)."""
    return str(mongo_admin(url, "buildInfo").get("ferretdbVersion", ""))


def _mongo_ping(url: str) -> bool:
    from pymongo.errors import PyMongoError

    try:
        mongo_admin(url, "ping", timeout_ms=500)
        return True
    except PyMongoError:
        return False


def start_ferretdb(workdir: Path) -> MongoServer:
    """FerretDB with its SQLite handler (data under ``workdir``), no telemetry, no debug
    HTTP listener, on a free loopback port."""
    binary = ferretdb_binary()
    if binary is None:
        raise ServerAbsent("FerretDB is not built (.ci/setup builds it into "
                           "~/.cache/machinery-bridge/bin; $BRIDGE_FERRETDB may name "
                           "another build)")
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRETDB_")}
    env["DO_NOT_TRACK"] = "1"
    proc = _spawn("ferretdb", [
        binary, "--handler=sqlite", f"--sqlite-url=file:{data}/", f"--listen-addr={HOST}:{port}",
        f"--state-dir={workdir}", "--debug-addr=-", "--telemetry=disable", "--log-level=warn",
    ], workdir, port, env=env)
    url = f"mongodb://{HOST}:{port}/"
    _started(proc, lambda: _mongo_ping(url), timeout=30)
    return MongoServer(url, ferretdb=server_flavour(url), proc=proc)
