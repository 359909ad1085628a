"""The deferred SUCCESS meta built by :class:`bridge.handlers.celery_defer.MetaEncoder` is the
one Celery's backend builds and encodes (``_get_result_meta`` + ``encode``): the same keys in
the same order, the same values, the same bytes but for the time it was written, and the
same error for a result the serializer refuses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack
import pytest
from celery import Celery
from celery.app.task import Context
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kombu.exceptions import EncodeError

from bridge.handlers.celery_defer import MetaEncoder
from bridge.protocol.kombu_envelope import KOMBU_JSON_ENCODE
from tests.strategies import json_values

_DATE = re.compile(r'"date_done": "[^"]+"')
CONFIGS = {
    "utc": {},
    "zone": {"timezone": "Europe/Paris"},
    "local": {"enable_utc": False},
    "msgpack": {"result_serializer": "msgpack"},
    "extended": {"result_extended": True},
    "keyprefix": {"result_backend_transport_options": {"global_keyprefix": "pfx_"}},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def app(request: pytest.FixtureRequest) -> Iterator[Celery]:
    app = Celery("meta_test", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0")
    app.conf.update(CONFIGS[request.param])
    yield app
    app.close()


def celerys(app: Celery, task_id: str, result: Any, request: Any) -> Any:
    backend = app.backend
    meta = backend._get_result_meta(result=backend.encode_result(result, "SUCCESS"),
                                    state="SUCCESS", traceback=None, request=request)
    meta["task_id"] = task_id
    return backend.encode(meta)


def decoded(app: Celery, value: Any) -> tuple[dict[str, Any], Any]:
    """The meta with its time taken out, and that time."""
    if app.backend.serializer == "msgpack":
        meta = msgpack.unpackb(value)
    else:
        meta = json.loads(value)
        assert _DATE.search(value) is not None  # the time, where the byte check cuts it out
    date = meta.pop("date_done")
    return meta, datetime.fromisoformat(date)


def requests() -> st.SearchStrategy[Context]:
    fields = st.fixed_dictionaries({"id": st.just("t-1"), "task": st.just("t.echo")}, optional={
        "group": st.sampled_from([None, "", "g-1"]),
        "parent_id": st.sampled_from([None, "", "p-1"]),
        "args": st.lists(st.integers(), max_size=2),
        "kwargs": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        "hostname": st.just("w1@host"),
        "delivery_info": st.just({"routing_key": "q1"}),
    })
    return fields.map(Context)


@settings(max_examples=60, deadline=None)
@given(result=json_values, request=requests())
@example(result="date_done", request=Context({"id": "t-1", "task": "t.echo"}))
@example(result={"date_done": "x"}, request=Context({"id": "t-1", "task": "t.echo"}))
@example(result=[datetime(2026, 12, 5, 21, 0, tzinfo=UTC), UUID(int=7), b"raw\xff", Decimal("1.5")],
         request=Context({"id": "t-1", "task": "t.echo"}))  # kombu's JSONEncoder.default
def test_the_meta_is_celerys(app: Celery, result: Any, request: Context) -> None:
    try:
        theirs = celerys(app, "t-1", result, request)
    except EncodeError:  # msgpack: an int beyond 64 bits
        with pytest.raises(EncodeError):
            MetaEncoder(app.backend).encode("t-1", result, "SUCCESS", request)
        return
    ours = MetaEncoder(app.backend).encode("t-1", result, "SUCCESS", request)
    assert ours.key == app.backend.get_key_for_task("t-1")
    assert ours.serializer == app.backend.serializer
    meta, date = decoded(app, ours.value)
    their_meta, their_date = decoded(app, theirs)
    assert list(meta) == list(their_meta) and meta == their_meta
    assert date.utcoffset() == their_date.utcoffset()
    assert abs((date - their_date).total_seconds()) < 5
    if app.backend.serializer == "json":  # byte for byte, the time aside
        assert _DATE.sub("", ours.value) == _DATE.sub("", theirs)


def test_a_result_the_serializer_refuses_raises_celerys_error(app: Celery) -> None:
    request = Context({"id": "t-1"})
    with pytest.raises(EncodeError) as theirs:
        celerys(app, "t-1", object(), request)
    with pytest.raises(EncodeError) as ours:
        MetaEncoder(app.backend).encode("t-1", object(), "SUCCESS", request)
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("task_id", ["t-1", "tâche-ü-1", "a" * 300])
def test_the_key_is_celerys(app: Celery, task_id: str) -> None:
    ours = MetaEncoder(app.backend).encode(task_id, 1, "SUCCESS", None)
    assert ours.key == app.backend.get_key_for_task(task_id)
    assert isinstance(ours.key, bytes)



def test_the_meta_is_written_by_the_kept_kombu_encoder(app: Celery) -> None:
    """With kombu's json serializer, the meta goes through the one kombu encoder the codecs
    keep (kombu's ``dumps`` makes one at every call), which writes what ``dumps`` writes."""
    from kombu.utils.json import dumps

    encoder = MetaEncoder(app.backend)
    if app.backend.serializer != "json":
        assert encoder.dumps is None
        return
    assert encoder.dumps is KOMBU_JSON_ENCODE
    value = {"a": [1, 2.5, None, "é<"], "when": datetime(2026, 1, 2, tzinfo=UTC),
             "id": UUID(int=7), "raw": b"\xff", "n": Decimal("1.5")}
    assert KOMBU_JSON_ENCODE(value) == dumps(value)
