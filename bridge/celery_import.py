"""Import an existing Celery app: its tasks become bridge tasks, its settings ours.

``mbridge worker --celery-app proj.celery:app`` registers every task of the app
under its Celery name, so Go producers can call them unchanged, and takes the
broker, result backend and result settings a Celery worker of that app would use.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.app import Bridge


class CeleryImportError(BridgeError):
    """The Celery app cannot be imported or is not a Celery app."""


@dataclass(frozen=True, slots=True)
class CelerySettings:
    """What a bridge worker needs from a Celery app's configuration."""

    broker_url: str
    result_backend: str
    default_queue: str = "celery"
    result_expires: float | None = 86400.0
    task_serializer: str = "json"
    result_serializer: str = "json"
    result_extended: bool = False
    track_started: bool = False
    default_retry_delay: float = 180.0
    accept_content: tuple[str, ...] = ("json",)
    """Serializers (or content types) the app's workers accept (Celery's accept_content)."""
    transport_options: dict[str, Any] = field(default_factory=dict)
    """The app's broker_transport_options (SQS: region, queue_name_prefix...)."""


def load_celery_app(path: str) -> Any:
    """The Celery app at ``module[:attribute]`` (attribute ``app`` or ``celery`` by default)."""
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CeleryImportError(f"--celery-app {path}: cannot import {module_name}: {exc}") from exc
    names = [attribute] if attribute else ["app", "celery"]
    for name in names:
        candidate = getattr(module, name, None)
        if candidate is not None and hasattr(candidate, "tasks") and hasattr(candidate, "conf"):
            return candidate
    raise CeleryImportError(f"--celery-app {path}: no Celery app in {module_name} "
                            f"(looked for {', '.join(names)})")


def register_celery_tasks(bridge: Bridge, celery_app: Any) -> list[str]:
    """Register every task of ``celery_app`` under its name; returns the app's own (Celery's
    built-in ``celery.*`` tasks, such as ``celery.ping`` and ``celery.chord_unlock``, are
    registered too, as a Celery worker serves them, but not listed)."""
    celery_app.loader.import_default_modules()
    names = []
    for name, task in sorted(celery_app.tasks.items()):
        bridge.register(name, task)
        if not name.startswith("celery."):
            names.append(name)
    return names


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def celery_settings(celery_app: Any) -> CelerySettings:
    """The broker, backend and result settings of a Celery app, with Celery's defaults."""
    conf = celery_app.conf
    backend = conf.result_backend or ""
    return CelerySettings(
        broker_url=conf.broker_url or "amqp://guest:guest@localhost:5672//",
        result_backend=backend if isinstance(backend, str) else "",
        default_queue=conf.task_default_queue or "celery",
        result_expires=_seconds(conf.result_expires),
        task_serializer=conf.task_serializer or "json",
        result_serializer=conf.result_serializer or "json",
        result_extended=bool(conf.result_extended),
        track_started=bool(conf.task_track_started),
        default_retry_delay=180.0,
        accept_content=tuple(conf.accept_content or ("json",)),
        transport_options=dict(conf.broker_transport_options or {}),
    )
