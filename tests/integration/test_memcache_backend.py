"""The Memcache result backend against a real memcached and Go's bytes.

Go's memcache backend stores ``json.Marshal(tasks.New*TaskState(...))`` unmerged, so the
golden ``constructed_*`` files (written by real Go machinery) are exactly its values; the
live tests (tests/interop/test_live_memcache_mongodb.py) compare with a running Go worker.
"""

from __future__ import annotations

import math
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from pymemcache.client.base import Client as MemcacheClient

from bridge.app import backend_from_config
from bridge.backends.base import new_state
from bridge.backends.common import GroupMetaMissing
from bridge.backends.memcache import MemcacheBackend, parse_memcache_url
from bridge.config import Config, ConfigError
from bridge.errors import StatesRefused, Unreachable
from bridge.localredis import free_port
from bridge.protocol.gotime import GO_ZERO_TIME
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    STARTED,
    SUCCESS,
    GroupMeta,
    Signature,
    TaskResult,
    TaskState,
    new_uuid,
)
from bridge.result import AsyncResult, TaskFailed
from bridge.types import to_result
from tests.backend_groups import (
    Ours,
    check_group_completion,
    go_memcache_trigger_chord,
    ours_when_go_wrote_in_time,
    python_callers_race,
)
from tests.backend_servers import Memcached, start_memcached
from tests.fixtures import MACHINERY

GOLDEN_UUID = b"task_a2533e77-091d-4361-90c0-006a8cb05e5d"
CONSTRUCTED = ["pending", "received", "started", "retry", "success", "success_nil_results",
               "success_ttl", "failure"]


def golden(name: str, uuid: str, version: str = "v2") -> bytes:
    """A golden file of real Go, its UUID replaced (tests never share keys)."""
    data = (MACHINERY / version / f"task_state_{name}.json").read_bytes().strip()
    return data.replace(GOLDEN_UUID, uuid.encode())


@pytest.fixture
def raw(memcached_server: Memcached) -> Iterator[MemcacheClient]:
    client = MemcacheClient(memcached_server.address, default_noreply=False)
    yield client
    client.close()


@pytest.fixture
def backend(memcached_server: Memcached) -> Iterator[MemcacheBackend]:
    b = MemcacheBackend(memcached_server.url, Config(results_expire_in=600), chord_grace=0.05)
    yield b
    b.close()


