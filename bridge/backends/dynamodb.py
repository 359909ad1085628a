"""machinery's DynamoDB result backend (``backends/dynamodb/dynamodb.go``, v1 and v2).

Layout, shared with Go workers on the same tables (items: ``bridge.protocol.dynamodb_items``):

* table ``task_states`` (``dynamodb.task_states_table``), hash key ``TaskUUID`` (S): PENDING
  is a ``PutItem`` of the whole TaskState, every later state an ``UpdateItem`` of the fields
  Go sets (so TaskName and CreatedAt stay: the update is the merge); SUCCESS and FAILURE set
  ``TTL`` = Unix seconds now + results_expire_in (0 → 3600), for DynamoDB's TTL on ``TTL``;
* table ``group_metas`` (``dynamodb.group_metas_table``), hash key ``GroupUUID`` (S);
* results are stored as Go's ``%v`` text (machinery stringifies them here) and read back typed
  wherever the text allows one reading only (see ``dynamodb_items``).

machinery never creates the tables (it logs "Failed to prepare tables" and goes on):
:meth:`DynamoDBBackend.ping` says which is missing, and :meth:`~DynamoDBBackend.create_tables`
makes them as machinery's docs describe (PAY_PER_REQUEST, TTL on ``TTL``).

**Where.** ``result_backend``: ``dynamodb://`` (boto3's chain: region, credentials, and the
endpoint, so ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL`` redirect it, as they do
aws-sdk-go-v2), ``dynamodb://HOST:PORT`` (a local endpoint on plain HTTP: DynamoDB Local,
moto, LocalStack; as the Go harness writes it), or machinery's own
``https://dynamodb.REGION.amazonaws.com``. Like Go, the region is the environment's
(AWS_REGION, AWS_DEFAULT_REGION, the profile); the one in machinery's URL only when none is.
A local endpoint with no credentials configured gets ``test``/``test``, as the Go harness and
our SQS broker do.

**Chord trigger.** Go's ``TriggerChord`` reads the meta, returns if ``ChordTriggered``, waits
while ``Lock``, sets ``Lock``, sets ``ChordTriggered``, unsets ``Lock``: not atomic, and it
never looks at ``ChordTriggered`` again after its read. Ours claims with one conditional
update: ``ChordTriggered = true, Lock = NULL`` only if ``ChordTriggered`` and ``Lock`` are
false. So two Python callers never both win, a Go read after the claim sees it triggered, and
a meta locked by Go (a Go worker is firing) makes us step back. A Go caller that read *before*
the claim still fires, but it sets ``Lock`` right after its read, overwriting our NULL: so
after ``chord_grace`` seconds we put ``Lock`` back to false only if it is still NULL, and step
back (return False) if it is not. What remains is Go's own race (two Go workers that read
before any write both fire) and a Go caller stalled longer than ``chord_grace`` between its
read and its ``Lock``. Go readers decode the NULL Lock as false.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bridge.backends.base import Backend, now_utc
from bridge.backends.common import GroupMetaMissing, in_waves, members_in_order, unreachable
from bridge.config import Config, ConfigError, redact_url
from bridge.errors import BridgeError, Unreachable
from bridge.protocol.dynamodb_items import (
    GROUP_KEY,
    TASK_KEY,
    group_meta_from_item,
    group_meta_item,
    task_state_from_item,
    task_state_item,
    task_state_update,
)
from bridge.protocol.machinery import PENDING, GroupMeta, TaskState

__all__ = ["DEFAULT_CHORD_GRACE", "DynamoDBBackend", "TableMissing", "dynamodb_location"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CHORD_GRACE = 0.2
"""Seconds a chord claim waits for a Go ``TriggerChord`` that read before it (its read-to-lock
gap is one DynamoDB round trip)."""

LOCAL_CREDENTIALS = "test"
_BATCH_GET = 100  # BatchGetItem's limit (Go uses 99)
_BATCH_WRITE = 25  # BatchWriteItem's limit
_UNPROCESSED_TRIES = 8
_GO_NO_META = "nothing: it reads an empty meta, so the group never completes"
_REFUSED = frozenset({"UnrecognizedClientException", "InvalidSignatureException",
                      "AccessDeniedException", "ExpiredTokenException",
                      "MissingAuthenticationToken", "IncompleteSignatureException",
                      "InvalidClientTokenId"})
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                         "AWS_CONTAINER_CREDENTIALS_FULL_URI")
_FALSE = {"BOOL": False}


class TableMissing(ConfigError):
    """A table machinery's DynamoDB backend needs does not exist (or has another key)."""


