"""The remote control of ``mbridge worker``: one pidbox mailbox per broker the worker
consumes (the Celery broker, and machinery's Redis or RabbitMQ broker), all answering from
one view of the worker's tasks, so ``celery inspect/control``, Flower, ``mbridge inspect
--workers`` and ``mbridge control`` reach it; Celery's events on the Celery broker."""

from __future__ import annotations

import logging
from typing import Any

from kombu import Connection

from bridge.cli.celery_side import CelerySide
from bridge.config import redact_url
from bridge.control.client import NO_BROADCAST, mailbox_url
from bridge.control.commands import ControlState
from bridge.control.events import CeleryEvents
from bridge.control.pidbox import RemoteControl
from bridge.control.view import TaskView
from bridge.worker import Worker

log = logging.getLogger("bridge")

def start_controls(runner: Worker, hostname: str, side: CelerySide | None, *,
                   machinery_broker: str | None, commands: bool,
                   task_events: bool) -> list[RemoteControl]:
    """Start the mailboxes (and Celery's events) of ``runner``; the ones started."""
    view = TaskView(hostname)
    runner.observers.add(view)
    events = None
    wanted: list[tuple[str, dict[str, Any], str]] = []
    if side is not None:
        runner.queue_factory = side.factory
        if side.app is not None:
            from celery.worker import state as celery_worker_state

            runner.revoked.use_stamps(celery_worker_state.revoked_stamps)
        if _broadcasts(side.broker):
            events = CeleryEvents(hostname, task_events=task_events or side.send_events,
                                  exchange=side.event_exchange, active=lambda: runner.busy)
            runner.observers.add(events)
            wanted.append((side.broker, side.transport, side.control_exchange))
        else:
            log.info("Celery remote control and events are not available on SQS (no "
                     "broadcast), as in Celery")
    machinery = mailbox_url(machinery_broker) if machinery_broker and commands else None
    if machinery and machinery not in [url for url, _, _ in wanted]:
        wanted.append((machinery, {}, "celery"))
    started = []
    for url, transport, namespace in wanted:
        celery_broker = side is not None and url == side.broker
        if not commands and not celery_broker:
            continue
        state = _state(runner, hostname, view, url, transport, side, events if celery_broker
                       else None)
        remote = RemoteControl(url, state, namespace=namespace, transport_options=transport,
                               events=events if celery_broker else None,
                               serve_commands=commands)
        state.clock = remote.mailbox.clock.forward
        started.append(remote.start())
    return started


def _broadcasts(url: str) -> bool:
    return not url.startswith(NO_BROADCAST)


def _state(runner: Worker, hostname: str, view: TaskView, url: str, transport: dict[str, Any],
           side: CelerySide | None, events: CeleryEvents | None) -> ControlState:
    info = Connection(url, transport_options=transport).info()
    info.pop("password", None)
    info["transport_options"] = dict(info.get("transport_options") or {})
    multiplier = side.options.prefetch_multiplier if side is not None else 1
    return ControlState(hostname=hostname, view=view, revoked=runner.revoked, worker=runner,
                        task_names=lambda: list(runner.app.tasks),
                        task_of=runner.app.tasks.get,
                        concurrency=runner.options.concurrency, pool=runner.options.pool,
                        broker_info=info,
                        conf=(side.conf if side is not None and side.conf else
                              {"broker_url": redact_url(url)}),
                        prefetch_count=runner.options.concurrency * multiplier, events=events)
