"""Which configuration an app that names none uses: the file the command was given
(``mbridge ... --config PATH``), else machinery's environment variables.

So a task module can say ``app = Bridge()`` (or keep ``Bridge.from_config("config.yml")``)
and ``mbridge worker -A tasks --config /etc/app/config.yml`` works from any directory: the
command's file wins, and it is read, and warned about, once. With neither a ``--config``
nor ``BROKER`` in the environment, one :class:`ConfigWarning` says that machinery's default
broker (``amqp://guest:guest@localhost:5672/``) is what will be tried.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

from bridge.config.keys import ConfigWarning
from bridge.config.model import Config
from bridge.config.redact import redact_url

__all__ = ["default_config", "given_config", "use_config_file"]

_given: tuple[str, Config] | None = None
_warned_no_config = False


def use_config_file(path: str | os.PathLike[str] | None) -> Config | None:
    """Read the command's ``--config`` file (once) and make it the configuration of every
    app that does not name its own; ``None`` forgets it. Returns what was read."""
    global _given
    if path is None:
        _given = None
        return None
    absolute = os.path.abspath(path)
    if _given is None or _given[0] != absolute:
        _given = (absolute, Config.load(path))
    return _given[1]


def given_config() -> Config | None:
    """The command's ``--config``, when it was given one."""
    return None if _given is None else _given[1]


def default_config(environ: Mapping[str, str] | None = None) -> Config:
    """The command's ``--config``, else machinery's environment variables; without either
    a broker (no ``BROKER``), one warning names the default that will be tried and the fix."""
    global _warned_no_config
    if _given is not None:
        return _given[1]
    env = os.environ if environ is None else environ
    config = Config.from_env(env)
    if "BROKER" not in env and not _warned_no_config:
        _warned_no_config = True
        warnings.warn(
            f"no machinery config: neither --config nor BROKER is set, so machinery's default "
            f"broker {redact_url(config.broker)} is used; pass --config config.yml or set "
            "BROKER (and RESULT_BACKEND)", ConfigWarning, stacklevel=3)
    return config
