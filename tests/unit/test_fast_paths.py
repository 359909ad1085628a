"""The decoding fast paths equal the exact path: same values (types, JSONNumber literals,
key order) or the same error, for Go's golden files, Python-written messages, mutations
of them and garbage. Also the to_json_parts fast path against the plain encoder."""

from __future__ import annotations

import dataclasses
import json
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber, Pairs
from bridge.protocol.gotime import GoTime, nanosecond_of
from bridge.protocol.machinery import (
    Arg,
    GroupMeta,
    Signature,
    TaskResult,
    TaskState,
)
from tests.strategies import signatures, task_states

GOLDEN = Path(__file__).resolve().parents[2] / "compat_fixtures" / "machinery"
GOLDEN_FILES = sorted(p for p in GOLDEN.glob("v*/*.json*") if p.name != "manifest.json")
STRUCTS: tuple[type[Any], ...] = (Signature, TaskState, Arg, TaskResult, GroupMeta)


def identical(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (JSONNumber literals, dict key order,
    float bits, GoTime nanoseconds and offsets)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(identical(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    if isinstance(a, JSONNumber):
        return a.literal == b.literal
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return (a == b and a.utcoffset() == b.utcoffset()
                and nanosecond_of(a) == nanosecond_of(b))
    return bool(a == b)


def outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(data)
    except Exception as exc:  # any exception: the fast path must raise the very same one
        return type(exc).__name__, str(exc)


def assert_same(cls: type[Any], data: bytes) -> None:
    fast = outcome(cls.from_json, data)
    exact = outcome(cls._from_json_exact, data)
    assert fast[0] == exact[0], (data, fast, exact)
    if fast[0] == "value":
        assert identical(fast[1], exact[1]), (data, fast[1], exact[1])
        try:
            fast_bytes = fast[1].to_json()
        except Exception as exc:
            with pytest.raises(type(exc)):
                exact[1].to_json()
        else:
            assert fast_bytes == exact[1].to_json()
    else:
        assert fast[1] == exact[1], data
    raw_fast = outcome(gojson.loads_raw, data)
    raw_exact = outcome(gojson.loads_raw_exact, data)
    assert raw_fast[0] == raw_exact[0] and (
        identical(raw_fast[1], raw_exact[1]) if raw_fast[0] == "value"
        else raw_fast[1] == raw_exact[1]), data


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_files_decode_the_same_both_ways(path: Path) -> None:
    data = path.read_bytes()
    for cls in STRUCTS:
        assert_same(cls, data)


def test_golden_files_take_the_fast_path() -> None:
    """The fast path is not dead code: Go's own messages take it."""
    taken = 0
    originals = {cls: cls._from_pairs_exact for cls in (Signature, TaskState)}
    calls: list[type[Any]] = []
    try:
        for cls in originals:
            def spy(pairs: Pairs, _cls: type[Any] = cls) -> Any:
                calls.append(_cls)
                return originals[_cls].__func__(_cls, pairs)  # type: ignore[attr-defined]
            cls._from_pairs_exact = spy  # type: ignore[method-assign]
        for path in GOLDEN_FILES:
            kind = Signature if path.name.startswith("signature") else TaskState
            if not path.name.startswith(("signature", "task_state")):
                continue
            calls.clear()
            kind.from_json(path.read_bytes())
            taken += not calls
    finally:
        for cls in originals:
            del cls._from_pairs_exact  # back to the inherited classmethod
    assert taken > 100


def test_a_uuid_with_minus_zero_in_its_text_takes_the_typed_path() -> None:
    """"-0a" inside a string is no -0 literal: such a Signature (3.8% of random UUIDs'
    messages) is read by msgspec, not the pairs path."""
    ids = ["5d1e0a7b-0a4c-4f0d-9c3e-0f2b6a8d1e3c", "0a1b2c3d-4e5f-4a6b-8c7d-0e9f1a2b3c4d"]
    sig = Signature(uuid=ids[0], name="add", routing_key="q", group_uuid=ids[1],
                    headers={"root": ids[1]}, args=[Arg("", "int64", -5)])
    raw = sig.to_json()
    assert b"-0a" in raw and Signature._QUICK is not None
    assert identical(Signature._QUICK(raw), Signature._from_json_exact(raw))
    literal = raw.replace(b'"Value":-5', b'"Value":-0')  # a -0 literal: the pairs path
    assert Signature._QUICK(literal) is None
    assert identical(Signature.from_json(literal), Signature._from_json_exact(literal))


EDGE_CASES = [
    b'{"UUID":"a-0","Name":"n","RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":-0,'
    b'"Args":[{"Name":"","Type":"int64","Value":-0}],"Headers":{"k":-0},"Priority":0,'
    b'"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,'
    b'"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"",'
    b'"StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}',
    b'[-0]', b'-0', b'-0 ', b'-01', b' \n-01', b'[-01]', b'{"a":-01}', b'"x-0"',
    b'{"Priority":-0}', b'{"a":-0.0,"b":-0e1,"c":-0E+1}', b'{"a": \n\t-0}', b'[1,\r -0 ]',
    b'{"a":"x:-0a","b":"[-0]","c":"y-0f-0a"}', b'{"Headers":{"k":[1, -0]}}',
    b'{"UUID":"\\ud800","Name":"\\udfff x","Args":[{"Name":"\\ud800","Type":"string",'
    b'"Value":"\\ud800"}],"Headers":{"\\ud800":1,"\\udbff":2}}',
    b'{"UUID":"a","UUID":null,"Priority":5,"Priority":null}',
    b'{"uuid":"a","UUID":"b","Uuid":"c"}',
    b'{"UUID":"\xff\xfe bad","Name":"\xc3"}',
    b'{"Args":[null,{"Name":"x","Type":"int","Value":1},{"Type":"int","Name":"x","Value":1}]}',
    b'{"Args":[{"Name":"x","Type":"int","Value":1,"Value":2}]}',
    b'{"Args":[5]}', b'{"Args":{}}', b'{"OnSuccess":{}}', b'{"OnSuccess":[5]}',
    b'{"ChordCallback":[]}', b'{"ETA":"2024-05-06T07:08:09"}', b'{"ETA":5}',
    b'{"Headers":[]}', b'{"Headers":{"a":1,"a":2,"b":{"c":[1.50,NaN]}}}',
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'', b'   ', b'nul', b'{"a":1',
    b'{"TaskUUID":"t","TaskName":"n","State":"SUCCESS","Results":[null,{"Type":"x",'
    b'"Value":1.0}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}',
    b'{"TaskUUID":"t","TaskName":"n","State":"SUCCESS","Results":[],"Error":"","CreatedAt":'
    b'"2024-05-06T07:08:09.1+02:00","TTL":9223372036854775808}',
    b'{"TaskUUID":"t","TaskName":"n","State":"S","Results":5,"Error":"","CreatedAt":"bad",'
    b'"TTL":0}',
    b'{"a":' + b"1" * 5000 + b"}",
    b'[' * 100000,
]


@pytest.mark.parametrize("data", EDGE_CASES)
def test_edge_cases_decode_the_same_both_ways(data: bytes) -> None:
    for cls in STRUCTS:
        assert_same(cls, data)


# JSON values, with the literals and keys that matter to Go's rules
_keys = st.sampled_from(["UUID", "uuid", "Name", "NAME", "Args", "Type", "Value", "Headers",
                         "ETA", "Priority", "TaskUUID", "Results", "CreatedAt", "TTL", "x",
                         "\u212aey", "\\ud800"])
_literals = st.sampled_from(["-0", "0", "-0.0", "1.0", "1e3", "255", "256", "-1",
                             "9223372036854775808", "null", "true", "false", '""', '"a-0"',
                             '"2024-05-06T07:08:09Z"', '"\\ud800"', '"\u00e9"', "[]", "{}"])
_json_texts = st.recursive(
    _literals,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(_keys, inner), max_size=6).map(
            lambda pairs: "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"),
    ),
    max_leaves=25,
)


@given(_json_texts)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_random_json_decodes_the_same_both_ways(text: str) -> None:
    for cls in STRUCTS:
        assert_same(cls, text.encode())


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_garbage_decodes_the_same_both_ways(data: bytes) -> None:
    for cls in (Signature, TaskState):
        assert_same(cls, data)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """A message with one field's value swapped for another JSON value, or a byte changed."""
    pairs = json.loads(data, object_pairs_hook=list)
    swap = st.tuples(st.integers(0, max(len(pairs) - 1, 0)), _json_texts).map(
        lambda t: ("{" + ",".join(
            f"{json.dumps(k)}:{t[1] if i == t[0] else json.dumps(v, separators=(',', ':'))}"
            for i, (k, v) in enumerate(pairs)) + "}").encode())
    flip = st.tuples(st.integers(0, len(data) - 1), st.binary(min_size=1, max_size=1)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0] + 1:])
    return st.one_of(swap, flip)


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_messages_decode_the_same_both_ways(data: st.DataObject) -> None:
    sig = data.draw(signatures())
    message = data.draw(_mutations(sig.to_json()))
    assert_same(Signature, message)
    state = data.draw(task_states)
    assert_same(TaskState, data.draw(_mutations(state.to_json())))


