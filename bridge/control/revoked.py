"""The ids of revoked tasks, as Celery's worker keeps them: at most 50,000, each forgotten
three hours after it was revoked (Celery's REVOKES_MAX and REVOKE_EXPIRES)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MAX_REVOKED = 50_000
REVOKE_EXPIRES = 10_800.0


class RevokedIds:
    """A bounded, expiring, thread-safe set of task ids; and the stamped headers revoked
    with Celery's ``revoke_by_stamped_headers`` (kept until the worker stops, as Celery)."""

    def __init__(self, maxlen: int = MAX_REVOKED, expires: float = REVOKE_EXPIRES) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._ids: OrderedDict[str, float] = OrderedDict()  # id: when revoked (time.time())
        self._lock = threading.Lock()
        self._stamps: dict[str, list[Any]] = {}  # stamp name: revoked values

    def use_stamps(self, store: dict[str, list[Any]]) -> None:
        """Keep the revoked stamps in ``store`` (Celery's ``celery.worker.state.revoked_stamps``
        when the worker serves a Celery app: Celery code in this process sees them)."""
        with self._lock:
            store.update(self._stamps)
            self._stamps = store

    def add_stamps(self, headers: Mapping[str, Any]) -> None:
        """Revoke every task stamped ``name: value`` for each value in ``headers[name]``."""
        with self._lock:
            for name, values in headers.items():
                values = values if isinstance(values, (list, tuple)) else [values]
                self._stamps[str(name)] = self._stamps.get(str(name), []) + list(values)

    def stamp_revoked(self, stamped_headers: Any, stamps: Any) -> dict[str, Any] | None:
        """The ``{name: value}`` of the first stamp of a task that was revoked, else None."""
        if not self._stamps or not stamped_headers or not isinstance(stamps, Mapping):
            return None
        with self._lock:
            for name in stamped_headers:
                revoked = self._stamps.get(name)
                if revoked is None:
                    continue
                value = stamps.get(name)
                for one in value if isinstance(value, (list, tuple)) else [value]:
                    if one in revoked:
                        return {name: one}
                return None  # as Celery: the first revoked stamp name decides
        return None

    def add(self, task_id: str, when: float | None = None) -> None:
        with self._lock:
            self._ids.pop(task_id, None)
            self._ids[task_id] = time.time() if when is None else when
            self._trim()

    def update(self, ids: Iterable[str] | Mapping[str, float]) -> None:
        """Add ids (a mapping keeps their times: a peer's revoked set, as ``hello`` sends)."""
        if isinstance(ids, Mapping):
            for task_id, when in ids.items():
                self.add(str(task_id), float(when) if isinstance(when, (int, float)) else None)
        else:
            for task_id in ids:
                self.add(str(task_id))

    def __contains__(self, task_id: object) -> bool:
        if not self._ids:  # the common case, without the lock
            return False
        with self._lock:
            when = self._ids.get(task_id)  # type: ignore[call-overload]
            if when is None:
                return False
            if time.time() - when > self.expires:
                del self._ids[task_id]  # type: ignore[arg-type]
                return False
            return True

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            self._trim()
            return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def as_dict(self) -> dict[str, float]:
        """id → when revoked (what ``hello`` gives a worker that joins)."""
        with self._lock:
            self._trim()
            return dict(self._ids)

    def _trim(self) -> None:
        cutoff = time.time() - self.expires
        while self._ids:
            oldest, when = next(iter(self._ids.items()))
            if when >= cutoff and len(self._ids) <= self.maxlen:
                break
            del self._ids[oldest]
