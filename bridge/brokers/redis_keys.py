"""Our bookkeeping keys beside machinery's Redis layout, all under ``bridge:`` and in the
queue's own Cluster slot; and where a message's routing key sends it."""

from __future__ import annotations

import functools
import itertools
import json
import os
import secrets
import socket
from dataclasses import dataclass

from redis.crc import key_slot

PREFIX = "bridge:"
EPOCH_KEY = PREFIX + "epoch"
WINDOW_SLOTS = 4
"""Windows a worker may hold per queue (a relay: the batch being sent, the one in hand, the
one taken ahead, and one spare)."""
"""Set once by the first heartbeat and never expired: when it is gone, Redis lost its data."""



def slot_tagged(name: str) -> str:
    """A key prefix in the same Cluster slot as the key ``name``.

    ``name`` itself when it has a hash tag; else ``{name}``; a name with a ``}`` but no valid
    tag (``a}b``) cannot be wrapped, so it gets a short tag of its slot in front.
    """
    start = name.find("{")
    if start != -1 and name.find("}", start + 1) > start + 1:
        return name
    if "}" not in name:
        return "{" + name + "}"
    return "{" + _tag_for_slot(key_slot(name.encode())) + "}" + name


@functools.lru_cache(maxsize=1024)
def _tag_for_slot(slot: int) -> str:
    """A short string that hashes to ``slot`` (a hash tag pinning keys to that slot)."""
    for number in itertools.count():
        tag = f"s{number}"
        if key_slot(tag.encode()) == slot:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Our bookkeeping keys for one queue (all in the queue's slot)."""

    queue: str
    tagged: str

    @classmethod
    def of(cls, queue: str) -> QueueKeys:
        """The keys of ``queue``."""
        return cls(queue, slot_tagged(queue))

    def processing(self, worker_id: str) -> str:
        """The LIST of messages ``worker_id`` holds."""
        return f"{PREFIX}processing:{self.tagged}:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        """The heartbeat key of ``worker_id`` for this queue."""
        return f"{PREFIX}heartbeat:{self.tagged}:{worker_id}"

    @property
    def workers(self) -> str:
        """The SET of workers that may hold messages of this queue."""
        return f"{PREFIX}workers:{self.tagged}"

    @property
    def dead(self) -> str:
        """The dead-letter LIST of this queue."""
        return f"{PREFIX}dead:{self.tagged}"

    @property
    def dead_seq(self) -> str:
        """The counter naming the large bodies parked aside for this queue."""
        return f"{PREFIX}deadseq:{self.tagged}"

    @property
    def dead_body_prefix(self) -> str:
        """Where a large parked body goes: this prefix and a number (a one-item LIST)."""
        return f"{PREFIX}deadbody:{self.tagged}:"

    def wait(self, worker_id: str) -> str:
        """The LIST a blocked fetch of ``worker_id`` moves one message into, unread."""
        return f"{PREFIX}wait:{self.tagged}:{worker_id}"

    def windows(self, worker_id: str) -> list[str]:
        """The LISTs holding ``worker_id``'s windows: batches taken whole, unread by Lua
        (:mod:`bridge.brokers.redis_window`), one per slot."""
        return [f"{PREFIX}window:{self.tagged}:{worker_id}:{slot}"
                for slot in range(WINDOW_SLOTS)]

    def stage(self, worker_id: str) -> str:
        """The one-item LIST where ``worker_id``'s scripts size a message (always empty
        between two script calls)."""
        return f"{PREFIX}stage:{self.tagged}:{worker_id}"


def default_worker_id() -> str:
    """``host:pid:random``, unique among live workers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def routing_key_of(member: bytes, default: str) -> str | None:
    """Python twin of the Lua ``routing_key``: the target queue, None if unreadable."""
    try:
        msg = json.loads(member)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    rk = msg.get("RoutingKey")
    if rk is None:
        rk = next((v for k, v in msg.items() if k.lower() == "routingkey"), None)
    if rk is None or rk == "":
        return default
    return rk if isinstance(rk, str) else None
