"""Redis clients from the URLs machinery accepts, shared by the Redis broker and backend.

Forms (machinery v1 ``factories.go`` ParseRedisURL / ParseBrokers / ParseRedisSocketURL):

- ``redis://[user:]password@host:port/db`` and ``rediss://`` (TLS). A userinfo without
  ``:`` is a password, as in machinery. A missing or bad db is 0.
- ``redis+socket://[user:]password@/path/to/redis.sock:/db``.
- ``redis://h1:p1,h2:p2/db``: several addresses, a Cluster (so is one address with
  ``cluster_mode``/``cluster_enabled``). With ``redis.master_name`` the addresses are
  Sentinels. Credentials come from the first address, the db from a ``/N`` after the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
import redis.cluster
import redis.sentinel

from bridge.config import RedisConfig, redact_url
from bridge.errors import BridgeError

RedisClient = redis.Redis | redis.cluster.RedisCluster


class RedisURLError(BridgeError, ValueError):
    """A Redis URL machinery would not accept either."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where and how to connect, parsed from a machinery Redis URL."""

    addresses: tuple[tuple[str, int], ...] = ()
    socket_path: str = ""
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False


def _userinfo(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, sep, password = text.partition(":")
    if not sep:  # machinery: a lone userinfo is the password
        return None, unquote(user)
    return unquote(user) or None, unquote(password)


def _int_or_zero(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _address(text: str, default_port: int = 6379) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:6379
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit():
        raise RedisURLError(f"bad port in Redis address {text!r}")
    return host or "localhost", int(port)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a machinery Redis URL (never logs or echoes the password)."""
    if url.startswith("redis+socket://"):
        rest = url[len("redis+socket://"):]
        creds, at, rest = rest.rpartition("@")
        username, password = _userinfo(creds) if at else (None, None)
        path, _, db_part = rest.partition(":")
        if not path:
            raise RedisURLError(f"redis+socket URL needs a socket path: {redact_url(url)}")
        db = _int_or_zero(db_part.partition("/")[2]) if db_part else 0
        return RedisTarget(socket_path=path, username=username, password=password, db=db)
    for scheme in ("redis://", "rediss://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            break
    else:
        raise RedisURLError(f"not a Redis URL (redis://, rediss://, redis+socket://): "
                            f"{redact_url(url)}")
    creds, at, hosts = rest.rpartition("@")
    if "," in creds:  # credentials belong to the first address only
        raise RedisURLError(f"credentials must come before the first address: {redact_url(url)}")
    username, password = _userinfo(creds) if at else (None, None)
    hosts = hosts.partition("?")[0]
    parts = hosts.split(",")
    last, _, db_text = parts[-1].partition("/")
    parts[-1] = last
    db = _int_or_zero(db_text.split("/")[0]) if db_text else 0
    addresses = tuple(_address(part) for part in parts if part)
    if not addresses:
        addresses = (("localhost", 6379),)
    return RedisTarget(addresses=addresses, username=username, password=password, db=db,
                       tls=scheme == "rediss://")


def connect(url: str, config: RedisConfig | None = None, **overrides: Any) -> RedisClient:
    """A redis-py client for a machinery Redis URL and ``redis.*`` config."""
    cfg = config or RedisConfig()
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": cfg.read_timeout or None,
        "socket_connect_timeout": cfg.connect_timeout or None,
        "client_name": cfg.client_name or None,
        "health_check_interval": 10,
    }
    common.update(overrides)
    if target.socket_path:
        return redis.Redis(unix_socket_path=target.socket_path, db=target.db, **common)
    if target.tls:
        common["ssl"] = True
    if cfg.master_name:  # the addresses are Sentinels
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.addresses),
            sentinel_kwargs={"password": cfg.sentinel_password or None},
            **{k: v for k, v in common.items() if k != "health_check_interval"},
        )
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            cfg.master_name, db=target.db)
        return master
    if len(target.addresses) > 1 or cfg.cluster_mode:
        nodes = [redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                 for host, port in target.addresses]
        common.pop("client_name", None)
        return redis.cluster.RedisCluster(startup_nodes=nodes, **common)
    host, port = target.addresses[0]
    return redis.Redis(host=host, port=port, db=target.db, **common)
