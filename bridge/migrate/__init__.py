"""``mbridge migrate``: move (or copy) pending messages between Celery and machinery queues.

::

    report = migrate(parse_endpoint("celery+redis://h:6379/0?queue=celery"),
                     parse_endpoint("machinery+redis://h:6379/0?queue=machinery_tasks"),
                     schema=TaskSchema.load("tasks.yaml"), results=True)
    print(report.render())

One module per concern: ``loop`` (the run: claim, translate, publish, forget, resume),
``report`` (what a run did), ``sources`` and ``sinks`` (each system's layout, Redis and
RabbitMQ), ``bookkeeping`` (the Redis keys that make a killed run resumable), ``translate``
(one message from one protocol to the other), ``results`` (result states carried along),
``held`` (what an interrupted run holds until it is run again).
"""

from bridge.migrate.held import held_messages
from bridge.migrate.loop import migrate
from bridge.migrate.report import MAX_REASONS, MigrationReport, Progress, TaskCounts

__all__ = ["MAX_REASONS", "MigrationReport", "Progress", "TaskCounts", "held_messages",
           "migrate"]
