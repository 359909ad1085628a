"""Redis clients from the URLs machinery accepts, shared by the Redis broker and backend.

Forms (machinery v1 ``factories.go`` ParseRedisURL / ParseBrokers / ParseRedisSocketURL):

- ``redis://[user:]password@host:port/db`` and ``rediss://`` (TLS, see below). A userinfo
  without ``:`` is a password, as in machinery. A missing or bad db is 0 (a negative one is an
  error here; machinery would fail on ``SELECT``). Percent-escapes in the userinfo are decoded
  (Go's ``net/url`` does the same for this form). IPv6 hosts go in brackets:
  ``redis://[::1]:6379/0``.
- ``redis+socket://[user:]password@/path/to/redis.sock:/db``. As in machinery the userinfo is
  taken literally (no percent-decoding), and the db is the number after ``:/``.
- ``redis://[user:]password@h1:p1,h2:p2/db``: several addresses make a Cluster (so does one
  address with ``redis.cluster_mode`` / ``cluster_enabled``). With ``redis.master_name`` the
  addresses are Sentinels instead and the client follows that master; one address is enough
  (machinery v1 sends a single address to redigo, which ignores ``master_name``; go-redis and
  v2 follow the Sentinel as here).
  Credentials come from the first address, taken literally as machinery's ``NewGR`` does, and
  the db from a ``/N`` after the last. A Cluster has only db 0: another db is ignored with a
  warning (go-redis ignores it silently).

Passwords: the URL's credentials authenticate to the Redis server (the master, behind
Sentinel; every node of a Cluster). Sentinels themselves use ``redis.sentinel_password`` (v2's
``SentinelPassword``), never the URL's. No error raised here ever contains a password.

TLS: ``rediss://`` means TLS (machinery only uses TLS when a Go ``TLSConfig`` is set in code;
here the scheme decides). The server certificate is always verified unless told otherwise,
against the system CAs by default, with host name checking (the certificate must name the host
of the URL, e.g. ``IP:127.0.0.1`` in its subjectAltName). Options, by precedence (highest
first): keyword ``overrides`` of :func:`connect`; the URL's query string, with redis-py's
names, e.g. ``rediss://h:6380/0?ssl_ca_certs=/etc/redis/ca.pem`` (per URL, so a broker and a
backend may differ; machinery's single-address parser ignores a query, but in an address list
it would spoil the db, ``/3?…`` reading as db 0, so share such URLs with Go only when the db
is 0 or use the environment); then the environment, for every ``rediss://`` URL of the
process:

====================================  =======================  ==============================
environment variable                  query / override name    meaning
====================================  =======================  ==============================
``BRIDGE_REDIS_TLS_CA_CERTS``         ``ssl_ca_certs``         PEM file of CAs to trust
``BRIDGE_REDIS_TLS_CA_PATH``          ``ssl_ca_path``          directory of hashed CA files
``BRIDGE_REDIS_TLS_CERTFILE``         ``ssl_certfile``         client certificate (mutual TLS)
``BRIDGE_REDIS_TLS_KEYFILE``          ``ssl_keyfile``          its private key
``BRIDGE_REDIS_TLS_CERT_REQS``        ``ssl_cert_reqs``        ``required`` (default),
                                                               ``optional`` or ``none``
``BRIDGE_REDIS_TLS_CHECK_HOSTNAME``   ``ssl_check_hostname``   ``true`` (default) / ``false``
====================================  =======================  ==============================

TLS options on a ``redis://`` or ``redis+socket://`` URL, unknown query parameters and bad
values are errors. With Sentinel the same TLS settings apply to the Sentinels and the master
(as go-redis applies its one ``TLSConfig`` to both).

Failures: connection errors are retried as redis-py 8 does by default (up to 10 retries,
exponential backoff from 10 ms capped at 1 s, with jitter: a server that is down is reported
after about 4 s), except those a retry cannot fix, which are raised at once and say what to
change: :class:`RedisAuthError` (wrong or missing password or user; an
``AuthenticationError``) and :class:`RedisTLSError` (the server certificate does not verify;
a ``ConnectionError``). A ``retry`` override replaces this policy. Behind Sentinel, a refused
Sentinel password shows inside redis-py's ``MasterNotFoundError``, which stays retried (a
fail-over looks the same). A Cluster keeps redis-py's Cluster retry policy (which retries
neither); unlike the other forms it is contacted when the client is made (redis-py reads the
slot map then), and anything else failing there is raised as a ``ConnectionError``.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import redis
import redis.backoff
import redis.cluster
import redis.sentinel
from redis.retry import Retry

from bridge.config import RedisConfig, redact_url
from bridge.errors import BridgeError

__all__ = [
    "TLS_ENVIRONMENT",
    "RedisAuthError",
    "RedisClient",
    "RedisTLSError",
    "RedisTarget",
    "RedisURLError",
    "connect",
    "parse_redis_url",
    "tls_options",
]

log = logging.getLogger(__name__)

RedisClient = redis.Redis | redis.cluster.RedisCluster

TLS_ENVIRONMENT: Mapping[str, str] = {
    "ssl_ca_certs": "BRIDGE_REDIS_TLS_CA_CERTS",
    "ssl_ca_path": "BRIDGE_REDIS_TLS_CA_PATH",
    "ssl_certfile": "BRIDGE_REDIS_TLS_CERTFILE",
    "ssl_keyfile": "BRIDGE_REDIS_TLS_KEYFILE",
    "ssl_cert_reqs": "BRIDGE_REDIS_TLS_CERT_REQS",
    "ssl_check_hostname": "BRIDGE_REDIS_TLS_CHECK_HOSTNAME",
}
"""TLS option (redis-py keyword) -> the environment variable that sets it for ``rediss://``."""