@given(signatures())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_python_written_signatures_decode_the_same_both_ways(sig: Signature) -> None:
    assert_same(Signature, sig.to_json())


@given(task_states)
@settings(max_examples=200)
def test_task_state_parts_equal_the_encoder(state: TaskState) -> None:
    head, middle, tail = state.to_json_parts()
    name = gojson.quote(state.task_name).encode()
    created = ('"' + gojson.format_rfc3339(state.created_at) + '"').encode()
    assert head + name + middle + created + tail == state.to_json()
    assert_same(TaskState, state.to_json())


@pytest.mark.parametrize("state", [
    TaskState("t", state="RECEIVED"), TaskState("t", state="SUCCESS", results=[]),
    TaskState("t", state="SUCCESS", results=[TaskResult("int64", 1)]),
    TaskState("t", state="FAILURE", error="boom <b>"), TaskState("t", state="STARTED", ttl=5),
    TaskState("t\u2028", state="é", results=None),
    TaskState("t", "n", "RETRY", created_at=GoTime.from_unix_nano(1714979289123456789)),
])
def test_parts_of_common_states(state: TaskState) -> None:
    for _ in range(2):  # the second time from the cache of simple middles
        head, middle, tail = state.to_json_parts()
        name = gojson.quote(state.task_name).encode()
        created = ('"' + gojson.format_rfc3339(state.created_at) + '"').encode()
        assert head + name + middle + created + tail == state.to_json()


