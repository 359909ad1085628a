"""The quickest decode of a Signature or TaskState: msgspec reads and type-checks the JSON
into typed structs of Go's field names in one pass of C, and the machinery classes are
built from them.

msgspec keeps the last value of a repeated key, as Go does, and refuses what Go's reading
depends on and msgspec cannot show, so this path takes only bytes where the two agree:

- an object must hold exactly Go's field names, each once or more (a case-folded spelling,
  an unknown key or a missing field is an error here: the pairs path does Go's
  exact-then-folded field match);
- every field of the plain type Go reads into, integers in range (a null where Go keeps
  the earlier value, a float literal in an int field: errors here);
- no lone surrogate escape (msgspec refuses one; Go reads it as U+FFFD), no invalid UTF-8,
  nothing after the value, and no ``-0`` integer literal (Go's json.Number keeps it; an int
  cannot): the pairs path reads those;
- nesting within ``MAX_NESTING``.

Anything else, an error included, returns None and ``GoStruct.from_json`` goes the pairs
way, which gives Go's value or Go's error. tests/unit/test_fast_paths.py holds every
decode to the exact path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber
from bridge.protocol.gostruct import INT64_MAX, INT64_MIN
from bridge.protocol.gotime import parse_rfc3339

Data = bytes | bytearray | memoryview | str
_MINUS_ZERO = re.compile(gojson.MINUS_ZERO.pattern.encode())  # the same rule, for bytes
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Uint8 = Annotated[int, msgspec.Meta(ge=0, le=255)]


class _Struct(msgspec.Struct, forbid_unknown_fields=True):
    """Go's field names, all required, no other key."""


class WireArg(_Struct):
    Name: str
    Type: str
    Value: Any


class WireSignature(_Struct):
    UUID: str
    Name: str
    RoutingKey: str
    ETA: str | None
    GroupUUID: str
    GroupTaskCount: Int64
    Args: list[WireArg] | None
    Headers: dict[str, Any] | None
    Priority: Uint8
    Immutable: bool
    RetryCount: Int64
    RetryTimeout: Int64
    OnSuccess: list[WireSignature | None] | None
    OnError: list[WireSignature | None] | None
    ChordCallback: WireSignature | None
    BrokerMessageGroupId: str
    SQSReceiptHandle: str
    StopTaskDeletionOnError: bool
    IgnoreWhenTaskNotRegistered: bool


class WireResult(_Struct):
    Type: str
    Value: Any


class WireTaskState(_Struct):
    TaskUUID: str
    TaskName: str
    State: str
    Results: list[WireResult | None] | None
    Error: str
    CreatedAt: str
    TTL: Int64


# floats in untyped places (Arg and result values, headers) keep their literal, as Go's
# json.Number does
_read_signature = msgspec.json.Decoder(WireSignature, float_hook=JSONNumber).decode


class _FloatSeen(Exception):
    """A float in a Signature read for its plain values."""


def _refuse_float(literal: str) -> Any:
    raise _FloatSeen(literal)


_read_signature_without_floats = msgspec.json.Decoder(WireSignature,
                                                      float_hook=_refuse_float).decode
_read_task_state = msgspec.json.Decoder(WireTaskState, float_hook=JSONNumber).decode


def _plain_bytes(data: Data) -> bytes | None:
    if type(data) is not bytes:
        if isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in the text: the pairs path
                return None
        else:
            data = bytes(data)
    return None if _MINUS_ZERO.search(data) is not None else data


def read_wire_signature(data: Data) -> WireSignature | None:
    """The Signature's typed structs as the quickest reader reads them (None where the
    pairs path must decide), for a caller that needs no Signature object."""
    raw = _plain_bytes(data)
    return None if raw is None else _read_or_none(raw)


def _read_or_none(raw: bytes) -> WireSignature | None:
    try:
        return _read_signature(raw)
    except Exception:  # not this struct as msgspec reads it: pairs path
        return None


def read_wire_signature_noting_floats(data: Data) -> tuple[WireSignature | None, bool]:
    """:func:`read_wire_signature`, and whether the Signature holds no float anywhere (its
    headers' values are then JSON's plain ones: see ``CeleryMessage.plain_json``)."""
    raw = _plain_bytes(data)
    if raw is None:
        return None, False
    try:
        return _read_signature_without_floats(raw), True
    except _FloatSeen:
        return _read_or_none(raw), False
    except Exception:  # not this struct as msgspec reads it: pairs path
        return None, False


def readers(signature_cls: type[Any], arg_cls: type[Any], task_state_cls: type[Any],
            task_result_cls: type[Any], max_nesting: int,
            ) -> tuple[Callable[[Data], Any], Callable[[Data], Any]]:
    """The Signature and TaskState readers for machinery's classes (given, not imported:
    the codec module wires them in). Each returns the struct, or None when the pairs path
    must decide."""
    for wire, cls in ((WireSignature, signature_cls), (WireArg, arg_cls),
                      (WireTaskState, task_state_cls), (WireResult, task_result_cls)):
        assert wire.__struct_fields__ == cls._KEYS, cls  # the same fields in Go's order

    def read_signature(data: Data) -> Any:
        wire = read_wire_signature(data)
        if wire is None:
            return None
        try:
            return build_signature(wire, 0)
        except Exception:  # too deep, or a bad ETA: pairs path
            return None

    def read_task_state(data: Data) -> Any:
        raw = _plain_bytes(data)
        if raw is None:
            return None
        try:
            wire = _read_task_state(raw)
            results = wire.Results
            if results is not None:
                results = [None if r is None else task_result_cls(r.Type, r.Value)
                           for r in results]
            return task_state_cls(wire.TaskUUID, wire.TaskName, wire.State, results,
                                  wire.Error, parse_rfc3339(wire.CreatedAt), wire.TTL)
        except Exception:
            return None

    def build_signature(wire: WireSignature, depth: int) -> Any:
        if depth > max_nesting:
            raise RecursionError("the pairs path says how deep is too deep")
        args, eta = wire.Args, wire.ETA
        on_success, on_error, chord = wire.OnSuccess, wire.OnError, wire.ChordCallback
        if args is not None:
            args = [arg_cls(arg.Name, arg.Type, arg.Value) for arg in args]
        if on_success is not None:
            on_success = [None if s is None else build_signature(s, depth + 1)
                          for s in on_success]
        if on_error is not None:
            on_error = [None if s is None else build_signature(s, depth + 1)
                        for s in on_error]
        if chord is not None:
            chord = build_signature(chord, depth + 1)
        return signature_cls(
            wire.UUID, wire.Name, wire.RoutingKey, None if eta is None else parse_rfc3339(eta),
            wire.GroupUUID, wire.GroupTaskCount, args, wire.Headers, wire.Priority,
            wire.Immutable, wire.RetryCount, wire.RetryTimeout, on_success, on_error, chord,
            wire.BrokerMessageGroupId, wire.SQSReceiptHandle, wire.StopTaskDeletionOnError,
            wire.IgnoreWhenTaskNotRegistered)

    return read_signature, read_task_state
