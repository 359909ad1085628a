"""The schedule file of ``mbridge beat``: its entries, read from YAML and checked, with every
connection completed from machinery's config.

A file is a list of entries, or a mapping with ``entries:`` and ``defaults:`` (keys every
entry takes unless it sets its own)::

    defaults:
      timezone: Europe/Berlin
    entries:
      - name: nightly-report
        system: machinery
        task: report
        args: [7, "eu"]
        arg_types: [int64, string]
        cron: "0 3 * * *"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bridge.beat.cron import Schedule, parse_schedule
from bridge.config import Config, ConfigError, redact_url

__all__ = ["Entry", "load_schedule", "parse_entries"]

SYSTEMS = ("machinery", "celery", "gocraft")
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")
COMMON_KEYS = frozenset({"name", "system", "cron", "every", "timezone"})
SYSTEM_KEYS: dict[str, frozenset[str]] = {
    "machinery": frozenset({"task", "args", "arg_types", "queue", "retry_count", "broker",
                            "lock", "machinery_program"}),
    "celery": frozenset({"task", "args", "kwargs", "queue", "broker", "lock"}),
    "gocraft": frozenset({"job", "task", "redis", "namespace"}),
}
DEFAULT_NAMESPACE = "work"
"""gocraft/work's CLI tools' namespace (``workwebui -ns work``)."""
DEFAULT_PROGRAM = "mbridge"
"""The program name in machinery's lock key (``filepath.Base(os.Args[0])`` in Go)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One scheduled send, connections resolved."""

    name: str
    system: str
    task: str
    """The machinery or Celery task name, or the gocraft job name."""
    schedule: Schedule
    args: tuple[Any, ...] = ()
    arg_types: tuple[str | None, ...] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    """machinery routing key (default: the config's default_queue), Celery queue."""
    retry_count: int = 0
    broker: str = ""
    """Broker URL (machinery, Celery); gocraft: its Redis URL."""
    lock: str = ""
    """Redis URL of the once-per-tick lock (machinery, Celery)."""
    namespace: str = DEFAULT_NAMESPACE
    machinery_program: str = DEFAULT_PROGRAM

    def __str__(self) -> str:
        return f"{self.system} entry {self.name!r}"

    @property
    def machinery_lock_key(self) -> str:
        """machinery's ``utils.GetLockName(name, spec)`` with this entry's program name."""
        return f"machinery_lock_{self.machinery_program}{self.name}{self.schedule.spec}"

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The servers a send of this entry needs."""
        return tuple(dict.fromkeys(u for u in (self.broker, self.lock) if u))


def load_schedule(path: str | os.PathLike[str], config: Config) -> list[Entry]:
    """The entries of the schedule file at ``path``, defaults from ``config``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"schedule {os.fspath(path)}: cannot read it ({exc.strerror})",
                          key="schedule") from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"schedule {os.fspath(path)}: not valid YAML ({reason})",
                          key="schedule") from None
    return parse_entries(data, config, where=f"schedule {os.fspath(path)}")


def parse_entries(data: Any, config: Config, where: str = "schedule") -> list[Entry]:
    """Entries from the loaded YAML ``data`` (a list, or ``{entries, defaults}``)."""
    defaults: Mapping[str, Any] = {}
    if isinstance(data, Mapping):
        unknown = set(data) - {"entries", "defaults"}
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                              "(expected entries: and defaults:)", key="schedule")
        defaults = data.get("defaults") or {}
        data = data.get("entries")
        if not isinstance(defaults, Mapping):
            raise ConfigError(f"{where}: defaults: must be a mapping", key="defaults")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: no entries: list them (each with name, system, task, "
                          "cron or every)", key="entries")
    entries: list[Entry] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(data):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: entry {index + 1} is not a mapping", key="entries")
        entry = _entry({**defaults, **raw}, set(raw), config, f"{where}: entry {index + 1}")
        if (entry.system, entry.name) in seen:
            raise ConfigError(f"{where}: two {entry.system} entries are named {entry.name!r}: "
                              "names must be unique (they key the once-per-tick lock)",
                              key="name")
        seen.add((entry.system, entry.name))
        entries.append(entry)
    return entries


