"""Tests for bridge.config: machinery-compatible YAML/env loading, defaults, redaction."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.config import (
    DEFAULT_URL,
    AMQPConfig,
    Config,
    ConfigError,
    ConfigWarning,
    DynamoDBConfig,
    MongoDBConfig,
    RedisConfig,
    SQSConfig,
    load_yaml,
    redact_url,
)

# Shaped like machinery's v1/config/testconfig.yml, plus every other key and padding comments so
# the file is well past machinery's 1000-byte read limit; the last keys must still be read.
_PADDING = "".join(
    f"# padding line {i:02d} to push this file past 1000 bytes ........\n" for i in range(12)
)
MACHINERY_YAML = (
    """---
broker: broker
default_queue: default_queue
result_backend: result_backend
results_expire_in: 123456
lock: redis://lock-host:6379
multiple_broker_separator: ","
amqp:
  binding_key: binding_key
  exchange: exchange
  exchange_type: exchange_type
  prefetch_count: 123
  queue_declare_args:
    x-max-priority: 10
  queue_binding_args:
    image-type: png
    x-match: any
  auto_delete: true
  delayed_queue: delayed_queue
sqs:
  receive_wait_time_seconds: 123
  receive_visibility_timeout: 456
  visibility_hearth_beat: true
"""
    + _PADDING
    + """redis:
  max_idle: 12
  max_active: 123
  max_idle_timeout: 456
  wait: false
  read_timeout: 17
  write_timeout: 19
  connect_timeout: 21
  normal_tasks_poll_period: 1001
  delayed_tasks_poll_period: 23
  delayed_tasks_key: delayed_tasks_key
  client_name: client_name
  master_name: master_name
  sentinel_password: sentinel_password
no_unix_signals: true
dynamodb:
  task_states_table: task_states_table
  group_metas_table: group_metas_table
