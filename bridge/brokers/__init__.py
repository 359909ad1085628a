"""Brokers: fetch / ack / requeue / publish / delay raw messages in each system's layout."""

from bridge.brokers.base import Broker, Delivery

__all__ = ["Broker", "Delivery"]
