"""``mbridge relay``: translate one system's queue into the other's, and carry results back.

::

    relay = open_relay(parse_endpoint("celery+redis://h:6379/0?queue=celery"),
                       parse_endpoint("machinery+redis://h:6379/0?queue=machinery_tasks"),
                       RelayOptions(schema=TaskSchema.load("tasks.yaml")))
    relay.run()  # until SIGTERM/SIGINT or relay.stop()

One module per concern: ``loop`` (the batched loop, result polling, stopping), ``forward``
(Celery → machinery), ``reverse`` (machinery → Celery), ``track`` (what both directions share:
options, the :class:`Side` contract, the ids in flight kept in Redis), ``processes``
(``--processes N``: relays side by side, each with its own bookkeeping, supervised).
"""

from bridge.relay.loop import Relay, open_relay, relay_name
from bridge.relay.track import RelayOptions, Side, chord_error, inflight_key

__all__ = ["Relay", "RelayOptions", "Side", "chord_error", "inflight_key", "open_relay",
           "relay_name"]
