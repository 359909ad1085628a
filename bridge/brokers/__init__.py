"""Brokers: fetch / ack / requeue / publish / delay raw messages in each system's layout."""

from kombu.transport import TRANSPORT_ALIASES

from bridge.brokers.base import Broker, CeleryBroker, Consumer, Delivery

# kombu reads "machinery+redis://..." as transport "machinery": register both spellings.
TRANSPORT_ALIASES.update(dict.fromkeys(("machinery", "machinery+redis"),
                                       "bridge.brokers.redis:Transport"))

__all__ = ["Broker", "CeleryBroker", "Consumer", "Delivery"]
