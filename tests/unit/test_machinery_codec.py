"""machinery's structs: the byte-exact examples Go produced, and Go's decoding rules."""

from __future__ import annotations

import uuid

import pytest

from bridge import DecodeError, EncodeError, GroupMeta, Signature, TaskResult, TaskState
from bridge.protocol import gojson, machinery
from bridge.protocol.gotime import parse_rfc3339
from bridge.protocol.machinery import Arg, new_uuid
from bridge.protocol.state_bytes import completed_state, pending_jsons, still_running

# Observed from Go's encoding/json (../shared/reference/machinery-wire.md §1.1, §1.7, §2).
GO_BYTES = [
    (Signature, b'{"UUID":"task_x","Name":"noop","RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":null,"Headers":null,"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}'),  # noqa: E501
    (Signature, b'{"UUID":"task_0b9e8f2a-1111-2222-3333-444455556666","Name":"add","RoutingKey":"","ETA":"2024-05-06T07:08:09.123456789Z","GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"x","Type":"float64","Value":2.5}],"Headers":{},"Priority":3,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}'),  # noqa: E501
    (Signature, b'{"UUID":"task_g1","Name":"add","RoutingKey":"","ETA":null,"GroupUUID":"group_g","GroupTaskCount":2,"Args":null,"Headers":{},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":{"UUID":"chord_cb","Name":"sum","RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":null,"Headers":null,"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false},"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}'),  # noqa: E501
    (TaskState, b'{"TaskUUID":"task_x","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":"2024-05-06T07:08:09.123456Z","TTL":0}'),  # noqa: E501
    (TaskState, b'{"TaskUUID":"task_x","TaskName":"","State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}'),  # noqa: E501
    (TaskState, b'{"TaskUUID":"task_x","TaskName":"","State":"SUCCESS","Results":[],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}'),  # noqa: E501
    (GroupMeta, b'{"GroupUUID":"group_x","TaskUUIDs":["task_a","task_b"],"ChordTriggered":false,"Lock":false,"CreatedAt":"2024-05-06T07:08:09.123456Z","TTL":0}'),  # noqa: E501
]


@pytest.mark.parametrize(("cls", "data"), GO_BYTES)
def test_go_bytes_round_trip(cls: type[Signature], data: bytes) -> None:
    assert cls.from_json(data).to_json() == data


def test_python_built_signature_equals_go_bytes() -> None:
    sig = Signature(
        uuid="task_0b9e8f2a-1111-2222-3333-444455556666", name="add",
        eta=parse_rfc3339("2024-05-06T07:08:09.123456789Z"),
        args=[Arg("", "int64", 1), Arg("x", "float64", 2.5)], headers={}, priority=3,
    )
    assert sig.to_json() == GO_BYTES[1][1]
    state = TaskState("task_x", "", "SUCCESS", [TaskResult("int64", 2)])
    assert state.to_json() == GO_BYTES[4][1]


def test_decoder_follows_go_rules() -> None:
    sig = Signature.from_json(
        b'{"uuid":"u","NAME":"n","args":[{"type":"int64","value":5}],"Unknown":1,'
        b'"eta":"2024-05-06T07:08:09+02:00","onsuccess":[null]} trailing'
    )
    assert (sig.uuid, sig.name, sig.args) == ("u", "n", [Arg("", "int64", 5)])
    assert sig.on_success == [None] and sig.eta is not None
    assert Signature.from_json(b"null") == Signature()
    assert Signature.from_json(b'{"Name":null,"Args":null,"Priority":null}') == Signature()
    assert TaskState.from_json(b'{"CreatedAt":null}').created_at == TaskState().created_at


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"RetryCount":1.0}', "cannot unmarshal number 1.0 into Go struct field "
                                "Signature.RetryCount of type int"),
        (b'{"Priority":256}', "Signature.Priority of type uint8"),
        (b'{"Priority":-1}', "Signature.Priority of type uint8"),
        (b'{"Name":5}', "cannot unmarshal number 5 into Go struct field Signature.Name"),
        (b'{"ETA":"2024-05-06T07:08:09"}', "with an offset"),
        (b'{"ETA":5}', "Signature.ETA of type time.Time"),
        (b'{"Args":{}}', "Signature.Args of type []tasks.Arg"),
        (b'{"Args":[5]}', "Signature.Args of type tasks.Arg"),
        (b'{"Headers":[]}', "Signature.Headers of type map[string]interface {}"),
        (b'{"Immutable":"true"}', "Signature.Immutable of type bool"),
        (b'[]', "cannot unmarshal array into Go value of type tasks.Signature"),
        (b'{"UUID":"x"', "invalid JSON"),
        (b"", "empty message"),
        (b"[" * 100000, "nested too deeply"),
    ],
)
def test_decoder_rejects_like_go(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        Signature.from_json(data)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "sig",
    [
        Signature(priority=256), Signature(retry_count=2**63), Signature(immutable=1),  # type: ignore[arg-type]
        Signature(name=None),  # type: ignore[arg-type]
        Signature(args=[Arg("", "float64", float("nan"))]),
        Signature(headers={1: "x"}),  # type: ignore[dict-item]
        Signature(eta=__import__("datetime").datetime(2024, 1, 1)),
    ],
)
def test_encoder_refuses_what_go_could_not_hold(sig: Signature) -> None:
    with pytest.raises(EncodeError):
        sig.to_json()


