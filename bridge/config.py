"""Machinery-compatible configuration: dataclasses, YAML/env loaders, URL redaction.

Mirrors ``config.Config`` of RichardKnop/machinery v1 and v2 (``config/config.go``): the same YAML
keys, environment variable names and ``defaultCnf`` defaults, so one YAML file or one environment
can drive both the Go side and the Python bridge.

Deliberate differences from the Go loaders:

* the whole YAML file is read (machinery reads only its first 1000 bytes);
* bad values raise :class:`ConfigError` naming the key; unknown YAML keys emit a
  :class:`ConfigWarning` instead of being silently ignored;
* negative numbers are rejected, as are non-integral floats for integer keys (Go truncates);
* the v1 (``cluster_mode``) and v2 (``cluster_enabled``) Redis cluster switches are both accepted;
* ``mongodb: {database: ...}`` is accepted in YAML (a bridge extension: Go sets it only in code);
* ``AMQP_QUEUE_DECLARE_ARGS`` values are kept as strings (envconfig stores Go ``nil`` values).
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import yaml

from bridge.errors import BridgeError

__all__ = [
    "DEFAULT_RESULTS_EXPIRE_IN",
    "DEFAULT_URL",
    "AMQPConfig",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "DynamoDBConfig",
    "MongoDBConfig",
    "RedisConfig",
    "SQSConfig",
    "load_yaml",
    "redact_url",
]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
"""Default broker and result backend of machinery's ``defaultCnf``."""

DEFAULT_RESULTS_EXPIRE_IN = 3600
"""machinery's ``config.DefaultResultsExpireIn`` (seconds)."""

DEFAULT_DELAYED_TASKS_KEY = "delayed_tasks"
DEFAULT_MONGODB_DATABASE = "machinery"
_MASK = "***"
_MAX_GO_INT = 2**63 - 1


class ConfigError(BridgeError, ValueError):
    """A configuration value is invalid or the configuration cannot be read."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class ConfigWarning(UserWarning):
    """A YAML key is not known to machinery and is ignored."""


# --------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AMQPConfig:
    """RabbitMQ settings (YAML section ``amqp``)."""

    exchange: str = "machinery_exchange"
    exchange_type: str = "direct"
    queue_declare_args: dict[str, Any] = field(default_factory=dict)
    queue_binding_args: dict[str, Any] = field(default_factory=dict)
    binding_key: str = "machinery_task"
    prefetch_count: int = 3
    auto_delete: bool = False
    delayed_queue: str = ""


@dataclass(frozen=True)
class SQSConfig:
    """SQS settings (YAML section ``sqs``); ``visibility_timeout=None`` means the queue's own."""

    wait_time_seconds: int = 0
    visibility_timeout: int | None = None
    visibility_heartbeat: bool = False


@dataclass(frozen=True)
class RedisConfig:
    """Redis settings (YAML section ``redis``); timeouts in seconds, poll periods in ms.

    machinery treats poll periods <= 0 as 1000 (normal) / 500 (delayed); that is left to the
    broker. An empty ``delayed_tasks_key`` is normalised to ``"delayed_tasks"`` as machinery does.
    """

    max_idle: int = 3
    max_active: int = 0
    idle_timeout: int = 240
    wait: bool = False
    read_timeout: int = 15
    write_timeout: int = 15
    connect_timeout: int = 15
    normal_tasks_poll_period: int = 1000
    delayed_tasks_poll_period: int = 500
    delayed_tasks_key: str = DEFAULT_DELAYED_TASKS_KEY
    client_name: str = ""
    master_name: str = ""
    cluster_mode: bool = False
    sentinel_password: str = ""

    def __post_init__(self) -> None:
        if not self.delayed_tasks_key:
            object.__setattr__(self, "delayed_tasks_key", DEFAULT_DELAYED_TASKS_KEY)

    def __repr__(self) -> str:
        return _repr(self, {"sentinel_password": _mask_secret})


