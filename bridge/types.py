"""Go type strings ⇄ typed Python values, for machinery args and results.

machinery accepts these arg types (``tasks/reflect.go`` typesMap): bool, int,
int8…int64, uint, uint8…uint64, float32, float64, string, ``[]T`` of each, and
``[]byte``. ``[]byte``/``[]uint8`` become ``bytes``; other slices become lists.

Stricter than Go where Go corrupts data or dies: an int8 of 300 is an error
here (Go silently stores 44), and so are a non-integer literal for an int
type, NaN/Inf, a negative uint, and a slice type given a bool or an object
(which panics a Go worker). Every failure is an ``ArgTranslationError``.

Python annotations give exact Go types: ``def f(a: Int32) -> list[str]``
means ``int32`` in, ``[]string`` out. Without one, int→int64, float→float64,
str→string, bool→bool, bytes→[]byte, a homogeneous list→``[]T``.
"""

from __future__ import annotations

import binascii
import inspect
import math
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from bridge.errors import ArgTranslationError, EncodeError
from bridge.protocol.gojson import JSONNumber, clip_number, plain, to_float32
from bridge.protocol.machinery import Arg, TaskResult

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(2**63), 2**63 - 1),  # machinery runs on 64-bit platforms
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint": (0, 2**64 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
SCALAR_TYPES: tuple[str, ...] = (
    "bool", *_INT_RANGES, "float32", "float64", "string",
)
SLICE_TYPES: tuple[str, ...] = (*(f"[]{t}" for t in SCALAR_TYPES), "[]byte")
SUPPORTED_TYPES: frozenset[str] = frozenset(SCALAR_TYPES + SLICE_TYPES)
"""Every Type string machinery's workers accept in an Arg or reflect in a result."""

_BYTES_TYPES = frozenset({"[]byte", "[]uint8"})
_INT_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


# --------------------------------------------------------------------------- annotations


@dataclass(frozen=True, slots=True)
class GoType:
    """Annotation metadata naming the exact Go type of a value."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in SUPPORTED_TYPES:
            raise ValueError(f"{self.name} is not one of supported types")


Int = Annotated[int, GoType("int")]
Int8 = Annotated[int, GoType("int8")]
Int16 = Annotated[int, GoType("int16")]
Int32 = Annotated[int, GoType("int32")]
Int64 = Annotated[int, GoType("int64")]
Uint = Annotated[int, GoType("uint")]
Uint8 = Annotated[int, GoType("uint8")]
Uint16 = Annotated[int, GoType("uint16")]
Uint32 = Annotated[int, GoType("uint32")]
Uint64 = Annotated[int, GoType("uint64")]
Float32 = Annotated[float, GoType("float32")]
Float64 = Annotated[float, GoType("float64")]
Bytes = Annotated[bytes, GoType("[]byte")]

_PLAIN_TYPES: dict[Any, str] = {
    bool: "bool", int: "int64", float: "float64", str: "string", bytes: "[]byte",
}
_EMPTY = (inspect.Parameter.empty, Any, None)


def go_type_of(annotation: Any) -> str | None:
    """The Go type an annotation stands for; None when it says nothing (infer at run time)."""
    if annotation in _EMPTY:
        return None
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, GoType):
                return meta.name
        return go_type_of(typing.get_args(annotation)[0])
    if annotation in _PLAIN_TYPES:
        return _PLAIN_TYPES[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, Sequence, tuple) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{annotation} is a fixed tuple: machinery args are slices")
        element = go_type_of(args[0])
        if element is None or element.startswith("[]"):
            raise TypeError(f"{annotation}: a slice needs a scalar element type")
        return f"[]{element}"
    raise TypeError(f"{annotation!r} has no machinery Go type")


def result_go_types(annotation: Any) -> list[str | None]:
    """Go types of a function's results from its return annotation (tuple = several)."""
    if annotation in (None, type(None)):
        return []
    if annotation is inspect.Signature.empty or annotation is Any:
        return [None]
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if not (len(args) == 2 and args[1] is Ellipsis):
            return [go_type_of(a) for a in args]
    return [go_type_of(annotation)]


