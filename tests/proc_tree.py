"""Processes of a process tree, read from /proc (no psutil here)."""

from __future__ import annotations

import os


def parents() -> dict[int, int]:
    """Every live process id with its parent's."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    out[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def grandchildren(pid: int) -> list[int]:
    """The children of ``pid``'s children: a forkserver's processes (migrate and relay
    helpers, the task children of ``--pool processes``)."""
    tree = parents()
    children = {p for p, parent in tree.items() if parent == pid}
    return sorted(p for p, parent in tree.items() if parent in children)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