@dataclass(frozen=True)
class DynamoDBConfig:
    """DynamoDB result backend tables (YAML section ``dynamodb``)."""

    task_states_table: str = "task_states"
    group_metas_table: str = "group_metas"


@dataclass(frozen=True)
class MongoDBConfig:
    """MongoDB backend database; an empty name is normalised to ``"machinery"``."""

    database: str = DEFAULT_MONGODB_DATABASE

    def __post_init__(self) -> None:
        if not self.database:
            object.__setattr__(self, "database", DEFAULT_MONGODB_DATABASE)


@dataclass(frozen=True)
class Config:
    """Top-level machinery configuration; the defaults are machinery's ``defaultCnf``.

    ``amqp`` is ``None`` when loaded from YAML without an ``amqp`` section (machinery does the
    same); ``sqs`` and ``mongodb`` are ``None`` unless configured.
    """

    broker: str = DEFAULT_URL
    lock: str = ""
    multiple_broker_separator: str = ""
    default_queue: str = "machinery_tasks"
    result_backend: str = DEFAULT_URL
    results_expire_in: int = DEFAULT_RESULTS_EXPIRE_IN
    no_unix_signals: bool = False
    amqp: AMQPConfig | None = field(default_factory=AMQPConfig)
    sqs: SQSConfig | None = None
    redis: RedisConfig | None = field(default_factory=RedisConfig)
    dynamodb: DynamoDBConfig | None = field(default_factory=DynamoDBConfig)
    mongodb: MongoDBConfig | None = None

    @property
    def results_expire_seconds(self) -> int:
        """Result TTL as the Redis/AMQP/memcache/DynamoDB backends apply it: 0 means 3600.

        machinery's MongoDB backend uses the raw ``results_expire_in`` instead (0 = expire at once).
        """
        return self.results_expire_in or DEFAULT_RESULTS_EXPIRE_IN

    @property
    def mongodb_database(self) -> str:
        """Database used by the MongoDB backend (``"machinery"`` unless configured)."""
        return self.mongodb.database if self.mongodb else DEFAULT_MONGODB_DATABASE

    def __repr__(self) -> str:
        return _repr(self, {"broker": _redacted, "result_backend": _redacted, "lock": _redacted})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Config:
        """Load a machinery YAML file (whole file; unspecified keys keep their defaults)."""
        return _load_yaml_file(path, stacklevel=3)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Load from machinery's environment variables (``os.environ`` by default).

        Each nested key is looked up under envconfig's prefixed name first (``AMQP_AMQP_EXCHANGE``,
        ``REDIS_REDIS_MAX_IDLE``, ``SQS_SQS_WAIT_TIME_SECONDS``, ``DYNAMODB_TASK_STATES_TABLE``),
        then under its plain tag (``AMQP_EXCHANGE`` ...). Unset variables keep the defaults; as
        with envconfig, ``amqp``, ``sqs``, ``redis`` and ``dynamodb`` are always present.
        """
        env = os.environ if environ is None else environ
        top: dict[str, Any] = {}
        for key in _TOP_KEYS:
            _env_update(top, key, env, prefix=None)
        for section in _SECTIONS:
            if section.env_prefix is None:
                continue
            updates: dict[str, Any] = {}
            for key in section.keys:
                _env_update(updates, key, env, prefix=section.env_prefix)
            top[section.attr] = replace(section.cls(), **updates)
        return replace(cls(), **top)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Load like machinery: from the YAML file if ``path`` is given, else from the environment.

        The two sources are never merged: with a path the environment is ignored
        (``NewFromYaml``), without one only the environment is read (``NewFromEnvironment``).
        Within a source, given values override the ``defaultCnf`` defaults; in the environment a
        prefixed name (``REDIS_REDIS_MAX_IDLE``) wins over the plain one (``REDIS_MAX_IDLE``).
        """
        if path is not None:
            return _load_yaml_file(path, stacklevel=3)
        return cls.from_env(environ)


