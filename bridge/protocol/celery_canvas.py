"""Celery tasks and canvas ⇄ machinery Signatures, losslessly in both directions.

Celery → machinery: positional args then kwargs become typed Args; callbacks
(link) → OnSuccess, errbacks (link_error) → OnError, the chain → a nested
OnSuccess chain, a chord body + group header → ChordCallback + GroupUUID.
Whatever machinery has no field for rides in ``Signature.headers["celery"]``
(one nested dict), so ``from_signature(to_signature(t)) == t``.

machinery → Celery: machinery-only fields ride in the Celery headers under
``"machinery"``, so ``to_signature(from_signature(s)) == s``. Groups and chords
nested in chains or callbacks, chunks and maps have no machinery form:
:class:`CeleryTranslationError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.errors import ArgTranslationError, BridgeError
from bridge.protocol.celery import PROTOCOL_2_HEADERS, CeleryTask, new_task, parse_iso
from bridge.protocol.gotime import GoTime, format_rfc3339, parse_rfc3339
from bridge.protocol.machinery import Arg, Signature
from bridge.schema import ArgTyper, InferTypes
from bridge.types import to_python, to_wire

SIG_KEYS = ("task", "args", "kwargs", "options", "subtask_type", "immutable")
_MACHINERY_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("GroupTaskCount", "group_task_count", 0), ("Immutable", "immutable", False),
    ("RetryCount", "retry_count", 0), ("RetryTimeout", "retry_timeout", 0),
    ("BrokerMessageGroupId", "broker_message_group_id", ""),
    ("SQSReceiptHandle", "sqs_receipt_handle", ""),
    ("StopTaskDeletionOnError", "stop_task_deletion_on_error", False),
    ("IgnoreWhenTaskNotRegistered", "ignore_when_task_not_registered", False),
)
RESERVED_HEADERS = frozenset({*PROTOCOL_2_HEADERS, "compression", "celery", "machinery"})
"""Celery headers the translation carries in the machinery ``celery`` header (the others
are custom headers, written as machinery headers of their own)."""
_TRANSLATED_OPTIONS = ("task_id", "queue", "priority", "link", "link_error")


class CeleryTranslationError(BridgeError, ValueError):
    """A Celery construct machinery cannot express (or a task too malformed to translate)."""


# --------------------------------------------------------------------------- helpers


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 is not 1.0, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def python_value(arg: Arg) -> Any:
    """The Python value of an Arg as a Celery call carries it (the wire value where the
    type is none or one Python cannot read)."""
    if not arg.type:
        return arg.value
    try:
        return to_python(arg.type, arg.value)
    except ArgTranslationError:
        return arg.value  # a type Python cannot read: pass the wire value on


_AS_IS = frozenset({("int64", int), ("string", str), ("bool", bool)})
"""An Arg of these (Go type, Python type) carrying the value itself reads back as it."""


def value_of(go_type: str, value: Any) -> Any:
    """``python_value`` of an Arg of ``go_type`` carrying ``value``, without making the Arg
    where the value reads back as itself."""
    if (go_type, type(value)) in _AS_IS:
        return value
    return python_value(Arg("", go_type, value))


def _kept(arg: Arg, value: Any) -> bool:
    """Whether a Go worker (and the way back) reads ``arg`` as ``value`` exactly."""
    if arg.value is value and (arg.type, type(value)) in _AS_IS:
        return True
    return _same(python_value(arg), value)


def _fields(sig: Signature) -> dict[str, Any]:
    """machinery-only fields of ``sig`` that are not at their zero value."""
    return {go: value for go, attr, zero in _MACHINERY_FIELDS
            if (value := getattr(sig, attr)) != zero}


def _apply_fields(sig: Signature, fields: Any) -> None:
    if not isinstance(fields, dict):
        return
    for go, attr, zero in _MACHINERY_FIELDS:
        value = fields.get(go)
        if value is not None and type(value) is type(zero):
            setattr(sig, attr, value)


def int_priority(value: Any) -> int | None:
    """A Celery priority machinery can carry (an int 0..255), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    return None


