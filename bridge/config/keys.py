"""machinery's configuration keys: YAML key, envconfig tag and kind of value for each field.

Checked against ``config/config.go`` of machinery v1 and v2. The YAML and environment
readers (``yaml_file``, ``environment``) walk these tables; ``model`` builds the dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bridge.errors import BridgeError

MAX_GO_INT = 2**63 - 1


class ConfigError(BridgeError, ValueError):
    """A configuration value is invalid or the configuration cannot be read."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class ConfigWarning(UserWarning):
    """A YAML key is not known to machinery and is ignored."""


Kind = Literal["str", "int", "opt_int", "bool", "map"]


@dataclass(frozen=True)
class Key:
    """One config key: its attribute, YAML key, envconfig tag and kind of value."""

    attr: str
    yaml: str
    env: str | None
    kind: Kind


@dataclass(frozen=True)
class Section:
    """One nested config struct: its keys, its envconfig prefix, what a YAML without it means."""

    attr: str  # Config attribute == YAML key
    env_prefix: str | None  # envconfig prefix (Go field name upper-cased); None: YAML only
    in_yaml_by_default: bool  # present with its defaults when the YAML lacks it (else None)
    keys: tuple[Key, ...]


TOP_KEYS = (
    Key("broker", "broker", "BROKER", "str"),
    Key("lock", "lock", "LOCK", "str"),
    Key(
        "multiple_broker_separator",
        "multiple_broker_separator",
        "MULTIPLE_BROKEN_SEPARATOR",  # [sic] in machinery
        "str",
    ),
    Key("default_queue", "default_queue", "DEFAULT_QUEUE", "str"),
    Key("result_backend", "result_backend", "RESULT_BACKEND", "str"),
    Key("results_expire_in", "results_expire_in", "RESULTS_EXPIRE_IN", "int"),
    Key("no_unix_signals", "no_unix_signals", "NO_UNIX_SIGNALS", "bool"),
)

SECTIONS = (
    Section(
        "amqp",
        "AMQP",
        False,  # machinery: no `amqp` key in the YAML -> cnf.AMQP = nil
        (
            Key("exchange", "exchange", "AMQP_EXCHANGE", "str"),
            Key("exchange_type", "exchange_type", "AMQP_EXCHANGE_TYPE", "str"),
            Key("queue_declare_args", "queue_declare_args", "AMQP_QUEUE_DECLARE_ARGS", "map"),
            Key("queue_binding_args", "queue_binding_args", "AMQP_QUEUE_BINDING_ARGS", "map"),
            Key("binding_key", "binding_key", "AMQP_BINDING_KEY", "str"),
            Key("prefetch_count", "prefetch_count", "AMQP_PREFETCH_COUNT", "int"),
            Key("auto_delete", "auto_delete", "AMQP_AUTO_DELETE", "bool"),
            Key("delayed_queue", "delayed_queue", "AMQP_DELAYED_QUEUE", "str"),
        ),
    ),
    Section(
        "sqs",
        "SQS",
        False,
        (
            Key("wait_time_seconds", "receive_wait_time_seconds", "SQS_WAIT_TIME_SECONDS", "int"),
            Key(
                "visibility_timeout",
                "receive_visibility_timeout",
                "SQS_VISIBILITY_TIMEOUT",
                "opt_int",
            ),
            Key(
                "visibility_heartbeat",
                "visibility_hearth_beat",  # [sic] in machinery v2
                "SQS_VISIBILITY_HEARTBEAT",
                "bool",
            ),
        ),
    ),
    Section(
        "redis",
        "REDIS",
        True,
        (
            Key("max_idle", "max_idle", "REDIS_MAX_IDLE", "int"),
            Key("max_active", "max_active", "REDIS_MAX_ACTIVE", "int"),
            Key("idle_timeout", "max_idle_timeout", "REDIS_IDLE_TIMEOUT", "int"),
            Key("wait", "wait", "REDIS_WAIT", "bool"),
            Key("read_timeout", "read_timeout", "REDIS_READ_TIMEOUT", "int"),
            Key("write_timeout", "write_timeout", "REDIS_WRITE_TIMEOUT", "int"),
            Key("connect_timeout", "connect_timeout", "REDIS_CONNECT_TIMEOUT", "int"),
            Key(
                "normal_tasks_poll_period",
                "normal_tasks_poll_period",
                "REDIS_NORMAL_TASKS_POLL_PERIOD",
                "int",
            ),
            Key(
                "delayed_tasks_poll_period",
                "delayed_tasks_poll_period",
                "REDIS_DELAYED_TASKS_POLL_PERIOD",
                "int",
            ),
            Key("delayed_tasks_key", "delayed_tasks_key", "REDIS_DELAYED_TASKS_KEY", "str"),
            Key("client_name", "client_name", "REDIS_CLIENT_NAME", "str"),
            Key("master_name", "master_name", "REDIS_MASTER_NAME", "str"),
            Key("cluster_mode", "cluster_mode", "REDIS_CLUSTER_MODE", "bool"),  # v1
            Key("cluster_mode", "cluster_enabled", "REDIS_CLUSTER_ENABLED", "bool"),  # v2
            Key("sentinel_password", "sentinel_password", "REDIS_SENTINEL_PASSWORD", "str"),
        ),
    ),
    Section(
        "dynamodb",
        "DYNAMODB",
        True,
        (
            Key("task_states_table", "task_states_table", "TASK_STATES_TABLE", "str"),
            Key("group_metas_table", "group_metas_table", "GROUP_METAS_TABLE", "str"),
        ),
    ),
    Section(
        "mongodb",  # bridge extension: machinery's MongoDB config is `yaml:"-"`
        None,
        False,
        (Key("database", "database", None, "str"),),
    ),
)


def set_value(updates: dict[str, Any], key: Key, value: object) -> None:
    """Store a converted value; two keys for one bool attribute (cluster mode) are OR-ed."""
    if key.kind == "bool" and key.attr in updates:
        value = bool(updates[key.attr]) or bool(value)
    updates[key.attr] = value


def bad(where: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {reason}, got {value!r}", key=where, value=value)


def check_int(value: int, where: str, shown: object) -> int:
    """Reject what machinery accepts but cannot mean: negatives; and what Go cannot hold."""
    if value < 0:
        raise bad(where, shown, "must not be negative")
    if value > MAX_GO_INT:
        raise bad(where, shown, "does not fit a Go int")
    return value