@pytest.mark.parametrize("state", [
    TaskState(5, state="RECEIVED"),  # type: ignore[arg-type]
    TaskState("t", state=None),  # type: ignore[arg-type]
    TaskState("t", state="SUCCESS", error=None),  # type: ignore[arg-type]
    TaskState("t", state="SUCCESS", ttl=True),
    TaskState("t", state="SUCCESS", ttl=2**63),
    TaskState("t", state="SUCCESS", results=[5]),  # type: ignore[list-item]
])
def test_parts_of_bad_states_raise_what_the_encoder_raises(state: TaskState) -> None:
    with pytest.raises(Exception) as fast:
        state.to_json_parts()
    with pytest.raises(Exception) as plain:
        state.to_json()
    assert (type(fast.value), str(fast.value)) == (type(plain.value), str(plain.value))


def test_celery_message_made_is_the_dataclass_s_own() -> None:
    """``CeleryMessage.made`` sets every field the frozen ``__init__`` sets (a field added
    to the class and not to ``made`` fails here), and what it makes stays frozen."""
    from bridge.protocol.celery_message import CeleryMessage

    names = [f.name for f in dataclasses.fields(CeleryMessage)]
    assert names == ["body", "content_type", "content_encoding", "headers", "properties",
                     "json_checked", "plain_json"]
    for plain in (False, True):
        made = CeleryMessage.made(b"[]", "application/json", "utf-8", {"id": "1"},
                                  {"priority": 3}, plain_json=plain)
        init = CeleryMessage(b"[]", "application/json", "utf-8", {"id": "1"},
                             {"priority": 3}, plain_json=plain)
        assert [getattr(made, n) for n in names] == [getattr(init, n) for n in names]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.body = b"{}"  # type: ignore[misc]
