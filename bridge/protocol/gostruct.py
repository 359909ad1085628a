"""Go's ``encoding/json`` rules for a struct, as machinery's structs need them.

Field readers (one decoded JSON value → the field's Python value, or Go's error text),
the :class:`GoStruct` base (exact and case-insensitive field names, later keys win,
unknown keys ignored, null for pointers, the fast-builder hook) and the writers that emit
Go's bytes for strings, ints, bools, times and nested structs. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from bridge.errors import DecodeError, EncodeError
from bridge.protocol import gojson
from bridge.protocol.gojson import Pairs, quote
from bridge.protocol.gotime import GO_ZERO_TIME, format_rfc3339, parse_rfc3339

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# --------------------------------------------------------------------------- field readers
# Each reader turns one decoded JSON value into the field's Python value, or raises
# DecodeError with Go's wording. JSON null leaves a non-pointer Go field at its zero value,
# so readers are only called for non-null values of non-pointer fields.

Reader = Callable[[Any, str], Any]


def go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        text = value.literal if isinstance(value, gojson.JSONNumber) else str(value)
        return "number " + gojson.clip_number(text)
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and not isinstance(value, Pairs):
        return "array"
    return "object"


def mismatch(value: Any, where: str, go_type: str) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {go_kind(value)} into Go struct field {where} of type {go_type}"
    )


def read_str(value: Any, where: str) -> str:
    if type(value) is str:
        return value if value.isascii() else gojson.clean_str(value)
    if value is None:  # a null element of a []string is Go's zero value
        return ""
    raise mismatch(value, where, "string")


def read_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise mismatch(value, where, "bool")
    return value


def int_reader(go_type: str, low: int, high: int) -> Reader:
    def read(value: Any, where: str) -> int:
        if type(value) is not int or not low <= value <= high:
            if type(value) is gojson.JSONNumber and value.literal == "-0":
                return 0
            raise mismatch(value, where, go_type)
        return value

    return read


read_int = int_reader("int", INT64_MIN, INT64_MAX)
read_int64 = int_reader("int64", INT64_MIN, INT64_MAX)
read_uint8 = int_reader("uint8", 0, 255)


def read_time(value: Any, where: str) -> datetime:
    if type(value) is not str:
        raise mismatch(value, where, "time.Time")
    return parse_rfc3339(value)


def read_any(value: Any, where: str) -> Any:
    return gojson.plain(value)


def read_map(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not Pairs:
        raise mismatch(value, where, "map[string]interface {}")
    return gojson.plain(value)  # type: ignore[no-any-return]


def list_reader(go_type: str, element: Callable[[Any, str], Any]) -> Reader:
    def read(value: Any, where: str) -> list[Any]:
        if type(value) is not list:
            raise mismatch(value, where, go_type)
        return [element(item, where) for item in value]

    return read


def struct_reader(cls: type[_S], pointer: bool) -> Reader:
    def read(value: Any, where: str) -> Any:
        if value is None:
            return None if pointer else cls()
        if type(value) is not Pairs:
            raise mismatch(value, where, ("*tasks." if pointer else "tasks.") + cls.__name__)
        return cls._from_pairs(value)

    return read


_S = TypeVar("_S", bound="GoStruct")


class GoStruct:
    """Shared decode/encode plumbing for the machinery structs."""

    __slots__ = ()

    # (Go field name, attribute, reader, nullable pointer/slice/map?)
    _FIELDS: ClassVar[tuple[tuple[str, str, Reader, bool], ...]]
    # Go field name (exact, and lower-cased) → (attribute, reader, nullable, "Struct.Field")
    _EXACT: ClassVar[dict[str, tuple[str, Reader, bool, str]]]
    _FOLDED: ClassVar[dict[str, tuple[str, Reader, bool, str]]]
    # The Go field names in order, and the fast builder for objects with as many pairs as
    # fields: it returns None unless the keys are those names in that order and it takes
    # the values (see the fast paths at the end of the module).
    _KEYS: ClassVar[tuple[str, ...]]
    _FAST: ClassVar[Callable[[Pairs], Any] | None] = None
    # The quickest reader: the whole text read by msgspec into typed structs
    # (bridge.protocol.typed_decode); None for what only the pairs path reads as Go does.
    _QUICK: ClassVar[Callable[[Any], Any] | None] = None

    @classmethod
    def _setup(cls) -> None:
        cls._KEYS = tuple(go for go, _, _, _ in cls._FIELDS)
        cls._EXACT = {
            go: (attr, read, nullable, f"{cls.__name__}.{go}")
            for go, attr, read, nullable in cls._FIELDS
        }
        cls._FOLDED = {go.lower(): spec for go, spec in cls._EXACT.items()}

    @classmethod
    def _from_pairs(cls: type[_S], pairs: Pairs) -> _S:
        # The fast path: an object with exactly the Go field names in Go's order (what Go's
        # json.Marshal and our to_json write) and plain values is built straight from the
        # values; anything else (or a value the fast path does not take) goes the exact way.
        fast = cls._FAST
        if fast is not None and len(pairs) == len(cls._FIELDS):
            made = fast(pairs)
            if made is not None:
                return made  # type: ignore[no-any-return]
        return cls._from_pairs_exact(pairs)

    @classmethod
    def _from_pairs_exact(cls: type[_S], pairs: Pairs) -> _S:
        # Go: exact field name first, else case-insensitive; later keys win; unknown ignored;
        # null leaves a value field as it was and sets a pointer/slice/map to nil.
        exact, folded = cls._EXACT, cls._FOLDED
        values: dict[str, Any] = {}
        for key, raw in pairs:
            spec = exact.get(key) or folded.get(gojson.fold_key(key))
            if spec is None:
                continue
            if raw is None:
                if spec[2]:
                    values[spec[0]] = None
                continue
            if type(raw) is str and spec[1] is read_str and raw.isascii():
                values[spec[0]] = raw  # the common case, without a call
            else:
                values[spec[0]] = spec[1](raw, spec[3])
        return cls(**values)

    @classmethod
    def from_json(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """Decode as machinery's consumers do (``json.Decoder`` with ``UseNumber``). Raises
        DecodeError, and only that, for bytes that are not this struct (nested too deeply
        to decode included)."""
        quickest = cls._QUICK
        if quickest is not None and (made := quickest(data)) is not None:
            return made  # type: ignore[no-any-return]
        raw = gojson.loads_raw(data)
        if raw is None:
            return cls()  # Go: decoding null into a struct leaves it at its zero value
        if type(raw) is not Pairs:
            raise DecodeError(
                f"json: cannot unmarshal {go_kind(raw)} into Go value of type tasks.{cls.__name__}"
            )
        cls._check(raw)
        try:
            return cls._from_pairs(raw)
        except RecursionError:
            raise DecodeError(f"tasks.{cls.__name__} nested too deeply to decode") from None

    @classmethod
    def _check(cls, raw: Pairs) -> None:
        """Refuse what decodes in Go but not here (a hook: Signature limits its nesting)."""

    @classmethod
    def _from_json_exact(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """``from_json`` without any fast path (the reference the fast paths are tested
        against)."""
        raw = gojson.loads_raw_exact(data)
        if raw is None:
            return cls()
        if type(raw) is not Pairs:
            raise DecodeError(
                f"json: cannot unmarshal {go_kind(raw)} into Go value of type tasks.{cls.__name__}"
            )
        cls._check(raw)
        try:
            return exact_struct(cls, raw)
        except RecursionError:
            raise DecodeError(f"tasks.{cls.__name__} nested too deeply to decode") from None

    def _write(self, out: list[str]) -> None:
        raise NotImplementedError

    def to_json(self) -> bytes:
        """Exactly the bytes Go's ``json.Marshal`` writes for this struct."""
        out: list[str] = []
        self._write(out)
        return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- writers