"""
)

# machinery's v1/config/test.env
MACHINERY_ENV = {
    "BROKER": "broker",
    "DEFAULT_QUEUE": "default_queue",
    "RESULT_BACKEND": "result_backend",
    "RESULTS_EXPIRE_IN": "123456",
    "AMQP_BINDING_KEY": "binding_key",
    "AMQP_EXCHANGE": "exchange",
    "AMQP_EXCHANGE_TYPE": "exchange_type",
    "AMQP_PREFETCH_COUNT": "123",
    "AMQP_QUEUE_BINDING_ARGS": "image-type:png,x-match:any",
}

GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"]
GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"]


def _no_warnings_yaml(text: str) -> Config:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_yaml(text)


# ---------------------------------------------------------------------------------------------
# Defaults (machinery's defaultCnf)
# ---------------------------------------------------------------------------------------------


def test_top_level_defaults() -> None:
    cfg = Config()
    assert cfg.broker == "amqp://guest:guest@localhost:5672/" == DEFAULT_URL
    assert cfg.result_backend == "amqp://guest:guest@localhost:5672/"
    assert cfg.default_queue == "machinery_tasks"
    assert cfg.results_expire_in == 3600
    assert cfg.results_expire_seconds == 3600
    assert cfg.lock == ""
    assert cfg.multiple_broker_separator == ""
    assert cfg.no_unix_signals is False
    assert cfg.sqs is None
    assert cfg.mongodb is None
    assert cfg.mongodb_database == "machinery"


def test_amqp_defaults() -> None:
    assert Config().amqp == AMQPConfig()
    amqp = AMQPConfig()
    assert amqp.exchange == "machinery_exchange"
    assert amqp.exchange_type == "direct"
    assert amqp.binding_key == "machinery_task"
    assert amqp.prefetch_count == 3
    assert amqp.queue_declare_args == {}
    assert amqp.queue_binding_args == {}
    assert amqp.auto_delete is False
    assert amqp.delayed_queue == ""


def test_redis_defaults() -> None:
    assert Config().redis == RedisConfig()
    redis = RedisConfig()
    assert (redis.max_idle, redis.max_active, redis.idle_timeout, redis.wait) == (3, 0, 240, False)
    assert (redis.read_timeout, redis.write_timeout, redis.connect_timeout) == (15, 15, 15)
    assert (redis.normal_tasks_poll_period, redis.delayed_tasks_poll_period) == (1000, 500)
    assert redis.delayed_tasks_key == "delayed_tasks"
    assert (redis.client_name, redis.master_name, redis.sentinel_password) == ("", "", "")
    assert redis.cluster_mode is False


def test_other_section_defaults() -> None:
    assert Config().dynamodb == DynamoDBConfig("task_states", "group_metas")
    assert SQSConfig() == SQSConfig(
        wait_time_seconds=0, visibility_timeout=None, visibility_heartbeat=False
    )
    assert MongoDBConfig().database == "machinery"


def test_zero_value_normalisation() -> None:
    assert RedisConfig(delayed_tasks_key="").delayed_tasks_key == "delayed_tasks"
    assert MongoDBConfig(database="").database == "machinery"
    assert Config(results_expire_in=0).results_expire_seconds == 3600
    assert Config(results_expire_in=5).results_expire_seconds == 5


def test_dataclasses_are_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.broker = "redis://"  # type: ignore[misc]
    assert dataclasses.replace(cfg, broker="redis://h").broker == "redis://h"


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


def _assert_machinery_yaml(cfg: Config) -> None:
    assert cfg.broker == "broker"
    assert cfg.default_queue == "default_queue"
    assert cfg.result_backend == "result_backend"
    assert cfg.results_expire_in == 123456
    assert cfg.lock == "redis://lock-host:6379"
    assert cfg.multiple_broker_separator == ","
    assert cfg.no_unix_signals is True
    assert cfg.amqp == AMQPConfig(
        exchange="exchange",
        exchange_type="exchange_type",
        queue_declare_args={"x-max-priority": 10},
        queue_binding_args={"image-type": "png", "x-match": "any"},
        binding_key="binding_key",
        prefetch_count=123,
        auto_delete=True,
        delayed_queue="delayed_queue",
    )
    assert cfg.sqs == SQSConfig(
        wait_time_seconds=123, visibility_timeout=456, visibility_heartbeat=True
    )
    assert cfg.redis == RedisConfig(
        max_idle=12,
        max_active=123,
        idle_timeout=456,
        wait=False,
        read_timeout=17,
        write_timeout=19,
        connect_timeout=21,
        normal_tasks_poll_period=1001,
        delayed_tasks_poll_period=23,
        delayed_tasks_key="delayed_tasks_key",
        client_name="client_name",
        master_name="master_name",
        sentinel_password="sentinel_password",
    )
    # These keys sit beyond byte 1000: machinery would have truncated them away.
    assert cfg.dynamodb == DynamoDBConfig("task_states_table", "group_metas_table")


def test_machinery_yaml_file_is_read_whole(tmp_path: Path) -> None:
    assert MACHINERY_YAML.index("dynamodb:") > 1000
    path = tmp_path / "machinery.yml"
    path.write_text(MACHINERY_YAML)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_machinery_yaml(Config.from_yaml(path))
        _assert_machinery_yaml(Config.from_yaml(str(path)))
        _assert_machinery_yaml(load_yaml(path))
        _assert_machinery_yaml(load_yaml(str(path)))
        _assert_machinery_yaml(Config.load(path, environ={"BROKER": "ignored"}))


def test_machinery_yaml_text_and_bytes() -> None:
    _assert_machinery_yaml(_no_warnings_yaml(MACHINERY_YAML))
    _assert_machinery_yaml(load_yaml(MACHINERY_YAML.encode()))


def test_empty_yaml_keeps_defaults_but_drops_amqp() -> None:
    cfg = load_yaml("")
    assert cfg == dataclasses.replace(Config(), amqp=None)
    assert load_yaml("---\n") == cfg


def test_missing_amqp_section_is_none_like_machinery() -> None:
    cfg = load_yaml("broker: redis://localhost:6379\n")
    assert cfg.amqp is None
    assert cfg.redis == RedisConfig()
    assert cfg.dynamodb == DynamoDBConfig()
    assert cfg.sqs is None


def test_partial_sections_merge_onto_defaults() -> None:
    cfg = _no_warnings_yaml(
        "amqp:\n  prefetch_count: 9\nredis:\n  max_idle: 7\n  wait: yes\n"
        "dynamodb:\n  group_metas_table: metas\nsqs: {}\n"
    )
    assert cfg.amqp == AMQPConfig(prefetch_count=9)
    assert cfg.redis == RedisConfig(max_idle=7, wait=True)
    assert cfg.dynamodb == DynamoDBConfig(
        task_states_table="task_states", group_metas_table="metas"
    )
    assert cfg.sqs == SQSConfig()
    assert cfg.default_queue == "machinery_tasks"


def test_null_section_and_null_values_follow_yaml_v2() -> None:
    cfg = _no_warnings_yaml("amqp:\n  prefetch_count:\n  exchange:\nredis:\nsqs:\n")
    assert cfg.amqp is not None
    assert (cfg.amqp.prefetch_count, cfg.amqp.exchange) == (0, "")
    assert cfg.amqp.binding_key == "machinery_task"
    assert cfg.redis is None
    assert cfg.sqs is None


def test_results_expire_in_zero_means_an_hour() -> None:
    cfg = load_yaml("results_expire_in: 0\n")
    assert cfg.results_expire_in == 0
    assert cfg.results_expire_seconds == 3600


def test_delayed_tasks_key_empty_means_default() -> None:
    cfg = load_yaml("redis:\n  delayed_tasks_key: ''\n")
    assert cfg.redis is not None
    assert cfg.redis.delayed_tasks_key == "delayed_tasks"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("cluster_mode: true", True),  # machinery v1
        ("cluster_enabled: true", True),  # machinery v2
        ("cluster_mode: true\n  cluster_enabled: false", True),
        ("cluster_mode: false\n  cluster_enabled: true", True),
        ("cluster_enabled: false", False),
        ("max_idle: 1", False),
    ],
)
def test_redis_cluster_v1_and_v2_keys(section: str, expected: bool) -> None:
    cfg = _no_warnings_yaml(f"redis:\n  {section}\n")
    assert cfg.redis is not None
    assert cfg.redis.cluster_mode is expected


def test_yaml_scalar_forms() -> None:
    cfg = _no_warnings_yaml(
        "default_queue: 123\namqp:\n  prefetch_count: 0x10\n  auto_delete: y\n"
        "  queue_declare_args:\n    1: x\n    nested: {a: [1, 2]}\n"
        "redis:\n  max_idle: 4.0\n  wait: on\n"
    )
    assert cfg.default_queue == "123"
    assert cfg.amqp is not None
    assert cfg.amqp.prefetch_count == 16
    assert cfg.amqp.auto_delete is True
    assert cfg.amqp.queue_declare_args == {"1": "x", "nested": {"a": [1, 2]}}
    assert cfg.redis is not None
    assert (cfg.redis.max_idle, cfg.redis.wait) == (4, True)


def test_mongodb_section_is_a_bridge_extension() -> None:
    cfg = _no_warnings_yaml("mongodb:\n  database: tasks_db\n")
    assert cfg.mongodb == MongoDBConfig("tasks_db")
    assert cfg.mongodb_database == "tasks_db"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("redis:\n  max_idle: ten\n", "redis.max_idle", "'ten'"),
        ("redis:\n  max_idle: -1\n", "redis.max_idle", "-1"),
        ("amqp:\n  prefetch_count: 1.5\n", "amqp.prefetch_count", "1.5"),
        ("amqp:\n  prefetch_count: '3'\n", "amqp.prefetch_count", "'3'"),
        ("amqp:\n  prefetch_count: true\n", "amqp.prefetch_count", "True"),
        ("redis:\n  wait: maybe\n", "redis.wait", "'maybe'"),
        ("redis:\n  wait: 1\n", "redis.wait", "1"),
        ("results_expire_in: -5\n", "results_expire_in", "-5"),
        ("results_expire_in: 99999999999999999999\n", "results_expire_in", "99999999999999999999"),
        ("sqs:\n  receive_visibility_timeout: -1\n", "sqs.receive_visibility_timeout", "-1"),
        ("sqs:\n  visibility_hearth_beat: sure\n", "sqs.visibility_hearth_beat", "'sure'"),
        ("broker: [a, b]\n", "broker", "['a', 'b']"),
        ("default_queue: true\n", "default_queue", "True"),
        ("amqp:\n  queue_binding_args: [x]\n", "amqp.queue_binding_args", "['x']"),
        ("amqp: nope\n", "amqp", "'nope'"),
        ("no_unix_signals: maybe\n", "no_unix_signals", "'maybe'"),
    ],
)
def test_bad_yaml_values_name_key_and_value(text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(text)
    message = str(info.value)
    assert message.startswith(f"{key}:")
    assert value in message
    assert info.value.key == key


def test_unknown_keys_warn_with_path_and_suggestion() -> None:
    with pytest.warns(ConfigWarning) as record:
        cfg = load_yaml("redis:\n  max_idel: 5\nbrokr: x\ngcppubsub: {}\nsqs:\n  idle: 1\n")
    messages = [str(w.message) for w in record]
    assert any("'redis.max_idel'" in m and "'redis.max_idle'" in m for m in messages)
    assert any("'brokr'" in m and "'broker'" in m for m in messages)
    assert any("'gcppubsub'" in m for m in messages)
    assert any("'sqs.idle'" in m for m in messages)
    assert all(w.filename == __file__ for w in record)
    assert cfg.redis == RedisConfig()  # unknown key ignored, defaults kept
    assert cfg.broker == DEFAULT_URL


def test_unknown_key_warning_points_at_caller_for_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("redis:\n  idle_timeout: 3\n")
    for load in (Config.from_yaml, load_yaml, Config.load):
        with pytest.warns(
            ConfigWarning, match=r"redis\.idle_timeout.*redis\.max_idle_timeout"
        ) as r:
            load(path)
        assert r[0].filename == __file__


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string", "a: [unclosed\n"])
def test_bad_yaml_documents(text: str) -> None:
    with pytest.raises(ConfigError):
        load_yaml(text if "\n" in text else text + "\n")


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"nope\.yml"):
        Config.from_yaml(missing)
    with pytest.raises(ConfigError, match=r"nope\.yml"):
        load_yaml(str(missing))


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def test_machinery_test_env() -> None:
    cfg = Config.from_env(MACHINERY_ENV)
    assert (cfg.broker, cfg.default_queue, cfg.result_backend) == (
        "broker",
        "default_queue",
        "result_backend",
    )
    assert cfg.results_expire_in == 123456
    assert cfg.amqp == AMQPConfig(
        exchange="exchange",
        exchange_type="exchange_type",
        binding_key="binding_key",
        prefetch_count=123,
        queue_binding_args={"image-type": "png", "x-match": "any"},
    )


def test_empty_env_gives_defaults_with_all_sections() -> None:
    assert Config.from_env({}) == Config(sqs=SQSConfig())


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_QUEUE", "from_os_environ")
    assert Config.from_env().default_queue == "from_os_environ"
    assert Config.load().default_queue == "from_os_environ"
    assert Config.load(environ={}).default_queue == "machinery_tasks"


def test_every_env_var() -> None:
    env = {
        "BROKER": "redis://:pw@h:6379/1",
        "LOCK": "redis://h:6379",
        "MULTIPLE_BROKEN_SEPARATOR": ";",
        "DEFAULT_QUEUE": "q",
        "RESULT_BACKEND": "redis://h:6379/2",
        "RESULTS_EXPIRE_IN": "60",
        "NO_UNIX_SIGNALS": "true",
        "AMQP_EXCHANGE": "ex",
        "AMQP_EXCHANGE_TYPE": "topic",
        "AMQP_BINDING_KEY": "bk",
        "AMQP_PREFETCH_COUNT": "7",
        "AMQP_QUEUE_DECLARE_ARGS": "x-max-priority:10",
        "AMQP_QUEUE_BINDING_ARGS": "x-match:all",
        "AMQP_AUTO_DELETE": "1",
        "AMQP_DELAYED_QUEUE": "dq",
        "SQS_WAIT_TIME_SECONDS": "20",
        "SQS_VISIBILITY_TIMEOUT": "30",
        "SQS_VISIBILITY_HEARTBEAT": "T",
        "REDIS_MAX_IDLE": "1",
        "REDIS_MAX_ACTIVE": "2",
        "REDIS_IDLE_TIMEOUT": "3",
        "REDIS_WAIT": "TRUE",
        "REDIS_READ_TIMEOUT": "4",
        "REDIS_WRITE_TIMEOUT": "5",
        "REDIS_CONNECT_TIMEOUT": "6",
        "REDIS_NORMAL_TASKS_POLL_PERIOD": "7",
        "REDIS_DELAYED_TASKS_POLL_PERIOD": "8",
        "REDIS_DELAYED_TASKS_KEY": "dk",
        "REDIS_CLIENT_NAME": "cn",
        "REDIS_MASTER_NAME": "mn",
        "REDIS_SENTINEL_PASSWORD": "sp",
        "TASK_STATES_TABLE": "ts",
        "GROUP_METAS_TABLE": "gm",
    }
    cfg = Config.from_env(env)
    assert cfg == Config(
        broker="redis://:pw@h:6379/1",
        lock="redis://h:6379",
        multiple_broker_separator=";",
        default_queue="q",
        result_backend="redis://h:6379/2",
        results_expire_in=60,
        no_unix_signals=True,
        amqp=AMQPConfig(
            "ex", "topic", {"x-max-priority": "10"}, {"x-match": "all"}, "bk", 7, True, "dq"
        ),
        sqs=SQSConfig(20, 30, True),
        redis=RedisConfig(1, 2, 3, True, 4, 5, 6, 7, 8, "dk", "cn", "mn", False, "sp"),
        dynamodb=DynamoDBConfig("ts", "gm"),
    )


def test_env_prefixed_names_win_over_plain_tags() -> None:
    env = {
        "AMQP_EXCHANGE": "plain",
        "AMQP_AMQP_EXCHANGE": "prefixed",
        "AMQP_AMQP_PREFETCH_COUNT": "11",
        "REDIS_REDIS_MAX_IDLE": "9",
        "REDIS_MAX_IDLE": "1",
        "SQS_SQS_WAIT_TIME_SECONDS": "5",
        "DYNAMODB_TASK_STATES_TABLE": "prefixed_states",
        "TASK_STATES_TABLE": "plain_states",
        "GROUP_METAS_TABLE": "plain_metas",
    }
    cfg = Config.from_env(env)
    assert cfg.amqp is not None and cfg.redis is not None and cfg.sqs is not None
    assert (cfg.amqp.exchange, cfg.amqp.prefetch_count) == ("prefixed", 11)
    assert cfg.redis.max_idle == 9
    assert cfg.sqs.wait_time_seconds == 5
    assert cfg.dynamodb == DynamoDBConfig("prefixed_states", "plain_metas")


def test_env_top_level_has_no_prefixed_form() -> None:
    # Top-level fields use the prefix "" in envconfig: only the plain tag exists.
    assert Config.from_env({"_BROKER": "x"}).broker == DEFAULT_URL


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REDIS_CLUSTER_MODE": "true"}, True),
        ({"REDIS_CLUSTER_ENABLED": "1"}, True),
        ({"REDIS_REDIS_CLUSTER_ENABLED": "t"}, True),
        ({"REDIS_CLUSTER_MODE": "true", "REDIS_CLUSTER_ENABLED": "false"}, True),
        ({"REDIS_CLUSTER_MODE": "0", "REDIS_CLUSTER_ENABLED": "false"}, False),
        ({}, False),
    ],
)
def test_env_redis_cluster_v1_and_v2(env: dict[str, str], expected: bool) -> None:
    redis = Config.from_env(env).redis
    assert redis is not None
    assert redis.cluster_mode is expected


@pytest.mark.parametrize("raw", GO_TRUE + GO_FALSE)
def test_env_bools_follow_go_parsebool(raw: str) -> None:
    cfg = Config.from_env({"NO_UNIX_SIGNALS": raw, "AMQP_AUTO_DELETE": raw})
    assert cfg.no_unix_signals is (raw in GO_TRUE)
    assert cfg.amqp is not None
    assert cfg.amqp.auto_delete is (raw in GO_TRUE)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("+42", 42),
        ("010", 8),
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("0x_10", 16),
    ],
)
def test_env_ints_follow_go_parseint_base0(raw: str, expected: int) -> None:
    assert Config.from_env({"RESULTS_EXPIRE_IN": raw}).results_expire_in == expected


def test_env_map_forms() -> None:
    amqp = Config.from_env(
        {"AMQP_QUEUE_DECLARE_ARGS": "", "AMQP_QUEUE_BINDING_ARGS": "a:1, b:2"}
    ).amqp
    assert amqp is not None
    assert amqp.queue_declare_args == {}
    assert amqp.queue_binding_args == {"a": "1", " b": "2"}  # envconfig does not trim


def test_env_empty_string_is_a_value() -> None:
    cfg = Config.from_env({"DEFAULT_QUEUE": "", "REDIS_DELAYED_TASKS_KEY": ""})
    assert cfg.default_queue == ""
    assert cfg.redis is not None
    assert cfg.redis.delayed_tasks_key == "delayed_tasks"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("REDIS_MAX_IDLE", "ten"),
        ("REDIS_REDIS_MAX_IDLE", "ten"),
        ("AMQP_PREFETCH_COUNT", ""),
        ("AMQP_PREFETCH_COUNT", " 3"),
        ("AMQP_PREFETCH_COUNT", "-1"),
        ("AMQP_PREFETCH_COUNT", "3.0"),
        ("RESULTS_EXPIRE_IN", "08"),
        ("RESULTS_EXPIRE_IN", "1__0"),
        ("RESULTS_EXPIRE_IN", "9223372036854775808"),
        ("SQS_VISIBILITY_TIMEOUT", "soon"),
        ("AMQP_AUTO_DELETE", "maybe"),
        ("REDIS_WAIT", "yes"),
        ("NO_UNIX_SIGNALS", ""),
        ("AMQP_QUEUE_BINDING_ARGS", "a:b:c"),
        ("AMQP_QUEUE_DECLARE_ARGS", "novalue"),
    ],
)
def test_bad_env_values_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({name: raw})
    assert str(info.value).startswith(f"{name}:")
    assert repr(raw) in str(info.value)
    assert info.value.key == name


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_env_int_roundtrip(number: int) -> None:
    assert Config.from_env({"REDIS_MAX_ACTIVE": str(number)}).redis == RedisConfig(
        max_active=number
    )


# ---------------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:secret@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://secret@h:6379", "redis://***@h:6379"),  # machinery: lone userinfo = password
        ("rediss://:secret@h:6380/1", "rediss://:***@h:6380/1"),
        ("redis://:p@ss,w/rd@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://:secret@h1:6379,h2:6379,h3:6379/2", "redis://:***@h1:6379,h2:6379,h3:6379/2"),
        ("redis+socket://secret@/tmp/redis.sock:/3", "redis+socket://***@/tmp/redis.sock:/3"),
        ("redis+socket://u:secret@/tmp/redis.sock", "redis+socket://u:***@/tmp/redis.sock"),
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("amqps://user@rabbit:5671/vhost", "amqps://user@rabbit:5671/vhost"),
        (
            "amqp://u:p1@h1:5672/,amqp://u:p2@h2:5672/",
            "amqp://u:***@h1:5672/,amqp://u:***@h2:5672/",
        ),
        (
            "mongodb://u:secret@m1:27017,m2:27017/db?replicaSet=rs&password=x",
            "mongodb://u:***@m1:27017,m2:27017/db?replicaSet=rs&password=***",
        ),
        ("u:secret@mongo:27017", "u:***@mongo:27017"),
        ("memcache://10.0.0.1:11211,10.0.0.2:11211", "memcache://10.0.0.1:11211,10.0.0.2:11211"),
        (
            "https://sqs.us-east-1.amazonaws.com/123456789012/",
            "https://sqs.us-east-1.amazonaws.com/123456789012/",
        ),
        ("https://token@example.com/x", "https://***@example.com/x"),
        ("gcppubsub://project/subscription", "gcppubsub://project/subscription"),
        ("eager", "eager"),
        ("", ""),
        ("redis://localhost:6379", "redis://localhost:6379"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


_PASSWORD_CHARS = st.characters(min_codepoint=33, max_codepoint=126)


@given(
    scheme=st.sampled_from(["redis", "rediss", "amqp", "amqps", "mongodb", "https"]),
    user=st.text(st.sampled_from("abcdefgh0123_-."), max_size=8),
    password=st.text(_PASSWORD_CHARS, min_size=1, max_size=24),
)
def test_redact_url_never_leaks_password(scheme: str, user: str, password: str) -> None:
    assume("://" not in password)
    url = f"{scheme}://{user}:{password}@host.example:1234/0"
    assert redact_url(url) == f"{scheme}://{user}:***@host.example:1234/0"


def test_repr_does_not_leak_secrets() -> None:
    cfg = Config(
        broker="redis://:brokersecret@h:6379/0",
        result_backend="amqp://u:backendsecret@h:5672/",
        lock="redis://locksecret@h:6379",
        redis=RedisConfig(sentinel_password="sentinelsecret"),
    )
    for text in (repr(cfg), str(cfg), repr(cfg.redis)):
        for secret in ("brokersecret", "backendsecret", "locksecret", "sentinelsecret"):
            assert secret not in text
    assert "redis://:***@h:6379/0" in repr(cfg)
    assert "sentinel_password='***'" in repr(cfg)
    assert "sentinel_password=''" in repr(RedisConfig())
    assert repr(Config()).startswith("Config(broker='amqp://guest:***@localhost:5672/'")
