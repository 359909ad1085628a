"""Go machinery on the DynamoDB result backend (moto), for the integration and live tests:
the harness's produce report, the tables as Go or we left them, items made comparable."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from bridge.app import Bridge
from bridge.backends.dynamodb import DynamoDBBackend
from bridge.protocol.gotime import parse_rfc3339
from tests.backend_servers import MotoServer
from tests.interop.interop_app import make_app

TABLES = ("task_states", "group_metas")
"""The harness's (and machinery's) default table names."""


def backend_url(moto: MotoServer) -> str:
    """``dynamodb://HOST:PORT`` of moto: the form our Config and the Go harness both take."""
    return "dynamodb://" + moto.endpoint.split("://", 1)[1]


def fresh_tables(moto: MotoServer) -> DynamoDBBackend:
    """Forget everything moto holds, create machinery's two tables; a backend on them."""
    moto.reset()
    backend = DynamoDBBackend(backend_url(moto))
    backend.create_tables()
    return backend


def python_app(moto: MotoServer, redis_url: str, queue: str) -> Bridge:
    """The interop task set (tests/interop/interop_app.py) with its results in DynamoDB."""
    app = make_app(redis_url, queue)
    app.config = dataclasses.replace(app.config, result_backend=backend_url(moto))
    return app


def produce(binary: Path, broker: str, backend: str, queue: str, scenario: str,
            *extra: str) -> list[str]:
    """``harness produce``'s report lines (failed checks included: on DynamoDB Go's own
    AsyncResult cannot read most typed results back)."""
    run = subprocess.run([str(binary), "produce", "--broker", broker, "--backend", backend,
                          "--queue", queue, "--scenario", scenario, "--timeout", "30", "-q",
                          *extra], capture_output=True, text=True, timeout=600)
    lines = run.stdout.splitlines()
    assert lines and re.match(r"\d+ passed, \d+ failed$", lines[-1]), \
        run.stdout[-3000:] + run.stderr[-3000:]
    return lines


def verdicts(lines: list[str]) -> dict[str, str]:
    """Check name → ``ok`` or its failure reason, with UUIDs, keys and times masked."""
    found = {}
    for line in lines:
        match = re.match(r"(ok|FAIL) (\S+?)(?:: (.*))?$", line)
        if match:
            reason = match.group(3) or "ok"
            reason = re.sub(r"(task|group|chord)_[0-9a-f-]{36}", r"\1_<uuid>", reason)
            reason = re.sub(r"interop:\w+:[0-9a-f]+", "<key>", reason)
            reason = re.sub(r"\b1[0-9]{12}\b", "<unix ms>", reason)  # stamp's result
            found[match.group(2)] = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", reason)
    return found


def settle(moto: MotoServer, redis_url: str, queue: str, timeout: float = 60.0) -> None:
    """Wait until the queue and delayed tasks are empty and the tables stop changing."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        # delayed tasks of this queue only: other tests share this Redis and may leave
        # tasks of their own queues in the delayed set
        busy = client.llen(queue) + sum(
            1 for member in client.zrange("delayed_tasks", 0, -1)
            if queue.encode() in member)
        now = (scan(moto, TABLES[0]), scan(moto, TABLES[1]))
        if not busy and now == last:
            client.close()
            return
        last = now
        time.sleep(0.7)
    client.close()
    raise AssertionError(f"queue {queue} or the tables never settled")


def scan(moto: MotoServer, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (low-level attribute values)."""
    client = moto.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        reply = client.scan(**kwargs)
        items += reply["Items"]
        if "LastEvaluatedKey" not in reply:
            return items
        kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def comparable(item: dict[str, Any], v1: bool = False) -> str:
    """An item as canonical JSON with what differs from run to run masked: UUIDs, times,
    TTLs (checked to be now + 3600 s), stamps. ``v1``: machinery v1's NULL for an empty
    string reads as v2's ``S ""``."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        if name in ("TaskUUID", "GroupUUID"):
            value = {"S": "<uuid>"}
        elif name == "TaskUUIDs" and "L" in value:
            value = {"L": [{"S": "<uuid>"}] * len(value["L"])}
        elif name == "CreatedAt" and "S" in value:
            parse_rfc3339(value["S"])
            value = {"S": "<time>"}
        elif name == "TTL" and value.get("N", "0") != "0":
            assert abs(int(value["N"]) - (time.time() + 3600)) < 900, value
            value = {"N": "<now+3600>"}
        elif name == "Error" and v1 and value == {"NULL": True}:
            value = {"S": ""}
        out[name] = value
    if item.get("TaskName") == {"S": "stamp"} and "Results" in out and "L" in out["Results"]:
        out["Results"] = {"L": [{"M": {"Type": {"S": "int64"}, "Value": {"S": "<ms>"}}}]}
    return json.dumps(out, sort_keys=True, ensure_ascii=False)


def table_contents(moto: MotoServer, v1: bool = False) -> dict[str, list[str]]:
    """Both tables' items, comparable, sorted."""
    return {table: sorted(comparable(item, v1) for item in scan(moto, table))
            for table in TABLES}

