"""kombu's virtual-transport envelope: our bytes against kombu's own channel code."""

from __future__ import annotations

import base64
import json
import json.encoder
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection
from kombu.transport.virtual import Channel, Message
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from bridge.errors import DecodeError
from bridge.protocol import kombu_envelope as envelope_module
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.kombu_envelope import (
    KOMBU_JSON_ENCODE,
    MAX_HEADER_DEPTH,
    MAY_HOLD_MARKERS,
    WRITE_MESSAGE_JSON,
    decode_envelope,
    depth_over,
    from_envelope,
    kombu_json_plain,
    load_kombu_json,
    mark_redelivered,
    new_delivery_tag,
    to_envelope,
)
from tests.unit.test_fast_paths import identical

BODY = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
HEADERS: dict[str, Any] = {
    "lang": "py", "task": "tasks.add", "id": "1111", "shadow": None, "eta": None,
    "expires": None, "group": None, "group_index": None, "retries": 0,
    "timelimit": [None, None], "root_id": "1111", "parent_id": None, "argsrepr": "(2, 3)",
    "kwargsrepr": "{}", "origin": "gen1@host", "ignore_result": False,
    "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
}
PROPERTIES: dict[str, Any] = {"correlation_id": "1111", "reply_to": "28a3a977",
                              "delivery_mode": 2, "expiration": "60000"}


@pytest.fixture
def channel() -> Iterator[Channel]:
    """A real kombu virtual channel (memory transport): kombu's own envelope code."""
    with Connection("memory://") as conn:
        yield conn.default_channel


def kombu_envelope(channel: Channel, msg: CeleryMessage, priority: int, exchange: str,
                   routing_key: str) -> dict[str, Any]:
    """What kombu's Producer.publish hands to a virtual transport's ``_put``."""
    payload: dict[str, Any] = channel.prepare_message(
        msg.body.decode(), priority, msg.content_type, msg.content_encoding,
        dict(msg.headers), dict(PROPERTIES))
    channel._inplace_augment_message(payload, exchange, routing_key)
    return payload


@pytest.mark.parametrize(("priority", "exchange", "routing_key"),
                         [(0, "", "celery"), (5, "", "q1"), (9, "tasks", "rk.x")])
def test_bytes_equal_kombu(channel: Channel, priority: int, exchange: str,
                           routing_key: str) -> None:
    msg = CeleryMessage(BODY, headers=HEADERS, properties={**PROPERTIES, "priority": priority})
    expected = kombu_envelope(channel, msg, priority, exchange, routing_key)
    tag = expected["properties"]["delivery_tag"]
    ours = to_envelope(msg, routing_key=routing_key, exchange=exchange, delivery_tag=tag)
    assert ours == kombu_dumps(expected).encode()
    assert list(json.loads(ours)) == ["body", "content-encoding", "content-type", "headers",
                                      "properties"]


def test_fresh_uuid4_tag_and_base64_body() -> None:
    raw = json.loads(to_envelope(CeleryMessage(BODY), routing_key="celery"))
    tag = raw["properties"]["delivery_tag"]
    assert uuid.UUID(tag).version == 4
    assert base64.b64decode(raw["body"]) == BODY
    other = json.loads(to_envelope(CeleryMessage(BODY), routing_key="celery"))
    assert other["properties"]["delivery_tag"] != tag


def test_kombu_reads_ours(channel: Channel) -> None:
    msg = CeleryMessage(BODY, headers=HEADERS, properties={**PROPERTIES, "priority": 3})
    raw = to_envelope(msg, routing_key="celery")
    kmsg = Message(json.loads(raw), channel=channel)
    assert kmsg.body == BODY
    assert kmsg.headers == HEADERS
    assert kmsg.delivery_info == {"exchange": "", "routing_key": "celery"}
    assert kmsg.properties["priority"] == 3
    assert kmsg.decode() == [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                          "chord": None}]


def test_round_trip_keeps_message_and_bookkeeping() -> None:
    msg = CeleryMessage(b"\x93\x92\x01\x02\x80\xc0", "application/x-msgpack", "binary",
                        HEADERS, {**PROPERTIES, "priority": 6})
    raw = to_envelope(msg, routing_key="q", exchange="ex", delivery_tag="tag-1")
    assert from_envelope(raw) == msg
    env = decode_envelope(raw)
    assert (env.delivery_tag, env.exchange, env.routing_key) == ("tag-1", "ex", "q")
    assert env.body_encoding == "base64" and not env.redelivered


def test_plain_text_body_encoding(channel: Channel) -> None:
    msg = CeleryMessage(BODY, headers={"task": "tasks.add", "id": "x"})
    raw = to_envelope(msg, routing_key="celery", body_encoding=None)
    stored = json.loads(raw)
    assert stored["body"] == BODY.decode() and stored["properties"]["body_encoding"] is None
    assert from_envelope(raw).body == BODY
    assert Message(stored, channel=channel).body == BODY
    with pytest.raises(ValueError, match="base64"):
        to_envelope(CeleryMessage(b"\xff"), routing_key="q", body_encoding=None)