def dynamodb_location(url: str) -> tuple[str | None, str | None]:
    """``(endpoint URL, region)`` a ``result_backend`` names; None where boto3's chain decides."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "dynamodb" and not parts.path.strip("/") and not parts.query:
        return (f"http://{parts.netloc}" if host else None), None
    if parts.scheme == "https" and host.startswith("dynamodb.") \
            and host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        region = host.split(".")[1]
        return None, (None if region in ("amazonaws",) else region)
    raise ConfigError(f"result_backend {redact_url(url)!r}: write dynamodb:// (AWS, or "
                      "$AWS_ENDPOINT_URL), dynamodb://HOST:PORT (a local endpoint) or "
                      "https://dynamodb.REGION.amazonaws.com", key="result_backend")


def _client(url: str, pool_size: int) -> Any:
    """A boto3 DynamoDB client for ``url`` (thread-safe)."""
    endpoint, url_region = dynamodb_location(url)
    local = endpoint is not None
    key = secret = None
    if local and not any(os.environ.get(name) for name in _CREDENTIAL_VARIABLES):
        key = secret = LOCAL_CREDENTIALS
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    region = os.environ.get("AWS_REGION") or session.region_name  # Go's SDKs read AWS_REGION
    if url_region and region and url_region != region:
        log.warning("result_backend names region %s, but boto3's (as machinery's) is %s: "
                    "using %s, where Go workers look", url_region, region, region)
    region = region or url_region or ("us-east-1" if local else None)
    if region is None:
        raise ConfigError(f"result backend {redact_url(url)}: no AWS region: set AWS_REGION "
                          "(or AWS_DEFAULT_REGION, or a profile's region)", key="result_backend")
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 3},  # the SDKs' default
                        max_pool_connections=pool_size, connect_timeout=5, read_timeout=20,
                        tcp_keepalive=True)
    return session.client("dynamodb", region_name=region, endpoint_url=endpoint, config=config)


def _code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) \
        if isinstance(exc, ClientError) else ""


class DynamoDBBackend(Backend):
    """machinery's DynamoDB result backend, item-compatible with Go workers sharing it."""

    def __init__(self, url: str = "dynamodb://", config: Config | None = None, *,
                 client: Any = None, chord_grace: float = DEFAULT_CHORD_GRACE,
                 concurrency: int = 16) -> None:
        cfg = config or Config()
        tables = cfg.dynamodb
        self._url = url
        self.ttl = cfg.results_expire_seconds
        self.chord_grace = chord_grace
        self.task_states_table = tables.task_states_table if tables else "task_states"
        self.group_metas_table = tables.group_metas_table if tables else "group_metas"
        self.client: Any = client if client is not None else _client(url, concurrency * 2)
        self.endpoint = str(self.client.meta.endpoint_url)
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> DynamoDBBackend:
        """The backend at ``cfg.result_backend`` with ``cfg.dynamodb``'s tables."""
        return cls(cfg.result_backend, cfg)

    def __repr__(self) -> str:
        return (f"DynamoDBBackend({redact_url(self._url)!r}, endpoint={self.endpoint!r}, "
                f"tables=({self.task_states_table!r}, {self.group_metas_table!r}))")

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()

    # ----------------------------------------------------------------- setup

    def ping(self) -> None:
        """Describe both tables: Unreachable (endpoint, credentials) or TableMissing."""
        for table, key, setting in ((self.task_states_table, TASK_KEY, "task_states_table"),
                                    (self.group_metas_table, GROUP_KEY, "group_metas_table")):
            try:
                described = self.client.describe_table(TableName=table)["Table"]
            except (BotoCoreError, ClientError) as exc:
                if _code(exc) == "ResourceNotFoundException":
                    raise self._missing(table, key, setting) from None
                raise self._unreachable(exc) from None
            schema = [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]]
            types = {a["AttributeName"]: a["AttributeType"]
                     for a in described.get("AttributeDefinitions", ())}
            if schema != [(key, "HASH")] or types.get(key) != "S":
                raise TableMissing(
                    f"result backend {redact_url(self._url)}: table {table!r} at {self.endpoint} "
                    f"has key {schema}, machinery needs the hash key {key} (S) alone: recreate "
                    f"it or set dynamodb.{setting}", key=f"dynamodb.{setting}")

    def create_tables(self, ttl: bool = True) -> None:
        """Create the missing tables as machinery's docs ask (hash key only, on demand);
        ``ttl`` also turns DynamoDB's TTL on for the ``TTL`` attribute."""
        for table, key in ((self.task_states_table, TASK_KEY),
                           (self.group_metas_table, GROUP_KEY)):
            try:
                self.client.create_table(
                    TableName=table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
            except ClientError as exc:
                if _code(exc) != "ResourceInUseException":  # exists (or being created)
                    raise
            self.client.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            if ttl:
                self.client.update_time_to_live(TableName=table, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": "TTL"})

    def _missing(self, table: str, key: str, setting: str) -> TableMissing:
        return TableMissing(
            f"result backend {redact_url(self._url)}: table {table!r} does not exist at "
            f"{self.endpoint}: create it with hash key {key} (S), as machinery requires "
            f"(DynamoDBBackend.create_tables does), or set dynamodb.{setting}",
            key=f"dynamodb.{setting}")

    def _unreachable(self, exc: BaseException) -> Unreachable:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self.endpoint not in text:
            text = f"{self.endpoint}: {text}"
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
            return unreachable(self._url, text, "set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role")
        if _code(exc) in _REFUSED:
            return unreachable(self._url, text, "the endpoint refuses our AWS credentials: "
                               "fix them, or grant them access to the tables")
        return unreachable(self._url, text, "start the DynamoDB endpoint, or fix "
                           "result_backend / AWS_ENDPOINT_URL")

    # ----------------------------------------------------------------- task states

    def expiration(self) -> int:
        """Go's ``getExpirationTime``: Unix seconds now + results_expire_in."""
        return int(time.time()) + self.ttl

    def set_state(self, state: TaskState) -> None:
        """PENDING replaces the item; any other state updates Go's fields of it."""
        if state.state == PENDING:
            self.client.put_item(TableName=self.task_states_table, Item=task_state_item(state))
            return
        update = task_state_update(state, self.expiration())
        self.client.update_item(
            TableName=self.task_states_table, Key={TASK_KEY: {"S": state.task_uuid}},
            UpdateExpression=update.expression, ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values)

    def set_states(self, states: Sequence[TaskState]) -> None:
        """Wave by wave (a task's states in order, each its own write): the PENDING ones by
        BatchWriteItem, the others by concurrent UpdateItems."""
        if len(states) < 2:
            super().set_states(states)
            return
        for wave in in_waves(states):
            pending = [task_state_item(s) for s in wave if s.state == PENDING]
            jobs: list[Callable[[], None]] = [
                partial(self._put_all, chunk) for chunk in _chunks(pending, _BATCH_WRITE)]
            jobs += [partial(self.set_state, s) for s in wave if s.state != PENDING]
            self._run(jobs)

    def get_state(self, task_uuid: str) -> TaskState | None:
        reply = self.client.get_item(TableName=self.task_states_table,
                                     Key={TASK_KEY: {"S": task_uuid}}, ConsistentRead=True)
        item = reply.get("Item")
        return None if item is None else task_state_from_item(item)

    def get_states(self, task_uuids: Sequence[str]) -> list[TaskState | None]:
        """BatchGetItem (consistent, 100 keys a request); None for a missing item."""
        unique = list(dict.fromkeys(task_uuids))
        found: dict[str, TaskState] = {}
        for part in self._run([partial(self._get_all, chunk)
                               for chunk in _chunks(unique, _BATCH_GET)]):
            found.update(part)
        return [found.get(uuid) for uuid in task_uuids]

    def purge_state(self, task_uuid: str) -> None:
        self.client.delete_item(TableName=self.task_states_table,
                                Key={TASK_KEY: {"S": task_uuid}})

    # ----------------------------------------------------------------- groups and chords

    def init_group(self, group_uuid: str, task_uuids: Sequence[str]) -> None:
        meta = GroupMeta(group_uuid, list(task_uuids), created_at=now_utc(),
                         ttl=self.expiration())
        self.client.put_item(TableName=self.group_metas_table, Item=group_meta_item(meta))

    def group_completed(self, group_uuid: str, group_task_count: int) -> bool:
        """Members in SUCCESS or FAILURE == count (a missing member is not completed)."""
        states = self.get_states(self._group_meta(group_uuid).task_uuids or [])
        done = sum(1 for state in states if state is not None and state.is_completed())
        return done == group_task_count

    def group_task_states(self, group_uuid: str, group_task_count: int) -> list[TaskState]:
        """Member states in TaskUUIDs order (Go: BatchGetItem's order); a missing one raises
        MemberStateMissing (Go leaves it out)."""
        uuids = self._group_meta(group_uuid).task_uuids or []
        return members_in_order(group_uuid, uuids, self.get_states(uuids), "DynamoDB")

    def trigger_chord(self, group_uuid: str) -> bool:
        """True for exactly one caller: a conditional claim, then a watch for Go (module doc)."""
        return self._claim(group_uuid) and self._unchallenged(group_uuid)

    def purge_group_meta(self, group_uuid: str) -> None:
        self.client.delete_item(TableName=self.group_metas_table,
                                Key={GROUP_KEY: {"S": group_uuid}})

    # ----------------------------------------------------------------- internals

    def _group_item(self, group_uuid: str) -> dict[str, Any] | None:
        reply = self.client.get_item(TableName=self.group_metas_table,
                                     Key={GROUP_KEY: {"S": group_uuid}}, ConsistentRead=True)
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def _group_meta(self, group_uuid: str) -> GroupMeta:
        item = self._group_item(group_uuid)
        if item is None:
            raise GroupMetaMissing(group_uuid, "DynamoDB", _GO_NO_META)
        return group_meta_from_item(item)

    def _conditional(self, group_uuid: str, expression: str, condition: str,
                     values: dict[str, Any]) -> dict[str, Any] | None:
        """Update the meta if ``condition`` holds: None when done, else the item as it is
        ({} when there is none). Names: #G GroupUUID, #CT ChordTriggered, #L Lock."""
        text = expression + condition
        names = {name: attr for name, attr in (("#G", GROUP_KEY), ("#CT", "ChordTriggered"),
                                               ("#L", "Lock")) if name in text}
        try:
            self.client.update_item(
                TableName=self.group_metas_table, Key={GROUP_KEY: {"S": group_uuid}},
                UpdateExpression=expression, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            item = exc.response.get("Item")
            if item is None:
                item = self._group_item(group_uuid)
            return item or {}
        return None

    def _claim(self, group_uuid: str) -> bool:
        """ChordTriggered = true and Lock = NULL, if both are false (or absent)."""
        current = self._conditional(
            group_uuid, "SET #CT = :true, #L = :null",
            "attribute_exists(#G) AND (attribute_not_exists(#CT) OR #CT = :false) "
            "AND (attribute_not_exists(#L) OR #L = :false)",
            {":true": {"BOOL": True}, ":false": _FALSE, ":null": {"NULL": True}})
        if current is None:
            return True
        if not current:
            raise GroupMetaMissing(group_uuid, "DynamoDB", _GO_NO_META)
        meta = group_meta_from_item(current)
        if meta.lock and not meta.chord_triggered:
            log.debug("group %s: a Go worker holds the meta's Lock and triggers its chord",
                      group_uuid)
        return False

    def _unchallenged(self, group_uuid: str) -> bool:
        """After ``chord_grace``, Lock back to false if still our NULL: else Go fires."""
        if self.chord_grace > 0:
            time.sleep(self.chord_grace)
        current = self._conditional(group_uuid, "SET #L = :false", "attribute_type(#L, :null)",
                                    {":false": _FALSE, ":null": {"S": "NULL"}})
        if current is None or not current:
            return True  # done, or purged meanwhile (no Go reader can fire any more)
        log.info("group %s: a Go worker triggers its chord too; leaving it to Go", group_uuid)
        return False

    def _put_all(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem of up to 25 puts, retrying what DynamoDB left unprocessed."""
        requests: list[Any] = [{"PutRequest": {"Item": item}} for item in items]
        for attempt in range(_UNPROCESSED_TRIES):
            reply = self.client.batch_write_item(
                RequestItems={self.task_states_table: requests})
            requests = reply.get("UnprocessedItems", {}).get(self.task_states_table, [])
            if not requests:
                return
            time.sleep(min(0.05 * 2**attempt, 2.0))
        raise BridgeError(f"DynamoDB at {self.endpoint} kept {len(requests)} state writes "
                          f"unprocessed (throttled) after {_UNPROCESSED_TRIES} tries")

    def _get_all(self, uuids: list[str]) -> dict[str, TaskState]:
        """BatchGetItem of up to 100 keys, retrying what DynamoDB left unprocessed."""
        table = self.task_states_table
        keys: list[Any] = [{TASK_KEY: {"S": uuid}} for uuid in uuids]
        found: dict[str, TaskState] = {}
        for attempt in range(_UNPROCESSED_TRIES):
            reply = self.client.batch_get_item(
                RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
            for item in reply.get("Responses", {}).get(table, ()):
                state = task_state_from_item(item)
                found[state.task_uuid] = state
            keys = reply.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if not keys:
                return found
            time.sleep(min(0.05 * 2**attempt, 2.0))
        raise BridgeError(f"DynamoDB at {self.endpoint} kept {len(keys)} state reads "
                          f"unprocessed (throttled) after {_UNPROCESSED_TRIES} tries")

    def _run(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``jobs`` concurrently (one alone inline); their results, or the first error
        once all have ended."""
        if len(jobs) < 2:
            return [job() for job in jobs]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency,
                                                thread_name_prefix="dynamodb-backend")
            pool = self._pool
        futures = [pool.submit(job) for job in jobs]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]


def _chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
