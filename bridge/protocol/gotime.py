"""Go's time.Time as machinery writes it: RFC 3339 with nanoseconds kept.

Python's datetime stops at microseconds; Go keeps nanoseconds and writes up to
nine fractional digits. ``GoTime`` is a datetime that carries the extra
nanoseconds so a decoded ETA or CreatedAt is written back byte-for-byte.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.errors import DecodeError, EncodeError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_new_datetime = datetime.__new__
_YEAR_10000 = 253402300800  # Unix seconds of 10000-01-01, past datetime's range

# Go's strict RFC 3339 form (time/format_rfc3339.go parseRFC3339) plus what its
# fallback time.Parse(RFC3339, ...) also takes: a comma before the fraction.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})\Z",
    re.ASCII,  # Go reads ASCII digits only
)


class GoTime(datetime):
    """An aware datetime with Go's nanosecond precision.

    ``nanosecond`` is the part below ``microsecond`` (0-999). Arithmetic returns
    plain datetimes; equality and hashing include the nanoseconds.
    """

    __slots__ = ("_ns",)
    _ns: int

    def __new__(cls, *args: Any, nanosecond: int = 0, **kwargs: Any) -> GoTime:
        self = super().__new__(cls, *args, **kwargs)
        if not 0 <= nanosecond < 1000:
            raise ValueError(f"nanosecond must be in 0..999, not {nanosecond}")
        self._ns = nanosecond
        return self

    @property
    def nanosecond(self) -> int:
        """Nanoseconds below the microsecond (0-999)."""
        return self._ns

    @classmethod
    def from_datetime(cls, dt: datetime, nanosecond: int = 0) -> GoTime:
        """A GoTime for an aware datetime (plus sub-microsecond nanoseconds)."""
        if dt.tzinfo is None:
            raise ValueError("a Go time needs an offset: use an aware datetime")
        return cls(
            dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond,
            dt.tzinfo, nanosecond=nanosecond, fold=dt.fold,
        )

    @classmethod
    def from_unix_nano(cls, ns: int, tz: timezone = UTC) -> GoTime:
        """The instant ``ns`` nanoseconds after the Unix epoch (Go's time.Unix(0, ns))."""
        seconds, below = divmod(ns, 1_000_000_000)
        if tz is UTC and 0 <= seconds < _YEAR_10000:  # the common case, a third of the time
            made: GoTime = _new_datetime(cls, *time.gmtime(seconds)[:6], below // 1000, UTC)
            made._ns = below % 1000
            return made
        micros, rest = divmod(ns, 1000)
        dt = (_EPOCH + timedelta(microseconds=micros)).astimezone(tz)
        return cls.from_datetime(dt, rest)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return super().__eq__(other) and self._ns == nanosecond_of(other)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((super().__hash__(), self._ns))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # datetime's own __reduce_ex__ would drop the nanoseconds (pickle, copy, deepcopy)
        plain = datetime(*self.timetuple()[:6], self.microsecond, self.tzinfo, fold=self.fold)
        return (_rebuild, (plain, self._ns))

    def __repr__(self) -> str:
        return f"GoTime({format_rfc3339(self)!r})"


def _rebuild(dt: datetime, ns: int) -> GoTime:
    return GoTime.from_datetime(dt, ns)


def nanosecond_of(dt: datetime) -> int:
    """The sub-microsecond nanoseconds of a datetime (0 for a plain one)."""
    return dt._ns if isinstance(dt, GoTime) else 0


def unix_nano(dt: datetime) -> int:
    """Go's ``t.UnixNano()``: nanoseconds since the Unix epoch."""
    if dt.tzinfo is None:
        raise ValueError("a Go time needs an offset: use an aware datetime")
    delta = dt - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1000 + nanosecond_of(dt)


GO_ZERO_TIME = GoTime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``)."""


def format_rfc3339(dt: datetime) -> str:
    """What Go's ``time.Time.MarshalJSON`` writes, without the quotes."""
    if dt is GO_ZERO_TIME:
        return "0001-01-01T00:00:00Z"
    offset = dt.utcoffset()
    if offset is None:
        raise EncodeError(f"time {dt.isoformat()} has no offset: Go times always carry one")
    frac = dt.microsecond * 1000 + nanosecond_of(dt)
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (  # noqa: UP031 - a third of the f-string's time
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    if frac:
        text += "." + ("%09d" % frac).rstrip("0")  # noqa: UP031
    if not offset:
        return text + "Z"
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return text + "Z"
    minutes = abs(seconds) // 60  # Go drops the seconds of an offset
    if minutes // 60 >= 24:
        raise EncodeError("timezone hour outside of range [0,23]")
    sign = "-" if seconds < 0 else "+"
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse_rfc3339(text: str) -> GoTime:
    """Parse a time as Go's ``time.Time.UnmarshalJSON`` does (an offset is required)."""
    match = _RFC3339.match(text)
    if match is None:
        raise DecodeError(f"time {text!r} is not RFC 3339 with an offset (Go rejects it)")
    fields = match.groups()
    year, month, day, hour, minute, second = map(int, fields[:6])
    digits, zone = fields[6] or "", fields[7]
    nanos = int((digits[:9]).ljust(9, "0")) if digits else 0
    if hour > 23 or minute > 59 or second > 59:
        raise DecodeError(f"time {text!r} has a clock field out of range")
    if zone == "Z":
        tz = UTC
    else:
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            raise DecodeError(f"time {text!r} has a timezone out of range")
        delta = timedelta(hours=zh, minutes=zm)
        tz = timezone(-delta if zone[0] == "-" else delta) if delta else UTC
    try:  # datetime's own constructor: GoTime.__new__'s generic arguments cost a third
        made: GoTime = _new_datetime(
            GoTime, year, month, day, hour, minute, second, nanos // 1000, tz)
    except ValueError as exc:
        raise DecodeError(f"time {text!r}: {exc}") from None
    made._ns = nanos % 1000
    return made
