"""Hostile machinery messages on Redis: each is parked with its real reason (and a FAILURE
state where its UUID is known), the good tasks around it run exactly once, and the worker
goes on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bridge.protocol.machinery import MAX_NESTING, TaskState, new_uuid
from tests.hostile.harness import Served, machinery_body, no_batch_failures, served


@pytest.fixture
def worker(redis_url: str) -> Iterator[Served]:
    with served(redis_url) as state:
        yield state


def _state(worker: Served, uuid: str) -> TaskState | None:
    return worker.app.backend.get_state(uuid)


@pytest.mark.parametrize("kind", ["hash", "string", "other task's state"])
def test_uuid_naming_a_foreign_key(worker: Served, caplog: pytest.LogCaptureFixture,
                                   kind: str) -> None:
    """A valid message whose UUID names another application's key: the key is never written
    over, the message is parked saying why, the good tasks of the same batches run once."""
    foreign = f"foreign-{new_uuid()}"
    if kind == "hash":
        worker.client.hset(foreign, mapping={"owner": "someone else"})
    elif kind == "string":
        worker.client.set(foreign, b"session data of another app")
    else:
        worker.client.set(foreign, TaskState(new_uuid(), "x", "SUCCESS").to_json())
    before = worker.client.dump(foreign)
    good = worker.machinery_good(6)
    worker.push_machinery(machinery_body("h.record", "bad", uuid=foreign))
    good += worker.machinery_good(6)
    reasons = worker.wait_parked(1)
    assert "no task state is written over it" in reasons[0], reasons
    worker.assert_exactly_once(good, settle=1.0)
    assert worker.runs["bad"] == 0
    assert worker.client.dump(foreign) == before
    worker.still_serving()
    no_batch_failures(caplog)


def _chain(depth: int) -> bytes:
    inner: dict[str, object] = {"UUID": new_uuid(), "Name": "h.record", "Immutable": True,
                                "Args": [{"Type": "string", "Value": "leaf"}]}
    for _ in range(depth):
        inner = {"UUID": new_uuid(), "Name": "h.record", "Immutable": True,
                 "Args": [{"Type": "string", "Value": "chain"}], "OnSuccess": [inner]}
    return json.dumps(inner).encode()


HUGE = "1" * 100_000


@pytest.mark.parametrize("body, uuid, why", [
    (b'{"UUID":"huge-int","Name":"h.record","Args":[{"Name":"","Type":"int64","Value":'
     + HUGE.encode() + b"}]}", "huge-int", "out of range for int64"),
    (b'{"UUID":"huge-retry","Name":"h.record","RetryCount":' + b"7" * 4301 + b"}",
     "huge-retry", "Signature.RetryCount of type int"),
    (_chain(300), "", f"more than {MAX_NESTING} levels deep"),
])
def test_undecodable_or_untranslatable_say_why(worker: Served, body: bytes, uuid: str,
                                               why: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    good = worker.machinery_good(5)
    worker.push_machinery(body)
    good += worker.machinery_good(5)
    reasons = worker.wait_parked(1)
    assert why in reasons[0] and "see worker log" not in reasons[0], reasons
    assert len(reasons[0]) < 2000, len(reasons[0])
    worker.assert_exactly_once(good)
    assert worker.runs["chain"] == 0
    if uuid:
        state = _state(worker, uuid)
        assert state is not None and state.state == "FAILURE" and why in state.error, state
    worker.still_serving()
    no_batch_failures(caplog)


def test_a_chain_at_the_nesting_limit_runs(worker: Served) -> None:
    worker.push_machinery(_chain(MAX_NESTING))
    worker.wait_ran(["leaf"], timeout=60)
    assert worker.runs["chain"] == MAX_NESTING and worker.reasons() == []


def test_retry_timeout_near_int64_max(worker: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    uuid = new_uuid()
    worker.push_machinery(machinery_body("h.fail", "doomed", uuid=uuid, retry_count=3,
                                         retry_timeout=2**63 - 1))
    good = worker.machinery_good(5)
    reasons = worker.wait_parked(1)
    assert "cannot be retried" in reasons[0] and "century" in reasons[0], reasons
    state = _state(worker, uuid)
    assert state is not None and state.state == "FAILURE", state
    assert "failed on purpose" in state.error and "not retried" in state.error, state.error
    worker.assert_exactly_once([*good, "doomed"])
    no_batch_failures(caplog)
