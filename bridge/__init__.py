"""machinery-bridge: Python as a first-class citizen of Go machinery and Celery task queues."""

from bridge.app import Bridge
from bridge.errors import ArgTranslationError, BridgeError, DecodeError, EncodeError
from bridge.protocol.gotime import GO_ZERO_TIME, GoTime
from bridge.protocol.machinery import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    STARTED,
    SUCCESS,
    Arg,
    GroupMeta,
    Signature,
    TaskResult,
    TaskState,
    new_uuid,
)
from bridge.result import AsyncResult, ResultTimeout, TaskFailed
from bridge.retry import RetryLater
from bridge.types import (
    Bytes,
    Float32,
    Float64,
    Int,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    to_arg,
    to_python,
)

__version__ = "0.1.0"

__all__ = [
    "FAILURE",
    "GO_ZERO_TIME",
    "PENDING",
    "RECEIVED",
    "RETRY",
    "STARTED",
    "SUCCESS",
    "Arg",
    "ArgTranslationError",
    "AsyncResult",
    "Bridge",
    "BridgeError",
    "Bytes",
    "DecodeError",
    "EncodeError",
    "Float32",
    "Float64",
    "GoTime",
    "GroupMeta",
    "Int",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "ResultTimeout",
    "RetryLater",
    "Signature",
    "TaskFailed",
    "TaskResult",
    "TaskState",
    "Uint",
    "Uint8",
    "Uint16",
    "Uint32",
    "Uint64",
    "new_uuid",
    "to_arg",
    "to_python",
]
