"""msgspec's typed reading (bridge.protocol.typed_decode) gives what the exact path gives,
on whole messages changed where a typed reader and Go's rules could part: repeated keys,
case-folded names, nulls over values, float literals, -0, surrogates, bad UTF-8, trailing
bytes, out-of-range integers, deep chains. And Go's own messages do take it."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.protocol import gojson
from bridge.protocol.machinery import MAX_NESTING, Signature, TaskState
from tests.unit.test_fast_paths import GOLDEN_FILES, assert_same, identical

_SIG_HEAD = (b'{"UUID":"task_1","Name":"add","RoutingKey":"q","ETA":"2024-05-06T07:08:09.5+02:00",'
             b'"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"a","Type":"float64",'
             b'"Value":1.50},{"Name":"","Type":"[]string","Value":["x","y"]}],'
             b'"Headers":{"k":{"n":1E5,"m":[true,null]}},"Priority":3,"Immutable":false,'
             b'"RetryCount":2,"RetryTimeout":0,"OnSuccess":null,"OnError":[null],'
             b'"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"",'
             b'"StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":true')
SIGNATURE = _SIG_HEAD + b"}"
_STATE_HEAD = (b'{"TaskUUID":"t","TaskName":"n","State":"SUCCESS","Results":[null,{"Type":'
               b'"float64","Value":2.0}],"Error":"","CreatedAt":"2024-05-06T07:08:09Z",'
               b'"TTL":3600')
STATE = _STATE_HEAD + b"}"


def _chain(links: int) -> bytes:
    """A Signature with ``links`` Signatures nested one in the next's OnSuccess."""
    text = SIGNATURE
    for _ in range(links):
        text = SIGNATURE.replace(b'"OnSuccess":null', b'"OnSuccess":[' + text + b"]", 1)
    return text


WHOLE_MESSAGES = [
    SIGNATURE, STATE, b"  \n" + SIGNATURE, SIGNATURE + b" trailing", SIGNATURE + b"{",
    _SIG_HEAD + b',"Args":null}', _SIG_HEAD + b',"Priority":null}',
    _SIG_HEAD + b',"Priority":7}', _SIG_HEAD + b',"Headers":{"a":1,"b":2,"a":3}}',
    _SIG_HEAD + b',"uuid":"folded"}', _SIG_HEAD + b',"Extra":1}',
    _SIG_HEAD + b',"\xe2\x84\xaaey":1}', _SIG_HEAD + b',"ETA":null}',
    SIGNATURE.replace(b'"Priority":3', b'"Priority":3.0'),
    SIGNATURE.replace(b'"Priority":3', b'"Priority":256'),
    SIGNATURE.replace(b'"RetryCount":2', b'"RetryCount":9223372036854775808'),
    SIGNATURE.replace(b'"RetryCount":2', b'"RetryCount":-9223372036854775808'),
    SIGNATURE.replace(b'"RetryCount":2', b'"RetryCount":-0'),
    SIGNATURE.replace(b'"Value":1.50', b'"Value":-0'),
    SIGNATURE.replace(b'"Value":1.50', b'"Value":-0.0'),
    SIGNATURE.replace(b'"Value":1.50', b'"Value":123456789012345678901234567890'),
    SIGNATURE.replace(b'"Value":1.50', b'"Value":1.5,"Value":{"z":1,"a":2}'),
    SIGNATURE.replace(b'"Name":"a"', b'"Name":"\\ud800"'),
    SIGNATURE.replace(b'"Name":"a"', b'"Name":"\\ud83d\\ude00 \\u003c"'),
    SIGNATURE.replace(b'"Name":"a"', b'"Name":"\xff"'),
    SIGNATURE.replace(b'"Name":"a"', b'"Name":null'),
    SIGNATURE.replace(b'"Immutable":false', b'"Immutable":0'),
    SIGNATURE.replace(b'"ETA":"2024-05-06T07:08:09.5+02:00"', b'"ETA":"2024-05-06T07:08:09"'),
    SIGNATURE.replace(b'"ETA":"2024-05-06T07:08:09.5+02:00"', b'"ETA":"2024-13-06T07:08:09Z"'),
    SIGNATURE.replace(b'"Headers":{', b'"Headers":{"n":NaN,'),
    SIGNATURE.replace(b'"OnError":[null]', b'"OnError":[5]'),
    SIGNATURE.replace(b'"ChordCallback":null', b'"ChordCallback":' + SIGNATURE),
    SIGNATURE.replace(b'"ChordCallback":null', b'"ChordCallback":{"UUID":"partial"}'),
    SIGNATURE.replace(b'"Args":[', b'"Args":[null,'),
    _chain(MAX_NESTING), _chain(MAX_NESTING + 1),
    _STATE_HEAD + b',"TTL":5}', _STATE_HEAD + b',"Results":null}',
    _STATE_HEAD + b',"State":null}', _STATE_HEAD + b',"state":"FAILURE"}',
    STATE.replace(b'"TTL":3600', b'"TTL":3600.0'),
    STATE.replace(b'"CreatedAt":"2024-05-06T07:08:09Z"', b'"CreatedAt":null'),
    STATE.replace(b'{"Type":"float64","Value":2.0}', b'{"Type":"float64"}'),
]


@pytest.mark.parametrize("data", WHOLE_MESSAGES)
def test_whole_messages_decode_the_same_both_ways(data: bytes) -> None:
    for cls in (Signature, TaskState):
        assert_same(cls, data)


@pytest.mark.parametrize(
    "data", [SIGNATURE, SIGNATURE.replace(b'"Name":"a"', b'"Name":"\xc3\xa9"')])
def test_text_and_buffers_read_as_bytes_do(data: bytes) -> None:
    exact = Signature._from_json_exact(data)
    for given in (data.decode(), bytearray(data), memoryview(data)):
        assert identical(Signature.from_json(given), exact)
    lone = data.decode().replace('"Name":"add"', '"Name":"\ud800"')
    assert identical(Signature.from_json(lone), Signature._from_json_exact(lone))


def test_go_messages_take_the_typed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not dead code: Go's own messages are read without the pairs path."""
    def refuse(data: Any) -> Any:
        raise AssertionError("the pairs path was taken")

    monkeypatch.setattr(gojson, "loads_raw", refuse)
    taken = 0
    for path in GOLDEN_FILES:
        kind = Signature if path.name.startswith("signature") else TaskState
        if not path.name.startswith(("signature", "task_state")):
            continue
        try:
            kind.from_json(path.read_bytes())
        except AssertionError:
            continue
        taken += 1
    assert taken > 100
    assert isinstance(Signature.from_json(SIGNATURE), Signature)
    assert isinstance(TaskState.from_json(STATE), TaskState)