def _type_call(name: str, args: list[Any], kwargs: dict[str, Any], types: ArgTyper | None,
               strict: bool) -> tuple[list[Arg], dict[str, Any]]:
    """Typed Args for a call, plus what the celery dict needs to restore it exactly."""
    typed = (types or InferTypes()).type_args(name, args, kwargs, strict=strict)
    extra: dict[str, Any] = {}
    if kwargs:
        extra["kwargs"] = list(kwargs)
    raw_args = {str(i): args[i] for i, a in enumerate(typed[:len(args)])
                if not _kept(a, args[i])}
    raw_kwargs = {a.name: kwargs[a.name] for a in typed[len(args):]
                  if a.name in kwargs and not _kept(a, kwargs[a.name])}
    if raw_args or raw_kwargs:
        extra["raw"] = {"args": raw_args, "kwargs": raw_kwargs}
    return typed, extra


def _untype_call(args: list[Arg] | None, extra: Mapping[str, Any]
                 ) -> tuple[list[Any], dict[str, Any]]:
    names = extra.get("kwargs") or []
    raw = extra.get("raw") or {}
    items = list(args or [])
    split = len(items) - len(names)
    raw_args = raw.get("args", {})
    positional = [raw_args[str(i)] if str(i) in raw_args else python_value(a)
                  for i, a in enumerate(items[:split])]
    by_name = {a.name: a for a in items[split:]}
    kwargs = {}
    for name in names:
        if name in raw.get("kwargs", {}):
            kwargs[name] = raw["kwargs"][name]
        elif name in by_name:
            kwargs[name] = python_value(by_name[name])
    return positional, kwargs


# --------------------------------------------------------------------------- Celery → machinery


def _embedded(d: Any, where: str, types: ArgTyper | None, strict: bool,
              rest: list[Any] | None = None) -> Signature:
    """A machinery Signature for one Celery signature dict (``rest``: the chain after it)."""
    if not isinstance(d, dict) or not isinstance(d.get("task"), str):
        raise CeleryTranslationError(f"{where} is not a Celery signature dict: {d!r}"[:200])
    kind = d.get("subtask_type")
    if kind is not None:
        raise CeleryTranslationError(
            f"a {kind} {where} cannot be expressed as a machinery Signature")
    args, kwargs, options = d.get("args", []), d.get("kwargs", {}), d.get("options", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options,
                                                                                    dict):
        raise CeleryTranslationError(f"signature {d['task']} {where} has malformed "
                                     "args/kwargs/options")
    machinery = (options.get("headers") or {}).get("machinery") \
        if isinstance(options.get("headers"), dict) else None
    if isinstance(machinery, dict) and machinery.get("Source") == "machinery" and not rest:
        return _restore_embedded(d, args, options, machinery, types, strict)
    sig = Signature(name=d["task"])
    sig.args, celery = _type_call(d["task"], list(args), dict(kwargs), types, strict)
    translated, kept = [], dict(options)
    if isinstance(options.get("task_id"), str):
        sig.uuid = options["task_id"]
        translated.append("task_id")
    if isinstance(options.get("queue"), str):
        sig.routing_key = options["queue"]
        translated.append("queue")
    if int_priority(options.get("priority")) is not None:
        sig.priority = options["priority"]
        translated.append("priority")
    for key, attr, what in (("link", "on_success", "in a callback (link)"),
                            ("link_error", "on_error", "in an errback (link_error)")):
        value = options.get(key)
        if isinstance(value, dict):
            value = [value]
            celery[f"{key}_single"] = True
        if isinstance(value, list):
            setattr(sig, attr, [_embedded(v, what, types, strict) for v in value])
            translated.append(key)
    for key in translated:
        kept[key] = None
    celery["options"] = kept
    if translated:
        celery["translated"] = translated
    if type(d.get("immutable")) is bool:
        sig.immutable = d["immutable"]
    else:
        celery["immutable"] = d.get("immutable")
    if list(d) != list(SIG_KEYS):
        celery["keys"] = list(d)
        celery["values"] = {k: v for k, v in d.items() if k not in SIG_KEYS}
    if rest:
        sig.on_success = [*(sig.on_success or []),
                          _embedded(rest[-1], "nested in a chain", types, strict, rest[:-1])]
        celery["chain_next"] = True
    sig.headers = {"celery": celery}
    return sig


