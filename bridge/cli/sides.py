"""The two sides of ``mbridge relay`` and ``mbridge migrate``: endpoint strings, completed
from ``--celery-app`` (its broker, result backend, default queue and accept list), a
warning where the Celery result backend is only guessed, and a start-up check that every
broker and backend a run needs can be reached.

With ``--celery-app proj.celery:app`` the Celery side may be written ``celery`` (or
``celery?queue=images``): the app's ``broker_url`` and ``task_default_queue``; a Celery side
without ``backend=`` gets the app's ``result_backend``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import click

from bridge.celery_import import CelerySettings, celery_settings, load_celery_app
from bridge.endpoints import Endpoint, parse_endpoint
from bridge.outage import Endpoint as Reachable
from bridge.outage import probe

__all__ = ["Sides", "celery_app_option", "check_sides", "open_sides"]

DEFAULT_ACCEPT = ("json", "msgpack")
"""What a Celery message may be serialized with when no Celery app says otherwise."""
_REDIS = ("redis://", "rediss://", "redis+socket://")

celery_app_option = click.option(
    "--celery-app", metavar="MODULE[:ATTR]",
    help="Your Celery app: its broker_url, result_backend, task_default_queue and "
         "accept_content complete the Celery side (which may then be written just 'celery', "
         "or 'celery?queue=NAME').")


@dataclass(frozen=True, slots=True)
class Sides:
    """Where a relay or a migration reads and writes."""

    source: Endpoint
    target: Endpoint
    source_flag: str
    target_flag: str
    accept: tuple[str, ...] = DEFAULT_ACCEPT
    """Serializers taken from Celery messages."""


def open_sides(source: str, target: str, celery_app: str | None, *, flags: tuple[str, str],
               results: bool) -> Sides:
    """Both endpoints, completed from the Celery app; ``results``: the run reads or writes
    Celery results, so a guessed Celery backend is worth a warning."""
    settings = celery_settings(load_celery_app(celery_app)) if celery_app else None
    return Sides(_side(source, settings, flags[0], results),
                 _side(target, settings, flags[1], results), flags[0], flags[1],
                 settings.accept_content if settings else DEFAULT_ACCEPT)


def _side(spec: str, settings: CelerySettings | None, flag: str, results: bool) -> Endpoint:
    head, _, query = spec.partition("?")
    if head == "celery":
        if settings is None:
            raise click.UsageError(f"{flag} {spec}: a bare 'celery' side takes the broker of "
                                   "--celery-app; give one, or write celery+<broker URL>")
        spec = f"celery+{settings.broker_url}" + (f"?{query}" if query else "")
    endpoint = parse_endpoint(spec)
    if endpoint.protocol != "celery":
        return endpoint
    asked = parse_qs(spec.partition("?")[2])
    if settings is not None and "queue" not in asked:
        endpoint = dataclasses.replace(endpoint, queue=settings.default_queue)
    if settings is not None and endpoint.is_sqs:  # kombu's region, queue_name_prefix...
        from bridge.brokers.celery_sqs import transport_settings

        extra = {k: str(v) for k, v in transport_settings(settings.transport_options).items()
                 if k not in asked}
        endpoint = dataclasses.replace(endpoint, options={**extra, **endpoint.options})
    if "backend" in asked:
        return endpoint
    if settings is not None and settings.result_backend:
        if results and not settings.result_backend.startswith(_REDIS):
            raise click.UsageError(
                f"{flag}: the Celery app's result_backend {settings.result_backend.split(':')[0]}"
                ":// cannot be read or written here (Redis only); add &backend=redis://... to "
                f"{flag}")
        return dataclasses.replace(endpoint, backend_url=settings.result_backend)
    if results and endpoint.backend_url:
        click.echo(f"Warning: {flag}: no backend= given, so Celery results are taken to be in "
                   f"the broker's database {endpoint.backend_url.split('?')[0]}; if the Celery "
                   "app's result_backend is another, add &backend=URL (or --celery-app), or "
                   "its clients will wait forever (chains and chords too)", err=True)
    return endpoint


def check_sides(sides: Sides, *, backends: bool) -> None:
    """Reach each broker (and, with ``backends``, each result backend) once: one line naming
    the URL (password redacted) and the flag to fix when one cannot be reached."""
    seen: set[tuple[str, str]] = set()
    needed: list[Reachable] = []
    for flag, endpoint in ((sides.source_flag, sides.source), (sides.target_flag, sides.target)):
        wanted = [(f"{endpoint.protocol} broker", endpoint.broker_url,
                   partial(_ping, endpoint.open_broker))]
        if backends and endpoint.backend_url:
            wanted.append((f"{endpoint.protocol} result backend", endpoint.backend_url,
                           partial(_ping, endpoint.open_backend)))
        for role, url, reach in wanted:
            if (role, url) not in seen:
                seen.add((role, url))
                needed.append((role, url, flag, reach))
    probe(needed)


def _ping(open_server: Callable[[], Any]) -> None:
    """Open a broker or backend, reach it once, close it."""
    server = open_server()
    try:
        server.ping()
    finally:
        server.close()
