"""The SQS broker's pure parts: broker URLs, delay plans and hops, names, ETAs in raw bodies."""

from __future__ import annotations

import pytest

from bridge.brokers.sqs import dedup_id
from bridge.brokers.sqs_client import SqsLocation
from bridge.brokers.sqs_layout import (
    ATTR_DUE,
    ATTR_QUEUE,
    DELAY_QUEUE,
    MAX_DELAY,
    dead_queue_name,
    eta_of,
    plan,
    replan,
    xml_text,
)
from bridge.config import ConfigError
from bridge.protocol.gotime import GoTime, unix_nano
from bridge.protocol.machinery import Signature

S = 1_000_000_000
NOW = 1_800_000_000 * S


@pytest.mark.parametrize(("url", "prefix", "endpoint", "region"), [
    ("https://sqs.us-east-2.amazonaws.com/123456789012",
     "https://sqs.us-east-2.amazonaws.com/123456789012", None, "us-east-2"),
    ("https://sqs.cn-north-1.amazonaws.com.cn/1/", "https://sqs.cn-north-1.amazonaws.com.cn/1",
     None, "cn-north-1"),
    ("https://eu-west-1.queue.amazonaws.com/42", "https://eu-west-1.queue.amazonaws.com/42",
     None, "eu-west-1"),
    ("http://127.0.0.1:4566/000000000000", "http://127.0.0.1:4566/000000000000",
     "http://127.0.0.1:4566", None),
    ("sqs://127.0.0.1:5000", "http://127.0.0.1:5000/123456789012", "http://127.0.0.1:5000",
     None),
    ("sqs://localhost:9324/42", "http://localhost:9324/42", "http://localhost:9324", None),
    ("sqs://", None, None, None),
])
def test_broker_urls(url: str, prefix: str | None, endpoint: str | None,
                     region: str | None) -> None:
    location = SqsLocation.parse(url)
    assert (location.prefix, location.endpoint_url, location.region) == (prefix, endpoint, region)


def test_credentials_in_an_sqs_url_never_reach_queue_urls() -> None:
    location = SqsLocation.parse("sqs://AKIA%2F1:s%40cret@127.0.0.1:5000")
    assert (location.access_key, location.secret_key) == ("AKIA/1", "s@cret")
    assert location.prefix == "http://127.0.0.1:5000/123456789012"
    assert "cret" not in location.describe()


def test_an_endpoint_override_wins_and_other_schemes_are_refused() -> None:
    assert SqsLocation.parse("https://sqs.us-east-1.amazonaws.com/1",
                             "http://h:1").endpoint_url == "http://h:1"
    with pytest.raises(ConfigError, match="not an SQS queue URL prefix"):
        SqsLocation.parse("ftp://host/1")


def test_due_now_goes_straight_to_its_queue() -> None:
    out = plan("q", "b", due_ns=NOW, now_ns=NOW)
    assert (out.queue, out.delay, out.attributes) == ("q", 0, {})


def test_delay_seconds_round_up_so_a_task_is_never_early() -> None:
    assert plan("q", "b", due_ns=NOW + S // 10, now_ns=NOW).delay == 1  # Go: 0, i.e. early
    assert plan("q", "b", due_ns=NOW + 2 * S + 1, now_ns=NOW).delay == 3
    assert plan("q", "b", due_ns=NOW + MAX_DELAY * S, now_ns=NOW).delay == MAX_DELAY


def test_beyond_the_limit_hops_through_the_delay_queue_until_the_last_900_s() -> None:
    due = NOW + 3600 * S
    hop = plan("q", "body", due_ns=due, now_ns=NOW, group="g", dedup="d")
    assert (hop.queue, hop.delay, hop.body, hop.group) == (DELAY_QUEUE, MAX_DELAY, "body", None)
    assert hop.attributes[ATTR_QUEUE] == "q" and hop.attributes[ATTR_DUE] == str(due)
    now, hops = NOW, 0
    while hop.queue == DELAY_QUEUE:  # each hop ends on time: re-plan then
        now += hop.delay * S
        nxt = replan(hop.body, hop.attributes, now_ns=now)
        assert nxt is not None
        hop, hops = nxt, hops + 1
    assert (hop.queue, hop.group, hop.dedup, hops) == ("q", "g", "d", 3)
    assert now + hop.delay * S == due  # lands exactly at the ETA


def test_a_late_mover_still_lands_at_the_eta() -> None:
    due = NOW + 2000 * S
    first = plan("q", "b", due_ns=due, now_ns=NOW)
    late = NOW + first.delay * S + 300 * S
    last = replan("b", first.attributes, now_ns=late)
    assert last is not None and last.queue == "q" and late + last.delay * S == due


def test_fifo_etas_wait_in_the_delay_queue_until_due() -> None:
    hop = plan("jobs.fifo", "b", due_ns=NOW + 5 * S, now_ns=NOW, group="g", dedup="d")
    assert (hop.queue, hop.delay) == (DELAY_QUEUE, 5)
    done = replan("b", hop.attributes, now_ns=NOW + 5 * S)
    assert done is not None and (done.queue, done.delay, done.group) == ("jobs.fifo", 0, "g")


def test_scaled_down_limit() -> None:
    hop = plan("q", "b", due_ns=NOW + 5 * S, now_ns=NOW, max_delay=2)
    assert (hop.queue, hop.delay) == (DELAY_QUEUE, 2)


def test_a_message_without_our_attributes_is_not_ours() -> None:
    assert replan("b", {}, now_ns=NOW) is None
    assert replan("b", {ATTR_QUEUE: "q", ATTR_DUE: "soon"}, now_ns=NOW) is None


def test_names_and_attribute_text() -> None:
    assert dead_queue_name("tasks") == "tasks-bridge-dead"
    assert dead_queue_name("jobs.fifo") == "jobs-bridge-dead.fifo"
    assert xml_text("a\x00b\ud800c" + "x" * 2000) == "a?b?c" + "x" * 995


def test_eta_of_a_raw_body_is_the_signature_s_own() -> None:
    eta = GoTime.from_unix_nano(NOW + 123)
    body = Signature(uuid="u", name='"ETA":"2001-01-01T00:00:00Z"', eta=eta,
                     on_success=[Signature(eta=GoTime.from_unix_nano(NOW + S))]).to_json()
    assert eta_of(body) == unix_nano(eta)
    no_eta = Signature(on_success=[Signature(eta=GoTime.from_unix_nano(NOW))]).to_json()
    assert eta_of(no_eta) == 0
    assert eta_of(b"not json") == 0


def test_a_retry_gets_its_own_deduplication_id() -> None:
    first = Signature(uuid="task_1")
    retry = Signature(uuid="task_1", sqs_receipt_handle="handle-of-the-first-delivery")
    assert dedup_id(first) == "task_1"
    assert dedup_id(retry).startswith("task_1-") and dedup_id(retry) != dedup_id(
        Signature(uuid="task_1", sqs_receipt_handle="handle-of-another-delivery"))
