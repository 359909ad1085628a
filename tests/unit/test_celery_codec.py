"""The Celery codec: hypothesis round trips, garbage, and Celery's own code as the judge."""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery
from celery.canvas import Signature as CelerySignature
from celery.worker.request import Request
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.message import Message
from kombu.serialization import dumps

from bridge.errors import DecodeError
from bridge.protocol.celery import (
    CeleryTask,
    decode_task,
    encode_task,
    new_task,
    parse_iso,
)
from bridge.protocol.celery_canvas import CeleryTranslationError, from_signature, to_signature
from bridge.protocol.celery_message import CeleryMessage
from bridge.protocol.gotime import parse_rfc3339
from bridge.protocol.machinery import Signature
from tests.strategies import args as machinery_args
from tests.strategies import json_values, text, times

APP = Celery("codec-tests", set_as_current=False)
APP.conf.update(accept_content=["json", "msgpack"], enable_utc=True)


@APP.task(name="tasks.add")
def add(x: int, y: int) -> int:  # pragma: no cover - never run
    return x + y


def celery_request(message: CeleryMessage) -> Request:
    """What a Celery 5.6.2 worker builds from our message (consumer + strategy path)."""
    kombu_message = Message(body=message.body, content_type=message.content_type,
                            content_encoding=message.content_encoding,
                            headers=dict(message.headers), properties=dict(message.properties),
                            delivery_info={"exchange": "", "routing_key": "celery"},
                            accept=["application/json", "application/x-msgpack"])
    task = APP.tasks["tasks.add"]
    if "task" in message.headers:
        payload = kombu_message.decode()
        if isinstance(payload, dict) and "args" in payload:
            body, headers, decoded, utc = hybrid_to_proto2(kombu_message, payload)
            return Request(kombu_message, app=APP, task=task, body=body, headers=headers,
                           decoded=decoded, utc=utc)
        return Request(kombu_message, app=APP, task=task)
    body, headers, decoded, utc = proto1_to_proto2(kombu_message, kombu_message.decode())
    return Request(kombu_message, app=APP, task=task, body=body, headers=headers,
                   decoded=decoded, utc=utc)


# --------------------------------------------------------------------------- Celery as judge


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_celery_worker_reads_what_we_encode(protocol: int, serializer: str) -> None:
    eta = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    task = new_task("tasks.add", (2, 3), {"z": "é"}, eta=eta, expires=eta + timedelta(hours=1),
                    time_limit=30, soft_time_limit=20, headers={"x-tenant": "acme"},
                    serializer=serializer,
                    callbacks=[json.loads(json.dumps(CelerySignature("tasks.add")))])
    message = encode_task(task, protocol=protocol)
    request = celery_request(message)
    assert (request.id, request.task_name) == (task.id, "tasks.add")
    assert list(request.args) == [2, 3] and request.kwargs == {"z": "é"}
    assert parse_iso(request.eta) == eta
    assert parse_iso(request.expires) == eta + timedelta(hours=1)
    assert tuple(request.time_limits) == (30, 20)
    embed = request.request_dict if protocol == 1 else request._Request__payload[2]
    assert embed["callbacks"] == task.callbacks
    if protocol == 2:
        assert request.request_dict["x-tenant"] == "acme"
    assert decode_task(message) .args == [2, 3]


def test_as_task_v2_matches_new_task() -> None:
    """Celery's own message builder and ours agree header for header."""
    eta = datetime(2031, 1, 1, tzinfo=UTC)
    kwargs: dict[str, Any] = {"group_id": "g", "group_index": 1, "retries": 2, "root_id": "r",
                              "parent_id": "p", "shadow": "s", "time_limit": 5}
    celery_headers, properties, body, _ = APP.amqp.as_task_v2(
        "id-1", "tasks.add", (1, [2]), {"k": b"v"}, eta=eta, reply_to="rt", origin="o",
        **kwargs)
    ours = new_task("tasks.add", (1, [2]), {"k": b"v"}, task_id="id-1", eta=eta,
                    reply_to="rt", origin="o", group="g", group_index=1, retries=2,
                    root_id="r", parent_id="p", shadow="s", time_limit=5)
    message = encode_task(ours)
    assert list(message.headers.items()) == list(celery_headers.items())
    assert message.body == dumps(body, serializer="json")[2].encode()
    assert properties == {k: message.properties[k] for k in properties}


