"""machinery's Memcache result backend (``backends/memcache/memcache.go``, v1 == v2).

Layout, shared with Go workers on the same servers:

* task state: key = task UUID, value = ``TaskState`` JSON exactly as Go marshals it;
* group meta: key = group UUID, value = ``GroupMeta`` JSON;
* every write (``set``, flags 0) carries the absolute expiration Go gives it:
  ``now_unix + results_expire_in`` (0 → 3600), so each write restarts the clock.

**No merge.** Go stores what ``tasks.New*TaskState`` built: RECEIVED, STARTED, RETRY,
SUCCESS and FAILURE overwrite TaskName with ``""`` and CreatedAt with the zero time.
So do we.

**Servers.** ``memcache://h1:p1,h2:p2`` (or a unix socket path) as machinery's
``BackendFactory`` splits it; a key lives on server ``crc32(key) % n`` in the URL's order
(gomemcache's ``ServerList.PickServer``), so Go and Python look in the same place.

**Chord trigger.** Go's ``TriggerChord`` is read, check ``ChordTriggered``, set ``Lock``,
``Replace`` with ``ChordTriggered = true``, unset ``Lock``: not atomic. Ours claims the meta
with one ``cas`` (``gets`` → ``ChordTriggered = true`` → ``cas``), so any later reader, Go's
included, sees it triggered; two Python callers can never both win. A Go caller that read
*before* our claim still fires, but it writes (its ``Lock``) right after its read: so once
claimed, we watch the meta for ``chord_grace`` seconds and step back (return False) if
anyone wrote it meanwhile. A meta already locked by Go means a Go worker is firing: False.
The claim's bytes carry a mark, a trailing space (JSON to Go and to us alike): Go's last
write (``Lock`` unset) is byte for byte an unmarked claim, so without it all three of Go's
writes landing between our ``cas`` and our first look would pass for our own claim. Once
the watch is over, one more ``cas`` writes Go's exact bytes; a write before it is Go's.
What remains is Go's own race (two Go workers that read before any write both fire) and a
Go caller stalled for longer than ``chord_grace`` between its read and its first write.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError

from bridge.backends.base import Backend, now_utc
from bridge.backends.common import GroupMetaMissing, in_waves, members_in_order, unreachable
from bridge.config import Config, ConfigError, redact_url
from bridge.errors import BridgeError, EncodeError, StatesRefused
from bridge.protocol.machinery import GroupMeta, TaskState
from bridge.protocol.state_bytes import completed_state

__all__ = ["DEFAULT_CHORD_GRACE", "MemcacheBackend", "Server", "parse_memcache_url"]

log = logging.getLogger(__name__)

Server = tuple[str, int] | str
"""A memcached address: ``(host, port)``, or a unix socket path."""

DEFAULT_CHORD_GRACE = 0.1
"""Seconds a chord claim is watched for a Go ``TriggerChord`` that read before it."""

_SCHEME = "memcache://"
_MAX_CAS_ATTEMPTS = 16
_CLAIM_MARK = b" "
"""Ends a claim's bytes until its watch is over: Go never writes it, and parses it (module doc)."""
_GO_MISS = "memcache: cache miss"


def parse_memcache_url(url: str) -> list[Server]:
    """The servers of ``memcache://host:port[,host:port...]``, in order (machinery's split).

    An entry with a ``/`` is a unix socket path, as gomemcache reads it.
    """
    if not url.startswith(_SCHEME) or url.count(_SCHEME) != 1:
        raise ConfigError(f"result_backend {redact_url(url)!r}: write "
                          "memcache://server1:port,server2:port", key="result_backend")
    servers: list[Server] = []
    for entry in url[len(_SCHEME):].split(","):
        if "/" in entry:
            servers.append(entry)
            continue
        host, colon, port = entry.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"result_backend {redact_url(url)!r}: server {entry!r} is not "
                              "host:port (e.g. 127.0.0.1:11211)", key="result_backend")
        servers.append((host.strip("[]"), int(port)))
    return servers


