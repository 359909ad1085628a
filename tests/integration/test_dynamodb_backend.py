"""machinery's DynamoDB result backend against a real endpoint (moto's server mode), and the
items it leaves beside the ones real Go machinery v1 and v2 leave (captured by the harness)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bridge import TaskFailed
from bridge.app import Bridge, backend_from_config
from bridge.backends.common import GroupMetaMissing
from bridge.backends.dynamodb import DynamoDBBackend, TableMissing, dynamodb_location
from bridge.config import Config, ConfigError, DynamoDBConfig
from bridge.errors import ArgTranslationError, Unreachable
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Signature,
    TaskResult,
    TaskState,
    new_uuid,
)
from bridge.result import AsyncResult
from tests.backend_groups import (
    Ours,
    check_group_completion,
    ours_when_go_wrote_in_time,
    python_callers_race,
)
from tests.backend_servers import MotoServer
from tests.interop.conftest import VERSIONS, harness  # noqa: F401 - the session fixture
from tests.interop.dynamodb_go import (
    backend_url,
    fresh_tables,
    produce,
    python_app,
    settle,
    table_contents,
)
from tests.worker_thread import worker_thread


@pytest.fixture()
def redis_url(private_redis_url: str) -> str:
    """A Redis of this module's own: its tests count chord keys and wait for delayed tasks,
    and must not see what earlier tests left in the session's Redis."""
    return private_redis_url


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto's credentials and region in the environment (no endpoint: each test names it)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in moto_server.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    return moto_server


def _config(moto: MotoServer, suffix: str = "", **overrides: Any) -> Config:
    tables = DynamoDBConfig(f"task_states{suffix}", f"group_metas{suffix}")
    return Config(result_backend=backend_url(moto), dynamodb=tables, **overrides)


@pytest.fixture
def backend(aws_env: MotoServer) -> Iterator[DynamoDBBackend]:
    """Our backend on tables of its own (created as machinery's docs ask)."""
    made = DynamoDBBackend.from_config(_config(aws_env, "_" + uuid.uuid4().hex[:8]))
    made.create_tables()
    yield made
    made.close()


def _item(backend: DynamoDBBackend, table: str, key: str, uuid_: str) -> dict[str, Any]:
    reply = backend.client.get_item(TableName=table, Key={key: {"S": uuid_}},
                                    ConsistentRead=True)
    item: dict[str, Any] = reply["Item"]
    return item


def _state_item(backend: DynamoDBBackend, uuid_: str) -> dict[str, Any]:
    return _item(backend, backend.task_states_table, "TaskUUID", uuid_)


def _meta_item(backend: DynamoDBBackend, uuid_: str) -> dict[str, Any]:
    return _item(backend, backend.group_metas_table, "GroupUUID", uuid_)


# --------------------------------------------------------------------------- where, setup


def test_url_forms() -> None:
    assert dynamodb_location("dynamodb://") == (None, None)
    assert dynamodb_location("dynamodb://127.0.0.1:8000") == ("http://127.0.0.1:8000", None)
    assert dynamodb_location("https://dynamodb.eu-west-1.amazonaws.com/123456789012") == \
        (None, "eu-west-1")
    with pytest.raises(ConfigError, match=r"write dynamodb://"):
        dynamodb_location("dynamodb://host:1/some/path")


def test_backend_from_config(aws_env: MotoServer) -> None:
    backend = backend_from_config(_config(aws_env, "_cfg"))
    assert isinstance(backend, DynamoDBBackend)
    assert backend.endpoint == aws_env.endpoint
    assert (backend.task_states_table, backend.group_metas_table) == \
        ("task_states_cfg", "group_metas_cfg")
    backend.close()


def test_aws_endpoint_url_redirects_dynamodb_urls(aws_env: MotoServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``dynamodb://`` and machinery's https URL reach a custom endpoint through boto3's
    own AWS_ENDPOINT_URL, as aws-sdk-go-v2 does; the region is boto3's, as Go's."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.endpoint)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    for url in ("dynamodb://", "https://dynamodb.us-west-1.amazonaws.com/123456789012"):
        backend = backend_from_config(Config(result_backend=url))
        assert isinstance(backend, DynamoDBBackend)
        assert backend.endpoint == aws_env.endpoint
        assert backend.client.meta.region_name == "eu-central-1"
        backend.close()
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    backend = DynamoDBBackend("https://dynamodb.us-west-1.amazonaws.com")
    assert backend.client.meta.region_name == "us-west-1"  # only when boto3 has none
    backend.close()


def test_missing_boto3_is_one_line_naming_the_extra(moto_server: MotoServer) -> None:
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from bridge.app import backend_from_config\nfrom bridge.config import Config\n"
            "try:\n    backend_from_config(Config(result_backend='dynamodb://'))\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == ("ConfigError result_backend: the dynamodb backend needs boto3, which is not "
                   "installed: pip install 'machinery-bridge[dynamodb]'")