def test_celery_signature_from_dict_accepts_our_embeds() -> None:
    inner = Signature(uuid="cb-1", name="tasks.add", routing_key="q2", priority=4,
                      args=[machinery_arg(7)])
    sig = Signature(uuid="t-1", name="tasks.add", args=[machinery_arg(1), machinery_arg(2)],
                    on_success=[inner], on_error=[Signature(uuid="eb", name="tasks.add")],
                    chord_callback=Signature(uuid="cc", name="tasks.add"), group_uuid="g-1")
    task = from_signature(sig)
    assert task.callbacks and task.errbacks and task.chord
    callback = CelerySignature.from_dict(task.callbacks[0], app=APP)
    assert callback.task == "tasks.add" and list(callback.args) == [7]
    assert callback.options["task_id"] == "cb-1" and callback.options["queue"] == "q2"
    assert callback.options["priority"] == 4
    assert CelerySignature.from_dict(task.chord, app=APP).options["task_id"] == "cc"
    request = celery_request(encode_task(task))
    assert request.group == "g-1" and list(request.args) == [1, 2]
    assert to_signature(task) == sig


def machinery_arg(value: int) -> Any:
    from bridge.types import to_arg
    return to_arg(value, "int64")


# --------------------------------------------------------------------------- decode errors


def _msg(body: bytes, headers: dict[str, Any] | None = None, **kw: Any) -> CeleryMessage:
    return CeleryMessage(body=body, headers=headers if headers is not None else
                         {"task": "t", "id": "i"}, **kw)


@pytest.mark.parametrize("message,error", [
    (_msg(b"[[1], {}]"), "must be \\[args, kwargs, embed\\], got 2 elements"),
    (_msg(b'[1, {}, {}]'), "args must be a list"),
    (_msg(b'[[], [], {}]'), "kwargs must be a mapping"),
    (_msg(b'[[], {}, {}]', {"task": "t"}), "no id header"),
    (_msg(b'[[], {}, 5]'), "embed must be a dict or null"),
    (_msg(b'[[], {}, {"callbacks": 3}]'), "callbacks must be a list"),
    (_msg(b'{"args": []}', {}), "not a Celery task message"),
    (_msg(b'{"task": "t", "args": []}', {}), "protocol-1 message has no id"),
    (_msg(b"not json"), "cannot deserialize json"),
    (_msg(b'[[], {"a": {"__type__": "nope", "__value__": 1}}, {}]'), "Unsupported type"),
    (_msg(b"[[], {}, {}]", content_type="application/x-yaml"), "x-yaml \\(yaml\\) refused"),
    (_msg(b"[[], {}, {}]", content_type="text/plain"), "'text/plain' refused"),
    (_msg(b"[[], {}, {}]", content_type=None), "no content type"),
    (_msg(b"xx", {"task": "t", "id": "i", "compression": "application/x-gzip"}),
     "not valid application/x-gzip"),
    (_msg(b"xx", {"task": "t", "id": "i", "compression": "application/zstd"}),
     "unsupported compression"),
    (_msg(b"[[], {}, {}]", {"task": 5, "id": "i"}), "task header must be a non-empty"),
])
def test_bad_messages_raise_decode_error(message: CeleryMessage, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        decode_task(message)


def test_size_limits() -> None:
    big = zlib.compress(b"[[" + b"1," * 100_000 + b"1], {}, {}]")
    message = _msg(big, {"task": "t", "id": "i", "compression": "application/x-gzip"})
    assert len(decode_task(message).args) == 100_001
    with pytest.raises(DecodeError, match="decompressed body is larger"):
        decode_task(message, max_body=10_000)
    with pytest.raises(DecodeError, match="body is larger"):
        decode_task(_msg(b"[[], {}, {}]"), max_body=3)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=64) | st.builds(lambda v: json.dumps(v).encode(), json_values),
       headers=st.dictionaries(st.sampled_from(["task", "id", "compression", "x"]),
                               json_values, max_size=3),
       content_type=st.sampled_from(["application/json", "application/x-msgpack", None, "x"]))
def test_garbage_only_raises_decode_error(body: bytes, headers: dict[str, Any],
                                          content_type: str | None) -> None:
    try:
        task = decode_task(CeleryMessage(body=body, content_type=content_type,
                                         headers=headers))
    except DecodeError:
        return
    assert isinstance(task, CeleryTask) and isinstance(task.args, list)


# --------------------------------------------------------------------------- round trips

