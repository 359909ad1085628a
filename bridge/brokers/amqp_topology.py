"""machinery's AMQP layout: names, declarations and message properties, without I/O.

Read from ``brokers/amqp/amqp.go`` and ``common/amqp.go`` (v1 == v2 on everything here):

* exchange ``amqp.exchange`` (``machinery_exchange``), type ``amqp.exchange_type``, durable,
  not auto-deleted, no arguments (not declared when the name is empty);
* a worker's queue: durable, ``queue_declare_args``, bound with ``amqp.binding_key`` (not
  the queue name) and ``queue_binding_args``;
* a publisher, direct exchange: the queue named after the routing key, bound with the routing
  key; other exchange types: ``default_queue`` bound with the binding key. An empty RoutingKey
  becomes the binding key (direct) or ``default_queue`` (AdjustRoutingKey);
* an ETA ``delay_ms`` ahead: queue ``delay.<ms>.<exchange>.<routing key>`` (durable,
  ``auto_delete`` from the config) with ``x-dead-letter-exchange``/``-routing-key``,
  ``x-message-ttl`` = ms, ``x-expires`` = 2 ms, bound to the exchange with its own name; or the
  single ``amqp.delayed_queue`` with a per-message ``expiration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bridge.config import AMQPConfig, Config

__all__ = ["Binding", "DelayPlan", "Topology", "amqp_table", "go_delay_queue_name"]

CONTENT_TYPE = "application/json"
PERSISTENT = 2
_INT64 = range(-(2**63), 2**63)


def go_delay_queue_name(delay_ms: int, exchange: str, routing_key: str) -> str:
    """The queue machinery's ``delay`` declares for a task ``delay_ms`` ahead."""
    return f"delay.{delay_ms}.{exchange}.{routing_key}"


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue to declare (durable) and the key binding it to the exchange."""

    queue: str
    key: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class DelayPlan:
    """Where a delayed task waits: its queue (declared each time, as Go does) and the
    per-message ``expiration`` (only with ``amqp.delayed_queue``)."""

    binding: Binding
    expiration: str | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    """The names and declarations of one machinery config."""

    exchange: str = "machinery_exchange"
    exchange_type: str = "direct"
    binding_key: str = "machinery_task"
    default_queue: str = "machinery_tasks"
    queue_arguments: Mapping[str, Any] = field(default_factory=dict)
    binding_arguments: Mapping[str, Any] = field(default_factory=dict)
    delay_auto_delete: bool = False
    delayed_queue: str = ""

    @classmethod
    def from_config(cls, config: Config) -> Topology:
        """``config.amqp`` (machinery's defaults when the section is missing)."""
        amqp = config.amqp or AMQPConfig()
        return cls(exchange=amqp.exchange, exchange_type=amqp.exchange_type,
                   binding_key=amqp.binding_key, default_queue=config.default_queue,
                   queue_arguments=dict(amqp.queue_declare_args),
                   binding_arguments=dict(amqp.queue_binding_args),
                   delay_auto_delete=amqp.auto_delete, delayed_queue=amqp.delayed_queue)

    @property
    def direct(self) -> bool:
        return self.exchange_type == "direct"

    def routing_key(self, routing_key: str) -> str:
        """machinery's AMQP AdjustRoutingKey."""
        if routing_key:
            return routing_key
        return self.binding_key if self.direct else self.default_queue

    def consumer(self, queue: str) -> Binding:
        """What a worker consuming ``queue`` declares (StartConsuming)."""
        return Binding(queue, self.binding_key, self.queue_arguments)

    def publisher(self, routing_key: str) -> Binding:
        """What Publish declares before publishing with ``routing_key``."""
        if self.direct:
            return Binding(routing_key, routing_key, self.queue_arguments)
        return Binding(self.default_queue, self.binding_key, self.queue_arguments)

    def delay(self, routing_key: str, delay_ms: int) -> DelayPlan:
        """machinery's ``delay``: the queue a task ``delay_ms`` ahead waits in."""
        dead_letter = {"x-dead-letter-exchange": self.exchange,
                       "x-dead-letter-routing-key": routing_key}
        if self.delayed_queue:
            return DelayPlan(Binding(self.delayed_queue, self.delayed_queue, dead_letter,
                                     self.delay_auto_delete), str(delay_ms))
        name = go_delay_queue_name(delay_ms, self.exchange, routing_key)
        arguments = {**dead_letter, "x-message-ttl": delay_ms, "x-expires": 2 * delay_ms}
        return DelayPlan(Binding(name, name, arguments, self.delay_auto_delete))


def amqp_table(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Signature.Headers as an AMQP field table (None when empty, as amqp091 leaves it out).

    Strings, bools, None, 64-bit ints, floats (JSON numbers included), Decimals, datetimes,
    bytes, nested maps and lists keep their AMQP types; anything else is sent as its text.
    Go workers read the body's Headers, never these, so no value can break them.
    """
    if not headers:
        return None
    return {str(key): _field(value) for key, value in headers.items()}


def _field(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, bytes, float, Decimal, datetime)):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else str(value)
    if isinstance(value, Mapping):
        return {str(k): _field(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_field(v) for v in value]
    return str(value)