def test_ping_names_a_missing_table_and_the_fix(aws_env: MotoServer) -> None:
    backend = DynamoDBBackend.from_config(_config(aws_env, "_missing"))
    with pytest.raises(TableMissing) as caught:
        backend.ping()
    message = str(caught.value)
    assert "\n" not in message
    assert "table 'task_states_missing' does not exist at " + aws_env.endpoint in message
    assert "hash key TaskUUID (S)" in message and "dynamodb.task_states_table" in message
    backend.create_tables()
    backend.ping()
    ttl = backend.client.describe_time_to_live(TableName="task_states_missing")
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "TTL"}
    backend.close()


def test_ping_refuses_a_table_with_another_key(aws_env: MotoServer) -> None:
    backend = DynamoDBBackend.from_config(_config(aws_env, "_wrongkey"))
    backend.client.create_table(
        TableName="task_states_wrongkey", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "TaskUUID", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "TaskUUID", "KeyType": "HASH"}])
    with pytest.raises(TableMissing, match=r"needs the hash key TaskUUID \(S\) alone"):
        backend.ping()
    backend.close()


def test_ping_names_an_unreachable_endpoint_and_the_fix(aws_env: MotoServer) -> None:
    from bridge.localredis import free_port

    port = free_port()
    backend = DynamoDBBackend(f"dynamodb://127.0.0.1:{port}")
    with pytest.raises(Unreachable) as caught:
        backend.ping()
    message = str(caught.value)
    assert message.startswith(f"result backend dynamodb://127.0.0.1:{port} is unreachable (")
    assert f"http://127.0.0.1:{port}" in message and "\n" not in message
    assert message.endswith("start the DynamoDB endpoint, or fix result_backend / "
                            "AWS_ENDPOINT_URL")
    backend.close()


# --------------------------------------------------------------------------- task states


def test_state_items_as_machinery_v2_writes_them(backend: DynamoDBBackend) -> None:
    sig = Signature(uuid=new_uuid(), name="add")
    backend.set_state_pending(sig)
    item = _state_item(backend, sig.uuid)
    created = item["CreatedAt"]["S"]
    assert item == {"TaskUUID": {"S": sig.uuid}, "TaskName": {"S": "add"},
                    "State": {"S": PENDING}, "Results": {"NULL": True}, "Error": {"S": ""},
                    "CreatedAt": {"S": created}, "TTL": {"N": "0"}}
    for state in (RECEIVED, STARTED, RETRY):
        backend.set_state(TaskState(sig.uuid, state=state))
        assert _state_item(backend, sig.uuid) == {**item, "State": {"S": state}}
    before = int(time.time()) + backend.ttl
    backend.set_state_success(sig, [TaskResult("int64", 3), TaskResult("[]uint8", "AP8="),
                                    TaskResult("float32", 0.1), TaskResult("[]string", ["a b"])])
    done = _state_item(backend, sig.uuid)
    assert before <= int(done.pop("TTL")["N"]) <= int(time.time()) + backend.ttl
    item.pop("TTL")
    assert done == {**item, "State": {"S": SUCCESS}, "Results": {"L": [
        {"M": {"Type": {"S": t}, "Value": {"S": v}}}
        for t, v in (("int64", "3"), ("[]uint8", "[0 255]"), ("float32", "0.1"),
                     ("[]string", "[a b]"))]}}
    got = backend.get_state(sig.uuid)
    assert got is not None and got.task_name == "add" and got.state == SUCCESS
    assert got.results == [TaskResult("int64", 3), TaskResult("[]uint8", "AP8="),
                           TaskResult("float32", 0.10000000149011612),
                           TaskResult("[]string", "[a b]")]


def test_failure_keeps_earlier_fields_and_sets_error_and_ttl(backend: DynamoDBBackend) -> None:
    sig = Signature(uuid=new_uuid(), name="fail")
    backend.set_state_pending(sig)
    backend.set_state_started(sig)
    backend.set_state_failure(sig, "boom <&> é")
    item = _state_item(backend, sig.uuid)
    assert item["State"] == {"S": FAILURE} and item["Error"] == {"S": "boom <&> é"}
    assert item["TaskName"] == {"S": "fail"} and item["Results"] == {"NULL": True}
    assert int(item["TTL"]["N"]) >= int(time.time()) + backend.ttl - 5
    with pytest.raises(TaskFailed, match=r"^boom <&> é$"):
        AsyncResult(sig.uuid, backend).get(timeout=5)


