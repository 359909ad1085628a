"""The relay's bookkeeping of the ids it owes a result for: records per id of a signature's
tree, and the in-flight hash on a real redis-server (written, reloaded after a restart)."""

from __future__ import annotations

import gc
import json

import pytest
import redis

from bridge.protocol.machinery import Signature
from bridge.relay.track import CHORD, DROP, FAIL, InFlight, Tracked, track_signature


def test_a_leaf_is_tracked_alone_with_its_group_and_parent() -> None:
    leaf = Signature(uuid="t1", name="add")
    (entry,) = track_signature(leaf, group="g", parent="p", chain_failure=FAIL,
                               chord_failure=CHORD, now=5.0)
    assert entry == Tracked("t1", "add", 5.0, "g", "p")
    # a backlog keeps its entries long: a leaf's adds nothing more for the collector to walk
    assert not gc.is_tracked(entry.on_failure) and not gc.is_tracked(entry.on_success)
    assert not gc.is_tracked(Tracked.from_json("t1", entry.to_json()).on_failure)
    assert track_signature(Signature(name="anonymous"), group=None, parent=None,
                           chain_failure=FAIL, chord_failure=CHORD) == []


def test_a_tree_tracks_every_id_once_with_what_a_failure_does() -> None:
    body = Signature(uuid="body", name="sum")
    errback = Signature(uuid="err", name="on_error")
    second = Signature(uuid="t2", name="mul", on_success=[Signature(uuid="t3", name="neg")])
    head = Signature(uuid="t1", name="add", group_uuid="g", on_success=[second, None],
                     on_error=[errback], chord_callback=body)
    entries = {e.uuid: e for e in track_signature(head, group="g", parent=None,
                                                  chain_failure=FAIL, chord_failure=CHORD,
                                                  now=1.0)}
    assert set(entries) == {"t1", "t2", "t3", "err", "body"}
    assert entries["t1"].on_failure == [("t2", FAIL), ("body", CHORD)]
    assert entries["t1"].on_success == ["err"]
    assert entries["t2"].parent == "t1" and entries["t2"].on_failure == [("t3", FAIL)]
    assert entries["body"].group == "g" and entries["body"].parent is None
    dropped = track_signature(head, group="g", parent=None, chain_failure=DROP,
                              chord_failure=None)
    assert {e.uuid: e.on_failure for e in dropped}["t1"] == [("t2", DROP)]


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.delete("bridge:relay:test:inflight")
    return client


def test_in_flight_records_survive_a_restart(client: redis.Redis) -> None:
    key = "bridge:relay:test:inflight"
    inflight = InFlight(client, key)
    first = Tracked("t1", "naïve", 1.25, "g", "p", [("t2", FAIL)], ["err"])
    inflight.add([first, Tracked("t2", "mul", 1.5, parent="t1")])
    inflight.add([Tracked("t1", "other", 9.0)])  # a known id keeps its first record
    assert json.loads(client.hget(key, "t1") or b"") == {
        "n": "naïve", "t": 1.25, "g": "g", "p": "p", "f": [["t2", "fail"]], "s": ["err"]}
    reloaded = InFlight(client, key)
    assert reloaded.load() == 2
    assert reloaded.entries["t1"] == first
    with reloaded._lane._lock:  # the lane busy (another thread): the client's way
        reloaded.add([Tracked("t3", "add", 2.0)])
    reloaded.remove(["t1", "t2"])
    assert [f.decode() for f in client.hkeys(key)] == ["t3"]


def test_records_sent_now_are_read_later(client: redis.Redis) -> None:
    key = "bridge:relay:test:inflight"
    inflight = InFlight(client, key)
    read = inflight.begin_add([Tracked("t1", "add", 1.0), Tracked("t2", "mul", 2.0)])
    assert set(inflight.entries) == {"t1", "t2"}  # known at once
    assert not inflight._lane._lock.acquire(blocking=False)  # the lane's, until read
    read()
    assert sorted(client.hkeys(key)) == [b"t1", b"t2"]
    inflight.begin_add([Tracked("t1", "other", 3.0)])  # known: nothing sent, nothing held
    assert inflight._lane._lock.acquire(blocking=False)
    inflight._lane._lock.release()
    assert json.loads(client.hget(key, "t1") or b"")["n"] == "add"
    assert inflight.entries["t1"].name == "add"


def test_a_refused_record_is_raised_when_read_and_forgotten(client: redis.Redis) -> None:
    key = "bridge:relay:test:inflight"
    client.set(key, "not a hash")
    inflight = InFlight(client, key)
    inflight.entries["t0"] = Tracked("t0", "kept", 0.5)
    read = inflight.begin_add([Tracked("t1", "add", 1.0)])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        read()
    assert set(inflight.entries) == {"t0"}
    client.delete(key)
    inflight.add([Tracked("t1", "add", 1.0)])  # the lane is free again
    assert client.hkeys(key) == [b"t1"]
