"""The Celery side of ``mbridge worker``: the queues, broker and backend the options (or the
Celery app) name, the handlers that serve them, and the remote control and events that let
``celery inspect/control/status/events`` and Flower see the worker."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field, replace
from typing import Any

import click

from bridge.app import Bridge
from bridge.config import redact_url
from bridge.handlers.celery import CeleryOptions, celery_handler_factory
from bridge.worker import HandlerFactory

log = logging.getLogger("bridge")


@dataclass
class CelerySide:
    """What serving Celery clients takes."""

    broker: str
    backend: str
    queues: tuple[str, ...]
    options: CeleryOptions
    transport: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)
    """The Celery app's settings, censored, JSON-able (``celery inspect conf``)."""
    control_exchange: str = "celery"
    remote_control: bool = True
    send_events: bool = False
    event_exchange: str = "celeryev"
    app: Any = None
    """The Celery app (``--celery-app``): its tasks run in Celery's own tracer."""

    def factory(self, queue: str) -> HandlerFactory:
        return celery_handler_factory(self.broker, self.backend, queue, self.options,
                                      self.transport, self.app)

    def factories(self) -> list[HandlerFactory]:
        return [self.factory(name) for name in self.queues]


def node_name(template: str) -> str:
    """Celery's ``-n`` expansion: %h the host name, %n its first label, %d the domain."""
    host = socket.getfqdn() or socket.gethostname()
    name, _, domain = host.partition(".")
    return template.replace("%h", host).replace("%n", name).replace("%d", domain) \
        .replace("%%", "%")


def celery_side(app: Bridge, celery_app: str | None, queues: tuple[str, ...],
                broker: str | None, backend: str | None, hostname: str) -> CelerySide | None:
    """The Celery side the worker options ask for; None when they ask for none."""
    from bridge.celery_import import load_celery_app

    if celery_app is None and not queues:
        return None
    options = CeleryOptions(hostname=hostname)
    side = CelerySide(broker or "", backend or "", queues, options)
    if celery_app is not None:
        side = side_of_app(app, load_celery_app(celery_app), side)
    if not side.broker or not side.backend:
        raise click.UsageError("--celery-queue needs --celery-broker and --celery-backend "
                               "(or --celery-app)")
    log.info("Celery queues %s on %s, results in %s", ", ".join(side.queues),
             redact_url(side.broker), redact_url(side.backend))
    return side


def side_of_app(app: Bridge, capp: Any, side: CelerySide) -> CelerySide:
    """``side`` completed from the Celery app ``capp`` (what the options left unset), with
    the app's tasks registered in ``app``."""
    from bridge.celery_import import celery_settings, register_celery_tasks

    register_celery_tasks(app, capp)
    settings = celery_settings(capp)
    return replace(
        side, app=capp, broker=side.broker or settings.broker_url,
        backend=side.backend or settings.result_backend,
        queues=side.queues or (settings.default_queue,),
        options=replace(side.options, default_queue=settings.default_queue,
                        track_started=settings.track_started,
                        result_extended=settings.result_extended,
                        serializer=settings.task_serializer,
                        accept=settings.accept_content),
        transport=settings.transport_options, conf=_censored_conf(capp),
        control_exchange=capp.conf.control_exchange or "celery",
        remote_control=bool(capp.conf.worker_enable_remote_control),
        send_events=bool(capp.conf.worker_send_task_events),
        event_exchange=capp.conf.event_exchange or "celeryev")


def _censored_conf(capp: Any) -> dict[str, Any]:
    """``app.conf.table(censored=True)`` made JSON-able, as Celery's ``conf`` reply."""
    table = capp.conf.table(with_defaults=False, censored=True)
    return {key: json.loads(json.dumps(value, default=repr)) for key, value in table.items()}