def test_a_state_without_pending_creates_what_go_creates(backend: DynamoDBBackend) -> None:
    uuid_ = new_uuid()
    backend.set_state(TaskState(uuid_, state=STARTED))
    assert _state_item(backend, uuid_) == {"TaskUUID": {"S": uuid_}, "State": {"S": STARTED}}
    state = backend.get_state(uuid_)
    assert state == TaskState(uuid_, state=STARTED)


def test_batched_states_keep_each_tasks_order(backend: DynamoDBBackend) -> None:
    sigs = [Signature(uuid=new_uuid(), name="noop") for _ in range(60)]
    backend.set_states([TaskState(s.uuid, s.name, PENDING) for s in sigs])  # 3 batch writes
    waves = [TaskState(s.uuid, state=state) for s in sigs for state in (RECEIVED, STARTED)]
    backend.set_states(waves)
    states = backend.get_states([s.uuid for s in sigs])
    assert [(s.task_name, s.state) for s in states if s] == [("noop", STARTED)] * 60


def test_get_states_in_order_with_missing_and_repeated(backend: DynamoDBBackend) -> None:
    uuids = [new_uuid() for _ in range(250)]  # three BatchGetItem requests
    backend.set_states([TaskState(u, "t", PENDING) for u in uuids])
    asked = [uuids[3], "task_missing", *uuids, uuids[3]]
    got = backend.get_states(asked)
    assert [s.task_uuid if s else None for s in got] == [uuids[3], None, *uuids, uuids[3]]


def test_purge(backend: DynamoDBBackend) -> None:
    sig = Signature(uuid=new_uuid(), name="t")
    backend.set_state_pending(sig)
    backend.init_group("group_p", [sig.uuid])
    backend.purge_state(sig.uuid)
    backend.purge_group_meta("group_p")
    assert backend.get_state(sig.uuid) is None
    with pytest.raises(GroupMetaMissing):
        backend.group_completed("group_p", 1)


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize(("go_type", "value"), [
    ("int64", -(2**63)), ("uint64", 2**64 - 1), ("int8", -128), ("float64", 1e21),
    ("float64", -0.0), ("float32", 3.4028234663852886e38), ("bool", False),
    ("string", "a b [c] <&> é \u2028"), ("[]int32", [-(2**31), 0]), ("[]float64", [0.1, 5e-324]),
    ("[]bool", [True, False]), ("[]uint8", b"\x00\xff<>"), ("[]uint64", []),
])
def test_async_result_reads_typed_values_back(backend: DynamoDBBackend, go_type: str,
                                              value: Any) -> None:
    from bridge.types import to_result

    sig = Signature(uuid=new_uuid(), name="echo")
    backend.set_state_pending(sig)
    backend.set_state_success(sig, [to_result(value, go_type)])
    got = AsyncResult(sig.uuid, backend).get(timeout=5)
    assert got == value and type(got) is type(value)


def test_a_string_slice_cannot_be_read_back(backend: DynamoDBBackend) -> None:
    """``[a b]`` may be ["a", "b"] or ["a b"]: the text stays, and get says what it is."""
    sig = Signature(uuid=new_uuid(), name="echo")
    backend.set_state_success(sig, [TaskResult("[]string", ["a", "b"])])
    state = backend.get_state(sig.uuid)
    assert state is not None and state.results == [TaskResult("[]string", "[a b]")]
    with pytest.raises(ArgTranslationError, match=r"'\[a b\]' is not \[\]string"):
        AsyncResult(sig.uuid, backend).get(timeout=5)


# --------------------------------------------------------------------------- groups, chords


def test_group_meta_item_and_completion(backend: DynamoDBBackend) -> None:
    uuids = [new_uuid() for _ in range(3)]
    backend.init_group("group_a", uuids)
    item = _meta_item(backend, "group_a")
    assert int(item.pop("TTL")["N"]) >= int(time.time()) + backend.ttl - 5
    assert item == {"GroupUUID": {"S": "group_a"}, "TaskUUIDs": {"L": [{"S": u} for u in uuids]},
                    "ChordTriggered": {"BOOL": False}, "Lock": {"BOOL": False},
                    "CreatedAt": item["CreatedAt"]}
    check_group_completion(backend, "group_a", uuids, "Go reports 'nothing: it reads an empty")


