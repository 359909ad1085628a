"""The quick translations of ``mbridge migrate`` equal the exact path: Celery's own captured
messages, Go's Signatures, generated calls and mutations of them give the same machinery
bytes or Celery message (or the same reason) whether ``bridge.protocol.celery_quick`` takes them or
the exact codecs do, both ways; and the common messages do take the quick path."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.migrate.translate import Translated, Translator
from bridge.protocol.celery import decode_task, encode_task, new_task
from bridge.protocol.celery_canvas import from_signature, to_signature
from bridge.protocol.celery_quick import quick_back, quick_message, quick_signature
from bridge.protocol.kombu_envelope import decode_envelope, to_envelope, write_plain_json
from bridge.protocol.machinery import Arg, Signature
from bridge.schema import TaskSchema, TaskTypes
from tests.unit.test_fast_paths import identical

GOLDEN = Path(__file__).resolve().parents[2] / "compat_fixtures" / "celery"
ENVELOPES = [line.encode() for path in sorted(GOLDEN.glob("*.jsonl"))
             for line in path.read_text().splitlines() if line.strip()]
ACCEPT = ("json", "msgpack")


def both(raw: bytes, translator: Translator | None = None) -> tuple[Translated, Translated]:
    """(quick-enabled, exact-only) translations of ``raw`` to machinery."""
    translator = translator or Translator("celery", "machinery", "machinery_tasks")
    assert translator.quick
    quick = translator.from_envelope(raw)
    translator.quick = False
    try:
        exact = translator.from_envelope(raw)
    finally:
        translator.quick = True
    return quick, exact


def assert_same(raw: bytes, translator: Translator | None = None) -> bool:
    """The two translations agree; whether the quick path took the message."""
    quick, exact = both(raw, translator)
    assert (quick.task, quick.task_id, quick.body, quick.reason, quick.wanted, quick.eta) == (
        exact.task, exact.task_id, exact.body, exact.reason, exact.wanted, exact.eta)
    return quick_signature(raw, "machinery_tasks", ACCEPT) is not None


def envelope(args: list[Any], kwargs: dict[str, Any] | None = None, **options: Any) -> bytes:
    return to_envelope(encode_task(new_task("tasks.add", args, kwargs or {}, **options)),
                       routing_key="celery")


# --------------------------------------------------------------------------- Celery's own


def test_captured_celery_messages_translate_the_same() -> None:
    taken = [assert_same(raw) for raw in ENVELOPES]
    assert len(ENVELOPES) > 30
    assert any(taken) and not all(taken)  # plain calls quick, canvas and ETAs exact


def test_a_plain_call_takes_the_quick_path() -> None:
    raw = envelope([7, "x", True, 2.5, -0.0, 10**18], {"scale": 1.5, "name": "n"})
    assert assert_same(raw)
    quick, _ = both(raw)
    sig = json.loads(quick.body)
    assert [a["Type"] for a in sig["Args"]] == [
        "int64", "string", "bool", "float64", "float64", "int64", "float64", "string"]


@pytest.mark.parametrize("raw", [
    envelope([2**63]),  # uint64: not an int64
    envelope([[1, 2]]),
    envelope([None]),
    envelope([{"a": 1}]),
    envelope(["<b>"]),
    envelope(["a\u2028b"]),
    envelope(["é"]),
    envelope(['say "hi"']),
    envelope([1], countdown=30),
    envelope([1], group="g1", group_index=0),
    envelope([1], priority=7),
    envelope([1], headers={"custom": 1.5}),
    envelope([1], headers={"custom": "x", "other": [1, {"b": None}]}),
    envelope([1], headers={"machinery": {"Immutable": True}}),
    envelope([1], callbacks=[{"task": "t", "args": [], "kwargs": {}, "options": {}}]),
], ids=lambda raw: raw[-60:].decode(errors="replace"))
def test_edge_calls_translate_the_same(raw: bytes) -> None:
    assert_same(raw)


def _fields(sig: Signature | None) -> Any:
    assert sig is not None
    return [getattr(sig, f.name) for f in dataclasses.fields(sig)]


def test_kept_signatures_are_the_exact_ones() -> None:
    translator = Translator("celery", "machinery", "machinery_tasks")
    translator.keep_signatures = True  # a RabbitMQ sink publishes the Signatures themselves
    taken = 0
    for raw in [*ENVELOPES, envelope([1, "x", 2.5, False], {"k": -3})]:
        quick, exact = both(raw, translator)
        assert quick.body == exact.body and quick.reason == exact.reason
        if exact.signature is None:
            assert quick.signature is None
            continue
        assert type(quick.signature) is Signature  # not the encoded kind: brokers may edit it
        assert identical(_fields(quick.signature), _fields(exact.signature))
        taken += quick_signature(raw, "machinery_tasks", ACCEPT) is not None
    assert taken > 1


def test_the_quick_signature_is_to_signatures() -> None:
    for raw in ENVELOPES:
        quick = quick_signature(raw, "machinery_tasks", ACCEPT)
        if quick is None:
            continue
        sig = quick.signature()
        task = decode_task(decode_envelope(raw).message)
        exact = to_signature(task, queue="machinery_tasks", strict=True)
        assert sig.to_json() == quick.body == exact.to_json()
        assert identical(_fields(sig), _fields(exact))


def test_a_schema_entry_is_typed_the_exact_way() -> None:
    schema = TaskSchema({"tasks.add": TaskTypes(args=("int32", "int32"))})
    translator = Translator("celery", "machinery", "machinery_tasks", schema=schema)
    quick, exact = both(envelope([1, 2]), translator)
    assert quick.body == exact.body and b'"Type":"int32"' in quick.body
    other = Translator("celery", "machinery", "machinery_tasks", schema=schema)
    raw = to_envelope(encode_task(new_task("tasks.other", [1])), routing_key="celery")
    assert assert_same(raw, other)


def test_a_filtered_task_is_not_wanted_either_way() -> None:
    translator = Translator("celery", "machinery", "q", tasks={"tasks.mul"})
    quick, exact = both(envelope([1]), translator)
    assert not quick.wanted and not exact.wanted and quick.task == exact.task == "tasks.add"


# --------------------------------------------------------------------------- generated

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=2),
    max_leaves=6)
_scalars = (st.booleans() | st.integers(-(2**64), 2**64)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(st.characters(codec="utf-8"), max_size=6))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(_scalars | _values, max_size=4),
       kwargs=st.dictionaries(st.text(max_size=5), _scalars, max_size=3),
       headers=st.dictionaries(st.sampled_from(["custom", "x-trace", "retries", "eta",
                                                "group", "shadow", "stamps"]), _values,
                               max_size=2),
       priority=st.none() | st.integers(0, 255))
def test_generated_calls_translate_the_same(args: list[Any], kwargs: dict[str, Any],
                                            headers: dict[str, Any], priority: int | None
                                            ) -> None:
    try:
        task = new_task("tasks.add", args, kwargs, headers=headers, priority=priority)
        raw = to_envelope(encode_task(task), routing_key="celery")
    except Exception:  # a header value Celery's own encoder would refuse: not a message
        return
    assert_same(raw)


def _mutations() -> list[bytes]:
    base = json.loads(envelope([1, "two"], {"k": True}))
    body = json.loads(base64.b64decode(base["body"]))
    out: list[bytes] = []

    def emit(env: dict[str, Any], raw_body: Any = None) -> None:
        env = json.loads(json.dumps(env))
        if raw_body is not None:
            env["body"] = base64.b64encode(json.dumps(raw_body).encode()).decode()
        out.append(json.dumps(env).encode())

    for key in ("body", "content-type", "content-encoding", "headers", "properties"):
        emit({k: v for k, v in base.items() if k != key})
        emit({**base, key: 1})
        emit({**base, key: None})
    for key in ("delivery_tag", "delivery_info", "body_encoding", "priority"):
        for value in (None, "", 2.0, True, {}, "utf-8"):
            emit({**base, "properties": {**base["properties"], key: value}})
    for key in ("task", "id", "lang", "eta", "group", "taskset", "compression"):
        for value in (None, "", 1, "gzip", "2030-01-01T00:00:00+00:00"):
            emit({**base, "headers": {**base["headers"], key: value}})
    emit({**base, "headers": dict(reversed(base["headers"].items()))})
    emit({**base, "headers": {"id": base["headers"]["id"], "task": "t"}})
    emit({**base, "content-type": "application/x-msgpack"})
    emit({**base, "content-encoding": "latin-1"})
    for payload in ([1, 2], [[], {}], [[], {}, None], [[], {}, {}], [{}, {}, body[2]],
                    [[], [], body[2]], [[], {}, {**body[2], "chain": []}],
                    [[], {}, dict(reversed(body[2].items()))],
                    [[], {}, {**body[2], "extra": 1}], {"args": [], "kwargs": {}},
                    [[1.5, 1e300, 5e-324], {}, body[2]], [["__type__"], {}, body[2]]):
        emit(base, payload)
    raw = json.dumps(base).encode()
    out.append(raw.replace(b'"body": "', b'"body": "\\u0057'))  # an escape in the envelope
    out.append(raw.replace(b'"body": "', b'"body": " '))  # whitespace in the base64
    out.append(raw[:-1] + b', "body": "W10="}')  # a repeated key: the last one counts
    out.append(raw[:-1] + b', "properties": {"delivery_tag": "t", "body_encoding": "base64"}}')
    out.append(raw + b" ")
    out.append(raw[:-1])
    return out


@pytest.mark.parametrize("raw", _mutations())
def test_mutated_envelopes_translate_the_same(raw: bytes) -> None:
    assert_same(raw)


# --------------------------------------------------------------------------- machinery → Celery

GO_SIGNATURES = sorted((GOLDEN.parent / "machinery").glob("v*/signature_*.json"))


def back(raw: bytes) -> tuple[Translated, Translated]:
    """(quick-enabled, exact-only) translations of a Signature's JSON to Celery."""
    translator = Translator("machinery", "celery", "celery")
    quick = translator.from_machinery(raw)
    translator.quick = False
    return quick, translator.from_machinery(raw)