def meta_command(address: tuple[str, int], line: str) -> bytes:
    """One memcached meta command's reply line (``mg key t f v``: TTL left, flags)."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(line.encode() + b"\r\n")
        return sock.recv(4096).split(b"\r\n")[0]


# --------------------------------------------------------------------------- URLs


def test_url_forms_as_machinery_splits_them() -> None:
    assert parse_memcache_url("memcache://127.0.0.1:11211") == [("127.0.0.1", 11211)]
    assert parse_memcache_url("memcache://a:1,b:2,[::1]:3") == [("a", 1), ("b", 2), ("::1", 3)]
    assert parse_memcache_url("memcache:///run/memcached.sock") == ["/run/memcached.sock"]
    for bad in ("memcache://", "memcache://host", "memcache://h:0", "memcache://h:x",
                "memcache://a:1memcache://b:2", "memcached://h:1"):
        with pytest.raises(ConfigError, match="result_backend") as refused:
            parse_memcache_url(bad)
        assert "\n" not in str(refused.value)


def test_backend_from_config_and_a_missing_extra(memcached_server: Memcached,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_from_config(Config(result_backend=memcached_server.url))
    assert isinstance(backend, MemcacheBackend)
    backend.close()
    for name in [n for n in sys.modules if n.partition(".")[0] == "pymemcache"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bridge.backends.memcache")
    with pytest.raises(ConfigError) as refused:
        backend_from_config(Config(result_backend=memcached_server.url))
    assert str(refused.value) == ("result_backend: the memcache backend needs pymemcache, which "
                                  "is not installed: pip install 'machinery-bridge[memcache]'")


def test_ping(memcached_server: Memcached) -> None:
    MemcacheBackend(memcached_server.url).ping()
    port = free_port()
    down = MemcacheBackend(f"memcache://{memcached_server.url[11:]},127.0.0.1:{port}",
                           timeout=1)
    with pytest.raises(Unreachable) as refused:
        down.ping()
    text = str(refused.value)
    assert text.startswith(f"result backend memcache://{memcached_server.url[11:]},127.0.0.1:"
                           f"{port} is unreachable (127.0.0.1:{port}: ")
    assert text.endswith("): start memcached there or fix result_backend")
    assert "\n" not in text


# --------------------------------------------------------------------------- states


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("name", CONSTRUCTED)
def test_states_are_the_bytes_go_stores(name: str, version: str, backend: MemcacheBackend,
                                        memcached_server: Memcached) -> None:
    uuid = new_uuid()
    expected = golden(f"constructed_{name}", uuid, version)
    backend.set_state(TaskState.from_json(expected))
    reply = meta_command(memcached_server.address, f"mg {uuid} f t")
    assert reply.split()[0] == b"HD" and b" f0" in reply  # flags 0, as gomemcache's Item
    assert backend.get_state(uuid) == TaskState.from_json(expected)
    raw = MemcacheClient(memcached_server.address)
    assert raw.get(uuid) == expected
    raw.close()


def test_no_merge_like_go(backend: MemcacheBackend, raw: MemcacheClient) -> None:
    """Go's memcache backend overwrites: RECEIVED drops PENDING's TaskName and CreatedAt."""
    sig = Signature(uuid=new_uuid(), name="add")
    backend.set_state_pending(sig)
    assert TaskState.from_json(raw.get(sig.uuid)).task_name == "add"
    backend.set_state_received(sig)
    assert raw.get(sig.uuid) == golden("constructed_received", sig.uuid)
    backend.set_state_success(sig, [to_result(5, "int64")])
    assert raw.get(sig.uuid) == golden("constructed_success", sig.uuid)
    stored = backend.get_state(sig.uuid)
    assert stored is not None and stored.task_name == "" and stored.created_at == GO_ZERO_TIME


@pytest.mark.parametrize(("expire_in", "ttl"), [(600, 600), (0, 3600), (86400 * 40, 86400 * 40)])
def test_expiration_is_go_absolute_timestamp(expire_in: int, ttl: int,
                                             memcached_server: Memcached) -> None:
    backend = MemcacheBackend(memcached_server.url, Config(results_expire_in=expire_in))
    uuid = new_uuid()
    before = int(time.time())
    backend.set_state(new_state(Signature(uuid=uuid, name="x"), PENDING))
    assert backend.expiration() - before in (ttl, ttl + 1)
    left = int(meta_command(memcached_server.address, f"mg {uuid} t").split()[1][1:])
    # memcached counts down from the absolute time Go gives, on its own whole-second clock:
    # that clock starts from a truncated wall time and ticks once a second, so its "now"
    # may sit about a second either side of ours (CI saw ttl + 1).
    assert ttl - 3 <= left <= ttl + 2
    backend.close()


def test_results_expire(memcached_server: Memcached) -> None:
    backend = MemcacheBackend(memcached_server.url, Config(results_expire_in=1))
    uuid = new_uuid()
    backend.set_state(new_state(Signature(uuid=uuid, name="x"), PENDING))
    assert backend.get_state(uuid) is not None
    deadline = time.monotonic() + 5
    while backend.get_state(uuid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.get_state(uuid) is None
    backend.close()


def test_set_states_keeps_each_tasks_order(backend: MemcacheBackend,
                                           raw: MemcacheClient) -> None:
    sigs = [Signature(uuid=new_uuid(), name="add") for _ in range(5)]
    states = [new_state(s, PENDING) for s in sigs]
    states += [new_state(s, kind) for kind in (RECEIVED, STARTED) for s in sigs]
    states += [new_state(sigs[0], SUCCESS, [to_result(5, "int64")])]
    states += [new_state(sigs[1], FAILURE, error="boom")]
    backend.set_states(states)
    assert raw.get(sigs[0].uuid) == golden("constructed_success", sigs[0].uuid)
    assert backend.get_states([s.uuid for s in sigs] + ["task_missing"]) == [
        TaskState.from_json(golden("constructed_success", sigs[0].uuid)),
        new_state(sigs[1], FAILURE, error="boom"),
        *(new_state(s, STARTED) for s in sigs[2:]), None]


def test_a_state_go_cannot_marshal_is_refused_alone(backend: MemcacheBackend) -> None:
    bad, good = Signature(uuid=new_uuid(), name="f"), Signature(uuid=new_uuid(), name="g")
    batch = [new_state(bad, STARTED), new_state(bad, SUCCESS, [TaskResult("float64", math.nan)]),
             new_state(good, SUCCESS, [to_result(1, "int64")])]
    with pytest.raises(StatesRefused) as refused:  # json.Marshal refuses NaN too
        backend.set_states(batch)
    assert list(refused.value.refused) == [bad.uuid]
    assert [s.state if s else None for s in backend.get_states([bad.uuid, good.uuid])] == \
        [STARTED, SUCCESS]


def test_two_servers_split_keys_like_gomemcache(tmp_path: Path,
                                                memcached_server: Memcached) -> None:
    second = start_memcached(tmp_path)
    try:
        servers = [memcached_server, second]
        url = f"memcache://{memcached_server.url[11:]},{second.url[11:]}"
        backend = MemcacheBackend(url)
        sigs = [Signature(uuid=new_uuid(), name="add") for _ in range(40)]
        backend.set_states([new_state(s, PENDING) for s in sigs])
        backend.set_state(new_state(sigs[0], SUCCESS, [to_result(1, "int64")]))
        clients = [MemcacheClient(s.address) for s in servers]
        for sig in sigs:
            home = zlib.crc32(sig.uuid.encode()) % 2  # gomemcache's PickServer
            assert clients[home].get(sig.uuid) is not None
            assert clients[1 - home].get(sig.uuid) is None
        assert {zlib.crc32(s.uuid.encode()) % 2 for s in sigs} == {0, 1}
        assert [s is not None for s in backend.get_states([s.uuid for s in sigs])] == \
            [True] * len(sigs)
        for client in clients:
            client.close()
        backend.close()
    finally:
        second.stop()


def test_async_result_reads_typed_values(backend: MemcacheBackend) -> None:
    ok, bad = Signature(uuid=new_uuid(), name="pair"), Signature(uuid=new_uuid(), name="f")
    backend.set_state_success(ok, [to_result(b"\x00\xff", "[]byte"), to_result(1.5, "float32")])
    backend.set_state_failure(bad, "boom <&>")
    assert AsyncResult(ok.uuid, backend).get(timeout=5) == (b"\x00\xff", 1.5)
    with pytest.raises(TaskFailed, match=r"^boom <&>$"):
        AsyncResult(bad.uuid, backend).get(timeout=5)
    backend.purge_state(ok.uuid)
    assert backend.get_state(ok.uuid) is None


# --------------------------------------------------------------------------- groups


def test_group_meta_and_completion(backend: MemcacheBackend, raw: MemcacheClient) -> None:
    group, members = new_uuid("group_"), [new_uuid() for _ in range(3)]
    backend.init_group(group, members)
    meta = GroupMeta.from_json(raw.get(group))
    assert meta == GroupMeta(group, members, created_at=meta.created_at)
    assert raw.get(group) == meta.to_json()
    assert not backend.group_completed(group, 3)  # no member state at all yet
    for uuid in members[:2]:
        backend.set_state(new_state(Signature(uuid=uuid), SUCCESS, [to_result(1, "int64")]))
    check_group_completion(backend, group, members, "memcache: cache miss")


def test_chord_triggers_once_among_python_callers(backend: MemcacheBackend) -> None:
    for _ in range(5):
        group = new_uuid("group_")
        backend.init_group(group, [new_uuid()])
        wins = python_callers_race(backend.trigger_chord, group)
        assert sorted(wins) == [False] * 7 + [True]
        assert GroupMeta.from_json(backend._client(group).get(group)).chord_triggered


def test_chord_go_triggered_first(backend: MemcacheBackend, raw: MemcacheClient) -> None:
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    assert go_memcache_trigger_chord(raw, group, backend.expiration())
    assert backend.trigger_chord(group) is False


def test_chord_go_holds_the_lock(backend: MemcacheBackend, raw: MemcacheClient) -> None:
    """Go between its Set(Lock) and its Replace: Go fires, so we do not."""
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    meta = GroupMeta.from_json(raw.get(group))
    meta.lock = True
    raw.set(group, meta.to_json())
    assert backend.trigger_chord(group) is False


def test_chord_go_read_before_our_claim_wrote_after(backend: MemcacheBackend,
                                                    raw: MemcacheClient) -> None:
    """Go's read comes first, then our whole claim, then Go's writes: Go fires (it always
    does after such a read), and we see its writes within the grace and step back.

    A Go caller stalled past the grace is the documented limit: a round where the machine
    stalled Go's model that long (a loaded CI machine can) shows nothing and is run again.
    """
    # the fixture's 50 ms is too short on a loaded machine (a thread switch can take longer)
    backend.chord_grace = 0.5
    for delay in (0.0, 0.01, 0.03):
        def race(after_lock: Callable[[], None], delay: float = delay) -> bool:
            group = new_uuid("group_")
            backend.init_group(group, [new_uuid()])
            ours = Ours(backend.trigger_chord, group)
            # Go's goroutine is preempted after its read while ours runs for ``delay`` s
            assert go_memcache_trigger_chord(raw, group, backend.expiration(),
                                             after_read=partial(ours.start, delay),
                                             after_lock=after_lock)
            return ours.result()

        assert ours_when_go_wrote_in_time(backend.chord_grace, race) is False, delay


def test_chord_go_wrote_all_between_our_claim_and_our_first_look(
        backend: MemcacheBackend, raw: MemcacheClient) -> None:
    """Go read before our claim, then wrote Lock, ChordTriggered and the unlock before we
    first looked: its last write is byte for byte a claim, so only the claim's mark shows
    that Go fires (found by a loaded run of the test above, which then both fired)."""
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    client = backend._client(group)
    claimed: list[bytes | None] = []
    assert go_memcache_trigger_chord(
        raw, group, backend.expiration(),
        after_read=lambda: claimed.append(backend._claim(client, group)))
    [ours] = claimed
    assert ours is not None
    assert backend._unchallenged(client, group, ours) is False
    assert GroupMeta.from_json(raw.get(group)).chord_triggered


def test_chord_claim_ends_in_gos_exact_bytes(backend: MemcacheBackend,
                                              raw: MemcacheClient) -> None:
    """The claim's mark is gone once the watch is over: the meta is what Go's trigger
    leaves (ChordTriggered, Lock unset), byte for byte."""
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    before = GroupMeta.from_json(raw.get(group))
    assert backend.trigger_chord(group) is True
    before.chord_triggered = True
    assert raw.get(group) == before.to_json()


def test_chord_nobody_else(backend: MemcacheBackend, raw: MemcacheClient) -> None:
    group = new_uuid("group_")
    backend.init_group(group, [new_uuid()])
    assert backend.trigger_chord(group) is True
    # a Go worker reading now sees the chord triggered
    assert go_memcache_trigger_chord(raw, group, backend.expiration()) is False
    with pytest.raises(GroupMetaMissing):
        backend.trigger_chord(new_uuid("group_"))
