"""When an entry is due: cron specs as robfig/cron v3 reads them (machinery's
RegisterPeriodicTask, gocraft's PeriodicallyEnqueue) and fixed intervals, in an IANA zone.

Parsing and matching are croniter's (pallets-eco, maintained; it already does 5 fields, 6
with seconds first, names, ``?`` and time zones with DST). What robfig does on its own is
kept here: the ``CRON_TZ=``/``TZ=`` prefix, its descriptors, ``@every <Go duration>``, and
its DST rule: a wall-clock time that a spring-forward skips does not run that day (a
fall-back's repeated hour runs twice, in both systems).

Every time is a float of Unix seconds.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from bridge.config import ConfigError

__all__ = ["CronSchedule", "EverySchedule", "Schedule", "parse_duration", "parse_schedule",
           "zone"]

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""robfig/cron v3's descriptors (parser.go ``parseDescriptor``)."""
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
MAX_TICKS = 10_000
"""Most ticks counted or walked at once (missed ticks beyond are counted as this many)."""


def zone(name: str, where: str) -> tzinfo:
    """The IANA zone ``name`` (``UTC`` and ``Local`` too)."""
    if name in ("", "UTC"):
        return UTC
    if name == "Local":
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {name!r}: use an IANA name such as "
                          "Europe/Berlin or America/New_York", key="timezone") from None


def parse_duration(text: str, where: str) -> float:
    """Seconds in a Go duration (``90s``, ``1h30m``, ``1.5h``) or a plain number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(f"{where}: {text!r} is not a duration: write seconds (30) or a Go "
                          "duration (90s, 5m, 1h30m)", key="every")
    return total


class Schedule(ABC):
    """When an entry's ticks fall."""

    spec: str
    """The text as written: machinery's lock key and gocraft's periodic id carry it verbatim."""

    @abstractmethod
    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""

    @abstractmethod
    def at_or_before(self, t: float) -> float:
        """The last tick at or before ``t``."""

    def robfig_next(self, t: float) -> float:
        """What robfig's ``Schedule.Next`` gives at ``t`` (machinery's lock value)."""
        return self.next_after(t)

    def ticks(self, after: float, until: float) -> Iterator[float]:
        """The ticks in ``(after, until)``, at most :data:`MAX_TICKS` of them."""
        t = after
        for _ in range(MAX_TICKS):
            t = self.next_after(t)
            if t >= until:
                return
            yield t

    def count(self, after: float, until: float) -> int:
        """How many ticks fall in ``(after, until]`` (at most :data:`MAX_TICKS`)."""
        return sum(1 for _ in self.ticks(after, until + 1e-6))

    def latest(self, after: float, until: float) -> float | None:
        """The last tick in ``(after, until]``, if any."""
        last = self.at_or_before(until)
        return last if last > after else None


class CronSchedule(Schedule):
    """A 5-field (minutes first) or 6-field (seconds first) cron spec, or a descriptor."""

    def __init__(self, spec: str, fields: str, tz: tzinfo) -> None:
        self.spec = spec
        self.fields = fields
        self.tz = tz
        self.seconds = len(fields.split()) == 6
        expanded = croniter(fields, second_at_beginning=self.seconds).expanded
        self._minute, self._hour = expanded[0], expanded[1]
        self._second = expanded[5] if self.seconds else [0]

    def __repr__(self) -> str:
        return f"CronSchedule({self.spec!r}, {self.tz})"

    def next_after(self, t: float) -> float:
        return self._walk(t, backwards=False)

    def at_or_before(self, t: float) -> float:
        return self._walk(math.floor(t) + 1, backwards=True)

    def _walk(self, t: float, *, backwards: bool) -> float:
        start = datetime.fromtimestamp(t, self.tz)
        it = croniter(self.fields, start, ret_type=datetime, second_at_beginning=self.seconds)
        for _ in range(MAX_TICKS):
            tick: datetime = it.get_prev() if backwards else it.get_next()
            if self._on_the_clock(tick):
                return tick.timestamp()
        raise ConfigError(f"cron {self.spec!r}: no time matches it", key="cron")

    def _on_the_clock(self, tick: datetime) -> bool:
        """Whether ``tick`` shows the wall-clock time the spec asks for: croniter moves a time
        that a spring-forward skips to the next existing one; robfig skips it."""
        local = tick.astimezone(self.tz)
        return all(allowed == ["*"] or value in allowed for value, allowed in (
            (local.second, self._second), (local.minute, self._minute),
            (local.hour, self._hour)))


class EverySchedule(Schedule):
    """``@every <duration>`` or ``every: N``: ticks on whole multiples of the period since
    the Unix epoch, so every process has the same ticks (robfig counts from its start)."""

    def __init__(self, spec: str, period: float) -> None:
        self.spec = spec
        self.period = float(max(1, math.floor(period)))  # robfig: whole seconds, at least 1

    def __repr__(self) -> str:
        return f"EverySchedule({self.spec!r})"

    def next_after(self, t: float) -> float:
        return (math.floor(t / self.period) + 1) * self.period

    def at_or_before(self, t: float) -> float:
        return math.floor(t / self.period) * self.period

    def robfig_next(self, t: float) -> float:
        return math.floor(t) + self.period  # ConstantDelaySchedule.Next: t + delay - nanos


def _split_zone(spec: str) -> tuple[str | None, str]:
    for prefix in ("CRON_TZ=", "TZ="):
        if spec.startswith(prefix):
            name, _, rest = spec[len(prefix):].partition(" ")
            return name, rest.strip()
    return None, spec


def parse_schedule(cron: str | None, every: str | float | None, timezone: str | None,
                   where: str) -> Schedule:
    """The schedule of an entry's ``cron`` or ``every`` (exactly one) and ``timezone``."""
    if (cron is None) == (every is None):
        raise ConfigError(f"{where}: give one of cron: or every:", key="cron")
    if every is not None:
        seconds = parse_duration(str(every), where)
        if seconds < 1:
            raise ConfigError(f"{where}: every: {every} is under a second (the least is 1)",
                              key="every")
        text = f"{every}s" if isinstance(every, int | float) else str(every).strip()
        return EverySchedule(f"@every {text}", seconds)
    spec = str(cron).strip()
    prefixed, rest = _split_zone(spec)
    if prefixed is not None and timezone is not None and prefixed != timezone:
        raise ConfigError(f"{where}: cron says CRON_TZ={prefixed} but "
                          f"timezone: {timezone}: keep one", key="timezone")
    tz = zone(prefixed or timezone or "UTC", where)
    if rest.startswith("@every"):
        seconds = parse_duration(rest[len("@every"):], where)
        return EverySchedule(spec, seconds)
    fields = DESCRIPTORS.get(rest, rest) if rest.startswith("@") else rest
    if fields.startswith("@"):
        raise ConfigError(f"{where}: unknown descriptor {rest!r} (robfig/cron knows "
                          f"{', '.join(DESCRIPTORS)}, @every <duration>)", key="cron")
    count = len(fields.split())
    if count not in (5, 6) or not croniter.is_valid(fields, second_at_beginning=count == 6):
        raise ConfigError(f"{where}: cron {spec!r} is not valid: write 5 fields (minute hour "
                          "day-of-month month day-of-week), 6 with seconds first, or a "
                          "descriptor such as @hourly", key="cron")
    return CronSchedule(spec, fields, tz)
