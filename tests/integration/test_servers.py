"""The servers behind the SQS broker and the Memcache, DynamoDB and MongoDB backends, with the
real clients: memcached (pymemcache), moto's server mode (boto3) and FerretDB (pymongo), each
doing what machinery's Go code does with it (brokers/sqs, backends/memcache, backends/dynamodb,
backends/mongo), so a gap in a test server shows up here rather than as a puzzling backend
failure."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from bson.int64 import Int64
from pymemcache.client.base import Client as MemcacheClient
from pymongo import ASCENDING, IndexModel, MongoClient, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from tests.backend_servers import Memcached, MongoServer, MotoServer, mongo_admin


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same server) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# ---------------------------------------------------------------------------------- memcached

@pytest.fixture
def memcache(memcached_server: Memcached) -> Iterator[MemcacheClient]:
    client = MemcacheClient(memcached_server.address, default_noreply=False, connect_timeout=5,
                            timeout=5)
    yield client
    client.close()


def test_memcached_set_get_and_expiry(memcache: MemcacheClient) -> None:
    plain, relative, absolute, later = (unique(k) for k in ("plain", "rel", "abs", "later"))
    state = json.dumps({"TaskUUID": plain, "State": "PENDING"}).encode()
    assert memcache.set(plain, state)
    assert memcache.get(plain) == state
    # memcached's clock ticks in whole seconds with a phase of its own: an expiry one second
    # ahead can already be past when read back at once, so each is two seconds ahead
    assert memcache.set(relative, b"1", expire=2)
    # machinery's backend gives an absolute unix time (now + results_expire_in); memcached
    # reads any expiry over 30 days as one
    assert memcache.set(absolute, b"1", expire=int(time.time()) + 3)
    assert memcache.set(later, b"1", expire=int(time.time()) + 3600)
    assert memcache.get(relative) == memcache.get(absolute) == b"1"
    assert eventually(lambda: memcache.get(relative) is None and memcache.get(absolute) is None,
                      timeout=8)
    assert memcache.get(later) == b"1"
    assert memcache.delete(plain)
    assert memcache.get(plain) is None


def test_memcached_cas_add_replace(memcache: MemcacheClient) -> None:
    key = unique("group")
    assert memcache.replace(key, b"x") is False  # machinery's TriggerChord uses Replace
    assert memcache.add(key, b"v1") is True
    assert memcache.add(key, b"other") is False
    value, token = memcache.gets(key)
    assert value == b"v1"
    assert memcache.cas(key, b"v2", token) is True
    assert memcache.cas(key, b"v3", token) is False  # stale token: someone wrote in between
    assert memcache.get(key) == b"v2"
    assert memcache.replace(key, b"v4") is True
    assert memcache.get(key) == b"v4"
    assert memcache.cas(unique("missing"), b"x", token) is None


# ---------------------------------------------------------------------------------- SQS

def test_sqs_standard_queue(moto_server: MotoServer) -> None:
    sqs = moto_server.client("sqs")
    name = unique("machinery_tasks")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    # machinery builds the queue URL itself: broker URL + "/" + queue name
    assert url == f"{moto_server.sqs_broker_url}/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    body = json.dumps({"UUID": unique("task"), "Name": "add", "Args": []})
    sent = sqs.send_message(QueueUrl=url, MessageBody=body)
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()

    def receive(visibility: int) -> list[dict[str, Any]]:
        # what machinery's worker asks for
        reply = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0,
            VisibilityTimeout=visibility, AttributeNames=["SentTimestamp"],
            MessageAttributeNames=["All"])
        return list(reply.get("Messages", []))

    [first] = receive(1)
    assert first["Body"] == body and first["MessageId"] == sent["MessageId"]
    assert int(first["Attributes"]["SentTimestamp"]) > 0
    assert receive(1) == []  # in flight
    # not deleted (machinery leaves failed deliveries): back after the visibility timeout
    [again] = eventually(lambda: receive(30), timeout=5)
    assert again["MessageId"] == first["MessageId"]
    assert again["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"],
                                  VisibilityTimeout=60)  # machinery v2's heartbeat
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

    # ETA: DelaySeconds hides a message for that long
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    assert receive(30) == []
    [delayed] = eventually(lambda: receive(30), timeout=5)
    assert delayed["Body"] == "later"


def test_sqs_fifo_queue(moto_server: MotoServer) -> None:
    sqs = moto_server.client("sqs")
    name = unique("machinery_tasks") + ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    assert url == f"{moto_server.sqs_broker_url}/{name}"
    ids = [unique("task") for _ in range(3)]
    for task_id in ids:  # machinery: MessageGroupId = BrokerMessageGroupId, dedup id = UUID
        sqs.send_message(QueueUrl=url, MessageBody=task_id, MessageGroupId="group-1",
                         MessageDeduplicationId=task_id)
    sqs.send_message(QueueUrl=url, MessageBody="duplicate", MessageGroupId="group-1",
                     MessageDeduplicationId=ids[0])  # dropped: same deduplication id
    with pytest.raises(ClientError) as missing:
        sqs.send_message(QueueUrl=url, MessageBody="no group")
    assert missing.value.response["Error"]["Code"] == "MissingParameter"

    reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                AttributeNames=["All"])
    messages = reply["Messages"]
    assert [m["Body"] for m in messages] == ids  # in order, the duplicate gone
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"group-1"}
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


# ---------------------------------------------------------------------------------- DynamoDB

def test_dynamodb_task_states(moto_server: MotoServer) -> None:
    ddb = moto_server.client("dynamodb")
    table = unique("task_states")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "TaskUUID", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "TaskUUID",
                                            "AttributeType": "S"}])
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1})
    assert table in ddb.list_tables()["TableNames"]  # machinery checks that tables exist
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "TTL"})
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "TTL"

    task = unique("task")
    pending = {"TaskUUID": {"S": task}, "TaskName": {"S": "add"}, "State": {"S": "PENDING"},
               "Results": {"NULL": True}, "Error": {"S": ""},
               "CreatedAt": {"S": "2024-01-02T03:04:05.123456789Z"}, "TTL": {"N": "0"}}
    ddb.put_item(TableName=table, Item=pending,
                 ConditionExpression="attribute_not_exists(TaskUUID)")
    with pytest.raises(ClientError) as again:
        ddb.put_item(TableName=table, Item=pending,
                     ConditionExpression="attribute_not_exists(TaskUUID)")
    assert again.value.response["Error"]["Code"] == "ConditionalCheckFailedException"

    expires = str(int(time.time()) + 3600)
    results = {"L": [{"M": {"Type": {"S": "int64"}, "Value": {"S": "5"}}}]}
    updated = ddb.update_item(
        TableName=table, Key={"TaskUUID": {"S": task}},
        UpdateExpression="SET #S = :s, #R = :r, #T = :t",
        ExpressionAttributeNames={"#S": "State", "#R": "Results", "#T": "TTL"},
        ExpressionAttributeValues={":s": {"S": "SUCCESS"}, ":r": results, ":t": {"N": expires}},
        ReturnValues="ALL_NEW")["Attributes"]
    assert updated["State"] == {"S": "SUCCESS"} and updated["Results"] == results
    assert updated["TaskName"] == {"S": "add"} and updated["TTL"] == {"N": expires}

    # a lock flag flipped only when it is still false
    def lock() -> None:
        ddb.update_item(TableName=table, Key={"TaskUUID": {"S": task}},
                        UpdateExpression="SET #L = :t",
                        ConditionExpression="attribute_not_exists(#L) OR #L = :f",
                        ExpressionAttributeNames={"#L": "Lock"},
                        ExpressionAttributeValues={":t": {"BOOL": True}, ":f": {"BOOL": False}})

    lock()
    with pytest.raises(ClientError) as locked:
        lock()
    assert locked.value.response["Error"]["Code"] == "ConditionalCheckFailedException"

    other = unique("task")
    ddb.put_item(TableName=table, Item={**pending, "TaskUUID": {"S": other}})
    got = ddb.batch_get_item(RequestItems={table: {
        "Keys": [{"TaskUUID": {"S": t}} for t in (task, other, unique("missing"))],
        "ConsistentRead": True}})
    assert not got["UnprocessedKeys"]
    states = {item["TaskUUID"]["S"]: item["State"]["S"] for item in got["Responses"][table]}
    assert states == {task: "SUCCESS", other: "PENDING"}
    ddb.delete_item(TableName=table, Key={"TaskUUID": {"S": task}})
    assert "Item" not in ddb.get_item(TableName=table, Key={"TaskUUID": {"S": task}},
                                      ConsistentRead=True)


# ---------------------------------------------------------------------------------- MongoDB

@pytest.fixture
def mongo_db(mongo_server: MongoServer) -> Iterator[Database[dict[str, Any]]]:
    """A fresh database (machinery's is "machinery"), dropped afterwards."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url,
                                                       serverSelectionTimeoutMS=10_000)
    db = client[unique("machinery")]
    yield db
    client.drop_database(db.name)
    client.close()