def load_yaml(source: str | bytes | os.PathLike[str]) -> Config:
    """Load machinery YAML from a file path or from YAML text.

    A path object is always a file. ``bytes`` are YAML text. A ``str`` is YAML text when it
    contains a newline, is empty, or does not name an existing file yet contains ``:`` or
    starts with ``{``; otherwise it is a file path.
    """
    if isinstance(source, bytes):
        return _config_from_yaml(source, "<bytes>", stacklevel=3)
    if isinstance(source, str) and _looks_like_yaml_text(source):
        return _config_from_yaml(source, "<text>", stacklevel=3)
    return _load_yaml_file(source, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Key tables (YAML key, envconfig tag, value kind) — checked against config.go v1 and v2
# --------------------------------------------------------------------------------------------

_Kind = Literal["str", "int", "opt_int", "bool", "map"]


@dataclass(frozen=True)
class _Key:
    attr: str
    yaml: str
    env: str | None
    kind: _Kind


@dataclass(frozen=True)
class _Section:
    attr: str  # Config attribute == YAML key
    cls: Callable[[], Any]
    env_prefix: str | None  # envconfig prefix (Go field name upper-cased); None: YAML only
    yaml_absent: Callable[[], object]  # value when the YAML has no such key
    keys: tuple[_Key, ...]


_TOP_KEYS = (
    _Key("broker", "broker", "BROKER", "str"),
    _Key("lock", "lock", "LOCK", "str"),
    _Key(
        "multiple_broker_separator",
        "multiple_broker_separator",
        "MULTIPLE_BROKEN_SEPARATOR",  # [sic] in machinery
        "str",
    ),
    _Key("default_queue", "default_queue", "DEFAULT_QUEUE", "str"),
    _Key("result_backend", "result_backend", "RESULT_BACKEND", "str"),
    _Key("results_expire_in", "results_expire_in", "RESULTS_EXPIRE_IN", "int"),
    _Key("no_unix_signals", "no_unix_signals", "NO_UNIX_SIGNALS", "bool"),
)

_SECTIONS = (
    _Section(
        "amqp",
        AMQPConfig,
        "AMQP",
        lambda: None,  # machinery: no ``amqp`` key in the YAML -> cnf.AMQP = nil
        (
            _Key("exchange", "exchange", "AMQP_EXCHANGE", "str"),
            _Key("exchange_type", "exchange_type", "AMQP_EXCHANGE_TYPE", "str"),
            _Key("queue_declare_args", "queue_declare_args", "AMQP_QUEUE_DECLARE_ARGS", "map"),
            _Key("queue_binding_args", "queue_binding_args", "AMQP_QUEUE_BINDING_ARGS", "map"),
            _Key("binding_key", "binding_key", "AMQP_BINDING_KEY", "str"),
            _Key("prefetch_count", "prefetch_count", "AMQP_PREFETCH_COUNT", "int"),
            _Key("auto_delete", "auto_delete", "AMQP_AUTO_DELETE", "bool"),
            _Key("delayed_queue", "delayed_queue", "AMQP_DELAYED_QUEUE", "str"),
        ),
    ),
    _Section(
        "sqs",
        SQSConfig,
        "SQS",
        lambda: None,
        (
            _Key("wait_time_seconds", "receive_wait_time_seconds", "SQS_WAIT_TIME_SECONDS", "int"),
            _Key(
                "visibility_timeout",
                "receive_visibility_timeout",
                "SQS_VISIBILITY_TIMEOUT",
                "opt_int",
            ),
            _Key(
                "visibility_heartbeat",
                "visibility_hearth_beat",  # [sic] in machinery v2
                "SQS_VISIBILITY_HEARTBEAT",
                "bool",
            ),
        ),
    ),
    _Section(
        "redis",
        RedisConfig,
        "REDIS",
        RedisConfig,
        (
            _Key("max_idle", "max_idle", "REDIS_MAX_IDLE", "int"),
            _Key("max_active", "max_active", "REDIS_MAX_ACTIVE", "int"),
            _Key("idle_timeout", "max_idle_timeout", "REDIS_IDLE_TIMEOUT", "int"),
            _Key("wait", "wait", "REDIS_WAIT", "bool"),
            _Key("read_timeout", "read_timeout", "REDIS_READ_TIMEOUT", "int"),
            _Key("write_timeout", "write_timeout", "REDIS_WRITE_TIMEOUT", "int"),
            _Key("connect_timeout", "connect_timeout", "REDIS_CONNECT_TIMEOUT", "int"),
            _Key(
                "normal_tasks_poll_period",
                "normal_tasks_poll_period",
                "REDIS_NORMAL_TASKS_POLL_PERIOD",
                "int",
            ),
            _Key(
                "delayed_tasks_poll_period",
                "delayed_tasks_poll_period",
                "REDIS_DELAYED_TASKS_POLL_PERIOD",
                "int",
            ),
            _Key("delayed_tasks_key", "delayed_tasks_key", "REDIS_DELAYED_TASKS_KEY", "str"),
            _Key("client_name", "client_name", "REDIS_CLIENT_NAME", "str"),
            _Key("master_name", "master_name", "REDIS_MASTER_NAME", "str"),
            _Key("cluster_mode", "cluster_mode", "REDIS_CLUSTER_MODE", "bool"),  # v1
            _Key("cluster_mode", "cluster_enabled", "REDIS_CLUSTER_ENABLED", "bool"),  # v2
            _Key("sentinel_password", "sentinel_password", "REDIS_SENTINEL_PASSWORD", "str"),
        ),
    ),
    _Section(
        "dynamodb",
        DynamoDBConfig,
        "DYNAMODB",
        DynamoDBConfig,
        (
            _Key("task_states_table", "task_states_table", "TASK_STATES_TABLE", "str"),
            _Key("group_metas_table", "group_metas_table", "GROUP_METAS_TABLE", "str"),
        ),
    ),
    _Section(
        "mongodb",  # bridge extension: machinery's MongoDB config is `yaml:"-"`
        MongoDBConfig,
        None,
        lambda: None,
        (_Key("database", "database", None, "str"),),
    ),
)


def _set(updates: dict[str, Any], key: _Key, value: object) -> None:
    """Store a converted value; two keys for one bool attribute (cluster mode) are OR-ed."""
    if key.kind == "bool" and key.attr in updates:
        value = bool(updates[key.attr]) or bool(value)
    updates[key.attr] = value


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


def _looks_like_yaml_text(source: str) -> bool:
    if "\n" in source or not source.strip():
        return True
    if os.path.exists(source):
        return False
    return ":" in source or source.lstrip().startswith("{")


def _load_yaml_file(path: str | os.PathLike[str], stacklevel: int) -> Config:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc}") from exc
    return _config_from_yaml(data, os.fspath(path), stacklevel=stacklevel + 1)