def _show(server: Server) -> str:
    return server if isinstance(server, str) else f"{server[0]}:{server[1]}"


class MemcacheBackend(Backend):
    """machinery's Memcache result backend, byte-compatible with Go workers sharing it."""

    def __init__(self, url: str, config: Config | None = None, *,
                 chord_grace: float = DEFAULT_CHORD_GRACE, timeout: float = 5.0) -> None:
        cfg = config or Config()
        self._url = url
        self.ttl = cfg.results_expire_seconds
        self.chord_grace = chord_grace
        self.servers = parse_memcache_url(url)
        self._clients = [
            PooledClient(server, connect_timeout=timeout, timeout=timeout, no_delay=True,
                         default_noreply=False, max_pool_size=32)
            for server in self.servers
        ]

    @classmethod
    def from_config(cls, cfg: Config) -> MemcacheBackend:
        """The backend at ``cfg.result_backend``."""
        return cls(cfg.result_backend, cfg)

    def __repr__(self) -> str:
        return f"MemcacheBackend({redact_url(self._url)!r}, ttl={self.ttl})"

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def ping(self) -> None:
        """Ask every server for its version."""
        for server, client in zip(self.servers, self._clients, strict=True):
            try:
                client.version()
            except (OSError, MemcacheError) as exc:
                raise unreachable(self._url, f"{_show(server)}: {exc or type(exc).__name__}",
                                  "start memcached there or fix result_backend") from None

    # ----------------------------------------------------------------- task states

    def expiration(self) -> int:
        """Go's ``getExpirationTimestamp``: an absolute Unix time, now + TTL."""
        return int(time.time()) + self.ttl

    def set_state(self, state: TaskState) -> None:
        """Store the state as built (Go's memcache backend does not merge)."""
        self._set(state.task_uuid, state.to_json())

    def set_states(self, states: Sequence[TaskState]) -> None:
        """One ``set`` batch per server and wave (a task's states stay in order)."""
        expire = self.expiration()
        refused: dict[str, str] = {}
        for wave in in_waves(states):
            by_client: dict[int, dict[str, bytes]] = {}
            for state in wave:
                try:
                    data = state.to_json()
                except EncodeError as exc:  # what Go's json.Marshal refuses too: this one
                    refused.setdefault(state.task_uuid, str(exc))
                    continue
                by_client.setdefault(self._index(state.task_uuid), {})[state.task_uuid] = data
            for index, values in by_client.items():
                failed = self._clients[index].set_many(values, expire=expire, noreply=False)
                if failed:
                    raise BridgeError(f"memcached {_show(self.servers[index])} did not store "
                                      f"{len(failed)} states (first: {failed[0]!r})")
        if refused:  # every other state is written
            raise StatesRefused(refused)

    def get_state(self, task_uuid: str) -> TaskState | None:
        raw = self._client(task_uuid).get(task_uuid)
        return None if raw is None else TaskState.from_json(raw)

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One ``get`` of many keys per server; None for a missing key."""
        found = self._get_many(task_uuids)
        return [None if (raw := found.get(uuid)) is None else TaskState.from_json(raw)
                for uuid in task_uuids]

    def get_completed_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """One ``get`` of many keys per server; states still running are not decoded."""
        found = self._get_many(task_uuids)
        return [None if (raw := found.get(uuid)) is None else completed_state(raw)
                for uuid in task_uuids]

    def purge_state(self, task_uuid: str) -> None:
        self._client(task_uuid).delete(task_uuid, noreply=False)

    # ----------------------------------------------------------------- groups and chords

    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        meta = GroupMeta(group_uuid, list(task_uuids), created_at=now_utc())
        self._set(group_uuid, meta.to_json())

    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """Members in SUCCESS or FAILURE == count (Go errors on a missing member; we count
        it as not completed: the same outcome, no trigger)."""
        states = self.get_states(self._group_meta(group_uuid).task_uuids or [])
        done = sum(1 for state in states if state is not None and state.is_completed())
        return done == group_task_count

    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """Member states in TaskUUIDs order; a missing one raises MemberStateMissing."""
        uuids = self._group_meta(group_uuid).task_uuids or []
        return members_in_order(group_uuid, uuids, self.get_states(uuids), "Memcache")

    def trigger_chord(self, group_uuid: str) -> bool:
        """True for exactly one caller: a ``cas`` claim, then a watch for Go (module doc)."""
        client = self._client(group_uuid)
        claimed = self._claim(client, group_uuid)
        if claimed is None:
            return False
        return self._unchallenged(client, group_uuid, claimed)

    def purge_group_meta(self, group_uuid: str) -> None:
        self._client(group_uuid).delete(group_uuid, noreply=False)

    # ----------------------------------------------------------------- internals

    def _index(self, key: str) -> int:
        """gomemcache's ServerList.PickServer: crc32 (IEEE) of the key modulo the count."""
        count = len(self._clients)
        return 0 if count == 1 else zlib.crc32(key.encode()) % count

    def _client(self, key: str) -> PooledClient:
        return self._clients[self._index(key)]

    def _set(self, key: str, data: bytes) -> None:
        if not self._client(key).set(key, data, expire=self.expiration(), noreply=False):
            raise BridgeError(f"memcached {_show(self.servers[self._index(key)])} did not "
                              f"store {key!r}")

    def _get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        by_client: dict[int, list[str]] = {}
        for key in keys:
            by_client.setdefault(self._index(key), []).append(key)
        found: dict[str, bytes] = {}
        for index, chunk in by_client.items():
            found.update(self._clients[index].get_many(chunk))
        return found

    def _group_meta(self, group_uuid: str) -> GroupMeta:
        raw = self._client(group_uuid).get(group_uuid)
        if raw is None:
            raise GroupMetaMissing(group_uuid, "Memcache", _GO_MISS)
        return GroupMeta.from_json(raw)

    def _claim(self, client: PooledClient, group_uuid: str) -> bytes | None:
        """Flip ChordTriggered with ``cas``: the bytes written, or None when triggered
        already or a Go worker holds the meta's Lock (it is triggering)."""
        for _ in range(_MAX_CAS_ATTEMPTS):
            raw, token = client.gets(group_uuid)
            if raw is None:
                raise GroupMetaMissing(group_uuid, "Memcache", _GO_MISS)
            meta = GroupMeta.from_json(raw)
            if meta.chord_triggered:
                return None
            if meta.lock:
                log.debug("group %s: a Go worker holds the meta's Lock and triggers its chord",
                          group_uuid)
                return None
            meta.chord_triggered = True
            data = meta.to_json() + _CLAIM_MARK
            if client.cas(group_uuid, data, token, expire=self.expiration(), noreply=False):
                return data
        raise BridgeError(f"group meta {group_uuid!r} kept changing while triggering its chord")

    def _unchallenged(self, client: PooledClient, group_uuid: str, claimed: bytes) -> bool:
        """Whether nobody wrote the meta since our claim, ``chord_grace`` seconds long.

        Only a Go ``TriggerChord`` that read before the claim writes it (Lock, Replace,
        unlock); it fires whatever it finds, so we step back.
        """
        raw, token = client.gets(group_uuid)
        if raw is None:
            return True  # purged or evicted: no Go reader can fire any more
        if raw != claimed:
            log.info("group %s: a Go worker triggers its chord too; leaving it to Go",
                     group_uuid)
            return False
        if self.chord_grace > 0:
            time.sleep(self.chord_grace)
        raw, later = client.gets(group_uuid)
        if raw is None:
            return True  # purged or evicted: no Go reader can fire any more
        # Go's exact bytes again, unless someone wrote since our claim (then Go fires)
        if later != token or client.cas(group_uuid, claimed[:-len(_CLAIM_MARK)], later,
                                        expire=self.expiration(), noreply=False) is False:
            log.info("group %s: a Go worker triggers its chord too; leaving it to Go",
                     group_uuid)
            return False
        log.debug("group %s: chord triggered here", group_uuid)
        return True
