"""Hostile input never stops or loops anything (issue 9, item 8), on real servers.

Each case puts bad input between good tasks and checks that the bad message is parked (or
refused) with its real reason, every good task runs exactly once, and the worker, relay or
migrate goes on. The cases, grown from the issue's list:

* worker, Celery (``test_celery_worker``, ``test_amqp``): a malformed ``link_error`` (no
  ``task``; priority ``"high"``) on Redis and RabbitMQ; a malformed ``link``; a link with a
  compression the encoder refuses (it ran its task 68 times); headers nested 995 deep; bad
  ``__type__`` markers for bytes and datetime; a task id naming a foreign meta key;
* worker, machinery (``test_machinery_worker``): a UUID naming a foreign hash, a foreign
  string, another task's state (good tasks ran 10-14 times); a 100,000-digit int64 arg; a
  4,301-digit RetryCount; a 300-deep OnSuccess chain (and a 100-deep one still runs); a
  RetryTimeout of 2^63-1;
* sizes (``test_sizes``): a 200 MB machinery message and a 100 MB non-UTF-8 Celery item
  parked unread by a worker process (its RSS, the scripts' time in Redis's SLOWLOG against
  Redis's own copy of the item); forty 1 MB garbage items;
* throughput (``test_throughput``): 3,000 undecodable messages parked at least at 0.4 x
  the good path's rate, by a worker that also serves an idle queue;
* dead lists (``test_dead_letters``): the cap (oldest dropped with their kept-aside
  bodies, a warning), large bodies replayed byte for byte, ``mbridge inspect`` on 2,000
  dead letters (a page and the count);
* credentials (``test_credentials``): passwords in URL-encoded endpoint backends, once or
  more, through ``redact_url`` and the real commands;
* tools (``test_tools``): ``migrate`` (API and command, with and without ``--park``) and
  ``relay`` (both directions) past huge integers, a 300-deep chain, a bad marker and
  foreign keys.
"""