def _config_from_yaml(data: str | bytes, origin: str, stacklevel: int) -> Config:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {origin}: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{origin}: top level must be a mapping, got {type(doc).__name__}", value=doc
        )
    unknown: list[str] = []
    config = _config_from_mapping(doc, unknown)
    for path in unknown:
        warnings.warn(_unknown_message(path), ConfigWarning, stacklevel=stacklevel)
    return config


def _config_from_mapping(doc: dict[Any, Any], unknown: list[str]) -> Config:
    sections = {s.attr: s for s in _SECTIONS}
    top_keys = {k.yaml: k for k in _TOP_KEYS}
    values: dict[str, Any] = {s.attr: s.yaml_absent() for s in _SECTIONS}
    for raw_key, raw_value in doc.items():
        name = str(raw_key)
        if name in top_keys:
            _set(values, top_keys[name], _yaml_value(top_keys[name], raw_value, name))
        elif name in sections:
            values[name] = _yaml_section(sections[name], raw_value, unknown)
        else:
            unknown.append(name)
    return replace(Config(), **values)


def _yaml_section(section: _Section, raw: object, unknown: list[str]) -> object:
    if raw is None:  # `redis:` with no value: yaml.v2 sets the pointer to nil
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{section.attr}: expected a mapping, got {raw!r}", key=section.attr, value=raw
        )
    keys = {k.yaml: k for k in section.keys}
    updates: dict[str, Any] = {}
    for raw_key, raw_value in raw.items():
        path = f"{section.attr}.{raw_key}"
        key = keys.get(str(raw_key))
        if key is None:
            unknown.append(path)
        else:
            _set(updates, key, _yaml_value(key, raw_value, path))
    return replace(section.cls(), **updates)