def assert_same_back(raw: bytes) -> bool:
    """Both translations give the same message, header and property order included;
    whether the quick path took the Signature."""
    quick, exact = back(raw)
    read_back = quick_back(raw)  # the relay's way: no Signature made
    assert (quick.task, quick.task_id, quick.reason, quick.wanted, quick.eta) == (
        exact.task, exact.task_id, exact.reason, exact.wanted, exact.eta)
    if exact.message is None:
        assert quick.message is None and read_back is None
        return False
    assert quick.message is not None
    for message in (quick.message, None if read_back is None else read_back.message):
        if message is None:
            continue
        for field in ("body", "content_type", "content_encoding"):
            assert getattr(message, field) == getattr(exact.message, field), field
        assert list(message.headers.items()) == list(exact.message.headers.items())
        assert list(message.properties.items()) == list(exact.message.properties.items())
        assert to_envelope(message, routing_key="q", delivery_tag="t") == to_envelope(
            exact.message, routing_key="q", delivery_tag="t")  # (plain_json: msgspec's)
    sig = Signature.from_json(raw)
    taken = quick_message(sig) is not None
    if read_back is not None:  # (None: also where msgspec's reading is not sure, "-0"...)
        assert taken and (read_back.uuid, read_back.name) == (sig.uuid, sig.name)
    return taken


