"""moto's server mode with each SQS and DynamoDB call atomic, as AWS makes them.

moto 5 serves requests on threads and its models take no lock, so two calls at once can
interleave where AWS never lets them:

* two ReceiveMessage calls can both find one message visible and both receive it, and a
  long poll keeps the FIFO groups in flight as they were when it began, so it can hand out
  a second message of a group another consumer holds (a duplicate run, a group out of
  order);
* a conditional UpdateItem checks its condition and writes in two steps, so a write between
  them is lost or passes a condition it should fail.

Here every SQS and DynamoDB backend call runs under one lock, and a long-polling receive is
a series of immediate receives with the waiting done outside the lock. Nothing else of
moto's behaviour changes. Run as a script: ``python tests/moto_atomic.py -H HOST -p PORT``
(moto.server's own arguments).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs.models import SQSBackend

_LOCK = threading.RLock()
_IDLE_POLL = 0.02  # between scans while a long poll finds nothing it may hand out


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)
    return call


def _make_atomic(backend: type) -> None:
    for name, member in list(vars(backend).items()):
        if callable(member) and not name.startswith("_") and name != "receive_message":
            setattr(backend, name, _atomic(member))


_receive_once = SQSBackend.receive_message


def _receive_message(self: SQSBackend, queue_name: str, count: int,
                     wait_seconds_timeout: int, visibility_timeout: int,
                     message_attribute_names: list[str] | None = None) -> Any:
    """Immediate receives under the lock until one finds messages or the poll ends."""
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with _LOCK:
            found = _receive_once(self, queue_name, count, 0, visibility_timeout,
                                  message_attribute_names)
            queue = self.get_queue(queue_name)
        left = deadline - time.monotonic()
        if found or left <= 0:
            return found
        queue.wait_for_messages(min(left, 1.0))  # returns at once if any is visible ...
        time.sleep(min(_IDLE_POLL, max(deadline - time.monotonic(), 0)))  # ... held back


_make_atomic(SQSBackend)
_make_atomic(DynamoDBBackend)
SQSBackend.receive_message = _receive_message  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
