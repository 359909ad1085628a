"""What ``mbridge migrate`` did (or, dry, would do): counts per task, reasons, a rendering."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["MAX_REASONS", "MigrationReport", "Progress", "TaskCounts"]

MAX_REASONS = 200
"""Distinct (task, reason) pairs kept in a report; the rest are counted under '(other)'."""


@dataclass(slots=True)
class TaskCounts:
    """Per task name."""

    moved: int = 0
    """Published to the destination (would be, in a dry run)."""
    untranslatable: int = 0
    filtered: int = 0
    parked: int = 0


@dataclass(slots=True)
class MigrationReport:
    """What a migration did (or, dry, would do)."""

    src: str
    dst: str
    mode: str
    """``move``, ``copy`` or ``dry-run``."""
    seen: int = 0
    moved: int = 0
    delayed: int = 0
    """Of ``moved``: messages taken from a delayed set or waiting for an ETA still ahead."""
    filtered: int = 0
    untranslatable: int = 0
    parked: int = 0
    resumed_batches: int = 0
    already_published: int = 0
    """Messages of a killed run's batches found published: forgotten, not published again."""
    unacked_restored: int = 0
    aside_restored: int = 0
    results_carried: int = 0
    results_pending: int = 0
    pending_before: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Messages looked at per second."""
        elapsed = self.elapsed or (time.monotonic() - self.started)
        return self.seen / elapsed if elapsed > 0 else 0.0

    @property
    def left_behind(self) -> int:
        """Messages that stay in the source because they could not be migrated."""
        return self.untranslatable - self.parked

    def task(self, name: str) -> TaskCounts:
        counts = self.tasks.get(name)
        if counts is None:
            counts = self.tasks[name] = TaskCounts()
        return counts

    def reason(self, task: str, reason: str, count: int = 1) -> None:
        key = (task, reason)
        if key not in self.reasons and len(self.reasons) >= MAX_REASONS:
            key = (task, "(other reasons)")
        self.reasons[key] += count

    def absorb(self, other: MigrationReport) -> None:
        """Add the counts of ``other`` (a helper process's part of the same run)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for task, counts in other.tasks.items():
            mine = self.task(task)
            for name in ("moved", "untranslatable", "filtered", "parked"):
                setattr(mine, name, getattr(mine, name) + getattr(counts, name))
        for (task, reason), count in other.reasons.items():
            self.reason(task, reason, count)
        self.notes += [note for note in other.notes if note not in self.notes]

    def merged(self, others: list[MigrationReport]) -> MigrationReport:
        """A new report: this one's counts and those of ``others`` (the run so far)."""
        out = replace(self, tasks={n: replace(c) for n, c in self.tasks.items()},
                      reasons=Counter(self.reasons), notes=list(self.notes),
                      pending_before=dict(self.pending_before))
        for other in others:
            out.absorb(other)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "src": self.src, "dst": self.dst, "mode": self.mode, "seen": self.seen,
            "moved": self.moved, "delayed": self.delayed, "filtered": self.filtered,
            "untranslatable": self.untranslatable, "parked": self.parked,
            "resumed_batches": self.resumed_batches,
            "already_published": self.already_published,
            "unacked_restored": self.unacked_restored, "aside_restored": self.aside_restored,
            "results_carried": self.results_carried, "results_pending": self.results_pending,
            "pending_before": self.pending_before,
            "tasks": {name: {"moved": c.moved, "untranslatable": c.untranslatable,
                             "filtered": c.filtered, "parked": c.parked}
                      for name, c in sorted(self.tasks.items())},
            "reasons": [{"task": t, "reason": r, "count": n}
                        for (t, r), n in self.reasons.most_common()],
            "notes": self.notes, "elapsed": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
        }

    def render(self) -> str:
        """A human-readable summary: totals, a per-task table, reasons."""
        verb = "would move" if self.mode == "dry-run" else (
            "copied" if self.mode == "copy" else "moved")
        lines = [f"{self.mode}: {self.src} -> {self.dst}"]
        if self.pending_before:
            lines.append("  waiting before: " + ", ".join(
                f"{k} {v:,}" for k, v in self.pending_before.items()))
        lines.append(f"  looked at {self.seen:,}, {verb} {self.moved:,} "
                     f"({self.delayed:,} delayed), filtered out {self.filtered:,}, "
                     f"untranslatable {self.untranslatable:,}, parked {self.parked:,} "
                     f"in {self.elapsed:.1f}s ({self.rate:,.0f} msg/s)")
        extra = [f"{label} {value:,}" for label, value in (
            ("resumed batches", self.resumed_batches),
            ("already published", self.already_published),
            ("unacked restored", self.unacked_restored),
            ("set-aside returned", self.aside_restored),
            ("results carried", self.results_carried),
            ("PENDING states written", self.results_pending)) if value]
        if extra:
            lines.append("  " + ", ".join(extra))
        if self.tasks:
            width = max(4, *(len(n) for n in self.tasks))
            lines.append(f"  {'task':<{width}}  {verb:>10}  {'untransl.':>9}  "
                         f"{'filtered':>8}  {'parked':>6}")
            for name, c in sorted(self.tasks.items()):
                lines.append(f"  {name:<{width}}  {c.moved:>10,}  {c.untranslatable:>9,}  "
                             f"{c.filtered:>8,}  {c.parked:>6,}")
        if self.reasons:
            lines.append("  cannot migrate:")
            for (task, reason), count in self.reasons.most_common(20):
                lines.append(f"    {count:>8,} x {task}: {reason}")
            if len(self.reasons) > 20:
                lines.append(f"    ... {len(self.reasons) - 20} more reasons (see --json)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


_SUMMED = ("seen", "moved", "delayed", "filtered", "untranslatable", "parked",
           "already_published", "results_carried", "results_pending")
"""Counts a helper process adds to the run's (the rest are the run's process's own)."""

Progress = Callable[[MigrationReport], None]