def _restore_embedded(d: dict[str, Any], args: list[Any], options: dict[str, Any],
                      machinery: dict[str, Any], types: ArgTyper | None,
                      strict: bool) -> Signature:
    """A Signature that came from machinery (``from_signature``) back as it was."""
    sig = Signature(name=d["task"], uuid=str(options.get("task_id", "")),
                    routing_key=str(options.get("queue", "")),
                    priority=int_priority(options.get("priority")) or 0,
                    immutable=d.get("immutable") is True)
    custom = {k: v for k, v in options["headers"].items() if k != "machinery"}
    _restore_machinery(sig, args, custom, machinery, eta=None)
    sig.group_uuid = str(machinery.get("GroupUUID", ""))
    if "ChordCallback" in machinery:
        sig.chord_callback = _embedded(machinery["ChordCallback"], "as a chord callback",
                                       types, strict)
    if isinstance(options.get("link"), list):
        sig.on_success = [_embedded(v, "in a callback (link)", types, strict)
                          for v in options["link"]]
    if isinstance(options.get("link_error"), list):
        sig.on_error = [_embedded(v, "in an errback (link_error)", types, strict)
                        for v in options["link_error"]]
    return sig


def _restore_machinery(sig: Signature, args: list[Any], custom: dict[str, Any],
                       machinery: dict[str, Any], eta: datetime | None) -> None:
    specs = machinery.get("Args")
    raw = machinery.get("Raw") or {}
    if specs is None:
        sig.args = None
    else:
        sig.args = []
        for index, (name, go_type) in enumerate(specs):
            value = args[index] if index < len(args) else None
            if str(index) in raw:
                wire = raw[str(index)]
            elif go_type:
                try:
                    wire = to_wire(go_type, value)
                except ArgTranslationError:
                    wire = value
            else:
                wire = value
            sig.args.append(Arg(name=name, type=go_type, value=wire))
    keys = machinery.get("Headers")
    hidden = machinery.get("HeaderValues") or {}
    sig.headers = None if keys is None else {
        k: hidden[k] if k in hidden else custom.get(k) for k in keys}
    stored_eta = machinery.get("ETA")
    if isinstance(stored_eta, str):
        exact = parse_rfc3339(stored_eta)
        same = eta is None or eta - exact == timedelta(0)  # same microsecond: keep Go's ns
        sig.eta = exact if same or eta is None else GoTime.from_datetime(eta)
    elif eta is not None:
        sig.eta = GoTime.from_datetime(eta)
    _apply_fields(sig, machinery)


def to_signature(task: CeleryTask, *, types: ArgTyper | None = None, queue: str = "",
                 group_task_count: int = 0, strict: bool = False) -> Signature:
    """machinery's Signature for a Celery task; ``types`` (a TaskSchema) types the args.

    Raises CeleryTranslationError for canvas machinery cannot express, and (with a
    schema or ``strict``) ArgTranslationError for args a Go worker cannot take.
    """
    machinery = task.headers.get("machinery")
    if isinstance(machinery, dict) and machinery.get("Source") == "machinery":
        return _machinery_origin(task, machinery, types, queue, group_task_count, strict)
    sig = Signature(uuid=task.id, name=task.name, routing_key=queue,
                    group_uuid=task.group or "", group_task_count=group_task_count,
                    priority=int_priority(task.properties.get("priority")) or 0)
    try:
        eta = task.eta
    except BridgeError as exc:
        raise CeleryTranslationError(f"task {task.name}: {exc}") from None
    sig.eta = GoTime.from_datetime(eta) if eta is not None else None
    sig.args, call = _type_call(task.name, task.args, task.kwargs, types, strict)
    celery: dict[str, Any] = {"headers": task.headers, "properties": task.properties,
                              "protocol": task.protocol, "serializer": task.serializer, **call}
    if task.layout:
        celery["layout"] = task.layout
    embed: dict[str, Any] = {}
    if task.callbacks is not None:
        sig.on_success = [_embedded(d, "in a callback (link)", types, strict)
                          for d in task.callbacks]
        embed["callbacks"] = len(task.callbacks)
    if task.errbacks is not None:
        sig.on_error = [_embedded(d, "in an errback (link_error)", types, strict)
                        for d in task.errbacks]
        embed["errbacks"] = len(task.errbacks)
    if task.chain is not None:
        embed["chain"] = len(task.chain)
        if task.chain:
            head = _embedded(task.chain[-1], "nested in a chain", types, strict,
                             task.chain[:-1])
            sig.on_success = [*(sig.on_success or []), head]
    if task.chord is not None:
        if task.chord.get("subtask_type") is not None:
            raise CeleryTranslationError(
                f"a chord whose body is a {task.chord['subtask_type']} cannot be expressed "
                "as a machinery Signature")
        sig.chord_callback = _embedded(task.chord, "as a chord body", types, strict)
    celery["embed"] = embed
    _apply_fields(sig, machinery)
    celery["fields"] = _fields(sig)
    sig.headers = {**custom_headers(task.headers), "celery": celery}
    return sig


