"""bridge.types: Go type strings ⇄ typed Python values."""

from __future__ import annotations

from typing import Any

import pytest

from bridge import ArgTranslationError, Int8, Int32, Uint16
from bridge.protocol.gojson import JSONNumber, loads
from bridge.protocol.machinery import Arg, TaskResult
from bridge.types import (
    SUPPORTED_TYPES,
    Bytes,
    Float32,
    function_go_types,
    go_type_of,
    infer_go_type,
    result_to_python,
    to_arg,
    to_args,
    to_python,
    to_result,
    to_wire,
)


def test_supported_types_are_machinerys_typesmap() -> None:
    scalars = ["bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16",
               "uint32", "uint64", "float32", "float64", "string"]
    assert {*scalars, *(f"[]{t}" for t in scalars), "[]byte"} == SUPPORTED_TYPES


@pytest.mark.parametrize(
    ("go_type", "wire", "expected"),
    [
        ("int8", -128, -128), ("int8", 127, 127), ("uint8", 255, 255),
        ("int64", -(2**63), -(2**63)), ("uint64", 2**64 - 1, 2**64 - 1),
        ("int", JSONNumber("-0"), 0), ("float64", 5, 5.0), ("float64", JSONNumber("1e3"), 1000.0),
        ("float32", JSONNumber("1.1"), 1.100000023841858), ("bool", True, True),
        ("string", "<é>", "<é>"), ("[]byte", "AAEC/w==", b"\x00\x01\x02\xff"),
        ("[]uint8", [0, 255], b"\x00\xff"), ("[]uint16", "AAE=", [0, 1]),
        ("[]string", None, []), ("[]byte", None, b""), ("[]int32", [1, -2], [1, -2]),
        ("[]float32", [0.1], [0.10000000149011612]), ("[]bool", [], []),
        ("[]byte", "AA\nEC", b"\x00\x01\x02"),
    ],
)
def test_to_python_reads_like_a_go_worker(go_type: str, wire: Any, expected: Any) -> None:
    value = to_python(go_type, wire)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("go_type", "wire", "reason"),
    [
        ("int8", 300, "300 is out of range for int8"),       # Go silently stores 44
        ("uint8", 256, "256 is out of range for uint8"),     # Go silently stores 0
        ("uint", -1, "-1 is out of range for uint"),
        ("int64", JSONNumber("5.0"), 'parsing "5.0": invalid syntax'),
        ("int64", "5", "'5' is not int64"),
        ("int64", True, "True is not int64"),
        ("float64", "1.5", "'1.5' is not float64"),
        ("float64", JSONNumber("1e400"), "1e400 is not a finite float64"),
        ("float32", 1e39, "is out of range for float32"),
        ("float64", float("nan"), "is not a finite float64"),
        ("[]int64", True, "True is not []int64"),           # this panics a Go worker
        ("[]string", {"a": 1}, "is not []string"),         # so does a non-empty object
        ("[]int64", "abc", "is not []int64"),
        ("[]int8", [1, 200], "element 1: 200 is out of range for int8"),
        ("[]byte", "not base64!", "is not valid base64"),
        ("main.Point", {"X": 1}, "main.Point is not one of supported types"),
        ("bool", 1, "1 is not bool"),
        ("string", None, "None is not string"),
    ],
)
def test_to_python_rejects_what_go_would_corrupt_or_die_on(go_type: str, wire: Any,
                                                           reason: str) -> None:
    with pytest.raises(ArgTranslationError) as info:
        to_python(go_type, wire, position=2, name="count")
    assert reason in str(info.value)
    assert str(info.value).startswith(f"arg 2 ('count', {go_type}): ")
    assert info.value.go_type == go_type and info.value.position == 2


@pytest.mark.parametrize(
    ("value", "go_type", "wire"),
    [
        (1, "int64", 1), (True, "bool", True), (2.5, "float64", 2.5), ("s", "string", "s"),
        (b"\x00\xff", "[]byte", "AP8="), ([1, 2], "[]int64", [1, 2]), (["a"], "[]string", ["a"]),
        ([True], "[]bool", [True]), ([0.5], "[]float64", [0.5]),
    ],
)
def test_inference(value: Any, go_type: str, wire: Any) -> None:
    assert infer_go_type(value) == go_type
    assert to_arg(value, name="n") == Arg("n", go_type, wire)


@pytest.mark.parametrize("value", [{"a": 1}, None, [1, "a"], [], [[1]], object(), [1, 2.0]])
def test_inference_refuses_what_has_no_go_type(value: Any) -> None:
    with pytest.raises(ArgTranslationError):
        to_arg(value)


def test_to_arg_with_explicit_types() -> None:
    assert to_arg(3, "float64").value == 3.0
    assert to_arg(1.1, "float32").value == 1.100000023841858
    assert to_arg([1, 2], "[]uint8").value == "AQI="
    assert to_arg(bytearray(b"ab"), "[]uint8").value == "YWI="
    assert to_arg(None, "[]string").value is None
    assert to_arg([1, 2], "[]uint16").value == [1, 2]
    with pytest.raises(ArgTranslationError, match=r"5\.0 is a float: int64 needs an int"):
        to_arg(5.0, "int64")
    with pytest.raises(ArgTranslationError, match=r"arg 1 \(\[\]int8\): element 0: 128"):
        to_args(["x", [128]], [None, "[]int8"])


def test_results_are_typed_like_a_go_worker_writes_them() -> None:
    assert to_result(b"ab") == TaskResult("[]uint8", "YWI=")
    assert to_result(7) == TaskResult("int64", 7)
    assert result_to_python(TaskResult("[]uint8", "YWI=")) == b"ab"
    point = loads(b'{"X":1,"Y":[2.5]}')
    assert result_to_python(TaskResult("main.Point", point)) == {"X": 1, "Y": [2.5]}
    assert result_to_python(TaskResult("map[string]interface {}", {"a": None})) == {"a": None}


def test_annotations_give_exact_go_types() -> None:
    def task(a: Int32, b: list[Int8], c, d: Bytes, e: list[str], f: Float32,  # type: ignore[no-untyped-def]
             g: tuple[Uint16, ...]) -> tuple[list[str], float]:
        raise NotImplementedError

    params, results = function_go_types(task)
    assert params == ["int32", "[]int8", None, "[]byte", "[]string", "float32", "[]uint16"]
    assert results == ["[]string", "float64"]

    def nothing(x: int) -> None:
        raise NotImplementedError

    assert function_go_types(nothing) == (["int64"], [])
    assert go_type_of(bytes) == "[]byte" and go_type_of(list[bool]) == "[]bool"
    for bad in (dict[str, int], list[list[int]], tuple[int, str]):
        with pytest.raises(TypeError):
            go_type_of(bad)


@pytest.mark.parametrize("value", [0, 7, -(2**63), 2**63 - 1, 2**63, -(2**63) - 1, "", "é",
                                   True, False, 1.5, b"x", [1, 2], None, {"a": 1}])
def test_inferred_to_arg_is_the_inference_then_the_wire_form(value: Any) -> None:
    """``to_arg``'s quick way for plain ints, strings and flags gives what inferring the Go
    type and writing the wire form give, and refuses what they refuse."""
    try:
        go_type = infer_go_type(value)
        expected = Arg(name="n", type=go_type, value=to_wire(go_type, value))
    except ArgTranslationError as exc:
        with pytest.raises(ArgTranslationError) as raised:
            to_arg(value, name="n")
        assert raised.value.reason == exc.reason
        return
    got = to_arg(value, name="n")
    assert got == expected and type(got.value) is type(expected.value)