def test_kombu_markers_in_headers_are_decoded() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw = to_envelope(CeleryMessage(BODY, headers={"eta_obj": when}), routing_key="q")
    assert b'"__type__": "datetime"' in raw
    assert from_envelope(raw).headers == {"eta_obj": when}


def _env(**changes: Any) -> bytes:
    base = json.loads(to_envelope(CeleryMessage(BODY), routing_key="q", delivery_tag="t"))
    for key, value in changes.items():
        if key.startswith("p_"):
            base["properties"][key[2:]] = value
        else:
            base[key] = value
    return json.dumps(base).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json at all", "not JSON"),
    (b'{"task": "tasks.add", "args": [1, 2]}', "no 'properties' object"),
    (b"[1, 2, 3]", "a JSON list, not an object"),
    (b'"text"', "a JSON str, not an object"),
    (_env(p_delivery_tag=None), "delivery_tag is null"),
    (_env(p_delivery_tag=""), "delivery_tag is ''"),
    (_env(body="%%%not-base64"), "not valid base64"),
    (_env(body=12), "body is int"),
    (_env(headers=[1]), "headers is not an object"),
    (_env(p_delivery_info="x"), "delivery_info is not an object"),
    (_env(p_body_encoding="rot13"), "unsupported properties.body_encoding 'rot13'"),
    (_env(headers={"x": {"__type__": "alien", "__value__": 1}}), "Unsupported type"),
    (b"\xff\xfe garbage", "not JSON"),
])
def test_invalid_envelopes_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match="not a kombu envelope") as info:
        decode_envelope(raw)
    assert reason in str(info.value)


def test_oversized_envelope_is_refused() -> None:
    raw = to_envelope(CeleryMessage(b"x" * 1000), routing_key="q")
    assert from_envelope(raw, max_size=len(raw)).body == b"x" * 1000
    with pytest.raises(DecodeError, match=f"{len(raw)} bytes exceed max_size=100"):
        from_envelope(raw, max_size=100)


def test_mark_redelivered_as_kombu_restore() -> None:
    raw = to_envelope(CeleryMessage(BODY, headers={"task": "t"}), routing_key="q",
                      delivery_tag="t1")
    again = json.loads(mark_redelivered(raw))
    assert again["headers"] == {"task": "t", "redelivered": True}
    assert again["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q",
                                                    "redelivered": True}
    env = decode_envelope(mark_redelivered(raw))
    assert env.redelivered and env.delivery_tag == "t1"
    assert list(again) == list(json.loads(raw))


def _depth(value: object) -> int:
    """The nesting depth the limit counts: 1 for a flat dict or list, 0 for a scalar."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("value", [
    {}, [], "x", 5, None, {"a": 1, "b": "c"}, {"a": [1, [2, {"b": [3]}]], "c": {}},
    [[[]]], {"a": {"b": {"c": {"d": None}}}}, [1, {"x": [[], [[4]]]}, "y"],
])
def test_depth_over_matches_the_recursive_count(value: object) -> None:
    depth = _depth(value)
    for limit in range(0, 7):
        assert depth_over(value, limit) is (depth > limit), (value, limit)


@pytest.mark.parametrize("extra", [0, 1])
def test_headers_nested_past_the_limit_are_refused(extra: int) -> None:
    deep: Any = "leaf"
    for level in range(MAX_HEADER_DEPTH - 1 + extra):  # the headers object is level 1
        deep = [deep] if level % 2 else {"x": deep}
    raw = to_envelope(CeleryMessage(BODY, headers={"task": "t", "id": "1", "deep": deep}),
                      routing_key="q")
    if extra:
        with pytest.raises(DecodeError, match="nested deeper"):
            decode_envelope(raw)
    else:
        assert decode_envelope(raw).message.headers["deep"] == deep


_JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=6) | st.sampled_from(["__type__", "\\u", "é", "__value__"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4) | st.sampled_from(["__type__", "__value__"]), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_JSONABLE, st.booleans())
def test_plain_json_path_reads_what_kombu_reads(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        expected = kombu_loads(text)
    except Exception:
        with pytest.raises(DecodeError):
            load_kombu_json(text.encode())
        return
    assert load_kombu_json(text.encode()) == expected


def test_a_marker_spelled_with_escapes_is_still_a_marker() -> None:
    raw = b'{"a": {"\\u005f_type__": "bytes", "__value__": "aGk="}}'
    assert kombu_json_plain(raw.decode()) is MAY_HOLD_MARKERS
    assert load_kombu_json(raw) == {"a": b"aGk="} == kombu_loads(raw)  # kombu: bytes as text
    assert kombu_json_plain('{"a": [1, "x"]}') == {"a": [1, "x"]}


_EDGE_TEXTS = ["1e400", "-1e400", "[NaN]", "[Infinity, -Infinity]", "1" * 4300, "1" * 4301,
               "-0", "-0.0", "4.9e-324", "2.2250738585072011e-308", "0.1e1", "1E+2",
               '{"a":1,"a":2,"b":{"c":[1.5,null,true]}}', "[1, 2] ", "[1, 2] x", " ", "",
               "[" * 999 + "]" * 999, "[" * 1000 + "]" * 1000, '"\\n\\t\\/\\""', "{'a':1}"]


@pytest.mark.parametrize("text", _EDGE_TEXTS)
def test_the_quick_plain_reader_is_json_s_reader(text: str) -> None:
    """msgspec reads a marker-free text as json's decoder does, or json decides."""
    def outcome(loads: Any) -> tuple[str, Any]:
        try:
            return "value", loads(text)
        except Exception as exc:
            return type(exc).__name__, str(exc)

    quick, plain = outcome(kombu_json_plain), outcome(json.JSONDecoder().decode)
    assert quick[0] == plain[0] and (identical(quick[1], plain[1]) if quick[0] == "value"
                                     else quick[1] == plain[1])


