"""``mbridge beat``: periodic sends to machinery, Celery and gocraft/work, once per tick
across any number of beats (and Go machinery servers or gocraft pools on the same schedule).

One module per concern: ``model`` (the schedule file), ``cron`` (when ticks fall),
``locks`` (once per tick), ``senders`` (machinery and Celery sends), ``gocraft`` (gocraft's
periodic enqueuer), ``loop`` (the tick loop, outages, signals).
"""

from __future__ import annotations

from bridge.beat.loop import Beat, open_beat
from bridge.beat.model import Entry, load_schedule

__all__ = ["Beat", "Entry", "load_schedule", "open_beat"]