def _go_trigger_chord(backend: DynamoDBBackend, group_uuid: str,
                      after_read: Callable[[], None] = lambda: None,
                      after_lock: Callable[[], None] = lambda: None) -> bool:
    """``backends/dynamodb/dynamodb.go`` TriggerChord, request for request (v1 == v2): read;
    triggered → false; wait while locked; lock; set ChordTriggered; unlock (deferred) → true.
    ``after_read`` runs where Go's goroutine can be overtaken, ``after_lock`` once it
    locked."""
    client, table = backend.client, backend.group_metas_table
    key = {"GroupUUID": {"S": group_uuid}}

    def read() -> dict[str, Any]:
        item: dict[str, Any] = client.get_item(TableName=table, Key=key,
                                               ConsistentRead=True).get("Item", {})
        return item

    def flag(name: str, attr: str, value: bool) -> None:  # SET #L = :l, SET #CT = :ct
        placeholder = ":" + name[1:].lower()
        client.update_item(TableName=table, Key=key,
                           UpdateExpression=f"SET {name} = {placeholder}",
                           ExpressionAttributeNames={name: attr},
                           ExpressionAttributeValues={placeholder: {"BOOL": value}},
                           ReturnValues="UPDATED_NEW")

    meta = read()
    if meta.get("ChordTriggered", {}).get("BOOL"):
        return False
    after_read()
    while meta.get("Lock", {}).get("BOOL"):
        meta = read()
        time.sleep(0.005)
    flag("#L", "Lock", True)
    after_lock()
    try:
        flag("#CT", "ChordTriggered", True)
    finally:
        flag("#L", "Lock", False)
    return True


def test_chord_triggers_once_among_python_callers(backend: DynamoDBBackend) -> None:
    backend.chord_grace = 0.05
    for round_ in range(15):
        group = f"group_race_{round_}"
        backend.init_group(group, ["t"])
        assert python_callers_race(backend.trigger_chord, group).count(True) == 1, round_
        item = _meta_item(backend, group)
        assert item["ChordTriggered"] == {"BOOL": True} and item["Lock"] == {"BOOL": False}


def test_go_reading_after_our_claim_sees_it_triggered(backend: DynamoDBBackend) -> None:
    backend.init_group("group_b", ["t"])
    assert backend.trigger_chord("group_b")
    assert not _go_trigger_chord(backend, "group_b")


def test_we_step_back_when_go_read_before_our_claim(backend: DynamoDBBackend) -> None:
    """Go read ChordTriggered = false, then we claim; Go locks within our grace: Go fires,
    we don't."""
    backend.chord_grace = 0.3
    rounds = iter(range(3))

    def race(after_lock: Callable[[], None]) -> bool:
        group = f"group_c{next(rounds)}"
        backend.init_group(group, ["t"])
        ours = Ours(backend.trigger_chord, group)
        assert _go_trigger_chord(backend, group, after_read=partial(ours.start, 0.1),
                                 after_lock=after_lock)
        won = ours.result()
        assert _meta_item(backend, group)["Lock"] == {"BOOL": False}
        return won

    assert not ours_when_go_wrote_in_time(backend.chord_grace, race)


def test_go_after_our_grace_is_gos_own_race(backend: DynamoDBBackend) -> None:
    """A Go caller stalled between its read and its Lock for longer than the grace fires
    too: what is left of Go's non-atomic trigger (module doc)."""
    backend.chord_grace = 0.05
    backend.init_group("group_e", ["t"])
    ours = Ours(backend.trigger_chord, "group_e")
    assert _go_trigger_chord(backend, "group_e", after_read=lambda: ours.start(0.5))
    assert ours.result()


def test_we_step_back_while_go_holds_the_lock(backend: DynamoDBBackend) -> None:
    backend.init_group("group_d", ["t"])
    backend.client.update_item(
        TableName=backend.group_metas_table, Key={"GroupUUID": {"S": "group_d"}},
        UpdateExpression="SET #L = :v", ExpressionAttributeNames={"#L": "Lock"},
        ExpressionAttributeValues={":v": {"BOOL": True}})
    assert not backend.trigger_chord("group_d")


def test_trigger_without_a_meta_is_a_clear_error(backend: DynamoDBBackend) -> None:
    with pytest.raises(GroupMetaMissing, match=r"'group_none' not found in the DynamoDB"):
        backend.trigger_chord("group_none")


