"""gocraft/work in Python, on its exact Redis layout (reference: gocraft-work.md).

``keys`` (the namespace's key map), ``job`` (the job JSON, byte for byte as Go),
``scripts`` (the Lua), ``enqueuer`` (Enqueue, EnqueueIn, the unique variants), ``options``
(JobOptions and the priority sampler), ``registry`` (an app's job options and middleware),
``pool`` (a worker pool's fetch, completion and upkeep for the worker loop; the jobs run in
:mod:`bridge.handlers.gocraft`; ``checkin`` from a job function), ``reaper`` (dead pools).
"""

from bridge.gocraft.enqueuer import Enqueuer
from bridge.gocraft.job import GocraftJob
from bridge.gocraft.options import JobOptions
from bridge.gocraft.pool import checkin
from bridge.gocraft.registry import job_options, middleware

__all__ = ["Enqueuer", "GocraftJob", "JobOptions", "checkin", "job_options", "middleware"]