def machinery_body(raw: bytes) -> bytes:
    exact = Translator("celery", "machinery", "machinery_tasks")
    exact.quick = False
    return exact.from_envelope(raw).body


def test_captured_celery_messages_come_back_the_same() -> None:
    bodies = [machinery_body(raw) for raw in ENVELOPES]
    taken = [assert_same_back(body) for body in bodies if body]
    assert any(taken) and not all(taken)


def test_go_signatures_come_back_the_same() -> None:
    assert GO_SIGNATURES
    for path in GO_SIGNATURES:
        assert not assert_same_back(path.read_bytes())  # no celery header: the exact way


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(_scalars, max_size=4),
       kwargs=st.dictionaries(st.text(max_size=5), _scalars, max_size=3),
       headers=st.dictionaries(st.sampled_from(["custom", "x-trace", "retries", "shadow",
                                                "stamps", "lang"]), _values, max_size=2),
       priority=st.integers(0, 255))
def test_generated_calls_come_back_the_same(args: list[Any], kwargs: dict[str, Any],
                                            headers: dict[str, Any], priority: int) -> None:
    try:
        task = new_task("tasks.add", args, kwargs, headers=headers, priority=priority)
        raw = to_envelope(encode_task(task), routing_key="celery")
    except Exception:  # a header value Celery's own encoder would refuse: not a message
        return
    body = machinery_body(raw)
    if body:
        assert_same_back(body)


