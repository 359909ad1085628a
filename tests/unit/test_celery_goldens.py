"""Golden messages captured from real Celery 5.6.2 (compat_fixtures/celery) decode,
re-encode byte for byte, translate to machinery and back, and read as Celery reads them."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.protocol.celery import (
    CeleryTask,
    decode_task,
    encode_task,
    new_task,
)
from bridge.protocol.celery_canvas import CeleryTranslationError, from_signature, to_signature
from bridge.protocol.celery_message import CeleryMessage

HERE = Path(__file__).resolve().parents[2] / "compat_fixtures" / "celery"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
_TRANSPORT = ("delivery_tag", "delivery_info", "body_encoding")


@dataclass
class Golden:
    case: str
    index: int
    envelope: dict[str, Any]
    message: CeleryMessage

    @property
    def id(self) -> str:
        return f"{self.case}[{self.index}]"


def _message(envelope: dict[str, Any]) -> CeleryMessage:
    """The kombu Redis envelope as a CeleryMessage (private: not the real envelope codec)."""
    props = envelope["properties"]
    body = envelope["body"].encode()
    if props.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return CeleryMessage(body=body, content_type=envelope["content-type"],
                         content_encoding=envelope["content-encoding"],
                         headers=envelope["headers"],
                         properties={k: v for k, v in props.items() if k not in _TRANSPORT})


def _goldens() -> list[Golden]:
    out = []
    for case, info in sorted(MANIFEST["cases"].items()):
        for index, line in enumerate((HERE / info["file"]).read_bytes().splitlines()):
            envelope = json.loads(line)
            out.append(Golden(case, index, envelope, _message(envelope)))
    return out


GOLDEN = _goldens()
READABLE = [g for g in GOLDEN if g.case != "v2_pickle"]
UNTRANSLATABLE = {
    "v2_chain_with_group": "a chord nested in a chain cannot be expressed",
    "v2_link_group": "a group in a callback (link) cannot be expressed",
}
TRANSLATABLE = [g for g in READABLE if g.case not in UNTRANSLATABLE]


def test_manifest_covers_the_required_cases() -> None:
    cases = set(MANIFEST["cases"])
    assert MANIFEST["celery"] == "5.6.2" and MANIFEST["kombu"] == "5.6.2"
    assert {"v2_json_args_kwargs", "v1_json_args_kwargs", "v2_msgpack", "v1_msgpack",
            "v2_countdown_expires", "v2_priority", "v2_custom_headers", "v2_link_link_error",
            "v2_chain3", "v2_group", "v2_chord", "v2_markers", "v2_timelimit",
            "v2_zlib"} <= cases
    assert len([g for g in GOLDEN if g.case == "v2_group"]) == 2


@pytest.mark.parametrize("golden", READABLE, ids=lambda g: g.id)
def test_reencodes_exactly(golden: Golden) -> None:
    task = decode_task(golden.message)
    again = encode_task(task)
    assert again.body == golden.message.body  # byte-identical (json and msgpack alike)
    assert list(again.headers.items()) == list(golden.message.headers.items())
    assert again.properties == golden.message.properties
    assert (again.content_type, again.content_encoding) == (
        golden.message.content_type, golden.message.content_encoding)
    assert task.layout == {}  # Celery's own messages need no layout notes


@pytest.mark.parametrize("golden", TRANSLATABLE, ids=lambda g: g.id)
def test_machinery_round_trip_is_exact(golden: Golden) -> None:
    task = decode_task(golden.message)
    sig = to_signature(task, queue="celery", group_task_count=2)
    assert from_signature(sig) == task
    assert encode_task(from_signature(sig)) == encode_task(task)
    assert sig.uuid == task.id and sig.name == task.name and sig.routing_key == "celery"


@pytest.mark.parametrize("case,error", sorted(UNTRANSLATABLE.items()))
def test_untranslatable_canvas(case: str, error: str) -> None:
    task = decode_task(next(g for g in GOLDEN if g.case == case).message)
    with pytest.raises(CeleryTranslationError, match=re.escape(error)):
        to_signature(task)


def _one(case: str) -> CeleryTask:
    return decode_task(next(g for g in GOLDEN if g.case == case).message)


def test_protocol_2_args_kwargs() -> None:
    task = _one("v2_json_args_kwargs")
    assert (task.name, task.id, task.args, task.kwargs) == (
        "tasks.add", "00000000-0000-4000-8000-000000000001", [2, 3], {"scale": 1.5})
    assert task.protocol == 2 and task.serializer == "json"
    assert list(task.headers)[:3] == ["lang", "shadow", "eta"]
    assert task.headers["argsrepr"] == "(2, 3)" and task.root_id == task.id
    assert task.timelimit == (None, None) and task.retries == 0 and task.eta is None
    assert (task.callbacks, task.errbacks, task.chain, task.chord) == (None,) * 4
    sig = to_signature(task)
    assert [(a.name, a.type, a.value) for a in sig.args or []] == [
        ("", "int64", 2), ("", "int64", 3), ("scale", "float64", 1.5)]


def test_protocol_1() -> None:
    task = _one("v1_json_args_kwargs")
    assert task.protocol == 1 and task.args == [2, 3] and task.kwargs == {"scale": 1.5}
    assert task.headers["utc"] is True and task.group is None
    custom = _one("v1_custom_headers")
    assert custom.headers["x-tenant"] == "acme"
    assert encode_task(custom).headers == {"x-tenant": "acme"}
    link = _one("v1_link")
    assert link.callbacks is not None and link.callbacks[0]["task"] == "tasks.echo"


def test_msgpack_and_markers() -> None:
    task = _one("v2_msgpack")
    assert task.serializer == "msgpack" and task.kwargs == {"name": "x", "blob": b"\x00\xff"}
    markers = _one("v2_markers").kwargs
    assert markers["amount"].__class__.__name__ == "Decimal" and markers["text"] == b"abc"
    assert str(markers["ref"]) == "12345678-1234-5678-1234-567812345678"
    sig = to_signature(_one("v2_markers"))
    types = {a.name: a.type for a in sig.args or []}
    assert types == {"when": "", "day": "", "clock": "", "ref": "", "amount": "",
                     "text": "[]byte", "blob": "[]byte"}


def test_times_and_priority() -> None:
    task = _one("v2_countdown_expires")
    assert task.eta is not None and task.expires is not None
    assert (task.expires - task.eta).total_seconds() == pytest.approx(50, abs=1)
    assert task.properties["expiration"] == "60000"
    ny = _one("v2_countdown_new_york")
    assert ny.headers["eta"].endswith("-05:00") and ny.eta is not None
    assert ny.eta.utcoffset() is not None
    naive = _one("v2_eta_naive")
    assert naive.eta is not None and naive.eta.utcoffset().total_seconds() == 0  # type: ignore
    sig = to_signature(_one("v2_eta_expires_datetime"))
    assert sig.eta is not None and sig.eta.isoformat() == "2030-01-02T03:04:05.678901+00:00"
    assert to_signature(_one("v2_priority")).priority == 5
    assert _one("v2_timelimit").timelimit == (30, 20)


def test_custom_headers_reach_go_users() -> None:
    sig = to_signature(_one("v2_custom_headers"))
    assert sig.headers is not None
    assert sig.headers["x-tenant"] == "acme" and sig.headers["trace"] == {"span": 7}
    assert "lang" not in sig.headers and "celery" in sig.headers


def test_canvas_structure() -> None:
    sig = to_signature(_one("v2_link_link_error"))
    assert [s.name for s in sig.on_success or [] if s] == ["tasks.echo"]
    assert sig.on_error and sig.on_error[0] and sig.on_error[0].immutable
    assert sig.on_error[0].args and sig.on_error[0].args[0].value == "err"

    link = to_signature(_one("v2_link_options")).on_success
    assert link and link[0] and link[0].routing_key == "q1" and link[0].priority == 3
    assert link[0].uuid == "00000000-0000-4000-8000-000000000114"
    assert link[0].headers and link[0].headers["celery"]["options"]["countdown"] == 5

    chain = _one("v2_chain3")
    first = to_signature(chain)
    assert first.on_success and len(first.on_success) == 1
    second = first.on_success[0]
    assert second and second.name == "tasks.add" and second.uuid == chain.chain[1][  # type: ignore
        "options"]["task_id"]
    assert second.on_success and second.on_success[0]
    third = second.on_success[0]
    assert third.name == "tasks.echo" and third.immutable and not third.on_success

    group = [decode_task(g.message) for g in GOLDEN if g.case == "v2_group"]
    sigs = [to_signature(t, group_task_count=2) for t in group]
    assert {s.group_uuid for s in sigs} == {group[0].group} and group[0].group
    assert [t.group_index for t in group] == [0, 1]
    assert all(s.group_task_count == 2 for s in sigs)

    chord = [to_signature(decode_task(g.message), group_task_count=2)
             for g in GOLDEN if g.case == "v2_chord"]
    assert all(s.chord_callback and s.chord_callback.name == "tasks.echo" for s in chord)
    assert chord[0].group_uuid and chord[0].group_uuid == chord[1].group_uuid


def test_pickle_is_refused_unless_accepted() -> None:
    message = next(g for g in GOLDEN if g.case == "v2_pickle").message
    with pytest.raises(Exception, match=r"pickle.*refused"):
        decode_task(message)
    task = decode_task(message, accept=("json", "pickle"))
    assert task.serializer == "pickle" and task.args == [1, 2]


def test_new_task_writes_what_celery_sent() -> None:
    """new_task with the same call gives the captured message; only the per-process
    reply_to and origin differ, which we pass in."""
    for case, kwargs in [
        ("v2_json_args_kwargs", {"args": (2, 3), "kwargs": {"scale": 1.5}}),
        ("v2_timelimit", {"args": (1, 2), "time_limit": 30, "soft_time_limit": 20}),
        ("v2_custom_headers", {"args": (1, 2),
                               "headers": {"x-tenant": "acme", "trace": {"span": 7}}}),
        ("v2_priority", {"args": (1, 2), "priority": 5}),
        ("v2_ignore_result", {"args": (1, 2), "ignore_result": True}),
        ("v2_zlib", {"args": (1, 2), "compression": "zlib"}),
        ("v2_eta_expires_datetime", {"args": (1, 2), "eta": datetime(
            2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "expires": datetime(2030, 1, 2, 4, 4, 5)}),
    ]:
        golden = next(g for g in GOLDEN if g.case == case).message
        captured = decode_task(golden)
        name = "tasks.add"
        ours = new_task(name, task_id=captured.id, reply_to=captured.properties["reply_to"],
                        origin=captured.headers["origin"], **kwargs)
        message = encode_task(ours)
        assert message.body == golden.body, case
        assert list(message.headers.items()) == list(golden.headers.items()), case
        if case != "v2_eta_expires_datetime":  # Celery's expiration there is relative to now
            assert message.properties == golden.properties, case
