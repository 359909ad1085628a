"""machinery's YAML configuration (``NewFromYaml``), read whole, into config values.

Values are ``{attribute: value}`` for the top-level keys and ``{section: {attribute: value}}``
(or ``None`` for a section that is nil) for the nested ones; ``model.Config`` builds from them.
Unknown keys give a :class:`ConfigWarning` with the closest known key.
"""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Any

import yaml

from bridge.config.keys import (
    SECTIONS,
    TOP_KEYS,
    ConfigError,
    ConfigWarning,
    Key,
    Section,
    bad,
    check_int,
    set_value,
)

Values = dict[str, Any]
"""Config attribute → value; a section's value is its ``{attribute: value}`` or ``None``."""


def looks_like_yaml_text(source: str) -> bool:
    if "\n" in source or not source.strip():
        return True
    if os.path.exists(source):
        return False
    return ":" in source or source.lstrip().startswith("{")


def read_file(path: str | os.PathLike[str], stacklevel: int) -> Values:
    """The values of a YAML file (warnings for unknown keys point ``stacklevel`` up)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        where = "" if os.path.isabs(path) else f" (looked in {os.getcwd()})"
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}{where}: "
                          f"{exc.strerror or exc}; give its absolute path, or pass "
                          "mbridge --config PATH") from exc
    return read_text(data, os.fspath(path), stacklevel=stacklevel + 1)


def read_text(data: str | bytes, origin: str, stacklevel: int) -> Values:
    """The values of YAML text; unknown keys give a :class:`ConfigWarning` each."""
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
    values = _values(doc, unknown)
    for path in unknown:
        warnings.warn(_unknown_message(path), ConfigWarning, stacklevel=stacklevel)
    return values


def _values(doc: dict[Any, Any], unknown: list[str]) -> Values:
    sections = {s.attr: s for s in SECTIONS}
    top_keys = {k.yaml: k for k in TOP_KEYS}
    values: Values = {s.attr: {} if s.in_yaml_by_default else None for s in SECTIONS}
    for raw_key, raw_value in doc.items():
        name = str(raw_key)
        if name in top_keys:
            set_value(values, top_keys[name], _yaml_value(top_keys[name], raw_value, name))
        elif name in sections:
            values[name] = _yaml_section(sections[name], raw_value, unknown)
        else:
            unknown.append(name)
    return values


def _yaml_section(section: Section, raw: object, unknown: list[str]) -> dict[str, Any] | None:
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
            set_value(updates, key, _yaml_value(key, raw_value, path))
    return updates


def _yaml_value(key: Key, value: object, path: str) -> object:
    """Convert one YAML value; ``null`` gives Go's zero value as yaml.v2 does."""
    if key.kind == "str":
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise bad(path, value, "expected a string (quote it in the YAML)")
    if key.kind in ("int", "opt_int"):
        if value is None:
            return None if key.kind == "opt_int" else 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(path, value, "expected a non-negative integer")
        return check_int(value, path, value)
    if key.kind == "bool":
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if value in ("y", "Y", "n", "N"):  # YAML 1.1 booleans that yaml.v2 knows, PyYAML not
            return value in ("y", "Y")
        raise bad(path, value, "expected a boolean")
    # map
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(path, value, "expected a mapping")
    result: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(k, bool) or not isinstance(k, str | int | float):
            raise bad(f"{path}.{k}", k, "expected a string key")
        result[str(k)] = v
    return result


def _unknown_message(path: str) -> str:
    message = f"unknown machinery config key {path!r} ignored"
    section, _, leaf = path.rpartition(".")
    if section:
        candidates = [k.yaml for s in SECTIONS if s.attr == section for k in s.keys]
    else:
        candidates = [k.yaml for k in TOP_KEYS] + [s.attr for s in SECTIONS]
    close = difflib.get_close_matches(leaf, candidates, n=1)
    if close:
        suggestion = f"{section}.{close[0]}" if section else close[0]
        message += f" (did you mean {suggestion!r}?)"
    return message