def _signature_mutations() -> list[bytes]:
    base = Signature.from_json(machinery_body(envelope([1, "two", 2.5], {"k": True})))
    out = [base.to_json()]

    def emit(change: Any) -> None:
        sig = copy.deepcopy(base)
        change(sig)
        out.append(sig.to_json())

    def carried(key: str, value: Any) -> Any:
        return lambda sig: sig.headers["celery"].__setitem__(key, value)

    def header(key: str, value: Any) -> Any:
        return lambda sig: sig.headers["celery"]["headers"].__setitem__(key, value)

    carried_values: dict[str, list[Any]] = {
        "protocol": [1, 2.0, "2", None], "serializer": ["msgpack", None, 1],
        "layout": [{}, {"embed": None}], "embed": [{}, {"callbacks": 0}, None],
        "raw": [{}, {"args": {"0": 5}, "kwargs": {}}], "fields": [None, {}, {"Immutable": True}],
        "kwargs": [[], ["k", "k"], ["x"], "k", [1], ["a", "b", "c", "d", "e"]],
        "properties": [None, [], {"priority": 9}, {"priority": True}],
        "headers": [None, [], {}, {"lang": "py", "shadow": None}, {"shadow": None, "lang": "py"}],
    }
    for key, values in carried_values.items():
        for value in values:
            emit(carried(key, value))
    for key, value in [("eta", "2030-01-01T00:00:00+00:00"), ("eta", "soon"), ("args", []),
                       ("task", "other"), ("id", "x"), ("compression", "gzip"),
                       ("lang", "go"), ("machinery", {"Immutable": True})]:
        emit(header(key, value))
    emit(lambda sig: sig.headers["celery"]["headers"].pop("lang"))
    emit(lambda sig: sig.headers.pop("celery"))
    emit(lambda sig: setattr(sig, "headers", None))
    for attr, value in [("priority", 5), ("immutable", True), ("retry_count", 2),
                        ("retry_timeout", 3), ("group_task_count", 2), ("on_success", []),
                        ("on_error", []), ("broker_message_group_id", "g"),
                        ("sqs_receipt_handle", "h"), ("stop_task_deletion_on_error", True),
                        ("ignore_when_task_not_registered", True), ("args", None),
                        ("group_uuid", "group-1"), ("uuid", ""),
                        ("eta", datetime(2030, 1, 1, tzinfo=UTC))]:
        emit(lambda sig, attr=attr, value=value: setattr(sig, attr, value))
    emit(lambda sig: setattr(sig.args[0], "type", "int32"))
    emit(lambda sig: setattr(sig.args[0], "type", ""))
    emit(lambda sig: setattr(sig.args[0], "value", 2**70))
    emit(lambda sig: setattr(sig.args[1], "type", "[]string"))
    emit(lambda sig: setattr(sig.args[-1], "name", "other"))
    emit(lambda sig: sig.args.insert(1, Arg()))  # Go's reading of a null Arg
    return out


@pytest.mark.parametrize("raw", _signature_mutations())
def test_mutated_signatures_come_back_the_same(raw: bytes) -> None:
    assert_same_back(raw)


def test_a_signature_built_with_a_null_arg_goes_the_exact_way() -> None:
    sig = Signature.from_json(_signature_mutations()[0])
    assert quick_message(sig) is not None
    sig.args = [None, *(sig.args or [])]  # type: ignore[list-item]  # built, never read
    assert quick_message(sig) is None
    with pytest.raises(AttributeError):  # what the exact path meets, and names
        encode_task(from_signature(sig))


def test_a_plain_signature_takes_the_quick_path_back() -> None:
    plain = _signature_mutations()[0]
    assert assert_same_back(plain)
    assert quick_back(plain) is not None
    ints = machinery_body(to_envelope(encode_task(new_task("tasks.add", [1, 2], {"k": "v"})),
                                      routing_key="celery"))
    read_back = quick_back(ints)
    assert read_back is not None and read_back.message.plain_json  # msgspec's envelope


def test_a_float_anywhere_in_the_signature_leaves_the_envelope_to_the_c_encoder() -> None:
    """msgspec writes floats in other digits than Python (``1e+16``): a Signature holding
    one, in its headers or its args, gives a message that is not ``plain_json``."""
    task = new_task("tasks.add", [1, 2], headers={"timelimit": [1.5, None]})
    in_headers = machinery_body(to_envelope(encode_task(task), routing_key="celery"))
    in_args = machinery_body(to_envelope(encode_task(new_task("tasks.add", [1.5, 2])),
                                         routing_key="celery"))
    for raw in (in_headers, in_args):
        assert assert_same_back(raw)
        read_back = quick_back(raw)
        assert read_back is not None and not read_back.message.plain_json


def test_a_flat_calls_body_is_written_by_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The way back's body goes to msgspec when every value is an int, str, bool or None
    (``write_plain_json`` then decides, as for the envelope), never with a float or a
    nested value; the differential tests above check the bytes."""
    from bridge.protocol import celery

    calls: list[Any] = []

    def counted(value: Any) -> bytes | None:
        calls.append(value)
        return write_plain_json(value)

    monkeypatch.setattr(celery, "write_plain_json", counted)
    for args, by_msgspec in (([1, "é\x7f", True, 2**62], True), ([1, "a"], True),
                             ([1.5, 2], False), ([[1, 2]], False)):
        raw = machinery_body(to_envelope(encode_task(new_task("tasks.add", args)),
                                         routing_key="celery"))
        calls.clear()
        assert assert_same_back(raw)
        assert bool(calls) is by_msgspec, args
