"""machinery's DynamoDB items (bridge.protocol.dynamodb_items): Go's ``%v`` text of results
and reading it back, TaskState and GroupMeta items both ways, v1's NULLs. The texts here are
what Go machinery wrote on a real endpoint (tests/integration/test_dynamodb_backend.py
compares whole tables with a Go worker's; tests/interop/test_live_dynamodb.py compares
``%v`` with Go's own fmt on random floats)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import DecodeError
from bridge.protocol.dynamodb_items import (
    go_text,
    group_meta_from_item,
    group_meta_item,
    read_text,
    task_state_from_item,
    task_state_item,
    task_state_update,
)
from bridge.protocol.gotime import GO_ZERO_TIME
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RETRY,
    SUCCESS,
    GroupMeta,
    TaskResult,
    TaskState,
)
from bridge.types import SUPPORTED_TYPES, to_python, to_result
from tests.strategies import group_metas, times, typed_value

# (Type, wire value, what Go machinery v1.10.8 / v2.0.16 stored as Value)
GO_WROTE = [
    ("int64", -(2**63), "-9223372036854775808"), ("uint64", 2**64 - 1, "18446744073709551615"),
    ("bool", True, "true"), ("float64", 3.0, "3"), ("float64", 1e20, "1e+20"),
    ("float64", 1e21, "1e+21"), ("float64", 1e-06, "1e-06"), ("float64", 123456789.0,
                                                               "1.23456789e+08"),
    ("float64", 5e-324, "5e-324"), ("float64", -0.0, "-0"), ("float64", 1 / 3,
                                                           "0.3333333333333333"),
    ("float32", 0.10000000149011612, "0.1"), ("float32", 16777216.0, "1.6777216e+07"),
    ("float32", 3.4028234663852886e38, "3.4028235e+38"), ("float32", 1.401298464324817e-45,
                                                          "1e-45"),
    ("string", "<script>a && b</script>", "<script>a && b</script>"), ("string", "", ""),
    ("[]uint8", "AP/+PD4m", "[0 255 254 60 62 38]"), ("[]uint8", "", "[]"),
    ("[]int8", [-128, 127, 0], "[-128 127 0]"), ("[]bool", [True, False], "[true false]"),
    ("[]float32", [0.10000000149011612, 3.0, -0.0], "[0.1 3 -0]"),
    ("[]float64", [3.0, 1e20, 5e-324, 0.1], "[3 1e+20 5e-324 0.1]"),
    ("[]string", ["a", "<&>", "é 😀"], "[a <&> é 😀]"), ("[]string", [], "[]"),
    ("[]int64", None, "[]"),
]


@pytest.mark.parametrize(("go_type", "wire", "text"), GO_WROTE)
def test_go_text_is_what_go_wrote(go_type: str, wire: Any, text: str) -> None:
    assert go_text(go_type, wire) == text


@pytest.mark.parametrize(("go_type", "wire", "text"), GO_WROTE)
def test_read_text_gives_the_wire_value_back_where_unambiguous(go_type: str, wire: Any,
                                                               text: str) -> None:
    expected = text if go_type == "[]string" else [] if wire is None else wire
    assert read_text(go_type, text) == expected


def test_other_values_print_as_go_prints_them() -> None:
    assert go_text("main.Point", {"Y": 2, "X": 1.5}) == "map[X:1.5 Y:2]"
    assert go_text("[]interface {}", [1, "a", None, True]) == "[1 a <nil> true]"
    assert go_text("float64", float("nan")) == "NaN"
    assert go_text("float64", float("-inf")) == "-Inf"
    assert go_text("string", "lone \ud800 surrogate") == "lone \ufffd surrogate"


@pytest.mark.parametrize(("go_type", "text"), [
    ("int8", "128"), ("uint8", "-1"), ("int64", "1.5"), ("bool", "True"), ("float64", "NaN"),
    ("float64", "+Inf"), ("[]int64", "[1 x]"), ("[]int64", "1 2"), ("main.Point", "{1 2}"),
])
def test_text_that_is_not_the_types_stays_text(go_type: str, text: str) -> None:
    assert read_text(go_type, text) == text


@given(st.sampled_from(sorted(SUPPORTED_TYPES - {"string", "[]string"})).flatmap(
    lambda t: st.tuples(st.just(t), typed_value(t))))
def test_every_unambiguous_type_round_trips(pair: tuple[str, Any]) -> None:
    go_type, value = pair
    result = to_result(value, go_type)
    text = go_text(result.type, result.value)
    assert to_python(result.type, read_text(result.type, text)) == to_python(result.type,
                                                                             result.value)


def test_pending_item_is_the_whole_struct() -> None:
    state = TaskState("task_1", "add", PENDING, created_at=GO_ZERO_TIME)
    assert task_state_item(state) == {
        "TaskUUID": {"S": "task_1"}, "TaskName": {"S": "add"}, "State": {"S": PENDING},
        "Results": {"NULL": True}, "Error": {"S": ""},
        "CreatedAt": {"S": "0001-01-01T00:00:00Z"}, "TTL": {"N": "0"}}


def test_updates_set_what_go_sets() -> None:
    retry = task_state_update(TaskState("t", state=RETRY), 99)
    assert retry.expression == "SET #S = :s" and retry.values == {":s": {"S": RETRY}}
    failure = task_state_update(TaskState("t", state=FAILURE, error="boom"), 99)
    assert failure.expression == "SET #S = :s, #E = :e, #T = :t"
    assert failure.names == {"#S": "State", "#E": "Error", "#T": "TTL"}
    assert failure.values[":t"] == {"N": "99"}
    success = task_state_update(TaskState("t", state=SUCCESS, results=[
        TaskResult("int64", 5)]), 99)
    assert success.expression == "SET #S = :s, #T = :t, #R = :r"
    assert success.values[":r"] == {"L": [{"M": {"Type": {"S": "int64"},
                                                 "Value": {"S": "5"}}}]}
    empty = task_state_update(TaskState("t", state=SUCCESS, results=[]), 99)
    assert empty.expression == "SET #S = :s, #T = :t"  # Go leaves Results as they were


@given(times)
def test_a_carried_name_and_time_are_set_as_go_can_read_them(created: Any) -> None:
    update = task_state_update(TaskState("t", "name", SUCCESS, created_at=created), 1)
    assert update.names["#N"] == "TaskName" and update.names["#C"] == "CreatedAt"
    item = {"TaskUUID": {"S": "t"}, "CreatedAt": update.values[":c"]}
    assert task_state_from_item(item).created_at == created


def test_v1_items_read_like_v2s() -> None:
    item = {"TaskUUID": {"S": "t"}, "TaskName": {"S": "add"}, "State": {"S": SUCCESS},
            "Results": {"L": [{"M": {"Type": {"S": "int64"}, "Value": {"S": "3"}}}]},
            "Error": {"NULL": True}, "CreatedAt": {"S": "2026-12-02T18:20:29.899498715Z"},
            "TTL": {"N": "1796239229"}}
    state = task_state_from_item(item)
    assert (state.error, state.results, state.ttl) == ("", [TaskResult("int64", 3)],
                                                        1796239229)
    assert state.created_at.nanosecond == 715


def test_results_of_other_shapes_are_plain() -> None:
    item = {"TaskUUID": {"S": "t"}, "Results": {"L": [
        {"M": {"Type": {"S": "int64"}, "Value": {"N": "7"}}}, {"NULL": True},
        {"M": {"Type": {"S": "[]string"}, "Value": {"L": [{"S": "a"}]}}}]}}
    assert task_state_from_item(item).results == [
        TaskResult("int64", 7), None, TaskResult("[]string", ["a"])]


@pytest.mark.parametrize(("name", "value"), [
    ("State", {"N": "1"}), ("TTL", {"S": "x"}), ("CreatedAt", {"S": "yesterday"}),
    ("Results", {"S": "[]"}),
])
def test_a_broken_item_is_a_decode_error_naming_it(name: str, value: Any) -> None:
    with pytest.raises(DecodeError, match=rf"task_states item 't': attribute {name}"):
        task_state_from_item({"TaskUUID": {"S": "t"}, name: value})


@given(group_metas)
def test_group_meta_items_round_trip(meta: GroupMeta) -> None:
    assert group_meta_from_item(group_meta_item(meta)) == meta


def test_group_meta_lock_null_reads_false_as_in_go() -> None:
    item = {"GroupUUID": {"S": "g"}, "TaskUUIDs": {"SS": ["a", "b"]},
            "ChordTriggered": {"BOOL": True}, "Lock": {"NULL": True}}
    meta = group_meta_from_item(item)
    assert (meta.task_uuids, meta.chord_triggered, meta.lock) == (["a", "b"], True, False)