def _yaml_value(key: _Key, value: object, path: str) -> object:
    """Convert one YAML value; ``null`` gives Go's zero value as yaml.v2 does."""
    if key.kind == "str":
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise _bad(path, value, "expected a string (quote it in the YAML)")
    if key.kind in ("int", "opt_int"):
        if value is None:
            return None if key.kind == "opt_int" else 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(path, value, "expected a non-negative integer")
        return _check_int(value, path, value)
    if key.kind == "bool":
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if value in ("y", "Y", "n", "N"):  # YAML 1.1 booleans that yaml.v2 knows, PyYAML not
            return value in ("y", "Y")
        raise _bad(path, value, "expected a boolean")
    # map
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(path, value, "expected a mapping")
    result: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(k, bool) or not isinstance(k, str | int | float):
            raise _bad(f"{path}.{k}", k, "expected a string key")
        result[str(k)] = v
    return result


def _unknown_message(path: str) -> str:
    message = f"unknown machinery config key {path!r} ignored"
    section, _, leaf = path.rpartition(".")
    if section:
        candidates = [k.yaml for s in _SECTIONS if s.attr == section for k in s.keys]
    else:
        candidates = [k.yaml for k in _TOP_KEYS] + [s.attr for s in _SECTIONS]
    close = difflib.get_close_matches(leaf, candidates, n=1)
    if close:
        suggestion = f"{section}.{close[0]}" if section else close[0]
        message += f" (did you mean {suggestion!r}?)"
    return message


# --------------------------------------------------------------------------------------------
# Environment (kelseyhightower/envconfig v1.4.0 semantics)
# --------------------------------------------------------------------------------------------

_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}

_GO_INT = re.compile(
    r"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+"
    r"|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)"
)


def _env_update(
    updates: dict[str, Any], key: _Key, env: Mapping[str, str], prefix: str | None
) -> None:
    if key.env is None:
        return
    names = [f"{prefix}_{key.env}", key.env] if prefix else [key.env]
    for name in names:
        if name in env:
            _set(updates, key, _env_value(key, env[name], name))
            return


def _env_value(key: _Key, raw: str, name: str) -> object:
    if key.kind == "str":
        return raw
    if key.kind in ("int", "opt_int"):
        try:
            number = _parse_go_int(raw)
        except ValueError:
            raise _bad(name, raw, "expected an integer") from None
        return _check_int(number, name, raw)
    if key.kind == "bool":
        if raw not in _GO_BOOLS:
            raise _bad(name, raw, "expected a boolean (1, t, true, 0, f, false, ...)")
        return _GO_BOOLS[raw]
    return _parse_env_map(raw, name)


def _parse_go_int(text: str) -> int:
    """Parse an integer like Go's ``strconv.ParseInt(text, 0, 64)`` (``010`` is octal 8)."""
    if not _GO_INT.fullmatch(text):
        raise ValueError(f"invalid Go integer syntax: {text!r}")
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    prefix = digits[:2].lower()
    if prefix in ("0x", "0b", "0o"):
        number = int(digits[2:], {"0x": 16, "0b": 2, "0o": 8}[prefix])
    elif len(digits) > 1 and digits.startswith("0"):
        number = int(digits[1:], 8)
    else:
        number = int(digits)
    number *= sign
    if not -_MAX_GO_INT - 1 <= number <= _MAX_GO_INT:
        raise ValueError(f"value out of range: {text!r}")
    return number