def test_mongo_insert_find_one_and_update(mongo_db: Database[dict[str, Any]]) -> None:
    coll = mongo_db["things"]
    coll.insert_one({"_id": "a", "n": 1})
    assert coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
    for expected in (1, 2):
        doc = coll.find_one_and_update(
            {"_id": "counter"}, {"$set": {"kind": "counter"}, "$inc": {"n": 1},
                                 "$addToSet": {"tags": "x"}},
            upsert=True, return_document=ReturnDocument.AFTER)
        assert doc == {"_id": "counter", "kind": "counter", "n": expected, "tags": ["x"]}
    assert coll.count_documents({}) == 2


def test_mongo_machinery_backend_operations(mongo_db: Database[dict[str, Any]]) -> None:
    """Every call machinery's backends/mongo/mongodb.go makes (v1.10.8 and v2.0.16 alike)."""
    tasks, groups = mongo_db["tasks"], mongo_db["group_metas"]
    task, other, group = unique("task"), unique("task"), unique("group")
    created = datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)

    def update_state(uuid_: str, fields: dict[str, Any]) -> Any:
        return tasks.update_one({"_id": uuid_}, {"$set": fields}, upsert=True)

    assert update_state(task, {"state": "PENDING", "task_name": "add",
                               "created_at": created}).upserted_id == task
    received = update_state(task, {"state": "RECEIVED"})
    assert (received.matched_count, received.modified_count) == (1, 1)
    delete_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    update_state(task, {"state": "SUCCESS", "delete_at": delete_at, "results": [
        {"type": "int64", "value": Int64(5)},
        {"type": "json", "value": {"a": 1, "b": [1, 2]}}]})  # JSON object results: documents
    state = tasks.find_one({"_id": task})
    assert state is not None
    assert state["state"] == "SUCCESS" and state["task_name"] == "add"  # $set merges
    assert state["created_at"].replace(tzinfo=UTC) == created
    assert state["delete_at"].replace(tzinfo=UTC) == delete_at
    assert type(state["results"][0]["value"]) is Int64  # int64 stays int64 (not int32)
    assert state["results"][1]["value"] == {"a": 1, "b": [1, 2]}
    update_state(other, {"state": "FAILURE", "error": "boom"})

    groups.insert_one({"_id": group, "task_uuids": [task, other, unique("missing")],
                       "chord_triggered": False, "lock": False, "created_at": created})
    with pytest.raises(DuplicateKeyError):
        groups.insert_one({"_id": group})
    meta = groups.find_one({"_id": group})
    assert meta is not None
    found = {doc["_id"]: doc["state"] for doc in tasks.find({"_id": {"$in": meta["task_uuids"]}})}
    assert found == {task: "SUCCESS", other: "FAILURE"}

    # TriggerChord: the second UpdateOne matches nothing and is no error (so Go's
    # ErrNoDocuments check never fires: machinery always reports "trigger")
    chord = {"_id": group, "chord_triggered": False}
    assert groups.update_one(chord, {"$set": {"chord_triggered": True}}).matched_count == 1
    assert groups.update_one(chord, {"$set": {"chord_triggered": True}}).matched_count == 0

    # lockGroupMeta: an upsert whose filter misses an existing _id is a duplicate key error
    unlocked = {"_id": group, "lock": False}
    assert groups.update_one(unlocked, {"$set": {"lock": True}}, upsert=True).matched_count == 1
    with pytest.raises(DuplicateKeyError):
        groups.update_one(unlocked, {"$set": {"lock": True}}, upsert=True)
    assert groups.update_one({"_id": group}, {"$set": {"lock": False}}).modified_count == 1

    assert tasks.delete_one({"_id": task}).deleted_count == 1  # PurgeState
    assert tasks.find_one({"_id": task}) is None
    assert groups.delete_one({"_id": group}).deleted_count == 1  # PurgeGroupMeta


