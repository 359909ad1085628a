"""machinery's configuration as dataclasses, with machinery's defaults, and its loaders.

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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from bridge.config.environment import read_environment
from bridge.config.redact import MASK, redact_url
from bridge.config.yaml_file import looks_like_yaml_text, read_file, read_text

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
"""Default broker and result backend of machinery's ``defaultCnf``."""

DEFAULT_RESULTS_EXPIRE_IN = 3600
"""machinery's ``config.DefaultResultsExpireIn`` (seconds)."""

DEFAULT_DELAYED_TASKS_KEY = "delayed_tasks"
DEFAULT_MONGODB_DATABASE = "machinery"


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


SECTION_TYPES: dict[str, Callable[[], Any]] = {
    "amqp": AMQPConfig,
    "sqs": SQSConfig,
    "redis": RedisConfig,
    "dynamodb": DynamoDBConfig,
    "mongodb": MongoDBConfig,
}


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
        return cls.from_values(read_file(path, stacklevel=3))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Load from machinery's environment variables (``os.environ`` by default).

        Each nested key is looked up under envconfig's prefixed name first (``AMQP_AMQP_EXCHANGE``,
        ``REDIS_REDIS_MAX_IDLE``, ``SQS_SQS_WAIT_TIME_SECONDS``, ``DYNAMODB_TASK_STATES_TABLE``),
        then under its plain tag (``AMQP_EXCHANGE`` ...). Unset variables keep the defaults; as
        with envconfig, ``amqp``, ``sqs``, ``redis`` and ``dynamodb`` are always present.
        """
        return cls.from_values(read_environment(os.environ if environ is None else environ))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Config:
        """The defaults with ``values`` set (what ``yaml_file`` and ``environment`` read):
        a section given as a mapping overrides its defaults, as ``None`` is nil."""
        built = {
            name: value if name not in SECTION_TYPES or value is None
            else replace(SECTION_TYPES[name](), **value)
            for name, value in values.items()
        }
        return replace(cls(), **built)

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
            return cls.from_values(read_file(path, stacklevel=3))
        return cls.from_env(environ)


def load_yaml(source: str | bytes | os.PathLike[str]) -> Config:
    """Load machinery YAML from a file path or from YAML text.

    A path object is always a file. ``bytes`` are YAML text. A ``str`` is YAML text when it
    contains a newline, is empty, or does not name an existing file yet contains ``:`` or
    starts with ``{``; otherwise it is a file path.
    """
    if isinstance(source, bytes):
        return Config.from_values(read_text(source, "<bytes>", stacklevel=3))
    if isinstance(source, str) and looks_like_yaml_text(source):
        return Config.from_values(read_text(source, "<text>", stacklevel=3))
    return Config.from_values(read_file(source, stacklevel=3))


def _mask_secret(value: str) -> str:
    return repr(MASK if value else value)


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