_CERT_REQS = frozenset({"required", "optional", "none"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_GO_INT = re.compile(r"[+-]?[0-9]+")


class RedisURLError(BridgeError, ValueError):
    """A Redis URL (or TLS setting) that cannot be used; never shows a password."""


class RedisAuthError(BridgeError, redis.AuthenticationError):
    """Redis refused the URL's credentials (never retried; never shows the password)."""


class RedisTLSError(BridgeError, redis.ConnectionError):
    """The server's TLS certificate did not verify (never retried)."""


_T = TypeVar("_T")
_RETRIES = 10
_Backoff: Any = getattr(redis.backoff, "ExponentialWithJitterBackoff",
                        redis.backoff.EqualJitterBackoff)


class _Stop(Exception):
    """Ends a retry loop early (carries nothing: the real error is raised afterwards)."""


class _Retry(Retry):
    """redis-py's retry, except that errors a retry cannot fix are raised at once, clearly.

    ``where`` (the URL with its credentials masked) and ``hint`` (what to check when
    credentials are refused) go into the messages. redis-py deep-copies the policy into every
    connection; the attributes come along.
    """

    def __init__(self, where: str, hint: str) -> None:
        super().__init__(_Backoff(cap=1, base=0.01), _RETRIES)
        self.where = where
        self.hint = hint

    def call_with_retry(self, do: Callable[[], _T], fail: Any, *args: Any,
                        **kwargs: Any) -> _T:
        final: list[redis.ConnectionError] = []

        def attempt() -> _T:
            try:
                return do()
            except redis.ConnectionError as exc:
                clear = self._final(exc)
                if clear is None:
                    raise
                final.append(clear)
                raise _Stop from None

        try:
            return super().call_with_retry(attempt, fail, *args, **kwargs)
        except _Stop:
            pass
        raise final[0]  # outside the except block: its own context (the cause) is kept

    def _final(self, exc: redis.ConnectionError) -> redis.ConnectionError | None:
        return _permanent(exc, self.where, self.hint)


def _auth_hint(given: bool, what: str = "the user and password in the URL") -> str:
    return f"check {what}" if given else f"the server requires a password: set {what}"


def _permanent(exc: BaseException, where: str, hint: str) -> redis.ConnectionError | None:
    """A clear error for what a retry cannot fix (bad credentials, certificate), else None."""
    if isinstance(exc, RedisAuthError | RedisTLSError):
        return exc
    chain = _chain(exc)
    auth = next((e for e in chain if isinstance(
        e, redis.AuthenticationError | redis.exceptions.AuthorizationError)), None)
    if auth is not None:
        clear: redis.ConnectionError = RedisAuthError(
            f"Redis at {where} refused the credentials ({hint}): {auth}")
    elif any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        clear = RedisTLSError(
            f"TLS to Redis at {where}: the server certificate did not verify (trust its CA "
            f"with ssl_ca_certs in the URL or ${TLS_ENVIRONMENT['ssl_ca_certs']}; "
            f"ssl_check_hostname=false if only the host name differs): {exc}")
    else:
        return None
    clear.__cause__ = exc
    return clear


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts."""
    seen: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen
@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where and how to connect, parsed from a machinery Redis URL."""

    addresses: tuple[tuple[str, int], ...] = ()
    socket_path: str = ""
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()
    """TLS settings from the URL's query string, as ``(redis-py keyword, text)`` pairs."""


def _userinfo(text: str, *, decode: bool) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, sep, password = text.partition(":")
    if decode:
        user, password = unquote(user), unquote(password)
    if not sep:  # machinery: a lone userinfo is the password
        return None, user
    return user or None, password


def _db(text: str, url: str) -> int:
    """Go's ``strconv.Atoi`` or 0, as machinery reads the db; negative is an error."""
    if not _GO_INT.fullmatch(text):
        return 0
    db = int(text)
    if db < 0:
        raise RedisURLError(f"negative Redis db {db} in {_shown(url)}")
    return db


def _shown(url: str) -> str:
    """``url`` for an error message: all of the userinfo and the query string masked.

    Stricter than :func:`redact_url` (which keeps a user name and harmless-looking parameters):
    in a malformed URL any of those may hold a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_url(url)
    _, at, tail = rest.rpartition("@")
    tail, question, _ = tail.partition("?")
    return f"{scheme}://{'***@' if at else ''}{redact_url(tail)}{'?***' if question else ''}"


def _address(text: str, default_port: int = 6379) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port``. Errors never show the text: in a URL missing its
    ``@`` the "port" may be a password."""
    if text.startswith("["):  # [::1]:6379
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise RedisURLError("bad IPv6 address in a Redis URL (write it as [::1]:6379)")
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
        elif ":" in host:
            raise RedisURLError("IPv6 addresses in a Redis URL need brackets: [::1]:6379")
    if not port:
        return host or "localhost", default_port
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisURLError("bad port in a Redis URL (want host:port, 1-65535, and "
                            "[user:]password@ before the host)")
    return host or "localhost", int(port)


def _query(text: str, url: str) -> tuple[tuple[str, str], ...]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise RedisURLError(f"bad query string in Redis URL {_shown(url)}") from None
    for key, value in pairs:
        if key not in TLS_ENVIRONMENT:
            raise RedisURLError(
                f"unknown Redis URL parameter {key!r} (accepted: "
                f"{', '.join(sorted(TLS_ENVIRONMENT))}) in {_shown(url)}")
        _tls_value(key, value, f"URL parameter {key!r}")
    return tuple(pairs)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a machinery Redis URL (never logs or echoes the password)."""
    if url.startswith("redis+socket://"):
        rest = url[len("redis+socket://"):]
        creds, at, rest = rest.rpartition("@")
        username, password = _userinfo(creds, decode=False) if at else (None, None)
        path, colon, db_part = rest.partition(":")
        if not path:
            raise RedisURLError(f"redis+socket URL needs a socket path: {_shown(url)}")
        db = _db(db_part.partition("/")[2], url) if colon and "/" in db_part else 0
        return RedisTarget(socket_path=path, username=username, password=password, db=db)
    for scheme in ("redis://", "rediss://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            break
    else:
        raise RedisURLError(f"not a Redis URL (redis://, rediss://, redis+socket://): "
                            f"{_shown(url)}")
    creds, at, hosts = rest.rpartition("@")
    if "," in creds:  # credentials belong to the first address only
        raise RedisURLError(f"credentials must come before the first address: {_shown(url)}")
    hosts, question, query = hosts.partition("?")
    tls = scheme == "rediss://"
    tls_pairs = _query(query, url) if question else ()
    if tls_pairs and not tls:
        raise RedisURLError(f"TLS parameters need a rediss:// URL: {_shown(url)}")
    parts = hosts.split(",")
    last, _, db_text = parts[-1].partition("/")
    parts[-1] = last
    db = _db(db_text.split("/")[0], url)
    addresses = tuple(_address(part) for part in parts if part)
    # Go: net/url decodes a single address's userinfo; NewGR takes a list's literally.
    username, password = _userinfo(creds, decode=len(parts) == 1) if at else (None, None)
    if not addresses:
        addresses = (("localhost", 6379),)
    return RedisTarget(addresses=addresses, username=username, password=password, db=db,
                       tls=tls, tls_options=tls_pairs)


def _tls_value(key: str, text: str, where: str) -> Any:
    """A TLS setting's text as redis-py wants it; a clear error when it is not valid."""
    if key == "ssl_cert_reqs":
        value = text.strip().lower()
        if value not in _CERT_REQS:
            raise RedisURLError(f"{where} must be one of {', '.join(sorted(_CERT_REQS))}")
        return value
    if key == "ssl_check_hostname":
        value = text.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise RedisURLError(f"{where} must be true or false")
    if not text:
        raise RedisURLError(f"{where} is empty")
    return text


def tls_options(target: RedisTarget, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """redis-py's TLS keywords for ``target`` (empty unless ``rediss://``).

    The environment (``TLS_ENVIRONMENT``, ``os.environ`` by default) first, the URL's query
    over it. Verification stays on unless ``ssl_cert_reqs`` says otherwise; host names are
    checked whenever the certificate is verified.
    """
    if not target.tls:
        return {}
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    for key, variable in TLS_ENVIRONMENT.items():
        text = env.get(variable)
        if text:
            options[key] = _tls_value(key, text, f"${variable}")
    for key, text in target.tls_options:
        options[key] = _tls_value(key, text, f"URL parameter {key!r}")
    _settle_hostname_check(options)
    return options


def _settle_hostname_check(options: dict[str, Any]) -> None:
    """Check host names whenever certificates are verified (and never when they are not)."""
    if options.get("ssl_cert_reqs") == "none":
        options["ssl_check_hostname"] = False
    else:
        options.setdefault("ssl_check_hostname", True)


def connect(url: str, config: RedisConfig | None = None, **overrides: Any) -> RedisClient:
    """A redis-py client for a machinery Redis URL and ``redis.*`` config.

    ``overrides`` are redis-py keywords applied last (TLS ones and ``retry`` included, see the
    module docstring). Nothing is sent to Redis until the client's first command.
    """
    cfg = config or RedisConfig()
    target = parse_redis_url(url)
    cluster = not cfg.master_name and not target.socket_path and (
        len(target.addresses) > 1 or cfg.cluster_mode)
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": cfg.read_timeout or None,
        "socket_connect_timeout": cfg.connect_timeout or None,
        "client_name": cfg.client_name or None,
    }
    if not cluster:  # RedisCluster refuses a retry for its nodes and has its own policy
        common["health_check_interval"] = 10
        common["retry"] = _Retry(_shown(url), _auth_hint(bool(target.password or
                                                             target.username)))
    common.update(tls_options(target))
    common.update(overrides)
    if common.get("ssl"):
        _settle_hostname_check(common)
    if target.socket_path:
        if common.pop("ssl", False):
            raise RedisURLError("TLS is not available over a unix socket")
        common = {k: v for k, v in common.items() if not k.startswith("ssl_")}
        return redis.Redis(unix_socket_path=target.socket_path, db=target.db, **common)
    if cfg.master_name:  # the addresses are Sentinels
        return _sentinel_master(url, target, cfg, common, "retry" in overrides)
    if cluster:
        if target.db:
            log.warning("Redis Cluster has only db 0; ignoring db %d of %s",
                        target.db, _shown(url))
        nodes = [redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call, unused-ignore]
                 for host, port in target.addresses]
        try:  # RedisCluster reads the slot map right away
            return redis.cluster.RedisCluster(startup_nodes=nodes, **common)
        except redis.exceptions.RedisClusterException as exc:
            where = _shown(url)
            clear = _permanent(exc, where,
                               _auth_hint(bool(target.password or target.username)))
            raise clear or redis.ConnectionError(f"Redis Cluster at {where}: {exc}") from exc
    host, port = target.addresses[0]
    return redis.Redis(host=host, port=port, db=target.db, **common)


def _sentinel_master(url: str, target: RedisTarget, cfg: RedisConfig, common: dict[str, Any],
                     retry_given: bool) -> redis.Redis:
    """The master ``cfg.master_name`` behind the Sentinels at ``target.addresses``.

    The Sentinels get the timeouts, TLS settings and client name, but their own password
    (``redis.sentinel_password``) and, unless a ``retry`` was given, their own retry policy
    (a refused Sentinel password is named as such inside the MasterNotFoundError).
    """
    master_kwargs = {k: v for k, v in common.items() if k != "health_check_interval"}
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in master_kwargs.items()
        if k.startswith(("socket_", "ssl")) or k in ("client_name", "retry")
    }
    sentinel_kwargs["password"] = cfg.sentinel_password or None
    if not retry_given:
        sentinel_kwargs["retry"] = _Retry(
            f"{_shown(url)} (a Sentinel)",
            _auth_hint(bool(cfg.sentinel_password), "redis.sentinel_password"))
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(target.addresses), sentinel_kwargs=sentinel_kwargs, **master_kwargs)
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        cfg.master_name, db=target.db)
    return master
