"""Credentials masked out of broker, backend and lock URLs before they reach a log line."""

from __future__ import annotations

import itertools
import re
from urllib.parse import unquote

MASK = "***"
_DECODE_LEVELS = 4
"""Percent-encoding levels looked through for credentials."""

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
    carries a password, schemeless ``user:pass@host`` and password-like query parameters, and
    any of these percent-encoded (once or several times, as in an endpoint's
    ``backend=redis%3A%2F%2F%3Asecret%40h``): then the decoded text is shown, masked.
    URLs without credentials are returned unchanged.
    """
    shown = _redact(url)
    decoded = url
    for _ in range(_DECODE_LEVELS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
        masked = _redact(decoded)
        if masked.count(MASK) > shown.count(MASK):  # credentials only decoding shows
            return masked
    return shown


def _redact(url: str) -> str:
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
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", text)


def _mask_userinfo(scheme: str, userinfo: str) -> str:
    if not userinfo:
        return userinfo
    user, colon, _ = userinfo.partition(":")
    if scheme.startswith("redis") and ("," in user or "@" in user):
        return MASK  # credentials on several addresses (malformed): hide all of them
    if colon:
        return f"{user}:{MASK}"
    return userinfo if scheme in _USER_ONLY_SCHEMES else MASK
