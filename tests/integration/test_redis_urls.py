"""Every Redis URL form machinery accepts, for the broker and the backend, on real servers.

Unit tests of :func:`bridge.redisconn.parse_redis_url` against machinery's parsing rules
(v1 ``factories.go``), then one scenario set (publish/fetch/ack, delayed mover, requeue,
dead letters, recovery, the kombu transport; backend state sequence, groups, chords) run
against each URL form on a private server of the matching kind: password, password-only,
ACL users (one with a percent-escaped password), unix socket (with and without password), TLS
(CA from the URL or the environment; the certificate is always verified), Sentinel (with and
without a Sentinel password, and over TLS), Cluster with passwords (address list, one address
with ``cluster_mode``, and over TLS) and IPv6. Then the failures: wrong or missing passwords,
wrong CA, host name mismatch, missing client certificate, Sentinel and Cluster errors. Each
server kind is started once for the module, only when a test needs it.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
import redis.sentinel
from kombu import Connection
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from bridge.backends.redis import CHORD_MUTEX_KEY, RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_keys import QueueKeys
from bridge.config import Config, RedisConfig
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    STARTED,
    SUCCESS,
    Arg,
    Signature,
    TaskResult,
    TaskState,
    new_uuid,
)
from bridge.redisconn import (
    TLS_ENVIRONMENT,
    RedisAuthError,
    RedisClient,
    RedisTarget,
    RedisTLSError,
    RedisURLError,
    connect,
    parse_redis_url,
    tls_options,
)
from tests.redis_servers import (
    Cluster,
    Process,
    RedisProcesses,
    SentinelSetup,
    ServerError,
    TLSFiles,
    ipv6_loopback,
    missing_tools,
)

PASSWORD = "pw-S3CRET"
ALICE_PASSWORD = "alice-S3CRET"
BOB_PASSWORD = "b@d:pa/ss%"  # needs percent-escapes in a URL
BOB_ESCAPED = "b%40d%3Apa%2Fss%25"
MASTER_PASSWORD = "master-S3CRET"
SENTINEL_PASSWORD = "sentinel-S3CRET"
WRONG = "wrong-S3CRET"
CLIENT_NAME = "bridge-url-test"

# ==================================================================================== parsing


def target(**fields: Any) -> RedisTarget:
    return RedisTarget(**fields)


LOCAL = (("127.0.0.1", 6379),)


@pytest.mark.parametrize(("url", "expected"), [
    # redis://[user:]password@host:port/db (ParseRedisURL)
    ("redis://127.0.0.1:6379", target(addresses=LOCAL)),
    ("redis://127.0.0.1:6379/", target(addresses=LOCAL)),
    ("redis://127.0.0.1:6379/7", target(addresses=LOCAL, db=7)),
    ("redis://127.0.0.1:6379/7/extra", target(addresses=LOCAL, db=7)),
    ("redis://127.0.0.1:6379/+7", target(addresses=LOCAL, db=7)),  # Go's Atoi takes a sign
    ("redis://127.0.0.1:6379/abc", target(addresses=LOCAL)),  # bad db -> 0
    ("redis://127.0.0.1:6379/3_0", target(addresses=LOCAL)),  # Python int() would say 30
    ("redis://127.0.0.1:6379/%203", target(addresses=LOCAL)),
    ("redis://pw@127.0.0.1:6379/3", target(addresses=LOCAL, password="pw", db=3)),
    ("redis://:pw@127.0.0.1:6379/3", target(addresses=LOCAL, password="pw", db=3)),
    ("redis://alice:pw@127.0.0.1:6379/3",
     target(addresses=LOCAL, username="alice", password="pw", db=3)),
    ("redis://alice:@127.0.0.1:6379", target(addresses=LOCAL, username="alice", password="")),
    ("redis://:p@ss@127.0.0.1:6379", target(addresses=LOCAL, password="p@ss")),  # last @
    ("redis://:p%40ss%3A%2F@127.0.0.1:6379", target(addresses=LOCAL, password="p@ss:/")),
    ("redis://host", target(addresses=(("host", 6379),))),
    ("redis://:6379/2", target(addresses=(("localhost", 6379),), db=2)),
    ("redis://", target(addresses=(("localhost", 6379),))),
    ("redis://[::1]:6380/2", target(addresses=(("::1", 6380),), db=2)),
    ("redis://[::1]/2", target(addresses=(("::1", 6379),), db=2)),
    ("redis://:pw@[fe80::1%25eth0]:7000", target(addresses=(("fe80::1%25eth0", 7000),),
                                                  password="pw")),
    ("rediss://127.0.0.1:6379/1", target(addresses=LOCAL, db=1, tls=True)),
    ("rediss://127.0.0.1:6379/1?ssl_ca_certs=/ca.pem&ssl_check_hostname=false",
     target(addresses=LOCAL, db=1, tls=True,
            tls_options=(("ssl_ca_certs", "/ca.pem"), ("ssl_check_hostname", "false")))),
    # several addresses (ParseBrokers + NewGR): creds of the first, db after the last
    ("redis://h1:1,h2:2,h3:3", target(addresses=(("h1", 1), ("h2", 2), ("h3", 3)))),
    ("redis://h1:1,h2:2,h3:3/5", target(addresses=(("h1", 1), ("h2", 2), ("h3", 3)), db=5)),
    ("redis://h1:1,h2:2/x", target(addresses=(("h1", 1), ("h2", 2)))),
    ("redis://:pw@h1:1,h2:2/2", target(addresses=(("h1", 1), ("h2", 2)), password="pw", db=2)),
    ("redis://pw@h1:1,h2:2", target(addresses=(("h1", 1), ("h2", 2)), password="pw")),
    ("redis://u:pw@h1:1,h2:2", target(addresses=(("h1", 1), ("h2", 2)), username="u",
                                      password="pw")),
    ("redis://:p%40ss@h1:1,h2:2",  # NewGR takes the list's userinfo literally
     target(addresses=(("h1", 1), ("h2", 2)), password="p%40ss")),
    ("redis://[::1]:1,[::1]:2/4", target(addresses=(("::1", 1), ("::1", 2)), db=4)),
    ("rediss://h1:1,h2:2/0", target(addresses=(("h1", 1), ("h2", 2)), tls=True)),
    # redis+socket://[user:]password@/path/file.sock:/db (ParseRedisSocketURL)
    ("redis+socket:///run/redis.sock", target(socket_path="/run/redis.sock")),
    ("redis+socket:///run/redis.sock:/2", target(socket_path="/run/redis.sock", db=2)),
    ("redis+socket://pw@/run/redis.sock:/2",
     target(socket_path="/run/redis.sock", password="pw", db=2)),
    ("redis+socket://u:pw@/run/redis.sock:/4",
     target(socket_path="/run/redis.sock", username="u", password="pw", db=4)),
    ("redis+socket://pw@/run/redis.sock", target(socket_path="/run/redis.sock",
                                                 password="pw")),
    ("redis+socket:///run/redis.sock:/x", target(socket_path="/run/redis.sock")),
    ("redis+socket:///run/redis.sock:2", target(socket_path="/run/redis.sock")),  # Go: 0
    ("redis+socket://p%41ss@/run/redis.sock", target(socket_path="/run/redis.sock",
                                                     password="p%41ss")),  # literal in Go
])
def test_parse_redis_url_follows_machinery(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("http://S3CRET@127.0.0.1:6379", "not a Redis URL"),
    ("amqp://guest:S3CRET@127.0.0.1:5672/", "not a Redis URL"),
    ("redis://:S3CRET@127.0.0.1:port/0", "bad port"),
    ("redis://:S3CRET/0", "bad port"),  # the host and '@' forgotten: no echo of the "port"
    ("redis://alice:S3CRET", "bad port"),  # '@host' forgotten
    ("redis://:pw@127.0.0.1:99999", "bad port"),
    ("redis://h1:1,S3CRET@h2:2", "credentials must come before the first address"),
    ("redis://u:S3CRET@h1:1,u:S3CRET@h2:2", "credentials must come before"),
    ("redis://:S3CRET@[::1:6379/0", "bad IPv6 address"),
    ("redis://:S3CRET@::1:6379/0", "need brackets"),
    ("redis://:S3CRET@127.0.0.1:6379/-1", "negative Redis db"),
    ("redis+socket://S3CRET@", "needs a socket path"),
    ("redis+socket://u:S3CRET@:/2", "needs a socket path"),
    ("redis://:S3CRET@127.0.0.1:6379/0?ssl_ca_certs=/ca.pem", "need a rediss:// URL"),
    ("rediss://:S3CRET@127.0.0.1:6379/0?password=S3CRET", "unknown Redis URL parameter"),
    ("rediss://:S3CRET@127.0.0.1:6379/0?ssl_cert_reqs=S3CRET", "must be one of"),
    ("rediss://:S3CRET@127.0.0.1:6379/0?ssl_check_hostname=S3CRET", "true or false"),
    ("rediss://:S3CRET@127.0.0.1:6379/0?ssl_ca_certs=", "is empty"),
    ("rediss://:S3CRET@127.0.0.1:6379/0?S3CRET", "bad query string"),
])
def test_url_errors_are_clear_and_never_echo_the_password(url: str, message: str) -> None:
    with pytest.raises(RedisURLError) as raised:
        parse_redis_url(url)
    assert message in str(raised.value)
    assert "S3CRET" not in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_tls_options_environment_then_url_then_overrides(tmp_path: Path) -> None:
    plain = parse_redis_url("rediss://127.0.0.1:6380/0")
    assert tls_options(plain, {}) == {"ssl": True, "ssl_cert_reqs": "required",
                                      "ssl_check_hostname": True}
    assert tls_options(parse_redis_url("redis://127.0.0.1/0"), {"x": "y"}) == {}
    env = {TLS_ENVIRONMENT["ssl_ca_certs"]: "/env/ca.pem",
           TLS_ENVIRONMENT["ssl_certfile"]: "/env/client.pem",
           TLS_ENVIRONMENT["ssl_keyfile"]: "/env/client.key",
           TLS_ENVIRONMENT["ssl_check_hostname"]: "no"}
    assert tls_options(plain, env) == {
        "ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": "/env/ca.pem",
        "ssl_certfile": "/env/client.pem", "ssl_keyfile": "/env/client.key",
        "ssl_check_hostname": False}
    from_url = parse_redis_url("rediss://h:1/0?ssl_ca_certs=/url/ca.pem&ssl_check_hostname=1")
    options = tls_options(from_url, env)
    assert options["ssl_ca_certs"] == "/url/ca.pem" and options["ssl_check_hostname"] is True
    unverified = tls_options(parse_redis_url("rediss://h:1/0?ssl_cert_reqs=none"), {})
    assert unverified["ssl_cert_reqs"] == "none" and unverified["ssl_check_hostname"] is False
    with pytest.raises(RedisURLError, match="BRIDGE_REDIS_TLS_CERT_REQS") as raised:
        tls_options(plain, {TLS_ENVIRONMENT["ssl_cert_reqs"]: "S3CRET"})
    assert "S3CRET" not in str(raised.value)
    # connect(): keyword overrides come last
    client = connect("rediss://127.0.0.1:6380/0?ssl_ca_certs=/url/ca.pem",
                     ssl_ca_certs=str(tmp_path / "ca.pem"))
    assert isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert kwargs["ssl_cert_reqs"] == "required"
    client.close()


def test_connect_builds_the_right_client_kind() -> None:
    single = connect("redis://:pw@127.0.0.1:6399/3", RedisConfig(client_name="n"))
    assert isinstance(single, redis.Redis)
    kwargs = single.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["client_name"]) == (3, "pw", "n")
    sock = connect("redis+socket://u:pw@/tmp/none.sock:/2")
    assert isinstance(sock, redis.Redis)
    kwargs = sock.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["username"], kwargs["db"]) == ("/tmp/none.sock", "u", 2)
    sentinel = connect("redis://:pw@127.0.0.1:26399/1",
                       RedisConfig(master_name="mymaster", sentinel_password="spw"))
    assert isinstance(sentinel.connection_pool, redis.sentinel.SentinelConnectionPool)
    kwargs = sentinel.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("pw", 1)
    for client in (single, sock, sentinel):
        client.close()


def test_retry_policy_retries_transient_errors_but_not_refused_credentials() -> None:
    client = connect("redis://:pw@127.0.0.1:6399/0")
    policy = client.connection_pool.connection_kwargs["retry"]
    assert policy.get_retries() == 10
    calls: list[int] = []
    failures: list[Exception] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("Connection reset by peer")
        return "ok"

    assert policy.call_with_retry(flaky, failures.append) == "ok"
    assert (len(calls), len(failures)) == (3, 2)

    def refused() -> str:
        calls.append(1)
        raise redis.AuthenticationError("invalid username-password pair")

    calls.clear()
    with pytest.raises(RedisAuthError, match="check the user and password") as raised:
        policy.call_with_retry(refused, failures.append)
    assert len(calls) == 1 and isinstance(raised.value.__cause__, redis.AuthenticationError)
    assert "redis://***@127.0.0.1:6399/0" in str(raised.value)

    def untrusted() -> str:
        calls.append(1)
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as exc:
            raise redis.ConnectionError(f"Error 1 connecting: {exc}") from None

    calls.clear()
    with pytest.raises(RedisTLSError, match="certificate verify failed"):
        policy.call_with_retry(untrusted, failures.append)
    assert len(calls) == 1
    client.close()


# ==================================================================================== servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcesses]:
    why = missing_tools()
    if why:
        pytest.skip(f"cannot start test servers: {why}")
    procs = RedisProcesses(tmp_path_factory.mktemp("redis-urls"))
    yield procs
    procs.close()


@pytest.fixture(scope="module")
def auth_server(servers: RedisProcesses) -> Process:
    """requirepass for the default user, plus ACL users alice and bob."""
    return servers.redis("auth", "--requirepass", PASSWORD,
                         "--user", "alice", "on", f">{ALICE_PASSWORD}", "~*", "&*", "+@all",
                         "--user", "bob", "on", f">{BOB_PASSWORD}", "~*", "&*", "+@all")


@pytest.fixture(scope="module")
def socket_auth_server(servers: RedisProcesses) -> Process:
    path = servers.socket_path("auth")
    return servers.redis("socket-auth", "--unixsocket", path, "--unixsocketperm", "700",
                         "--requirepass", PASSWORD, port=0)


@pytest.fixture(scope="module")
def socket_server(servers: RedisProcesses) -> Process:
    path = servers.socket_path("open")
    return servers.redis("socket-open", "--unixsocket", path, "--unixsocketperm", "700", port=0)


@pytest.fixture(scope="module")
def tls_files(servers: RedisProcesses) -> TLSFiles:
    try:
        return servers.tls_files()
    except ServerError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tls_server(servers: RedisProcesses, tls_files: TLSFiles) -> Process:
    """TLS only, on 127.0.0.1 (in the certificate) and 127.0.0.2 (not in it)."""
    try:
        return servers.tls_redis("tls", tls_files, bind=("127.0.0.1", "127.0.0.2"))
    except ServerError as exc:  # e.g. a redis-server built without TLS
        pytest.skip(f"redis-server cannot serve TLS here: {exc}")


@pytest.fixture(scope="module")
def mtls_server(servers: RedisProcesses, tls_files: TLSFiles) -> Process:
    """TLS that requires a client certificate signed by the CA."""
    try:
        return servers.tls_redis("mtls", tls_files, auth_clients="yes")
    except ServerError as exc:
        pytest.skip(f"redis-server cannot serve TLS here: {exc}")


@pytest.fixture(scope="module")
def sentinel_setup(servers: RedisProcesses) -> SentinelSetup:
    return servers.sentinel("sentinel", "mymaster", master_password=MASTER_PASSWORD)


@pytest.fixture(scope="module")
def sentinel_pw_setup(servers: RedisProcesses) -> SentinelSetup:
    return servers.sentinel("sentinel-pw", "pwmaster", master_password=MASTER_PASSWORD,
                            sentinel_password=SENTINEL_PASSWORD)


@pytest.fixture(scope="module")
def cluster(servers: RedisProcesses) -> Cluster:
    """Three masters, every node with ``requirepass``."""
    return servers.cluster("cluster", password=PASSWORD)


@pytest.fixture(scope="module")
def sentinel_tls_setup(servers: RedisProcesses, tls_files: TLSFiles) -> SentinelSetup:
    """Master and Sentinel both TLS-only."""
    try:
        return servers.sentinel("sentinel-tls", "tlsmaster", master_password=MASTER_PASSWORD,
                                tls=tls_files)
    except ServerError as exc:
        pytest.skip(f"redis-server cannot run Sentinel over TLS here: {exc}")


@pytest.fixture(scope="module")
def cluster_tls(servers: RedisProcesses, tls_files: TLSFiles) -> Cluster:
    """Three TLS-only masters (cluster bus too), every node with ``requirepass``."""
    try:
        return servers.cluster("cluster-tls", password=PASSWORD, tls=tls_files)
    except ServerError as exc:
        pytest.skip(f"redis-server cannot run a Cluster over TLS here: {exc}")


@pytest.fixture(scope="module")
def ipv6_server(servers: RedisProcesses) -> Process:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    return servers.redis("ipv6", bind=("::1",))


# ==================================================================================== forms


@dataclass
class Form:
    """A URL (+ redis config) for the bridge, and an independent client on the same data."""

    name: str
    url: str
    raw: Callable[[], RedisClient]
    redis: RedisConfig = field(default_factory=RedisConfig)

    @property
    def cluster(self) -> bool:
        return self.redis.cluster_mode or "," in self.url


def _cluster_client(ports: list[int], **kwargs: Any) -> RedisClient:
    return redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", p)  # type: ignore[no-untyped-call]
                       for p in ports], password=PASSWORD, **kwargs)


def _form(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Form:
    get = request.getfixturevalue
    if name in ("password", "password_only", "acl_user", "acl_user_escaped"):
        port = get("auth_server").port
        url, user, password, db = {
            "password": (f"redis://:{PASSWORD}@127.0.0.1:{port}/3", None, PASSWORD, 3),
            "password_only": (f"redis://{PASSWORD}@127.0.0.1:{port}/3", None, PASSWORD, 3),
            "acl_user": (f"redis://alice:{ALICE_PASSWORD}@127.0.0.1:{port}/5", "alice",
                         ALICE_PASSWORD, 5),
            "acl_user_escaped": (f"redis://bob:{BOB_ESCAPED}@127.0.0.1:{port}/0", "bob",
                                 BOB_PASSWORD, 0),
        }[name]
        return Form(name, url, lambda: redis.Redis(port=port, username=user, password=password,
                                                   db=db),
                    RedisConfig(client_name=CLIENT_NAME))
    if name == "socket_password":
        path = get("socket_auth_server").socket_path
        return Form(name, f"redis+socket://{PASSWORD}@{path}:/2",
                    lambda: redis.Redis(unix_socket_path=path, password=PASSWORD, db=2))
    if name == "socket":
        path = get("socket_server").socket_path
        return Form(name, f"redis+socket://{path}:/1",
                    lambda: redis.Redis(unix_socket_path=path, db=1))
    if name in ("tls", "tls_env"):
        port, ca = get("tls_server").port, str(get("tls_files").ca)

        def raw_tls() -> RedisClient:
            return redis.Redis(port=port, ssl=True, ssl_ca_certs=ca, db=1)

        if name == "tls":
            return Form(name, f"rediss://127.0.0.1:{port}/1?ssl_ca_certs={ca}", raw_tls)
        monkeypatch.setenv(TLS_ENVIRONMENT["ssl_ca_certs"], ca)
        return Form(name, f"rediss://127.0.0.1:{port}/1", raw_tls)
    if name in ("sentinel", "sentinel_password"):
        setup: SentinelSetup = get("sentinel_setup" if name == "sentinel" else
                                   "sentinel_pw_setup")
        master = setup.master.port
        return Form(name, f"redis://:{MASTER_PASSWORD}@127.0.0.1:{setup.sentinel.port}/4",
                    lambda: redis.Redis(port=master, password=MASTER_PASSWORD, db=4),
                    RedisConfig(master_name=setup.master_name,
                                sentinel_password=setup.sentinel_password))
    if name == "sentinel_tls":  # Sentinel and master both over TLS, CA from the URL
        setup = get("sentinel_tls_setup")
        master, ca = setup.master.port, str(get("tls_files").ca)
        return Form(name, f"rediss://:{MASTER_PASSWORD}@127.0.0.1:{setup.sentinel.port}/2"
                          f"?ssl_ca_certs={ca}",
                    lambda: redis.Redis(port=master, password=MASTER_PASSWORD, db=2, ssl=True,
                                        ssl_ca_certs=ca),
                    RedisConfig(master_name=setup.master_name))
    if name == "cluster_tls":  # CA from the environment: the URL stays as Go reads it
        ports, ca = get("cluster_tls").ports, str(get("tls_files").ca)
        monkeypatch.setenv(TLS_ENVIRONMENT["ssl_ca_certs"], ca)
        return Form(name, f"rediss://:{PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in ports),
                    lambda: _cluster_client(ports, ssl=True, ssl_ca_certs=ca))
    if name == "cluster":  # the password of the first address is used for every node
        ports = get("cluster").ports
        return Form(name, f"redis://:{PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in ports),
                    lambda: _cluster_client(ports))
    if name == "cluster_mode":
        ports = get("cluster").ports
        return Form(name, f"redis://{PASSWORD}@127.0.0.1:{ports[1]}/0",
                    lambda: _cluster_client(ports),
                    RedisConfig(cluster_mode=True, client_name=CLIENT_NAME))
    if name == "ipv6":
        port = get("ipv6_server").port
        return Form(name, f"redis://[::1]:{port}/6",
                    lambda: redis.Redis(host="::1", port=port, db=6))
    raise AssertionError(name)


FORMS = ["password", "password_only", "acl_user", "acl_user_escaped", "socket_password",
         "socket", "tls", "tls_env", "sentinel", "sentinel_password", "sentinel_tls", "cluster",
         "cluster_mode", "cluster_tls", "ipv6"]


@pytest.fixture(params=FORMS)
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Form:
    return _form(request.param, request, monkeypatch)


@pytest.fixture
def raw(form: Form) -> Iterator[RedisClient]:
    client = form.raw()
    yield client
    client.close()


# Slots as ``redis-cli --cluster create`` splits them over three masters.
def node_of(key: str) -> int:
    slot = key_slot(key.encode())
    return 0 if slot <= 5460 else 1 if slot <= 10922 else 2


def spread(prefix: str, count: int = 3) -> list[str]:
    """``count`` fresh names that land on different cluster masters (round robin)."""
    names: list[str] = []
    while len(names) < count:
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        if node_of(name) == len(names) % 3:
            names.append(name)
    return names


@pytest.fixture
def config(form: Form) -> Config:
    """Own queue and delayed key, on different cluster masters (the mover crosses nodes)."""
    queue, delayed = spread("q_", 1)[0], ""
    while not delayed or node_of(delayed) == node_of(queue):
        delayed = f"delayed_{uuid.uuid4().hex[:12]}"
    return Config(broker=form.url, result_backend=form.url, default_queue=queue,
                  redis=replace(form.redis, delayed_tasks_key=delayed))


@pytest.fixture
def broker(form: Form, config: Config) -> Iterator[RedisBroker]:
    made = RedisBroker(form.url, config)
    yield made
    made.close()


@pytest.fixture
def backend(form: Form, config: Config) -> Iterator[RedisBackend]:
    made = RedisBackend(form.url, config)
    yield made
    made.close()


def task(queue: str, **kwargs: Any) -> Signature:
    return Signature(uuid=new_uuid(), name="add", routing_key=queue, headers={},
                     args=[Arg(type="int64", value=2), Arg(type="int64", value=3)], **kwargs)


# ==================================================================================== broker


def test_broker_publish_fetch_ack(form: Form, broker: RedisBroker, raw: RedisClient) -> None:
    queue = broker.default_queue
    assert broker.fetch(queue, 5, 0.05) == []  # BLMOVE on an empty queue times out
    first, second = task(queue), task("")
    broker.publish([first, second])
    assert second.routing_key == queue
    assert raw.lrange(queue, 0, -1) == [first.to_json(), second.to_json()]  # right db / node
    got = broker.fetch(queue, 5, 1.0)
    assert [d.body for d in got] == [first.to_json(), second.to_json()]
    assert Signature.from_json(got[0].body).uuid == first.uuid
    assert broker.processing(queue) == {broker.worker_id: 2}
    assert raw.llen(QueueKeys.of(queue).processing(broker.worker_id)) == 2
    broker.ack(got[:1])
    assert broker.processing(queue) == {broker.worker_id: 1}
    assert broker.fetch(queue, 5, 0, ack=got[1:]) == []  # ack in the fetch round trip
    assert broker.processing(queue) == {broker.worker_id: 0}
    broker.maintain()
    assert raw.exists(QueueKeys.of(queue).heartbeat(broker.worker_id)) == 1


def test_broker_delayed_tasks_and_delayed_requeue_are_moved(broker: RedisBroker,
                                                            raw: RedisClient) -> None:
    queue = broker.default_queue
    now = datetime.now(UTC)
    due_at = now + timedelta(seconds=1.5)  # far enough for "not due yet" on a busy machine
    later = task(queue, eta=due_at)
    broker.publish([later, task(queue)])
    assert raw.zcard(broker.delayed_tasks_key) == 1
    [held] = broker.fetch(queue, 1, 1.0)
    broker.requeue(held, delay=1.5)  # processing list -> delayed ZSET
    assert broker.processing(queue) == {broker.worker_id: 0}
    assert broker.delayed_count() == 2
    assert broker.move_delayed() == 0  # not due yet
    time.sleep(max((due_at - datetime.now(UTC)).total_seconds(), 0) + 0.02)
    deadline = time.monotonic() + 2
    moved = 0
    while moved < 2 and time.monotonic() < deadline:
        moved += broker.move_delayed()
        time.sleep(0.02)
    assert moved == 2
    assert broker.delayed_count() == 0
    bodies = sorted(d.body for d in broker.fetch(queue, 5, 1.0))
    assert bodies == sorted([later.to_json(), held.body])


def test_broker_requeue_dead_letter_replay(broker: RedisBroker, raw: RedisClient) -> None:
    queue = broker.default_queue
    one, two = task(queue), task(queue)
    broker.publish([one, two])
    first, second = broker.fetch(queue, 2, 1.0)
    broker.requeue(first)
    broker.dead_letter(second, "bad input")
    assert raw.lrange(queue, 0, -1) == [one.to_json()]
    [entry] = broker.dead_letters(queue)
    assert (entry["reason"], entry["body"]) == ("bad input", two.to_json().decode())
    assert broker.replay_dead(queue) == 1
    assert raw.lrange(queue, 0, -1) == [one.to_json(), two.to_json()]
    assert broker.dead_letters(queue) == []


def test_broker_recovers_a_dead_workers_messages(form: Form, config: Config,
                                                 raw: RedisClient) -> None:
    queue = config.default_queue
    dead, alive = RedisBroker(form.url, config), RedisBroker(form.url, config)
    try:
        sent = task(queue)
        dead.publish([sent])
        assert [d.body for d in dead.fetch(queue, 1, 1.0)] == [sent.to_json()]
        raw.delete(QueueKeys.of(queue).heartbeat(dead.worker_id))  # killed: no heartbeat
        assert alive.recover(queue) == 1
        assert raw.lrange(queue, 0, -1) == [sent.to_json()]
        assert dead.worker_id not in alive.processing(queue)
    finally:
        alive.close()
        dead.layout.client.close()  # never release(): it was killed


def test_kombu_transport_with_the_same_url(form: Form, config: Config,
                                           raw: RedisClient) -> None:
    queue = config.default_queue
    body = task(queue).to_json()
    with Connection("machinery+" + form.url,
                    transport_options={"redis_config": config.redis}) as conn:
        simple = conn.SimpleQueue(queue)
        simple.put(body, serializer="raw")
        assert raw.lrange(queue, 0, -1) == [body]
        message = simple.get(timeout=2)
        assert message.body == body
        message.ack()
        simple.close()
    assert raw.llen(queue) == 0


# ==================================================================================== backend


def test_backend_pending_to_success(form: Form, backend: RedisBackend,
                                    raw: RedisClient) -> None:
    sig = task("q")
    backend.set_state_pending(sig)
    pending = backend.get_state(sig.uuid)
    assert pending is not None and pending.state == PENDING
    backend.set_state_received(sig)
    backend.set_state_started(sig)
    assert (state := backend.get_state(sig.uuid)) is not None and state.state == STARTED
    backend.set_state_success(sig, [TaskResult("int64", 5)])
    done = backend.get_state(sig.uuid)
    assert done is not None and done.state == SUCCESS
    assert (done.task_name, done.created_at) == ("add", pending.created_at)  # merged as Go
    assert done.results == [TaskResult("int64", 5)]
    assert raw.get(sig.uuid) == done.to_json()  # the right db / node
    assert 0 < raw.ttl(sig.uuid) <= 3600
    # batched writes (pipelined scripts; one by one on a Cluster)
    sigs = [task("q") for _ in range(3)]
    backend.set_states([*(TaskState(s.uuid, s.name, PENDING) for s in sigs),
                        *(TaskState(s.uuid, state=SUCCESS, results=[]) for s in sigs)])
    states = backend.get_states([s.uuid for s in sigs])
    assert [(s.state, s.task_name) for s in states if s is not None] == [(SUCCESS, "add")] * 3


def test_backend_group_completed_and_trigger_chord(form: Form, backend: RedisBackend,
                                                   raw: RedisClient) -> None:
    group = new_uuid("group_")
    uuids = [f"task_{name}" for name in spread("", 3)]  # one per cluster master
    members = [replace(task("q"), uuid=u, group_uuid=group, group_task_count=3) for u in uuids]
    backend.init_group(group, uuids)
    for member in members:
        backend.set_state_pending(member)
    assert backend.group_completed(group, 3) is False
    backend.set_state_success(members[0], [TaskResult("int64", 1)])
    backend.set_state_failure(members[1], "boom")
    assert backend.group_completed(group, 3) is False
    backend.set_state_success(members[2], [])
    assert backend.group_completed(group, 3) is True
    assert [s.state for s in backend.group_task_states(group, 3)] == [SUCCESS, FAILURE, SUCCESS]
    assert backend.trigger_chord(group) is True
    assert backend.trigger_chord(group) is False
    meta = raw.get(group)
    assert meta is not None and json.loads(meta)["ChordTriggered"] is True
    assert raw.exists(CHORD_MUTEX_KEY) == 0  # released


# ==================================================================================== auth


@pytest.mark.parametrize("userinfo", [f":{WRONG}", WRONG, f"alice:{WRONG}", "", "alice:",
                                      f"nobody:{WRONG}"])
def test_wrong_or_missing_password_is_a_clear_error(auth_server: Process, userinfo: str) -> None:
    url = f"redis://{userinfo}{'@' if userinfo else ''}127.0.0.1:{auth_server.port}/0"
    broker = RedisBroker(url, Config(broker=url))
    backend = RedisBackend(url, Config(result_backend=url))
    hint = ("check the user and password in the URL" if userinfo.strip(":") else
            "the server requires a password: set the user and password in the URL")
    started = time.monotonic()
    try:
        with pytest.raises(RedisAuthError) as raised:
            broker.publish([task("q")])
        assert isinstance(raised.value, redis.AuthenticationError)  # what redis-py raises
        assert f"redis://{'***@' if userinfo else ''}127.0.0.1:{auth_server.port}/0 refused " \
               f"the credentials ({hint})" in str(raised.value)
        assert WRONG not in str(raised.value) and WRONG not in repr(broker)
        with pytest.raises(RedisAuthError) as raised:
            backend.get_state("task_x")
        assert WRONG not in str(raised.value) and WRONG not in repr(backend)
        assert time.monotonic() - started < 2  # not retried
    finally:
        backend.close()
        broker.layout.client.close()


def test_wrong_password_on_a_unix_socket(socket_auth_server: Process) -> None:
    url = f"redis+socket://{WRONG}@{socket_auth_server.socket_path}:/0"
    backend = RedisBackend(url)
    with pytest.raises(RedisAuthError) as raised:
        backend.get_state("task_x")
    assert WRONG not in str(raised.value)
    assert f"redis+socket://***@{socket_auth_server.socket_path}:/0" in str(raised.value)
    backend.close()


def test_client_name_is_set(form_password: Form) -> None:
    backend = RedisBackend(form_password.url, Config(redis=form_password.redis))
    backend.get_state("task_x")
    names = [c["name"] for c in backend.client.client_list()]
    assert CLIENT_NAME in names
    backend.close()


@pytest.fixture
def form_password(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Form:
    return _form("password", request, monkeypatch)


# ==================================================================================== TLS


def test_tls_wrong_ca_fails_clearly(tls_server: Process, tls_files: TLSFiles) -> None:
    url = f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={tls_files.other_ca}"
    backend = RedisBackend(url)
    broker = RedisBroker(url)
    started = time.monotonic()
    with pytest.raises(RedisTLSError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        backend.get_state("task_x")
    assert isinstance(raised.value, redis.ConnectionError)
    assert "server certificate did not verify" in str(raised.value)
    assert TLS_ENVIRONMENT["ssl_ca_certs"] in str(raised.value)
    with pytest.raises(RedisTLSError):
        broker.publish([task("q")])
    assert time.monotonic() - started < 2  # not retried
    backend.close()
    broker.layout.client.close()


def test_tls_without_a_ca_uses_the_system_store_and_fails(tls_server: Process,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in TLS_ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    backend = RedisBackend(f"rediss://127.0.0.1:{tls_server.port}/0")
    with pytest.raises(RedisTLSError, match="CERTIFICATE_VERIFY_FAILED"):
        backend.get_state("task_x")
    backend.close()


def test_tls_checks_the_host_name(tls_server: Process, tls_files: TLSFiles) -> None:
    base = f"rediss://127.0.0.2:{tls_server.port}/0?ssl_ca_certs={tls_files.ca}"
    backend = RedisBackend(base)  # 127.0.0.2 is not in the certificate
    with pytest.raises(RedisTLSError, match=r"IP address mismatch|match"):
        backend.get_state("task_x")
    backend.close()
    relaxed = RedisBackend(base + "&ssl_check_hostname=false")  # CA still verified
    assert relaxed.get_state("task_x") is None
    relaxed.close()
    by_name = RedisBackend(f"rediss://localhost:{tls_server.port}/0?ssl_ca_certs={tls_files.ca}")
    assert by_name.get_state("task_x") is None  # DNS:localhost is in the certificate
    by_name.close()


def test_mutual_tls_client_certificate_from_the_environment(
        mtls_server: Process, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"rediss://127.0.0.1:{mtls_server.port}/0"
    monkeypatch.setenv(TLS_ENVIRONMENT["ssl_ca_certs"], str(tls_files.ca))
    # the server drops the handshake: an EOF a retry might cure, so fail fast only here
    without = connect(url, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        without.get("x")
    without.close()
    monkeypatch.setenv(TLS_ENVIRONMENT["ssl_certfile"], str(tls_files.client_cert))
    monkeypatch.setenv(TLS_ENVIRONMENT["ssl_keyfile"], str(tls_files.client_key))
    backend = RedisBackend(url)
    broker = RedisBroker(url)
    try:
        assert backend.get_state("task_x") is None
        broker.publish([task("mtls_q")])
        assert len(broker.fetch("mtls_q", 1, 1.0)) == 1
    finally:
        backend.close()
        broker.close()


# ==================================================================================== Sentinel


def test_sentinel_wrong_sentinel_password(sentinel_pw_setup: SentinelSetup) -> None:
    url = f"redis://:{MASTER_PASSWORD}@127.0.0.1:{sentinel_pw_setup.sentinel.port}/0"
    for password in (WRONG, ""):
        cfg = Config(redis=RedisConfig(master_name="pwmaster", sentinel_password=password))
        # "no master found" is retried (a fail-over looks the same): the default policy once,
        # then a single try
        client = None if password else connect(url, cfg.redis, retry=Retry(NoBackoff(), 0))
        backend = RedisBackend(url, cfg, client=client)
        started = time.monotonic()
        with pytest.raises(redis.sentinel.MasterNotFoundError) as raised:
            backend.get_state("task_x")
        assert time.monotonic() - started < 10
        assert re.search(r"Auth\w*Error", str(raised.value))  # what each Sentinel said
        assert WRONG not in str(raised.value) and MASTER_PASSWORD not in str(raised.value)
        backend.close()


def test_sentinel_wrong_master_password(sentinel_setup: SentinelSetup) -> None:
    url = f"redis://:{WRONG}@127.0.0.1:{sentinel_setup.sentinel.port}/0"
    backend = RedisBackend(url, Config(redis=RedisConfig(master_name="mymaster")))
    with pytest.raises(RedisAuthError) as raised:
        backend.get_state("task_x")
    assert WRONG not in str(raised.value)
    backend.close()


def test_sentinel_unknown_master_name(sentinel_setup: SentinelSetup) -> None:
    url = f"redis://:{MASTER_PASSWORD}@127.0.0.1:{sentinel_setup.sentinel.port}/0"
    cfg = RedisConfig(master_name="nosuchmaster")
    backend = RedisBackend(url, client=connect(url, cfg, retry=Retry(NoBackoff(), 0)))
    with pytest.raises(redis.sentinel.MasterNotFoundError, match="nosuchmaster"):
        backend.get_state("task_x")
    backend.close()


# ==================================================================================== Cluster


def test_cluster_db_in_the_url_is_ignored_with_a_warning(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://{PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports) + "/2"
    with caplog.at_level(logging.WARNING, logger="bridge.redisconn"):
        backend = RedisBackend(url)
    assert "only db 0" in caplog.text
    sig = task("q")
    backend.set_state_pending(sig)
    assert backend.get_state(sig.uuid) is not None
    backend.close()


def test_cluster_client_name_and_credentials_reach_every_node(cluster: Cluster) -> None:
    url = f"redis://default:{PASSWORD}@127.0.0.1:{cluster.ports[0]}"
    cfg = Config(redis=RedisConfig(cluster_mode=True, client_name=CLIENT_NAME))
    backend = RedisBackend(url, cfg)
    for key in spread("task_", 3):
        backend.get_state(key)
    for port in cluster.ports:
        node = redis.Redis(port=port, password=PASSWORD)
        assert CLIENT_NAME in [c["name"] for c in node.client_list()], port
        node.close()
    backend.close()


def test_cluster_hash_tagged_queue_names(cluster: Cluster) -> None:
    """A queue that carries its own hash tag keeps it; its bookkeeping shares the slot."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{cluster.ports[0]}"
    queue = f"{{jobs-{uuid.uuid4().hex[:6]}}}.high"
    cfg = Config(default_queue=queue, redis=RedisConfig(cluster_mode=True))
    broker = RedisBroker(url, cfg)
    try:
        broker.publish([task(queue)])
        [held] = broker.fetch(queue, 1, 1.0)
        broker.dead_letter(held, "x")
        assert broker.replay_dead(queue) == 1
        [held] = broker.fetch(queue, 1, 1.0)
        broker.ack([held])
        assert broker.queue_depth(queue) == 0
    finally:
        broker.close()


@pytest.mark.parametrize("userinfo", [f":{WRONG}@", ""])
def test_cluster_wrong_or_missing_password(cluster: Cluster, userinfo: str) -> None:
    """A Cluster client reads the slot map when it is made: the error comes at once."""
    url = f"redis://{userinfo}" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
    with pytest.raises(RedisAuthError, match="refused the credentials") as raised:
        RedisBackend(url)
    assert WRONG not in str(raised.value)
    if userinfo:  # kombu retries the broker's channel for its connect_timeout (4 s) first
        with pytest.raises((RedisAuthError, OperationalError)) as failed:
            RedisBroker(url)
        assert "refused the credentials" in str(failed.value)
        assert WRONG not in str(failed.value)


def test_cluster_mode_on_a_plain_server_is_a_connection_error(auth_server: Process) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{auth_server.port}/0"
    with pytest.raises(redis.ConnectionError, match="Cluster mode is not enabled") as raised:
        RedisBackend(url, Config(redis=RedisConfig(cluster_mode=True)))
    assert PASSWORD not in str(raised.value)
