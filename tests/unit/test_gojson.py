"""Go encoding/json rules, checked on the cases machinery-wire.md observed from Go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import DecodeError, EncodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber, Struct, format_float32, format_float64, quote
from bridge.protocol.gotime import GO_ZERO_TIME, GoTime, format_rfc3339, parse_rfc3339, unix_nano


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<a&b>\u2028é", '"\\u003ca\\u0026b\\u003e\\u2028é"'),
        ("\u2029", '"\\u2029"'),
        ('q"b\\', '"q\\"b\\\\"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1f\x7f", '"\\u0000\\u0001\\u001f\x7f"'),
        ("\ud800x", '"\\ufffdx"'),
        ("plain", '"plain"'),
        ("日本 😀", '"日本 😀"'),
    ],
)
def test_quote_escapes_like_go(text: str, expected: str) -> None:
    assert quote(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3.0, "3"), (1e20, "100000000000000000000"), (1e21, "1e+21"), (1e-6, "0.000001"),
        (1e-7, "1e-7"), (123456789.0, "123456789"), (2.5, "2.5"), (-0.0, "-0"), (0.0, "0"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (1e-10, "1e-10"), (0.1, "0.1"), (-1.5e-7, "-1.5e-7"),
    ],
)
def test_float64_formatting(value: float, expected: str) -> None:
    assert format_float64(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, "0.1"), (1.1, "1.1"), (3.4028234663852886e38, "3.4028235e+38"), (1e-45, "1e-45"),
        (16777216.0, "16777216"), (-2175463.75, "-2175463.8"), (1e-6, "0.000001"),
    ],
)
def test_float32_formatting(value: float, expected: str) -> None:
    assert format_float32(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_cannot_be_written(value: float) -> None:
    with pytest.raises(EncodeError):
        gojson.dumps(value)


def test_maps_are_sorted_structs_keep_order_bytes_are_base64() -> None:
    value = Struct((("Z", {"b": 1, "a": [True, None], "é": "x"}), ("A", b"\x00\x01\x02\xff")))
    assert gojson.dumps(value) == b'{"Z":{"a":[true,null],"b":1,"\xc3\xa9":"x"},"A":"AAEC/w=="}'


def test_json_number_literals_are_written_back_verbatim() -> None:
    value = gojson.loads(b'{"a":5.0,"b":1e3,"c":-0,"d":12345678901234567890123}')
    assert gojson.dumps(value) == b'{"a":5.0,"b":1e3,"c":-0,"d":12345678901234567890123}'
    assert isinstance(value["a"], JSONNumber) and value["a"] == 5.0


def test_decoder_reads_first_value_and_skips_whitespace() -> None:
    assert gojson.loads(b' \r\n\t{"a":1} trailing garbage') == {"a": 1}
    with pytest.raises(DecodeError):
        gojson.loads(b"   ")
    with pytest.raises(DecodeError):
        gojson.loads(b"{'a': 1}")
    with pytest.raises(DecodeError):
        gojson.loads(b"NaN")


def test_invalid_utf8_becomes_one_replacement_per_byte() -> None:
    assert gojson.loads(b'"a\xe2\x82b\xffc"') == "a\ufffd\ufffdb\ufffdc"
    assert gojson.loads(b'"\\ud800"') == "\ufffd"


def test_case_insensitive_field_match_prefers_exact_and_last_wins() -> None:
    from bridge.protocol.machinery import Signature

    sig = Signature.from_json('{"name":"a","uuid":"u","NAME":"b","other":1,'
                              '"Bro\u212aerMessageGroupId":"k","\u017fQSReceiptHandle":"s",'
                              '"BrokerMeßageGroupId":"no"}')
    assert (sig.name, sig.uuid, sig.broker_message_group_id, sig.sqs_receipt_handle) == (
        "b", "u", "k", "s")


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-06T07:08:09.123456789Z", "2024-05-06T07:08:09.12Z", "2024-05-06T07:08:09Z",
        "2024-05-06T07:08:09.0000005+02:00", "2024-05-06T07:08:09.1-05:30", "0001-01-01T00:00:00Z",
    ],
)
def test_times_round_trip_with_nanoseconds(text: str) -> None:
    assert format_rfc3339(parse_rfc3339(text)) == text


def test_time_parsing_rules() -> None:
    assert format_rfc3339(parse_rfc3339("2024-05-06T07:08:09.120000000Z")) == (
        "2024-05-06T07:08:09.12Z")
    assert format_rfc3339(parse_rfc3339("2024-05-06T07:08:09.1234567891234Z")) == (
        "2024-05-06T07:08:09.123456789Z")
    assert format_rfc3339(parse_rfc3339("2024-05-06T07:08:09-00:00")) == "2024-05-06T07:08:09Z"
    for bad in ["2024-05-06T07:08:09", "2024-05-06 07:08:09Z", "2024-02-30T00:00:00Z",
                "2024-05-06T24:00:00Z", "2024-05-06T07:08:09+24:00", "x"]:
        with pytest.raises(DecodeError):
            parse_rfc3339(bad)


@given(st.integers(-(10**19), 253402300799 * 10**9 + 999_999_999))
def test_from_unix_nano_is_the_epoch_plus_the_duration(ns: int) -> None:
    """The quick way (gmtime) is the arithmetic way, to the nanosecond, in UTC."""
    made = GoTime.from_unix_nano(ns)
    micros, rest = divmod(ns, 1000)
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    assert type(made) is GoTime and made.tzinfo is UTC and made.nanosecond == rest
    assert datetime(*made.timetuple()[:6], made.microsecond, tzinfo=UTC) == expected
    assert unix_nano(made) == ns
    assert format_rfc3339(made) == format_rfc3339(GoTime.from_datetime(expected, rest))


def test_gotime_keeps_nanoseconds_in_equality_and_unix_nano() -> None:
    a = parse_rfc3339("2024-05-06T07:08:09.123456789Z")
    b = parse_rfc3339("2024-05-06T07:08:09.123456788Z")
    assert a != b and a.nanosecond == 789
    assert unix_nano(a) == 1714979289123456789
    assert GoTime.from_unix_nano(unix_nano(a)) == a
    assert format_rfc3339(GO_ZERO_TIME) == "0001-01-01T00:00:00Z"
    plain = datetime(2024, 5, 6, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    assert format_rfc3339(plain) == "2024-05-06T00:00:00-03:30"
    with pytest.raises(EncodeError):
        format_rfc3339(datetime(2024, 5, 6))
    assert format_rfc3339(datetime(2024, 5, 6, 1, 2, 3, 400000, tzinfo=UTC)) == (
        "2024-05-06T01:02:03.4Z")


def test_gotime_pickles_with_nanoseconds() -> None:
    import pickle

    value = parse_rfc3339("2024-05-06T07:08:09.000000001+02:00")
    assert pickle.loads(pickle.dumps(value)) == value


_MAP_TEXT = st.text(max_size=6) | st.sampled_from(
    ["a<", ">", "&", "\u2028", "\u2029", "q\"", "\\", "\ud800", "\x00\n", "é😀", ""])
_PLAIN_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _MAP_TEXT
_ODD_SCALARS = (st.floats(allow_nan=False, allow_infinity=False) | st.binary(max_size=4)
                | st.sampled_from([JSONNumber("1.50"), JSONNumber("-0"), 1.0, 1e21, -0.0]))


def _maps(keys: st.SearchStrategy[object], scalars: st.SearchStrategy[object]
          ) -> st.SearchStrategy[dict[object, object]]:
    return st.recursive(
        st.dictionaries(keys, scalars, min_size=1, max_size=5),
        lambda inner: st.dictionaries(
            keys, inner | scalars | st.lists(inner | scalars, max_size=3)
            | st.tuples(inner, scalars), min_size=1, max_size=5),
        max_leaves=20)


_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.0, 1e21, -0.0])
_MAPS = (_maps(_MAP_TEXT, _PLAIN_SCALARS) | _maps(_MAP_TEXT, _PLAIN_SCALARS | _FLOATS)
         | _maps(_MAP_TEXT, _PLAIN_SCALARS | st.binary(max_size=4))
         | _maps(_MAP_TEXT | st.integers(0, 2), _PLAIN_SCALARS | _ODD_SCALARS))


def _map_both_ways(value: object) -> list[str]:
    """The bytes (or the error) of the msgspec map path and of the key-by-key writer."""
    outcomes = []
    for fast in (True, False):
        gojson.FAST_MAPS = fast
        try:
            outcomes.append(repr(gojson.dumps(value)))
        except EncodeError as exc:
            outcomes.append(str(exc))
        finally:
            gojson.FAST_MAPS = True
    return outcomes


@settings(max_examples=300)
@given(_MAPS)
def test_maps_written_by_msgspec_are_the_key_by_key_bytes(value: dict[object, object]) -> None:
    fast, exact = _map_both_ways(value)
    assert fast == exact


def test_the_msgspec_map_path_takes_plain_maps_only() -> None:
    headers = {"lang": "py", "task": "add", "timelimit": [None, None], "retries": 0,
               "stamps": {}, "ignore_result": False, "argsrepr": "(1, 2)", "eta": None}
    assert gojson._quick_map(headers) is not None  # the case migrate writes
    for odd in ({"a": 1.0}, {"a": b"x"}, {"a": "<"}, {"a": "\u2028"}, {"a": 'q"'},
                {1: "a"}, {"a": {"b": JSONNumber("1")}}, {"a": "\ud800"}):
        assert gojson._quick_map(odd) is None, odd
    assert _map_both_ways({"b": 1, "a": [1.0, {"c": "<"}]}) == [
        repr(b'{"a":[1,{"c":"\\u003c"}],"b":1}')] * 2