call_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
    | st.floats(allow_nan=False, allow_infinity=False) | st.binary(max_size=5)
    | st.datetimes(timezones=st.just(UTC)) | st.decimals(allow_nan=False, places=2)
    | st.uuids(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
plain_sig = st.builds(lambda name, args, tid: dict(CelerySignature(name, args=args,
                                                                   task_id=tid)),
                      text, st.lists(st.integers(0, 9), max_size=2), st.uuids().map(str))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(name=text.filter(bool), args=st.lists(call_values, max_size=4),
       kwargs=st.dictionaries(text, call_values, max_size=3),
       custom=st.dictionaries(text.map(lambda t: "x-" + t), json_values, max_size=2),
       callbacks=st.none() | st.lists(plain_sig, max_size=2),
       chain=st.none() | st.lists(plain_sig, max_size=3),
       chord=st.none() | plain_sig, priority=st.integers(0, 255),
       countdown=st.none() | st.integers(1, 10_000), protocol=st.sampled_from([1, 2]),
       serializer=st.sampled_from(["json", "msgpack"]))
def test_celery_machinery_celery_is_exact(name: str, args: list[Any], kwargs: dict[str, Any],
                                          custom: dict[str, Any],
                                          callbacks: list[Any] | None, chain: list[Any] | None,
                                          chord: dict[str, Any] | None, priority: int,
                                          countdown: int | None, protocol: int,
                                          serializer: str) -> None:
    if serializer == "msgpack":  # msgpack has no datetime/Decimal/UUID
        args = json.loads(json.dumps(args, default=str).replace("NaN", "0"))
        kwargs = {k: str(v) for k, v in kwargs.items()}
    task = new_task(name, args, kwargs, headers=custom, callbacks=callbacks, chain=chain,
                    chord=chord, priority=priority, countdown=countdown, serializer=serializer)
    message = encode_task(task, protocol=protocol)
    decoded = decode_task(message)
    assert encode_task(decoded) == message
    assert from_signature(to_signature(decoded, group_task_count=3)) == decoded
    assert decoded.args == list(args) and decoded.kwargs == kwargs


def machinery_sigs(depth: int = 2) -> st.SearchStrategy[Signature]:
    nested = st.lists(machinery_sigs(depth - 1), max_size=2) if depth else st.none()
    chord = machinery_sigs(depth - 1) if depth else st.none()
    return st.builds(
        Signature, uuid=text, name=text, routing_key=text, eta=st.none() | times,
        group_uuid=text, group_task_count=st.integers(0, 9),
        args=st.none() | st.lists(machinery_args, max_size=3),
        headers=st.none() | st.dictionaries(text.filter(lambda k: k != "celery"), json_values,
                                            max_size=3),
        priority=st.integers(0, 255), immutable=st.booleans(), retry_count=st.integers(0, 9),
        retry_timeout=st.integers(0, 9), on_success=st.none() | nested,
        on_error=st.none() | nested, chord_callback=chord, broker_message_group_id=text,
        stop_task_deletion_on_error=st.booleans(),
        ignore_when_task_not_registered=st.booleans(),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(sig=machinery_sigs(), name=text.filter(bool))
def test_machinery_celery_machinery_is_exact(sig: Signature, name: str) -> None:
    sig.name = name  # a Celery message needs a task name
    task = from_signature(sig)
    assert to_signature(task) == sig
    again = decode_task(encode_task(task))  # through the wire too
    assert to_signature(again) == sig


@pytest.mark.parametrize("eta", ["0001-01-01T00:00:00+02:00", "0001-01-01T00:00:00.5-00:30",
                                 "9999-12-31T23:59:59-03:00"])
def test_an_eta_with_no_utc_date_crosses_both_ways(eta: str) -> None:
    """Go's zero time east of UTC is year 0 in UTC: the ETA keeps its own offset."""
    sig = Signature(uuid="task_1", name="t", eta=parse_rfc3339(eta))
    task = from_signature(sig)
    assert to_signature(task) == sig == to_signature(decode_task(encode_task(task)))


def test_markers_stay_untyped_and_exact() -> None:
    values = {"when": datetime(2030, 1, 1, tzinfo=UTC), "ref": uuid.uuid4(),
              "amount": Decimal("1.10"), "nothing": None, "mixed": [1, "a"], "empty": []}
    task = decode_task(encode_task(new_task("tasks.echo", (), values)))
    sig = to_signature(task)
    assert all(a.type == "" for a in sig.args or [])
    assert from_signature(sig).kwargs == values


def test_accessors() -> None:
    task = new_task("t", headers={"eta": "2030-01-01T00:00:00Z", "expires": "2030-01-01T00:00:00",
                                  "group": "g", "group_index": 2, "retries": 3,
                                  "timelimit": [10, 5]})
    assert task.eta == datetime(2030, 1, 1, tzinfo=UTC) == task.expires
    assert (task.group, task.group_index, task.retries, task.timelimit) == ("g", 2, 3, (10, 5))
    bad = new_task("t", headers={"eta": "tomorrow"})
    with pytest.raises(DecodeError, match="eta 'tomorrow'"):
        _ = bad.eta
    with pytest.raises(CeleryTranslationError, match="eta"):
        to_signature(bad)


def test_countdown_and_expires_are_utc_iso() -> None:
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    task = new_task("t", countdown=10, expires=60, now=now)
    assert task.headers["eta"] == "2030-01-01T12:00:10+00:00"
    assert task.headers["expires"] == "2030-01-01T12:01:00+00:00"
    assert task.properties == {"correlation_id": task.id, "reply_to": task.properties["reply_to"],
                               "delivery_mode": 2, "expiration": "60000", "priority": 0}
    assert task.headers["argsrepr"] == "()" and task.headers["origin"].startswith("gen")


def test_protocol_conversion_keeps_the_call() -> None:
    task = new_task("tasks.add", (1, 2), {"k": 3}, group="g", headers={"x-a": 1})
    v1 = decode_task(encode_task(task, protocol=1))
    assert v1.protocol == 1 and v1.headers["taskset"] == "g" and v1.headers["x-a"] == 1
    v2 = decode_task(encode_task(v1, protocol=2))
    assert v2.protocol == 2 and v2.args == [1, 2] and v2.kwargs == {"k": 3}
    assert v2.group == "g" and v2.headers["x-a"] == 1 and v2.headers["root_id"] == task.id


def test_hybrid_and_odd_layouts_reencode_exactly() -> None:
    hybrid = _msg(b'{"args": [1], "kwargs": {}, "retries": 1, "utc": false}',
                  {"id": "i", "task": "t", "retries": 2, "x": 1})
    task = decode_task(hybrid)
    assert task.protocol == 1 and task.retries == 2 and task.headers["utc"] is False
    assert encode_task(task) == hybrid
    assert list(celery_request(hybrid).args) == [1]
    for body in (b"[[1], {}, null]", b"[[1], {}, {}]",
                 b'[[1], {}, {"chord": null, "callbacks": null, "meth": 1}]'):
        message = _msg(body, {"x": 0, "id": "i", "task": "t"})
        assert encode_task(decode_task(message)) == message
        assert from_signature(to_signature(decode_task(message))) == decode_task(message)


def test_an_eta_moved_on_the_machinery_side_reaches_celery() -> None:
    from datetime import UTC, datetime, timedelta

    from bridge.protocol.celery import new_task
    from bridge.protocol.celery_canvas import from_signature, to_signature
    from bridge.protocol.gotime import GoTime

    due = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    task = new_task("tasks.add", [1, 2], eta=due)
    sig = to_signature(task)
    assert from_signature(sig) == task  # unchanged: the header's own spelling
    sig.eta = GoTime.from_datetime(due + timedelta(seconds=30))
    assert from_signature(sig).eta == due + timedelta(seconds=30)
    sig.eta = None
    assert from_signature(sig).eta is None


@pytest.mark.parametrize("body", [
    b'[[1, "x"], {"k": [true, null]}, {}]',
    b'[["\\u00e9\\ud83d\\ude00"], {}, {}]',
    b'[[{"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}], {}, {}]',
    b'[[{"\\u005f_type__": "bytes", "__value__": "hi"}], {}, {}]',
    '[["caf\u00e9"], {}, {}]'.encode(),
])
def test_json_bodies_read_as_kombus_decoder_reads_them(body: bytes) -> None:
    from kombu import serialization

    expected = serialization.loads(body, "application/json", "utf-8", accept=["application/json"])
    task = decode_task(_msg(body))
    assert (task.args, task.kwargs) == (list(expected[0]), expected[1])


def test_a_json_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(DecodeError, match="cannot deserialize json body"):
        decode_task(_msg(b'[["\xff"], {}, {}]'))
