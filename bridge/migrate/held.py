"""What a stopped ``mbridge migrate`` still holds: the messages of the batches it took from
a Redis source and did not finish, and those it set aside and could not give back yet. The
same command, run again, finishes them. (A RabbitMQ source holds nothing: the broker gives
unacknowledged deliveries back when the connection closes.)"""

from __future__ import annotations

from bridge.endpoints import Endpoint, format_endpoint
from bridge.migrate.bookkeeping import run_id
from bridge.migrate.sources import open_source

__all__ = ["held_messages"]


def held_messages(src: Endpoint, dst: Endpoint) -> int:
    """How many messages of ``src`` a migration to ``dst`` holds in its bookkeeping keys."""
    source = open_source(src, run_id(format_endpoint(src), format_endpoint(dst)))
    try:
        store = source.store
        if store is None:
            return 0
        return sum(len(held) for _, held in store.in_flight()) + store.aside_count()
    finally:
        source.close()