def _parse_env_map(raw: str, name: str) -> dict[str, Any]:
    """envconfig's map form ``k:v,k2:v2``: no trimming, exactly one ``:`` per item."""
    result: dict[str, Any] = {}
    if not raw.strip():
        return result
    for item in raw.split(","):
        parts = item.split(":")
        if len(parts) != 2:
            raise _bad(name, raw, f"invalid map item {item!r}, expected key:value")
        result[parts[0]] = parts[1]
    return result


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _bad(where: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {reason}, got {value!r}", key=where, value=value)


def _check_int(value: int, where: str, shown: object) -> int:
    """Reject what machinery accepts but cannot mean: negatives; and what Go cannot hold."""
    if value < 0:
        raise _bad(where, shown, "must not be negative")
    if value > _MAX_GO_INT:
        raise _bad(where, shown, "does not fit a Go int")
    return value


def _mask_secret(value: str) -> str:
    return repr(_MASK if value else value)


def _redacted(value: str) -> str:
    return repr(redact_url(value))


def _repr(obj: Any, masks: Mapping[str, Callable[[Any], str]]) -> str:
    """Dataclass-style repr with some fields rendered by ``masks``."""
    parts = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        shown = masks[f.name](value) if f.name in masks else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


# --------------------------------------------------------------------------------------------
# URL redaction
# --------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAM = re.compile(r"([?&;])([^=&;#]*(?:pass|pwd|secret|token)[^=&;#]*)=([^&;#]*)", re.I)
# Lone userinfo (no ':') is a user name for these schemes, a password for redis, unknown otherwise.
_USER_ONLY_SCHEMES = frozenset({"amqp", "amqps", "mongodb", "mongodb+srv"})


def redact_url(url: str) -> str:
    """Mask passwords in a broker/backend/lock URL for logging; the user name is kept.

    ``redis://:secret@h:6379/0`` -> ``redis://:***@h:6379/0``. Everything before the last ``@``
    counts as credentials (unescaped ``@``, ``/`` or ``,`` in a password cannot leak; an ``@`` in a
    query over-masks instead). Also handles several URLs in one string
    (``multiple_broker_separator``), machinery's redis convention that ``redis://secret@host``
    carries a password, schemeless ``user:pass@host`` and password-like query parameters.
    URLs without credentials are returned unchanged.
    """
    starts = [m.start() for m in _SCHEME.finditer(url)]
    if not starts:
        return _redact_one("", url)
    chunks = [_redact_one("", url[: starts[0]])]
    for begin, end in itertools.pairwise([*starts, len(url)]):
        scheme, _, rest = url[begin:end].partition("://")
        chunks.append(f"{scheme}://{_redact_one(scheme.lower(), rest)}")
    return "".join(chunks)


def _redact_one(scheme: str, rest: str) -> str:
    """Redact ``rest``, the part of one URL after ``scheme://``."""
    userinfo, at, remainder = rest.rpartition("@")
    if not at:
        return _mask_params(rest)
    return f"{_mask_userinfo(scheme, userinfo)}@{_mask_params(remainder)}"


def _mask_params(text: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={_MASK}", text)


def _mask_userinfo(scheme: str, userinfo: str) -> str:
    if not userinfo:
        return userinfo
    user, colon, _ = userinfo.partition(":")
    if scheme.startswith("redis") and ("," in user or "@" in user):
        return _MASK  # credentials on several addresses (malformed): hide all of them
    if colon:
        return f"{user}:{_MASK}"
    return userinfo if scheme in _USER_ONLY_SCHEMES else _MASK
