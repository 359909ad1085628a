"""machinery's environment configuration (``NewFromEnvironment``, kelseyhightower/envconfig
v1.4.0 semantics) into config values (see ``yaml_file.Values``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.config.keys import MAX_GO_INT, SECTIONS, TOP_KEYS, Key, bad, check_int, set_value

Values = dict[str, Any]


def read_environment(env: Mapping[str, str]) -> Values:
    """The values set in ``env``. Each nested key is looked up under envconfig's prefixed name
    first (``REDIS_REDIS_MAX_IDLE``), then under its plain tag (``REDIS_MAX_IDLE``); every
    section with an env prefix is present (as with envconfig), with the keys that are set."""
    values: Values = {}
    for key in TOP_KEYS:
        _env_update(values, key, env, prefix=None)
    for section in SECTIONS:
        if section.env_prefix is None:
            continue
        updates: dict[str, Any] = {}
        for key in section.keys:
            _env_update(updates, key, env, prefix=section.env_prefix)
        values[section.attr] = updates
    return values


_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}

_GO_INT = re.compile(
    r"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+"
    r"|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)"
)


def _env_update(
    updates: dict[str, Any], key: Key, env: Mapping[str, str], prefix: str | None
) -> None:
    if key.env is None:
        return
    names = [f"{prefix}_{key.env}", key.env] if prefix else [key.env]
    for name in names:
        if name in env:
            set_value(updates, key, _env_value(key, env[name], name))
            return


def _env_value(key: Key, raw: str, name: str) -> object:
    if key.kind == "str":
        return raw
    if key.kind in ("int", "opt_int"):
        try:
            number = _parse_go_int(raw)
        except ValueError:
            raise bad(name, raw, "expected an integer") from None
        return check_int(number, name, raw)
    if key.kind == "bool":
        if raw not in _GO_BOOLS:
            raise bad(name, raw, "expected a boolean (1, t, true, 0, f, false, ...)")
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
    if not -MAX_GO_INT - 1 <= number <= MAX_GO_INT:
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
            raise bad(name, raw, f"invalid map item {item!r}, expected key:value")
        result[parts[0]] = parts[1]
    return result