def test_a_missing_table_at_run_time_is_botocores_error(backend: DynamoDBBackend) -> None:
    backend.client.delete_table(TableName=backend.task_states_table)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        backend.set_state(TaskState(new_uuid(), state=STARTED))


# --------------------------------------------------------------------------- our worker


def test_worker_producer_and_async_result_over_dynamodb(aws_env: MotoServer,
                                                         redis_url: str) -> None:
    queue = f"ddb_{uuid.uuid4().hex[:8]}"
    app = Bridge(_config(aws_env, "_" + queue, broker=redis_url, default_queue=queue))
    assert isinstance(app.backend, DynamoDBBackend)
    app.backend.create_tables()

    @app.task("add")
    def add(*values: int) -> int:
        return sum(values)

    @app.task("boom")
    def boom() -> None:
        raise RuntimeError("it broke")

    with worker_thread(app, 4):
        assert app.send_task("add", 1, 2).get(timeout=30) == 3
        with pytest.raises(TaskFailed, match="it broke"):
            app.send_task("boom").get(timeout=30)
        chain = app.send_chain(app.signature("add", 1, 2), app.signature("add", 10))
        assert chain.get(timeout=30) == 13
        group = app.send_group(*(app.signature("add", i, i) for i in range(30)))
        assert group.get(timeout=30) == [2 * i for i in range(30)]
        chord = app.send_chord([app.signature("add", i) for i in range(20)],
                               app.signature("add"))
        assert chord.get(timeout=30) == sum(range(20))


# --------------------------------------------------------------------------- beside Go


@pytest.mark.go
@pytest.mark.parametrize("version", VERSIONS)
def test_items_match_what_a_go_worker_leaves(version: str, harness: dict[str, Path],  # noqa: F811
                                             moto_server: MotoServer, redis_url: str) -> None:
    """Go's producer sends the same scenarios to a Go worker and to ours: both leave the same
    items (every arg type's edge values through ``echo_*``, failures, retries, chains,
    groups, a chord). One difference: the chord callback's args are its members' results,
    read back from the table: Go's worker cannot reflect the stringified int64s (FAILURE;
    its Redis consumer then stops and drops what it prefetched, so the chord runs last),
    ours reads them typed and runs it. machinery v1 writes an empty ``Error`` as NULL where
    v2 and we write ``S ""``: compared as equal for v1, exactly for v2."""
    from tests.interop.go_processes import go_worker

    contents, raw = {}, {}
    for who in ("go", "python"):
        fresh_tables(moto_server)
        queue = f"ddb_{who}_{uuid.uuid4().hex[:8]}"
        # one Go goroutine: several would each fire the chord (Go's trigger is not atomic)
        worker = go_worker(harness[version], redis_url, queue, 1,
                           backend=backend_url(moto_server)) if who == "go" \
            else worker_thread(python_app(moto_server, redis_url, queue), 4)
        with worker:
            for scenarios in ("basic,types,chain,group,fail,retry", "chord"):
                produce(harness[version], redis_url, backend_url(moto_server), queue, scenarios)
                settle(moto_server, redis_url, queue)
        contents[who] = table_contents(moto_server, v1=version == "v1")
        raw[who] = table_contents(moto_server)
    go, ours = contents["go"], contents["python"]
    assert go["group_metas"] == ours["group_metas"]
    only_go = sorted(set(go["task_states"]) - set(ours["task_states"]))
    only_ours = sorted(set(ours["task_states"]) - set(go["task_states"]))
    callback = ('{{"CreatedAt": {{"S": "<time>"}}, "Error": {{"S": {error}}}, "Results": '
                '{results}, "State": {{"S": "{state}"}}, "TTL": {{"N": "<now+3600>"}}, '
                '"TaskName": {{"S": "count_call"}}, "TaskUUID": {{"S": "<uuid>"}}}}')
    assert only_go == [callback.format(
        error='"Reflect task args error: 2 is not int64"', results='{"NULL": true}',
        state="FAILURE")], only_go
    assert only_ours == [callback.format(
        error='""', results='{"L": [{"M": {"Type": {"S": "int64"}, "Value": {"S": "65"}}}]}',
        state="SUCCESS")], only_ours
    assert len(go["task_states"]) == len(ours["task_states"]) > 150
    go_nulls = sum('"Error": {"NULL": true}' in item for item in raw["go"]["task_states"])
    our_nulls = sum('"Error": {"NULL": true}' in item for item in raw["python"]["task_states"])
    if version == "v2":
        assert go_nulls == our_nulls == 0
    else:
        assert go_nulls > our_nulls  # v1's PENDING from Go workers: NULL; from us: S ""