def write_str(out: list[str], value: object, where: str) -> None:
    if type(value) is not str:
        raise EncodeError(f"{where} must be a str, not {type(value).__name__}")
    out.append(quote(value))


def write_int(out: list[str], value: object, where: str, low: int = INT64_MIN,
         high: int = INT64_MAX) -> None:
    if type(value) is not int or not low <= value <= high:
        raise EncodeError(f"{where} must be an int in {low}..{high}, not {value!r}")
    out.append(str(value))


def write_bool(out: list[str], value: object, where: str) -> None:
    if type(value) is not bool:
        raise EncodeError(f"{where} must be a bool, not {type(value).__name__}")
    out.append("true" if value else "false")


_last_time: tuple[datetime, str] = (GO_ZERO_TIME, '"0001-01-01T00:00:00Z"')
"""The last time written and its JSON (held: the same object is the same instant)."""


def write_time(out: list[str], value: datetime | None) -> None:
    global _last_time
    if value is None:
        out.append("null")
        return
    last = _last_time  # one read: another thread may swap it meanwhile
    if value is last[0]:  # a batch's states share one stamp: formatted once
        out.append(last[1])
        return
    text = '"' + format_rfc3339(value) + '"'
    _last_time = (value, text)
    out.append(text)


def write_structs(out: list[str], items: list[Any] | None) -> None:
    if items is None:
        out.append("null")
        return
    out.append("[")
    for index, item in enumerate(items):
        if index:
            out.append(",")
        if item is None:
            out.append("null")
        else:
            item._write(out)
    out.append("]")


def exact_struct(cls: type[_S], pairs: Pairs) -> _S:
    """``cls._from_pairs`` with no fast path at any depth (nested structs included).

    For the differential tests only: while it runs, the fast builders are off for the whole
    process (every decode is then exact, just slower)."""
    kinds = _subclasses(GoStruct)
    saved = {kind: kind.__dict__.get("_FAST") for kind in kinds}
    for kind in kinds:
        kind._FAST = None
    try:
        return cls._from_pairs_exact(pairs)
    finally:
        for kind, fast in saved.items():
            kind._FAST = fast


def _subclasses(cls: type[GoStruct]) -> list[type[GoStruct]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
