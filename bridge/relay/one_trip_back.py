"""machinery → Celery: RECEIVED and the Celery message in one script call, sent without waiting.

The relay writes a machinery task's RECEIVED (as a Go worker would on taking it), then
publishes its Celery message, and publishes nothing for a task whose state it may not write
(its id names a key that is not a task state). When machinery's result backend and the
Celery broker's lists live in one Redis database, one script does both in that order (the
state first; the LPUSH only for the states written), and the relay reads its reply after it
has translated the next batch. What the script leaves (a stored value in another shape, for
the careful write) goes the two-step way; anything else (another server or database, a
Cluster, a Sentinel pool) never comes here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bridge.backends.base import Backend
from bridge.backends.redis import SPLICE_LOOP, RedisBackend, _foreign
from bridge.brokers.base import CeleryBroker
from bridge.brokers.celery_redis import CeleryRedisBroker
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.kombu_envelope import to_envelope
from bridge.protocol.machinery import TaskState
from bridge.redis_send import server_of
from bridge.redislane import run_script_later

__all__ = ["OneTripBack", "Written"]

RECEIVED_THEN_LPUSH_SCRIPT = "local nkeys = #KEYS / 2" + SPLICE_LOOP + """
-- then LPUSH the message ARGV[4n+1+i] onto the list KEYS[n+i] of each state written, a run
-- of messages for the same list at a time (a thousand at most)
local list, run = nil, {}
local function flush()
  if #run > 0 then redis.call('LPUSH', list, unpack(run)) end
  run = {}
end
for i = 1, nkeys do
  if out[i] == 1 then
    local key = KEYS[nkeys + i]
    if key ~= list or #run == 1000 then
      flush()
      list = key
    end
    run[#run + 1] = ARGV[4 * nkeys + 1 + i]
  end
end
flush()
return out
"""

Written = tuple[dict[str, str], list[int]]
"""The ids refused (with why) and the indexes of what is left for the two-step way."""


class OneTripBack:
    """RECEIVED + LPUSH by one script call (see the module docstring)."""

    def __init__(self, backend: RedisBackend, broker: CeleryRedisBroker) -> None:
        self._backend = backend
        self._broker = broker
        self._script = backend.client.register_script(RECEIVED_THEN_LPUSH_SCRIPT)

    @classmethod
    def between(cls, backend: Backend, broker: CeleryBroker) -> OneTripBack | None:
        """The one-trip writer when both live in one Redis database, else None."""
        if not isinstance(backend, RedisBackend) or type(broker) is not CeleryRedisBroker:
            return None
        here = server_of(backend.client)
        if here is None or here != server_of(broker.client):
            return None
        return cls(backend, broker)

    def begin(self, queue: str, pairs: Sequence[tuple[TaskState, CeleryMessage]]
              ) -> Callable[[], Written]:
        """Each state, then its message onto ``queue``'s list for its priority, sent now;
        the call returned reads the reply (every index left when the lane was busy)."""
        if not pairs:
            return lambda: ({}, [])
        broker = self._broker
        broker.declared(queue)
        keys: list[Any] = [state.task_uuid for state, _ in pairs]
        keys += [broker.keys.list_for(queue, message.priority) for _, message in pairs]
        args: list[Any] = [self._backend.ttl]
        for state, _ in pairs:
            args += ("M", *state.to_json_parts())
        args += [to_envelope(message, routing_key=queue) for _, message in pairs]
        later = run_script_later(self._backend.lane, self._script, keys, args)
        if later is None:
            return lambda: ({}, list(range(len(pairs))))
        return lambda: self._outcome(pairs, later())

    def _outcome(self, pairs: Sequence[tuple[TaskState, CeleryMessage]], reply: Any
                 ) -> Written:
        refused: dict[str, str] = {}
        left: list[int] = []
        for index, ((state, _), written) in enumerate(zip(pairs, reply, strict=True)):
            if written == 1:
                self._backend.written_in_redis(state.task_uuid)
            elif isinstance(written, list):
                refused[state.task_uuid] = str(_foreign(
                    state.task_uuid, f"a Redis {written[1].decode('utf-8', 'replace')}"))
            else:
                left.append(index)
        return refused, left
