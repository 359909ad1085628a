"""Human-readable views of machinery messages, with args and results typed."""

from __future__ import annotations

from typing import Any

from bridge.errors import ArgTranslationError, DecodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import Pairs
from bridge.protocol.gotime import format_rfc3339
from bridge.protocol.machinery import GroupMeta, Signature, TaskState
from bridge.types import arg_to_python, result_to_python

Message = Signature | TaskState | GroupMeta


def detect_kind(data: bytes | str) -> type[Message]:
    """Which machinery struct a JSON message is, by its keys (case-insensitive, as Go)."""
    raw = gojson.loads_raw(data)
    if type(raw) is not Pairs:
        raise DecodeError("a machinery message is a JSON object")
    keys = {gojson.fold_key(key) for key, _ in raw}
    if "taskuuid" in keys or "state" in keys:
        return TaskState
    if "taskuuids" in keys or ("groupuuid" in keys and "name" not in keys):
        return GroupMeta
    return Signature


def decode_any(data: bytes | str) -> Message:
    """Decode a Signature, TaskState or GroupMeta, whichever ``data`` is."""
    return detect_kind(data).from_json(data)


def _typed(read: Any, *args: Any) -> str:
    try:
        return repr(read(*args))
    except ArgTranslationError as exc:
        return f"<cannot translate: {exc.reason}>"


def describe(message: Message, indent: str = "") -> list[str]:
    """Lines describing a message, args and results shown as typed Python values."""
    if isinstance(message, Signature):
        return _describe_signature(message, indent)
    if isinstance(message, TaskState):
        lines = [f"{indent}TaskState {message.task_uuid} {message.task_name!r} {message.state}",
                 f"{indent}  created_at: {format_rfc3339(message.created_at)}  ttl: {message.ttl}"]
        if message.error:
            lines.append(f"{indent}  error: {message.error}")
        if message.results is not None:
            lines.append(f"{indent}  results:")
            for index, result in enumerate(message.results):
                shown = "nil" if result is None else (
                    f"{result.type} = {_typed(result_to_python, result)}")
                lines.append(f"{indent}    [{index}] {shown}")
        return lines
    return [
        f"{indent}GroupMeta {message.group_uuid}",
        f"{indent}  task_uuids: {message.task_uuids}",
        f"{indent}  chord_triggered: {message.chord_triggered}  lock: {message.lock}",
        f"{indent}  created_at: {format_rfc3339(message.created_at)}  ttl: {message.ttl}",
    ]


def _describe_signature(sig: Signature, indent: str) -> list[str]:
    lines = [f"{indent}Signature {sig.uuid} {sig.name!r}"]
    fields = {
        "routing_key": sig.routing_key,
        "eta": format_rfc3339(sig.eta) if sig.eta else None,
        "group": f"{sig.group_uuid} ({sig.group_task_count} tasks)" if sig.group_uuid else None,
        "headers": sig.headers or None,
        "priority": sig.priority or None,
        "immutable": sig.immutable or None,
        "retry": f"count {sig.retry_count}, timeout {sig.retry_timeout}s"
        if sig.retry_count or sig.retry_timeout else None,
        "broker_message_group_id": sig.broker_message_group_id or None,
        "stop_task_deletion_on_error": sig.stop_task_deletion_on_error or None,
        "ignore_when_task_not_registered": sig.ignore_when_task_not_registered or None,
    }
    lines += [f"{indent}  {key}: {value}" for key, value in fields.items() if value]
    lines.append(f"{indent}  args:" + ("" if sig.args else " none"))
    for index, arg in enumerate(sig.args or ()):
        label = f"{arg.name} " if arg.name else ""
        lines.append(f"{indent}    [{index}] {label}{arg.type} = {_typed(arg_to_python, arg)}")
    for title, nested in (("on_success", sig.on_success), ("on_error", sig.on_error)):
        for child in nested or ():
            lines.append(f"{indent}  {title}:")
            lines += describe(child, indent + "    ") if child else [f"{indent}    nil"]
    if sig.chord_callback is not None:
        lines.append(f"{indent}  chord_callback:")
        lines += describe(sig.chord_callback, indent + "    ")
    return lines