TTL_NOT_IMPLEMENTED = 238
"""MongoDB's NotImplemented error code, which FerretDB v1 answers for index TTL options."""


def test_mongo_ttl_indexes_machinery_creates(mongo_db: Database[dict[str, Any]],
                                             mongo_server: MongoServer) -> None:
    """machinery's createMongoIndexes: v1 puts TTL indexes on ``state`` and ``lock``
    (expireAfterSeconds = results_expire_in), v2.0.14+ one on ``delete_at``
    (expireAfterSeconds 0), all ``background``. FerretDB v1 does not implement
    ``expireAfterSeconds``: the whole createIndexes fails. machinery connects lazily and drops
    that error, so its backend still works there, but results never expire."""
    tasks = mongo_db["tasks"]
    v1 = [IndexModel([("state", ASCENDING)], background=True, expireAfterSeconds=3600),
          IndexModel([("lock", ASCENDING)], background=True, expireAfterSeconds=3600)]
    v2 = [IndexModel([("delete_at", ASCENDING)], background=True, expireAfterSeconds=0)]
    if mongo_server.ferretdb:
        for models in (v1, v2):
            with pytest.raises(OperationFailure) as refused:
                tasks.create_indexes(models)
            assert refused.value.code == TTL_NOT_IMPLEMENTED
            assert "expireAfterSeconds" in str(refused.value)
        assert list(tasks.index_information()) in ([], ["_id_"])  # nothing half-made
        # indexes without the TTL option (background is accepted and ignored) do work
        assert tasks.create_index([("delete_at", ASCENDING)], background=True) == "delete_at_1"
        assert "delete_at_1" in tasks.index_information()
        return
    assert tasks.create_indexes(v1) == ["state_1", "lock_1"]
    assert tasks.create_indexes(v2) == ["delete_at_1"]
    info = tasks.index_information()
    assert info["state_1"]["expireAfterSeconds"] == 3600
    assert info["delete_at_1"]["expireAfterSeconds"] == 0


def test_mongo_server_identity(mongo_server: MongoServer) -> None:
    """The wire handshake machinery's Go driver and pymongo need: hello, buildInfo."""
    hello = mongo_admin(mongo_server.url, "hello")
    info = mongo_admin(mongo_server.url, "buildInfo")
    assert hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] >= 17  # MongoDB 6.0+, which pymongo 4 and Go driver 1.17 speak
    if mongo_server.ferretdb:
        assert mongo_server.ferretdb.startswith("v1.24")
        assert info["ferretdbVersion"] == mongo_server.ferretdb