@settings(max_examples=300, deadline=None)
@given(_JSONABLE | st.floats(allow_nan=False) | st.lists(st.floats(allow_nan=False)))
def test_quick_plain_values_are_json_s_to_the_bit(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    quick = kombu_json_plain(text)
    if quick is not MAY_HOLD_MARKERS:  # a text with a \u escape: kombu's own reader
        assert identical(quick, json.loads(text))


# --------------------------------------------------------------------------- message writer

_kombu_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=6) | st.uuids() | st.decimals(places=3)
    | st.datetimes(timezones=st.none() | st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=400)
@given(_kombu_values)
def test_the_message_writer_writes_what_kombu_dumps_writes(value: Any) -> None:
    assert WRITE_MESSAGE_JSON(value) == kombu_dumps(value)


def test_the_message_writer_refuses_what_kombu_refuses() -> None:
    for bad in (object(), {1j: 1}, [set()]):
        with pytest.raises(TypeError):
            kombu_dumps(bad)
        with pytest.raises(TypeError):
            WRITE_MESSAGE_JSON(bad)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(RecursionError):
        WRITE_MESSAGE_JSON(cycle)


def test_without_the_c_encoder_the_writer_is_kombus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WRITE_MESSAGE_JSON is not KOMBU_JSON_ENCODE  # this Python has one
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert envelope_module._message_writer() is KOMBU_JSON_ENCODE
    monkeypatch.setattr(json.encoder, "c_make_encoder", lambda *args: None)  # other arguments
    assert envelope_module._message_writer() is KOMBU_JSON_ENCODE


def test_delivery_tags_are_random_version_4_uuids() -> None:
    tags = {new_delivery_tag() for _ in range(2000)}
    assert len(tags) == 2000
    for tag in tags:
        parsed = uuid.UUID(tag)
        assert str(parsed) == tag and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert {tag[19] for tag in tags} == set("89ab")


def test_a_forked_child_draws_tags_of_its_own() -> None:
    new_delivery_tag()  # the parent holds tags made ahead
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tags, to the parent
        os.close(reader)
        os.write(writer, " ".join(new_delivery_tag() for _ in range(300)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = {new_delivery_tag() for _ in range(300)}
    assert len(child) == 300 and not child & parent


# ------------------------------------------------------------- plain messages, by msgspec

_json_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=12)


@settings(max_examples=400)
@given(st.dictionaries(st.text(max_size=6), _json_plain, max_size=6),
       st.dictionaries(st.text(max_size=6), _json_plain, max_size=3),
       st.integers(0, 255), st.text(max_size=6))
def test_a_plain_messages_envelope_is_kombus_bytes(headers: dict[str, Any],
                                                   properties: dict[str, Any], priority: int,
                                                   routing_key: str) -> None:
    """msgspec writes a message of JSON's plain values (``plain_json``) as kombu's json
    writes it: every text, DEL and non-ASCII included, ints past 64 bits, nesting."""
    properties = {**properties, "priority": priority}
    plain = CeleryMessage(b"[[1], {}, {}]", headers=headers, properties=properties,
                          plain_json=True)
    other = CeleryMessage(b"[[1], {}, {}]", headers=headers, properties=properties)
    written = to_envelope(plain, routing_key=routing_key, delivery_tag="tag")
    assert written == to_envelope(other, routing_key=routing_key, delivery_tag="tag")
    assert written == kombu_dumps(json.loads(written)).encode()


def test_a_plain_messages_envelope_is_written_by_msgspec(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The plain path is the one taken (the C encoder is not called), and text Python
    escapes (DEL, non-ASCII) goes the C encoder's way."""
    calls: list[Any] = []
    writer = envelope_module.WRITE_MESSAGE_JSON
    monkeypatch.setattr(envelope_module, "WRITE_MESSAGE_JSON",
                        lambda value: calls.append(value) or writer(value))
    for text, escaped in (("plain", False), ("del\x7f", True), ("caf\u00e9", True)):
        calls.clear()
        msg = CeleryMessage(b"[]", headers={"task": text}, plain_json=True)
        to_envelope(msg, routing_key="q", delivery_tag="t")
        assert bool(calls) is escaped