def _entry(raw: Mapping[str, Any], own: set[str], config: Config, where: str) -> Entry:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: give it a name:", key="name")
    where = f"{where.rpartition(':')[0]}: entry {name!r}"
    system = raw.get("system")
    if system not in SYSTEMS:
        raise ConfigError(f"{where}: system: must be one of {', '.join(SYSTEMS)} "
                          f"(got {system!r})", key="system")
    allowed = COMMON_KEYS | SYSTEM_KEYS[system]
    if system == "gocraft" and (raw.get("args") is not None or "kwargs" in own):
        raise ConfigError(f"{where}: gocraft periodic jobs cannot carry args (gocraft/work#12; "
                          "Go's enqueuer writes \"args\":null): remove args:, or schedule a "
                          "machinery or celery entry", key="args")
    if system == "gocraft" and "queue" in own:
        raise ConfigError(f"{where}: gocraft has no queues (a job's list is named after the "
                          "job): remove queue:, name the job with job:", key="queue")
    unknown = sorted(k for k in own if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for system {system} "
                          f"(known: {', '.join(sorted(allowed))})", key=unknown[0])
    schedule = parse_schedule(raw.get("cron"), raw.get("every"), raw.get("timezone"), where)
    task = _text(raw.get("job") or raw.get("task") or name, "task", where)
    if system == "gocraft":
        return Entry(name, system, task, schedule, broker=_redis(raw.get("redis"), config,
                                                                 "redis", where),
                     namespace=_text(raw.get("namespace", DEFAULT_NAMESPACE), "namespace",
                                     where, empty=True))
    broker = _text(raw.get("broker") or config.broker, "broker", where)
    lock = raw.get("lock") or _config_lock(config) or broker
    if not str(lock).startswith(REDIS_SCHEMES):
        raise ConfigError(f"{where}: the once-per-tick lock needs Redis and the broker "
                          f"{redact_url(broker)} is not: add lock: redis://HOST:6379/0",
                          key="lock")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise ConfigError(f"{where}: args: must be a list", key="args")
    common: dict[str, Any] = {"args": tuple(args), "queue": _text(raw.get("queue", ""), "queue",
                                                                 where, empty=True),
                              "broker": broker, "lock": str(lock)}
    if system == "celery":
        kwargs = raw.get("kwargs") or {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ConfigError(f"{where}: kwargs: must be a mapping of names to values",
                              key="kwargs")
        return Entry(name, system, task, schedule, kwargs=dict(kwargs), **common)
    return Entry(name, system, task, schedule, arg_types=_arg_types(raw, len(args), where),
                 retry_count=int(raw.get("retry_count") or 0),
                 machinery_program=_text(raw.get("machinery_program", DEFAULT_PROGRAM),
                                         "machinery_program", where), **common)


def _text(value: Any, key: str, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(f"{where}: {key}: must be a{'' if empty else ' non-empty'} string",
                          key=key)
    return value


def _arg_types(raw: Mapping[str, Any], count: int, where: str) -> tuple[str | None, ...] | None:
    types = raw.get("arg_types")
    if types is None:
        return None
    if not isinstance(types, list) or len(types) != count:
        raise ConfigError(f"{where}: arg_types: must list one Go type per arg ({count}), "
                          "e.g. [int64, string]", key="arg_types")
    return tuple(None if t is None else str(t) for t in types)


def _config_lock(config: Config) -> str:
    """machinery v1's ``lock:`` (``redis://...``), when it names a Redis."""
    return config.lock if config.lock.startswith(REDIS_SCHEMES) else ""


def _redis(value: Any, config: Config, key: str, where: str) -> str:
    url = value or config.broker
    if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"{where}: gocraft needs a Redis: add {key}: redis://HOST:6379/0 "
                          "(the config's broker is not one)", key=key)
    return url
