"""Per job-name options of a gocraft/work pool (``work.JobOptions``) and the priority
sampler that orders job names before each fetch (``priority_sampler.go``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bridge.config.keys import ConfigError

MAX_PRIORITY = 100_000


@dataclass(frozen=True, slots=True)
class JobOptions:
    """gocraft's ``JobOptions``: ``max_fails`` counts every attempt (4: one try, three
    retries; 0 means the default 4), ``skip_dead`` drops a job out of attempts instead of
    keeping it in the dead set, ``max_concurrency`` caps running jobs of this name across
    every pool of the namespace (0: none), ``priority`` 1..100000 weighs the fetch order,
    ``backoff`` (fails → seconds) replaces the default back-off."""

    priority: int = 1
    max_fails: int = 4
    skip_dead: bool = False
    max_concurrency: int = 0
    backoff: Callable[[int], int] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.priority <= MAX_PRIORITY:
            raise ConfigError(f"gocraft job priority {self.priority} is out of range: "
                              f"use 1..{MAX_PRIORITY}")
        if self.max_fails < 0 or self.max_concurrency < 0:
            raise ConfigError("gocraft max_fails and max_concurrency cannot be negative")

    @property
    def attempts(self) -> int:
        return self.max_fails or 4

    @classmethod
    def parse(cls, text: str) -> tuple[str, JobOptions]:
        """``name[,max_fails=N][,skip_dead][,max_concurrency=N][,priority=N][,backoff=S]``
        (the CLI's ``--gocraft-job``; ``backoff``: a fixed delay in seconds between
        attempts instead of gocraft's growing one)."""
        name, *parts = [part.strip() for part in text.split(",")]
        values: dict[str, int | bool] = {}
        backoff: Callable[[int], int] | None = None
        for part in parts:
            key, _, value = part.partition("=")
            key = key.replace("-", "_")
            if key == "skip_dead" and not value:
                values[key] = True
            elif key in ("max_fails", "max_concurrency", "priority") and value.isdigit():
                values[key] = int(value)
            elif key == "backoff" and value.isdigit():
                backoff = FixedBackoff(int(value))
            else:
                raise ConfigError(f"--gocraft-job {text!r}: unknown option {part!r} (use "
                                  "max_fails=N, skip_dead, max_concurrency=N, priority=N, "
                                  "backoff=S)")
        if not name:
            raise ConfigError(f"--gocraft-job {text!r}: the job name comes first")
        return name, cls(**values, backoff=backoff)  # type: ignore[arg-type]


def sample_order(priorities: Mapping[str, int] | Sequence[tuple[str, int]],
                 rand: Callable[[], float] = random.random) -> list[str]:
    """Job names in a weighted random order without replacement: each draw picks one of
    the remaining names with probability priority / sum of the remaining priorities."""
    left = list(priorities.items() if isinstance(priorities, Mapping) else priorities)
    order: list[str] = []
    total = sum(weight for _, weight in left)
    while left:
        point = rand() * total
        for index, (name, weight) in enumerate(left):
            point -= weight
            if point < 0 or index == len(left) - 1:
                order.append(name)
                total -= weight
                del left[index]
                break
    return order


class FixedBackoff:
    """A back-off of ``seconds`` whatever the failures (``backoff=S``); equal by value."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __call__(self, fails: int) -> int:
        return self.seconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FixedBackoff) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)

    def __repr__(self) -> str:
        return f"FixedBackoff({self.seconds})"
