"""machinery-bridge: Python as a first-class citizen of Go machinery and Celery task queues.

The names below are imported on first use, so ``mbridge`` starts (and a Ctrl-C while it
starts is handled) before kombu, redis-py and the rest are loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "Arg": "bridge.protocol.machinery",
    "ArgTranslationError": "bridge.errors",
    "AsyncResult": "bridge.result",
    "Bridge": "bridge.app",
    "BridgeError": "bridge.errors",
    "Bytes": "bridge.types",
    "DecodeError": "bridge.errors",
    "EncodeError": "bridge.errors",
    "FAILURE": "bridge.protocol.machinery",
    "Float32": "bridge.types",
    "Float64": "bridge.types",
    "GO_ZERO_TIME": "bridge.protocol.gotime",
    "GoTime": "bridge.protocol.gotime",
    "GroupMeta": "bridge.protocol.machinery",
    "Int": "bridge.types",
    "Int16": "bridge.types",
    "Int32": "bridge.types",
    "Int64": "bridge.types",
    "Int8": "bridge.types",
    "PENDING": "bridge.protocol.machinery",
    "RECEIVED": "bridge.protocol.machinery",
    "RETRY": "bridge.protocol.machinery",
    "ResultTimeout": "bridge.result",
    "RetryLater": "bridge.retry",
    "STARTED": "bridge.protocol.machinery",
    "SUCCESS": "bridge.protocol.machinery",
    "Signature": "bridge.protocol.machinery",
    "TaskFailed": "bridge.result",
    "TaskResult": "bridge.protocol.machinery",
    "TaskState": "bridge.protocol.machinery",
    "Uint": "bridge.types",
    "Uint16": "bridge.types",
    "Uint32": "bridge.types",
    "Uint64": "bridge.types",
    "Uint8": "bridge.types",
    "new_uuid": "bridge.protocol.machinery",
    "to_arg": "bridge.types",
    "to_python": "bridge.types",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
