"""gocraft/work's Redis key map for one namespace (reference: gocraft-work.md §1).

A non-empty namespace gets a ``:`` appended unless it ends in one; an empty namespace has
no prefix at all. Every key a Go enqueuer, worker pool or ``workwebui`` reads or writes is
built here, so ours and theirs meet on the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def prefix_of(namespace: str) -> str:
    """The key prefix of ``namespace`` (``work`` → ``work:``; ``""`` → ``""``)."""
    if namespace and not namespace.endswith(":"):
        return namespace + ":"
    return namespace


@dataclass(frozen=True, slots=True)
class GocraftKeys:
    """Keys of one gocraft/work namespace."""

    namespace: str
    prefix: str = field(init=False)
    """``<ns>:`` (see :func:`prefix_of`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", prefix_of(self.namespace))

    @property
    def jobs_prefix(self) -> str:
        """``<ns>:jobs:`` (the requeue script builds queue names from it)."""
        return self.prefix + "jobs:"

    def jobs(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}"

    def in_progress(self, name: str, pool_id: str) -> str:
        return f"{self.prefix}jobs:{name}:{pool_id}:inprogress"

    def paused(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}:paused"

    def lock(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}:lock"

    def lock_info(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}:lock_info"

    def max_concurrency(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}:max_concurrency"

    @property
    def retry(self) -> str:
        return self.prefix + "retry"

    @property
    def scheduled(self) -> str:
        return self.prefix + "scheduled"

    @property
    def dead(self) -> str:
        return self.prefix + "dead"

    @property
    def known_jobs(self) -> str:
        return self.prefix + "known_jobs"

    @property
    def worker_pools(self) -> str:
        return self.prefix + "worker_pools"

    def heartbeat(self, pool_id: str) -> str:
        return f"{self.prefix}worker_pools:{pool_id}"

    def observation(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    @property
    def last_periodic_enqueue(self) -> str:
        return self.prefix + "last_periodic_enqueue"

    def unique_prefix(self, name: str) -> str:
        """``<ns>:unique:<name>:``, followed by the key map's JSON and a newline (job.py)."""
        return f"{self.prefix}unique:{name}:"