def function_go_types(func: Callable[..., Any]) -> tuple[list[str | None], list[str | None]]:
    """Go types of ``func``'s positional parameters and of its results."""
    hints = typing.get_type_hints(func, include_extras=True)
    params = [
        go_type_of(hints.get(p.name, inspect.Parameter.empty))
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return params, result_go_types(hints.get("return", inspect.Signature.empty))


# --------------------------------------------------------------------------- wire → Python


def _fail(reason: str, go_type: str | None, value: Any) -> ArgTranslationError:
    return ArgTranslationError(reason, go_type=go_type, value=value)


def _show(value: Any) -> str:
    if isinstance(value, JSONNumber):
        return clip_number(value.literal)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_int(go_type: str, value: Any) -> int:
    if isinstance(value, JSONNumber):
        literal = value.literal
        if not _INT_LITERAL.match(literal):
            shown = clip_number(literal)
            raise _fail(f'{shown} is not an integer literal (Go: strconv.ParseInt: '
                        f'parsing "{shown}": invalid syntax)', go_type, value)
        if len(literal.lstrip("-").lstrip("0")) > 24:  # beyond every Go integer type
            raise _fail(f"{clip_number(literal)} is out of range for {go_type} "
                        f"({_INT_RANGES[go_type][0]}..{_INT_RANGES[go_type][1]})",
                        go_type, value)
        number = int(literal)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    else:
        raise _fail(f"{_show(value)} is not {go_type}", go_type, value)
    low, high = _INT_RANGES[go_type]
    if not low <= number <= high:
        raise _fail(f"{number} is out of range for {go_type} ({low}..{high})", go_type, value)
    return number


def _read_float(go_type: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{_show(value)} is not {go_type}", go_type, value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if math.isnan(number) or math.isinf(number):
        raise _fail(f"{_show(value)} is not a finite {go_type}", go_type, value)
    if go_type == "float32":
        try:
            return to_float32(number)
        except EncodeError:
            raise _fail(f"{_show(value)} is out of range for float32", go_type, value) from None
    return number


def _read_scalar(go_type: str, value: Any) -> Any:
    if go_type in _INT_RANGES:
        return _read_int(go_type, value)
    if go_type in ("float32", "float64"):
        return _read_float(go_type, value)
    if go_type == "bool":
        if type(value) is not bool:
            raise _fail(f"{_show(value)} is not bool", go_type, value)
        return value
    if type(value) is not str:
        raise _fail(f"{_show(value)} is not string", go_type, value)
    return value


def _decode_base64(go_type: str, text: str) -> bytes:
    # Go's base64.StdEncoding: padded, and it skips \r and \n
    try:
        return binascii.a2b_base64(text.replace("\r", "").replace("\n", ""), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _fail(f"{_show(text)} is not valid base64 for {go_type}: {exc}",
                    go_type, text) from None


def _check_type(go_type: str, value: Any) -> None:
    if go_type not in SUPPORTED_TYPES:
        raise _fail(f"{go_type} is not one of supported types", go_type, value)


def to_python(go_type: str, value: Any, *, position: int | None = None, name: str = "") -> Any:
    """The Python value of a wire ``value`` of Go type ``go_type`` (as a Go worker reads it)."""
    # the common scalars without a call (what exact_to_python gives them: the differential
    # tests in tests/unit/test_properties.py hold the two together)
    kind = type(value)
    if kind is int:
        bounds = _INT_RANGES.get(go_type)
        if bounds is not None and bounds[0] <= value <= bounds[1]:
            return value
    elif kind is str:
        if go_type == "string":
            return value
    elif kind is bool:
        if go_type == "bool":
            return value
    elif (kind is JSONNumber or kind is float) and go_type == "float64":
        number = float(value)
        if number - number == 0.0:  # finite
            return number
    elif kind is list and go_type == "[]string":
        for item in value:
            if type(item) is not str:
                break
        else:
            return value[:]
    return exact_to_python(go_type, value, position=position, name=name)


def exact_to_python(go_type: str, value: Any, *, position: int | None = None,
                    name: str = "") -> Any:
    """``to_python`` without its shortcuts (the reference they are tested against)."""
    try:
        _check_type(go_type, value)
        if not go_type.startswith("[]"):
            return _read_scalar(go_type, value)
        element = "uint8" if go_type == "[]byte" else go_type[2:]
        if value is None:  # Go: null gives an empty slice
            return b"" if go_type in _BYTES_TYPES else []
        if isinstance(value, str) and element.startswith("uint"):
            raw = _decode_base64(go_type, value)  # Go decodes base64 for every []uintN
            return raw if go_type in _BYTES_TYPES else list(raw)
        if isinstance(value, bytes | bytearray) and go_type in _BYTES_TYPES:
            return bytes(value)
        if not isinstance(value, list | tuple):
            raise _fail(f"{_show(value)} is not {go_type}", go_type, value)
        items = [_element(element, go_type, index, item) for index, item in enumerate(value)]
        return bytes(items) if go_type in _BYTES_TYPES else items
    except ArgTranslationError as exc:
        raise exc.at(position, name) from None


def _element(element: str, go_type: str, index: int, item: Any) -> Any:
    try:
        return _read_scalar(element, item)
    except ArgTranslationError as exc:
        raise _fail(f"element {index}: {exc.reason}", go_type, item) from None


def arg_to_python(arg: Arg, position: int | None = None) -> Any:
    """The typed Python value of one Arg."""
    return to_python(arg.type, arg.value, position=position, name=arg.name)


def args_to_python(args: Sequence[Arg] | None) -> list[Any]:
    """Typed Python values of a signature's Args, in order."""
    return [to_python(arg.type, arg.value, position=index, name=arg.name)
            for index, arg in enumerate(args or ())]


def result_to_python(result: TaskResult) -> Any:
    """A result's Python value; types Go cannot reflect (structs, maps) come back as plain data."""
    if result.type in SUPPORTED_TYPES:
        return to_python(result.type, result.value)
    return plain(result.value)


# --------------------------------------------------------------------------- Python → wire


def infer_go_type(value: Any) -> str:
    """The Go type a Python value maps to without an annotation."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "[]byte"
    if isinstance(value, list | tuple):
        if not value:
            raise _fail("cannot infer the Go type of an empty list: annotate it or pass go_type",
                        None, value)
        kinds = {infer_go_type(item) for item in value}
        if len(kinds) != 1:
            raise _fail(f"a mixed list ({', '.join(sorted(kinds))}) has no Go slice type",
                        None, value)
        kind = kinds.pop()
        if kind.startswith("[]"):
            raise _fail("nested lists have no machinery Go type", None, value)
        return f"[]{kind}"
    raise _fail(f"{type(value).__name__} values have no machinery Go type "
                "(supported: bool, int, float, str, bytes and lists of them)", None, value)


def _write_scalar(go_type: str, value: Any) -> Any:
    if go_type in _INT_RANGES:
        if isinstance(value, float) and not isinstance(value, JSONNumber):
            raise _fail(f"{value!r} is a float: {go_type} needs an int", go_type, value)
        return _read_int(go_type, value)
    if go_type in ("float32", "float64"):
        if isinstance(value, JSONNumber):
            _read_float(go_type, value)
            return value  # a decoded literal goes back as written, as Go's json.Number does
        return _read_float(go_type, value)
    return _read_scalar(go_type, value)


def to_wire(go_type: str, value: Any) -> Any:
    """The wire form Go's producer writes for a Python ``value`` of type ``go_type``."""
    _check_type(go_type, value)
    if not go_type.startswith("[]"):
        return _write_scalar(go_type, value)
    if value is None:
        return None  # a nil slice: null on the wire
    if go_type in _BYTES_TYPES:
        if isinstance(value, str):
            return binascii.b2a_base64(_decode_base64(go_type, value), newline=False).decode()
        if not isinstance(value, bytes | bytearray | memoryview):
            if not isinstance(value, list | tuple):
                raise _fail(f"{_show(value)} is not {go_type}", go_type, value)
            value = bytes(_element("uint8", go_type, i, v) for i, v in enumerate(value))
        return binascii.b2a_base64(bytes(value), newline=False).decode("ascii")
    if not isinstance(value, list | tuple):
        raise _fail(f"{_show(value)} is not {go_type}", go_type, value)
    element = go_type[2:]
    wire = []
    for index, item in enumerate(value):
        try:
            wire.append(_write_scalar(element, item))
        except ArgTranslationError as exc:
            raise _fail(f"element {index}: {exc.reason}", go_type, item) from None
    return wire


def to_arg(value: Any, go_type: str | None = None, name: str = "",
           *, position: int | None = None) -> Arg:
    """An Arg carrying ``value`` as Go type ``go_type`` (inferred when None)."""
    if go_type is None:  # the commonest inferred scalars without a call, as below types them
        python_type = type(value)
        if python_type is int and _INT64_MIN <= value <= _INT64_MAX:
            return Arg(name=name, type="int64", value=value)
        if python_type is str:
            return Arg(name=name, type="string", value=value)
        if python_type is bool:
            return Arg(name=name, type="bool", value=value)
    try:
        kind = go_type if go_type is not None else infer_go_type(value)
        return Arg(name=name, type=kind, value=to_wire(kind, value))
    except ArgTranslationError as exc:
        raise exc.at(position, name) from None


_INT64_MIN, _INT64_MAX = _INT_RANGES["int64"]


def to_args(values: Sequence[Any], go_types: Sequence[str | None] | None = None) -> list[Arg]:
    """Args for positional ``values`` (types from ``go_types`` where given, else inferred)."""
    kinds = list(go_types or ())
    return [
        to_arg(value, kinds[index] if index < len(kinds) else None, position=index)
        for index, value in enumerate(values)
    ]


def to_result(value: Any, go_type: str | None = None) -> TaskResult:
    """A TaskResult as a Go worker writes it (``[]byte`` results are typed ``[]uint8``)."""
    kind = go_type if go_type is not None else infer_go_type(value)
    wire = to_wire(kind, value)
    return TaskResult(type="[]uint8" if kind == "[]byte" else kind, value=wire)


__all__ = [
    "SCALAR_TYPES", "SLICE_TYPES", "SUPPORTED_TYPES", "Bytes", "Float32", "Float64", "GoType",
    "Int", "Int8", "Int16", "Int32", "Int64", "Uint", "Uint8", "Uint16", "Uint32", "Uint64",
    "arg_to_python", "args_to_python", "function_go_types", "go_type_of", "infer_go_type",
    "result_go_types", "result_to_python", "to_arg", "to_args", "to_python", "to_result",
    "to_wire",
]