def custom_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A Celery message's custom headers (what to_signature writes as machinery headers of
    their own, beside the ``celery`` one)."""
    if headers.keys() <= RESERVED_HEADERS:
        return {}
    return {k: v for k, v in headers.items() if k not in RESERVED_HEADERS}


def _machinery_origin(task: CeleryTask, machinery: dict[str, Any], types: ArgTyper | None,
                      queue: str, group_task_count: int, strict: bool) -> Signature:
    sig = Signature(uuid=task.id, name=task.name,
                    routing_key=queue or str(machinery.get("RoutingKey", "")),
                    group_uuid=task.group or "",
                    priority=int_priority(task.properties.get("priority")) or 0)
    custom = custom_headers(task.headers)
    _restore_machinery(sig, task.args, custom, machinery, eta=task.eta)
    if machinery.get("UUID") == "":
        sig.uuid = ""
    if group_task_count:
        sig.group_task_count = group_task_count
    if task.callbacks is not None:
        sig.on_success = [_embedded(d, "in a callback (link)", types, strict)
                          for d in task.callbacks]
    if task.errbacks is not None:
        sig.on_error = [_embedded(d, "in an errback (link_error)", types, strict)
                        for d in task.errbacks]
    if task.chord is not None:
        sig.chord_callback = _embedded(task.chord, "as a chord body", types, strict)
    return sig


# --------------------------------------------------------------------------- machinery → Celery


def _embedded_dict(sig: Signature) -> tuple[dict[str, Any], list[Signature | None]]:
    """The Celery signature dict for a sub-Signature, and its chain continuation."""
    celery = (sig.headers or {}).get("celery")
    if not isinstance(celery, dict):
        return _machinery_dict(sig), []
    args, kwargs = _untype_call(sig.args, celery)
    options = dict(celery.get("options") or {})
    success = list(sig.on_success or [])
    errors = list(sig.on_error or [])
    values = {"task_id": sig.uuid, "queue": sig.routing_key, "priority": sig.priority}
    for key in celery.get("translated", ()):
        if key in values:
            options[key] = values[key]
    for key, subs in (("link", success), ("link_error", errors)):
        if key in celery.get("translated", ()):
            count = len(subs) - (1 if key == "link" and celery.get("chain_next") else 0)
            links = [_embedded_dict(s)[0] for s in subs[:count] if s is not None]
            options[key] = links[0] if celery.get(f"{key}_single") and links else links
            del subs[:count]
    immutable = celery.get("immutable", sig.immutable)
    base = {"task": sig.name, "args": args, "kwargs": kwargs, "options": options,
            "subtask_type": None, "immutable": immutable}
    if "keys" in celery:
        extra = celery.get("values") or {}
        base = {k: base[k] if k in base else extra.get(k) for k in celery["keys"]}
    return base, success if celery.get("chain_next") else []


def _machinery_extras(sig: Signature, top: bool) -> dict[str, Any]:
    extras: dict[str, Any] = {"Source": "machinery",
                              "Args": None if sig.args is None else
                              [[a.name, a.type] for a in sig.args]}
    raw = {}
    for index, arg in enumerate(sig.args or []):
        if arg.type:
            try:
                if not _same(to_wire(arg.type, python_value(arg)), arg.value):
                    raw[str(index)] = arg.value
            except ArgTranslationError:
                raw[str(index)] = arg.value
    if raw:
        extras["Raw"] = raw
    extras["Headers"] = None if sig.headers is None else list(sig.headers)
    hidden = {k: v for k, v in (sig.headers or {}).items() if k in RESERVED_HEADERS}
    if hidden:
        extras["HeaderValues"] = hidden
    if sig.eta is not None:
        extras["ETA"] = format_rfc3339(sig.eta)
    if top and sig.routing_key:
        extras["RoutingKey"] = sig.routing_key
    if not top and sig.group_uuid:
        extras["GroupUUID"] = sig.group_uuid
    if not top and sig.chord_callback is not None:
        extras["ChordCallback"] = _embedded_dict(sig.chord_callback)[0]
    if top and not sig.uuid:
        extras["UUID"] = ""
    extras.update(_fields(sig))
    return extras


def _custom(sig: Signature) -> dict[str, Any]:
    return {k: v for k, v in (sig.headers or {}).items() if k not in RESERVED_HEADERS}


def _machinery_dict(sig: Signature) -> dict[str, Any]:
    options: dict[str, Any] = {"task_id": sig.uuid}
    if sig.routing_key:
        options["queue"] = sig.routing_key
    if sig.priority:
        options["priority"] = sig.priority
    if sig.on_success is not None:
        options["link"] = [_embedded_dict(s)[0] for s in sig.on_success if s is not None]
    if sig.on_error is not None:
        options["link_error"] = [_embedded_dict(s)[0] for s in sig.on_error if s is not None]
    options["headers"] = {**_custom(sig), "machinery": _machinery_extras(sig, top=False)}
    return {"task": sig.name, "args": [python_value(a) for a in sig.args or []], "kwargs": {},
            "options": options, "subtask_type": None, "immutable": sig.immutable}


def from_signature(sig: Signature, *, group_index: int | None = None) -> CeleryTask:
    """The Celery task for a machinery Signature (exactly the original Celery task when
    ``sig`` came from :func:`to_signature`)."""
    celery = (sig.headers or {}).get("celery")
    if not isinstance(celery, dict) or not isinstance(celery.get("headers"), dict):
        return _from_machinery(sig, group_index)
    args, kwargs = _untype_call(sig.args, celery)
    headers = dict(celery["headers"])
    properties = dict(celery.get("properties") or {})
    if sig.priority != (int_priority(properties.get("priority")) or 0):
        properties["priority"] = sig.priority
    if group_index is not None:
        headers["group_index"] = group_index
    _carry_eta(sig, headers)
    fields = _fields(sig)
    if fields != celery.get("fields", {}):
        old = headers.get("machinery")
        headers["machinery"] = {**(old if isinstance(old, dict) else {}), **fields}
    embed = celery.get("embed") or {}
    success = list(sig.on_success or [])
    task = CeleryTask(name=sig.name, id=sig.uuid, args=args, kwargs=kwargs, headers=headers,
                      properties=properties, protocol=int(celery.get("protocol", 2)),
                      serializer=str(celery.get("serializer", "json")),
                      layout=dict(celery.get("layout") or {}))
    if embed.get("callbacks") is not None:
        task.callbacks = [_embedded_dict(s)[0] for s in success[:embed["callbacks"]]
                          if s is not None]
        success = success[embed["callbacks"]:]
    if embed.get("errbacks") is not None:
        task.errbacks = [_embedded_dict(s)[0] for s in sig.on_error or [] if s is not None]
    if embed.get("chain") is not None:
        chain: list[Any] = []
        current = success[0] if success else None
        while current is not None and len(chain) < embed["chain"]:
            entry, rest = _embedded_dict(current)
            chain.append(entry)
            current = rest[0] if rest else None
        task.chain = list(reversed(chain))
    if sig.chord_callback is not None:
        task.chord = _embedded_dict(sig.chord_callback)[0]
    return task


def _carry_eta(sig: Signature, headers: dict[str, Any]) -> None:
    """An ETA set, moved or cleared on the machinery side wins over the Celery header (the
    header's own spelling is kept when both name the same instant)."""
    try:
        original = parse_iso(headers.get("eta"), "eta")
    except BridgeError:
        original = None
    if sig.eta is None:
        if original is not None:
            headers["eta"] = None
    elif original is None or original != sig.eta:
        headers["eta"] = datetime.fromtimestamp(sig.eta.timestamp(), UTC).replace(
            microsecond=sig.eta.microsecond).isoformat()


def _from_machinery(sig: Signature, group_index: int | None) -> CeleryTask:
    headers = {**_custom(sig), "machinery": _machinery_extras(sig, top=True)}
    eta = sig.eta
    return new_task(
        sig.name, [python_value(a) for a in sig.args or []], task_id=sig.uuid or None,
        eta=eta, group=sig.group_uuid or None, group_index=group_index,
        priority=sig.priority, headers=headers,
        callbacks=[_embedded_dict(s)[0] for s in sig.on_success if s is not None]
        if sig.on_success is not None else None,
        errbacks=[_embedded_dict(s)[0] for s in sig.on_error if s is not None]
        if sig.on_error is not None else None,
        chord=_embedded_dict(sig.chord_callback)[0] if sig.chord_callback else None,
    )


__all__ = ["RESERVED_HEADERS", "SIG_KEYS", "CeleryTranslationError", "custom_headers",
           "from_signature", "int_priority", "parse_iso", "python_value", "to_signature",
           "value_of"]
