"""Hostile Celery messages on Redis: each is parked (or fails cleanly) with its real reason,
the good tasks around it run exactly once, and the worker goes on."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from tests.hostile.harness import Served, celery_envelope, no_batch_failures, served


@pytest.fixture
def worker(redis_url: str) -> Iterator[Served]:
    with served(redis_url) as state:
        yield state


@pytest.mark.parametrize("errback, why", [
    ({"args": [], "kwargs": {}, "options": {}}, "'task'"),
    ({"task": "h.record", "args": ["eb"], "kwargs": {}, "options": {"priority": "high"}},
     "priority"),
])
def test_malformed_errback(worker: Served, caplog: pytest.LogCaptureFixture,
                           errback: dict[str, object], why: str) -> None:
    caplog.set_level(logging.INFO)
    before = worker.celery_good(5)
    bad_id = str(uuid.uuid4())
    worker.push_celery(celery_envelope("h.fail", ["bad"], task_id=bad_id, errbacks=[errback]))
    after = worker.celery_good(5)
    reasons = worker.wait_parked(1, celery=True)
    assert "errback" in reasons[0] and why in reasons[0], reasons
    worker.assert_exactly_once(before + after + ["bad"])
    meta = worker.celery_meta(bad_id)
    assert meta is not None and meta["status"] == "FAILURE", meta
    worker.still_serving()
    no_batch_failures(caplog)


def test_malformed_link_fails_the_task_once(worker: Served,
                                            caplog: pytest.LogCaptureFixture) -> None:
    bad_id = str(uuid.uuid4())
    worker.push_celery(celery_envelope("h.record", ["linked"], task_id=bad_id,
                                       callbacks=[{"options": {"priority": []}}]))
    good = worker.celery_good(5)
    reasons = worker.wait_parked(1, celery=True)
    assert "link" in reasons[0], reasons
    worker.assert_exactly_once([*good, "linked"])
    meta = worker.celery_meta(bad_id)
    assert meta is not None and meta["status"] == "FAILURE", meta
    no_batch_failures(caplog)


def test_link_with_a_bad_compression_header_runs_once(worker: Served,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bad_id = str(uuid.uuid4())
    link = {"task": "h.record", "args": ["never"], "kwargs": {},
            "options": {"headers": {"compression": "application/x-bogus"}},
            "subtask_type": None, "immutable": True}
    worker.push_celery(celery_envelope("h.record", ["head"], task_id=bad_id, callbacks=[link]))
    good = worker.celery_good(5)
    reasons = worker.wait_parked(1, celery=True)
    assert "compression" in reasons[0], reasons
    worker.assert_exactly_once([*good, "head"], settle=1.0)
    assert worker.runs["never"] == 0
    meta = worker.celery_meta(bad_id)
    assert meta is not None and meta["status"] == "FAILURE", meta
    no_batch_failures(caplog)


DEEP = "@DEEP@"


def _raw_envelope(headers: object, body: bytes = b'[["x"], {}, {}]') -> bytes:
    """A kombu envelope; a ``DEEP`` string in ``headers`` becomes an object nested 995 deep
    (written as text: json.dumps itself cannot write it)."""
    envelope = {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": headers,
                "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "celery"},
                               "priority": 0}}
    deep = '{"n": ' * 995 + '"x"' + "}" * 995
    return json.dumps(envelope).replace(json.dumps(DEEP), deep).encode()


@pytest.mark.parametrize("headers, why", [
    ({"lang": "py", "task": "h.record", "id": "deep", "x": DEEP}, "nested"),
    ({"lang": "py", "task": "h.record", "id": "marker-b",
      "x": {"__type__": "bytes", "__value__": 5}}, "bytes"),
    ({"lang": "py", "task": "h.record", "id": "marker-d",
      "x": {"__type__": "datetime", "__value__": "not a time"}}, "datetime"),
])
def test_hostile_envelope_headers(worker: Served, caplog: pytest.LogCaptureFixture,
                                  headers: object, why: str) -> None:
    before = worker.celery_good(5)
    worker.push_celery(_raw_envelope(headers))
    after = worker.celery_good(5)
    reasons = worker.wait_parked(1, celery=True)
    assert why in reasons[0], reasons
    worker.assert_exactly_once(before + after)
    worker.still_serving()
    no_batch_failures(caplog)


def test_a_task_id_naming_a_foreign_meta_key(worker: Served,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Celery's meta key of this id holds another application's hash: never written over;
    the task's message is parked saying so, the good ones run once."""
    task_id = str(uuid.uuid4())
    worker.client.hset(f"celery-task-meta-{task_id}", mapping={"owner": "someone else"})
    good = worker.celery_good(4)
    worker.push_celery(celery_envelope("h.record", ["foreign"], task_id=task_id))
    good += worker.celery_good(4)
    reasons = worker.wait_parked(1, celery=True)
    assert "no meta is written over it" in reasons[0], reasons
    worker.assert_exactly_once([*good, "foreign"])
    assert worker.client.type(f"celery-task-meta-{task_id}") == b"hash"
    no_batch_failures(caplog)