def test_nil_versus_empty_slices_and_nested_signatures() -> None:
    cb = Signature(uuid="b", name="cb")
    sig = Signature(uuid="a", args=[], headers={}, on_success=[cb], on_error=[],
                    chord_callback=cb)
    decoded = Signature.from_json(sig.to_json())
    assert decoded == sig
    assert b'"Args":[]' in sig.to_json() and b'"OnError":[]' in sig.to_json()
    assert GroupMeta(task_uuids=[]).to_json().startswith(b'{"GroupUUID":"","TaskUUIDs":[]')


def test_float32_args_and_results_are_written_in_32_bit_form() -> None:
    arg = Arg("", "float32", 1.100000023841858)
    assert arg.to_json() == b'{"Name":"","Type":"float32","Value":1.1}'
    result = TaskResult("[]float32", [0.10000000149011612, 3.0])
    assert result.to_json() == b'{"Type":"[]float32","Value":[0.1,3]}'


def test_new_uuid_has_machinerys_shape() -> None:
    value = new_uuid("group_")
    assert value.startswith("group_") and len(value) == len("group_") + 36


def test_new_uuid_is_a_canonical_random_uuid4() -> None:
    values = [new_uuid("") for _ in range(4000)]
    parsed = [uuid.UUID(v) for v in values]
    assert [str(u) for u in parsed] == values  # lowercase, hyphenated as str(uuid4())
    assert {u.version for u in parsed} == {4} and {u.variant for u in parsed} == {
        uuid.RFC_4122}
    assert {v[19] for v in values} == set("89ab") and len(set(values)) == len(values)


@pytest.mark.parametrize("key", ["OnSuccess", "onsuccess", "ONERROR", "chordCallback",
                                 "\u212aey"])
def test_nesting_counts_every_spelling_go_reads_as_a_link(key: str) -> None:
    from bridge.protocol.machinery import MAX_NESTING, nesting

    def chain(depth: int) -> bytes:
        text = '{"Name":"leaf"}'
        for _ in range(depth):
            inner = text if key in ("chordCallback", "\u212aey") else f"[{text}]"
            text = f'{{"Name":"n","{key}":{inner}}}'
        return text.encode()

    counted = nesting(gojson.loads_raw(chain(MAX_NESTING + 1)))
    if key == "\u212aey":  # not a link name at all (folds to "key")
        assert counted == 0
        return
    assert counted == MAX_NESTING + 1
    with pytest.raises(DecodeError, match="levels deep"):
        Signature.from_json(chain(MAX_NESTING + 1))
    assert Signature.from_json(chain(MAX_NESTING)).name == "n"


@pytest.mark.parametrize("state", ["PENDING", "RECEIVED", "STARTED", "RETRY"])
def test_a_running_state_in_gos_bytes_is_told_without_decoding(state: str) -> None:
    raw = TaskState("task_1", "add", state).to_json()
    assert still_running(raw) and completed_state(raw) is None


def test_completed_states_are_decoded_whatever_their_strings_and_results_hold() -> None:
    tricky = 'x","State":"PENDING'  # escaped inside the name: not a field
    nested = [TaskResult("map[string]string", {"State": "PENDING"})]
    for state in (TaskState("task_1", tricky, "SUCCESS", results=nested),
                  TaskState("task_2", "add", "FAILURE", error='"State":"RETRY"')):
        raw = state.to_json()
        assert not still_running(raw)
        decoded = completed_state(raw)
        assert decoded is not None and decoded.state == state.state
        assert decoded.task_name == state.task_name


def test_pending_states_of_a_batch_are_the_states_own_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    created = parse_rfc3339("2026-12-06T13:27:42.418123001Z")
    tasks = [("task_1", "add"), ("a<b&c>", "x\u2028y"), ("é", 'say "hi"'), ("", ""),
             ("t\\2", "tab\there"), ("task_5d1e0a7b-0a4c", "tasks.add")]
    written = pending_jsons(tasks, created)
    monkeypatch.setattr(machinery, "FAST_WRITERS", False)  # the field-by-field writer
    assert written == [TaskState(uuid_, name, "PENDING", created_at=created).to_json()
                       for uuid_, name in tasks]
    assert all(still_running(raw) for raw in written)


def test_another_writers_layout_is_decoded_not_guessed() -> None:
    # State after Results, a nested "State" first: only decoding tells
    raw = (b'{"Results":[{"Type":"map[string]string","Value":{"State":"PENDING"}}],'
           b'"State":"SUCCESS","TaskUUID":"task_1","TaskName":"add"}')
    assert not still_running(raw)
    decoded = completed_state(raw)
    assert decoded is not None and decoded.state == "SUCCESS"

