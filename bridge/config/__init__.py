"""machinery-compatible configuration: the same YAML keys, environment variables and
``defaultCnf`` defaults as machinery v1 and v2, and URL redaction for logs.

``model`` (the dataclasses and loaders), ``keys`` (the key tables), ``yaml_file`` and
``environment`` (the two sources), ``redact`` (credentials out of URLs), ``source`` (the
configuration of an app that names none: the command's ``--config``, else the environment).
"""

from bridge.config.keys import ConfigError, ConfigWarning
from bridge.config.model import (
    DEFAULT_DELAYED_TASKS_KEY,
    DEFAULT_MONGODB_DATABASE,
    DEFAULT_RESULTS_EXPIRE_IN,
    DEFAULT_URL,
    AMQPConfig,
    Config,
    DynamoDBConfig,
    MongoDBConfig,
    RedisConfig,
    SQSConfig,
    load_yaml,
)
from bridge.config.redact import redact_url
from bridge.config.source import default_config, given_config, use_config_file

__all__ = [
    "DEFAULT_DELAYED_TASKS_KEY",
    "DEFAULT_MONGODB_DATABASE",
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
    "default_config",
    "given_config",
    "load_yaml",
    "redact_url",
    "use_config_file",
]
