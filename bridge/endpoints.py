"""Queue endpoints for the tools: which system, which broker, which queue, which results.

``mbridge migrate`` and ``mbridge relay`` name each side with one string::

    celery+redis://host:6379/0?queue=celery&backend=redis://host:6379/1
    celery+amqp://guest:guest@host:5672//?queue=celery&backend=redis://host:6379/1
    machinery+redis://host:6379/0?queue=machinery_tasks&backend=redis://host:6379/0
    celery+sqs://KEY:SECRET@host:4566?queue=celery&backend=redis://host:6379/1&region=eu-west-1
    machinery+https://sqs.eu-west-1.amazonaws.com/123456789012?queue=tasks&backend=redis://...
    gocraft+redis://host:6379/0?namespace=work&queue=send_email

The part after ``+`` up to ``?`` is the broker URL as its own system writes it;
``queue`` defaults to each system's default queue and ``backend`` (URL-encoded
when it has its own ``?``) to the broker URL for Redis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from bridge.config import Config, ConfigError, redact_url

PROTOCOLS = ("celery", "machinery", "gocraft")
DEFAULT_QUEUES = {"celery": "celery", "machinery": "machinery_tasks", "gocraft": ""}
"""gocraft/work has no queues: a source names its job (``queue=<job name>``); a sink puts
each job on the list of its name."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a migration or relay."""

    protocol: str
    """``celery``, ``machinery`` or ``gocraft``."""
    broker_url: str
    queue: str
    backend_url: str = ""
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    """Other query parameters (broker options such as ``global_keyprefix``)."""

    def __str__(self) -> str:
        if self.protocol == "gocraft":
            job = f"job {self.queue!r}" if self.queue else "jobs"
            return (f"gocraft/work {job} of namespace {self.namespace!r} on "
                    f"{redact_url(self.broker_url)}")
        return f"{self.protocol} queue {self.queue!r} on {redact_url(self.broker_url)}"

    @property
    def is_amqp(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    @property
    def is_sqs(self) -> bool:
        """SQS: ``sqs://`` (both systems) or machinery's ``http(s)://`` queue URL prefix."""
        return self.broker_url.startswith(("sqs://", "https://", "http://"))

    def machinery_config(self) -> Config:
        """machinery's Config for this side (``machinery`` endpoints)."""
        return Config(broker=self.broker_url, default_queue=self.queue,
                      result_backend=self.backend_url or self.broker_url)

    @property
    def namespace(self) -> str:
        """gocraft/work's namespace (``?namespace=``, default ``work``)."""
        return self.options.get("namespace", "work")

    def open_broker(self) -> Any:
        """The broker for this side: a machinery ``Broker``, a ``CeleryBroker``, or a
        gocraft/work namespace (``GocraftSide``)."""
        if self.protocol == "gocraft":
            from bridge.gocraft.side import GocraftSide

            return GocraftSide(self.broker_url, self.namespace)
        if self.protocol == "machinery":
            from bridge.app import broker_from_config

            return broker_from_config(self.machinery_config())
        if self.is_amqp:
            from bridge.brokers.celery_amqp import CeleryAmqpBroker

            return CeleryAmqpBroker.from_url(self.broker_url, **self.typed_options())
        if self.is_sqs:
            from bridge.brokers.celery_sqs import CelerySqsBroker

            return CelerySqsBroker.from_url(self.broker_url, default_queue=self.queue,
                                            **self.typed_options())
        from bridge.brokers.celery_redis import CeleryRedisBroker

        return CeleryRedisBroker.from_url(self.broker_url, None, **self.typed_options())

    def typed_options(self) -> dict[str, Any]:
        """The query options with numbers as numbers (``visibility_timeout=60``)."""
        typed: dict[str, Any] = {}
        for key, value in self.options.items():
            try:
                typed[key] = int(value) if value.isdigit() else float(value)
            except ValueError:
                typed[key] = value
        return typed

    def open_backend(self) -> Any:
        """The result backend for this side (machinery ``Backend`` or ``CeleryRedisBackend``);
        ConfigError when this side has none."""
        if not self.backend_url:
            raise ConfigError(f"{self}: no result backend (add ?backend=URL)", key="backend")
        if self.protocol == "machinery":
            from bridge.app import backend_from_config

            return backend_from_config(self.machinery_config())
        from bridge.backends.celery_redis import CeleryRedisBackend

        return CeleryRedisBackend.from_url(self.backend_url)


def parse_endpoint(spec: str) -> Endpoint:
    """``<celery|machinery|gocraft>+<broker URL>[?queue=Q&backend=URL&option=value]``."""
    protocol, plus, rest = spec.partition("+")
    if not plus or protocol not in PROTOCOLS or "://" not in rest:
        raise ConfigError(f"endpoint {redact_url(spec)!r}: expected celery+<broker URL>, "
                          "machinery+<broker URL> or gocraft+<redis URL>, e.g. "
                          "celery+redis://localhost:6379/0?queue=celery", key="endpoint")
    url, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    queue = params.pop("queue", "") or DEFAULT_QUEUES[protocol]
    backend = params.pop("backend", "")
    if not backend and protocol != "gocraft" and url.startswith(
            ("redis://", "rediss://", "redis+socket://")):
        backend = url
    return Endpoint(protocol, url, queue, backend, params)


def format_endpoint(endpoint: Endpoint) -> str:
    """The spec string for ``endpoint`` (inverse of :func:`parse_endpoint`)."""
    params = {"queue": endpoint.queue, **endpoint.options}
    if endpoint.backend_url and endpoint.backend_url != endpoint.broker_url:
        params["backend"] = endpoint.backend_url
    return f"{endpoint.protocol}+{endpoint.broker_url}?{urlencode(params)}"
