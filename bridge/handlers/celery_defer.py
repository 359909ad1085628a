"""A traced Celery task's SUCCESS meta written with the worker's batch, not on its own.

Celery's tracer stores a result with two round trips of its own (``GET`` the meta, then
``MULTI SETEX PUBLISH EXEC``) in the task's thread; at no-op speed that is most of a task's
time. When nothing can tell the difference, the meta Celery's backend builds and encodes
(``_get_result_meta`` + ``encode``: the same bytes) is handed to the worker loop instead,
which writes every finished task's meta in one call of the batch script (the same check:
a stored SUCCESS is never written over; then ``SETEX`` + ``PUBLISH``) before it acks.

Nothing can tell the difference when the task has no ``on_success`` / ``after_return`` of
its own and no receiver listens to ``task_success`` / ``task_postrun`` (the code that runs
between the store and the ack), the backend is Celery's own Redis backend with a JSON or
msgpack serializer, the message is a leaf (no chain to go on with, no callbacks, not a
group or chord member: what follows may read the stored result the moment it exists) and
``worker_deduplicate_successful_tasks`` is off. Anything else takes Celery's own path,
unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.protocol.kombu_envelope import KOMBU_JSON_ENCODE

__all__ = ["Deferred", "MetaEncoder", "SuccessDeferral", "store_deferred"]

_SHARED_CLIENTS: dict[tuple[type, str], Any] = {}
"""The first Redis client seen for each backend class and connection parameters."""


@dataclass(slots=True)
class Deferred:
    """One encoded meta, for the Redis client of the backend that built it."""

    client: Any
    key: bytes | str
    value: bytes | str
    ttl: int
    serializer: str


class SuccessDeferral:
    """Defers the SUCCESS store of the task running in this thread, when allowed."""

    def __init__(self, celery_app: Any) -> None:
        from celery import signals

        self.app = celery_app
        self._local = threading.local()
        self._static: dict[str, bool] = {}
        self._after_store = (signals.task_success, signals.task_postrun)

    def eligible(self, celery_task: Any) -> bool:
        """Whether this task's SUCCESS store may wait for the worker's batch."""
        success, postrun = self._after_store
        if success.receivers or postrun.receivers:
            return False
        known = self._static.get(celery_task.name)
        if known is None:
            known = self._static[celery_task.name] = self._task_allows(celery_task)
        return known

    def _task_allows(self, celery_task: Any) -> bool:
        from celery.app.trace import task_has_custom
        from celery.backends.redis import RedisBackend

        backend = celery_task.backend
        return (type(backend) is RedisBackend
                and backend.serializer in ("json", "msgpack")
                and not task_has_custom(celery_task, "on_success")
                and not task_has_custom(celery_task, "after_return")
                and not self.app.conf.worker_deduplicate_successful_tasks)

    def begin(self, celery_task: Any, task_id: str) -> None:
        """From now on, this thread's store of ``task_id``'s SUCCESS is deferred."""
        backend = celery_task.backend
        if backend.__dict__.get("_bridge_deferral") is not self:
            self._install(backend)
        self._local.task_id = task_id
        self._local.deferred = None

    def end(self) -> Deferred | None:
        """The deferred meta of the task begun last in this thread (None: Celery stored)."""
        deferred: Deferred | None = getattr(self._local, "deferred", None)
        self._local.task_id = None
        self._local.deferred = None
        return deferred

    def _install(self, backend: Any) -> None:
        from celery import states
        from celery.backends.base import _is_request_ignore_result

        original = type(backend).mark_as_done
        local = self._local

        def mark_as_done(task_id: str, result: Any, request: Any = None,
                         store_result: bool = True, state: str = states.SUCCESS) -> Any:
            if (getattr(local, "task_id", None) != task_id or state != states.SUCCESS
                    or not store_result or _is_request_ignore_result(request)
                    or (request is not None and request.chord)):
                return original(backend, task_id, result, request, store_result, state)
            local.deferred = encoder.encode(task_id, result, state, request)
            return None

        encoder = MetaEncoder(backend)
        backend.mark_as_done = mark_as_done
        backend._bridge_deferral = self


class MetaEncoder:
    """What ``store_result`` would write for a SUCCESS, built as it builds it, the same
    bytes (an EncodeError raises here, inside the tracer, as it does there). The settings
    it reads at each store (``result_extended``, the app's time zone, the serializer's
    encoder) are read once, as a worker reads its settings when it starts; with
    ``result_extended``, or an app or serializer of its own, Celery's code builds it."""

    def __init__(self, backend: Any) -> None:
        from celery import Celery
        from celery.backends.base import BaseKeyValueStoreBackend
        from celery.exceptions import BackendStoreError
        from kombu.serialization import registry
        from kombu.utils.encoding import bytes_to_str, ensure_bytes
        from kombu.utils.json import dumps

        self._too_large = BackendStoreError  # imported once, not at every task
        self._to_str = bytes_to_str
        base = BaseKeyValueStoreBackend
        # Celery's get_key_for_task joins prefix, ensure_bytes(id) and b"": done inline
        self._plain_keys = (type(backend).get_key_for_task is base.get_key_for_task
                            and type(backend)._get_key_for is base._get_key_for
                            and backend.key_t is ensure_bytes
                            and isinstance(backend.task_keyprefix, bytes))
        app = backend.app
        self.backend = backend
        self.fast = (not app.conf.find_value_for_key("extended", "result")
                     and type(app).now is Celery.now)
        self.zone = app.timezone
        params = getattr(backend, "connparams", None)
        self._target = ((type(backend), repr(sorted(params.items(), key=repr)))
                        if isinstance(params, dict) else None)
        self._shared: Any = None
        codec = registry._encoders.get(backend.serializer)
        # kombu's dumps makes a JSONEncoder at every call; the kept one writes the same bytes
        self.dumps = KOMBU_JSON_ENCODE if codec is not None and codec.encoder is dumps else None

    def encode(self, task_id: str, result: Any, state: str, request: Any) -> Deferred:
        backend = self.backend
        result = backend.encode_result(result, state)
        if self.fast:
            meta = {"status": state, "result": result, "traceback": None,
                    "children": backend.current_task_children(request),
                    "date_done": datetime.now(UTC).astimezone(self.zone).isoformat()}
            if request is not None:
                if getattr(request, "group", None):
                    meta["group_id"] = request.group
                if getattr(request, "parent_id", None):
                    meta["parent_id"] = request.parent_id
        else:
            meta = backend._get_result_meta(result=result, state=state, traceback=None,
                                            request=request)
        meta["task_id"] = self._to_str(task_id)
        value = self._dumps(meta)
        if isinstance(value, str) and len(value) > backend._MAX_STR_VALUE_SIZE:
            raise self._too_large("value too large for Redis backend")
        key = (backend.task_keyprefix + task_id.encode()
               if self._plain_keys and isinstance(task_id, str) and task_id
               else backend.get_key_for_task(task_id))
        return Deferred(self._client(), key, value, int(backend.expires or 0),
                        backend.serializer)

    def _client(self) -> Any:
        """The Redis client the meta is written with: one for every backend of the same
        class and connection parameters. Celery makes a backend (and a client) per thread,
        and the worker writes a turn's metas in one script call per client."""
        if self._shared is None:
            # read where kombu's cached_property keeps it: its __get__ takes a lock
            client = self.backend.__dict__.get("client") or self.backend.client
            if self._target is None:
                return client
            self._shared = _SHARED_CLIENTS.setdefault(self._target, client)
        return self._shared

    def _dumps(self, meta: dict[str, Any]) -> Any:
        """kombu's JSON encoder called as its serializer registry calls it; anything it
        refuses goes through the registry, which raises kombu's ``EncodeError``."""
        if self.dumps is not None:
            try:
                return self.dumps(meta)
            except Exception:  # the registry raises the error Celery's does
                pass
        return self.backend.encode(meta)


def store_deferred(items: Sequence[Deferred]) -> list[int]:
    """Write deferred metas, one batch-script call per client, TTL and serializer; per item
    1 (written), 0 (a SUCCESS was already stored), -1 (the key holds another type)."""
    from bridge.backends.celery_redis import store_script

    done = [0] * len(items)
    groups: dict[tuple[int, int, str], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault((id(item.client), item.ttl, item.serializer), []).append(index)
    for (_, ttl, serializer), indexes in groups.items():
        client = items[indexes[0]].client
        written = store_script(client)(keys=[items[i].key for i in indexes],
                                       args=[ttl, serializer, *(items[i].value for i in indexes)],
                                       client=client)
        for index, value in zip(indexes, written, strict=True):
            done[index] = int(value)
    return done
