"""JSON exactly as Go's encoding/json reads and writes it.

Writing: compact, HTML-safe escaping, sorted map keys, Go's float formatting
(float32 in 32-bit shortest form), RFC 3339 times, base64 for bytes, and
``json.Number`` literals written back verbatim.

Reading: like ``json.NewDecoder(r).UseNumber()``: the first value only,
integer literals exact, non-integer literals kept as ``JSONNumber`` (a float
that remembers its text), invalid UTF-8 replaced by U+FFFD byte by byte.

Go structs are written from ``Struct`` (ordered pairs); plain dicts are Go maps.
"""

from __future__ import annotations

import base64
import codecs
import json
import math
import re
import struct
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from bridge.errors import DecodeError, EncodeError
from bridge.protocol.gotime import format_rfc3339


class JSONNumber(float):
    """A JSON number literal kept as written, like Go's ``json.Number``.

    It behaves as the float it denotes; the encoder writes ``literal`` back
    unchanged, as Go does when it re-marshals a decoded ``json.Number``.
    """

    __slots__ = ("literal",)
    literal: str

    def __new__(cls, literal: str) -> JSONNumber:
        try:
            self = super().__new__(cls, literal)
        except OverflowError:  # pragma: no cover - float() of text saturates to inf
            self = super().__new__(cls, math.copysign(math.inf, -1 if literal[0] == "-" else 1))
        self.literal = literal
        return self

    def __repr__(self) -> str:
        return f"JSONNumber({self.literal!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (JSONNumber, (self.literal,))


class Struct(tuple):  # type: ignore[type-arg]
    """A Go struct to encode: ``(key, value)`` pairs written in declaration order."""

    __slots__ = ()


class Float32(float):
    """A float64 holding a float32 value, to be written in 32-bit shortest form."""

    __slots__ = ()


# --------------------------------------------------------------------------- writing

_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
          "\t": "\\t"}


NEEDS_ESCAPE = _ESCAPE.search
"""Not None when a text needs escaping in Go's JSON (``quote`` would change it)."""


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    if "\ud800" <= ch <= "\udfff":
        return "\\ufffd"  # a lone surrogate is invalid UTF-8 to Go
    return f"\\u{ord(ch):04x}"


def quote(text: str) -> str:
    """A Go-escaped JSON string literal (``<`` → ``\\u003c``, U+2028 → ``\\u2028`` ...)."""
    if _ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + _ESCAPE.sub(_escape_char, text) + '"'


def _digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(value)`` and the decimal point position."""
    text = repr(abs(value))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0") or "0", point


def _layout(negative: bool, digits: str, point: int, exponent_form: bool) -> str:
    sign = "-" if negative else ""
    if exponent_form:
        exp = point - 1
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_float64(value: float) -> str:
    """What Go writes for a float64: ES6 number formatting, no ``.0``."""
    if math.isnan(value) or math.isinf(value):
        raise EncodeError(f"json: unsupported value: {value} (Go cannot write NaN or Inf)")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _digits(value)
    magnitude = abs(value)
    return _layout(value < 0, digits, point, magnitude < 1e-6 or magnitude >= 1e21)


_F32_SMALL = struct.unpack("<f", struct.pack("<f", 1e-6))[0]
_F32_LARGE = struct.unpack("<f", struct.pack("<f", 1e21))[0]


def to_float32(value: float) -> float:
    """Round a float to the nearest float32, as Go's float64→float32 conversion does."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        raise EncodeError(f"{value!r} is out of range for float32") from None


def _f32_bits(value: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", value))[0])


def _f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


@lru_cache(maxsize=4096)
def _float32_digits(magnitude: float) -> tuple[str, int]:
    """Shortest digits that parse back (directly, as Go's ParseFloat(s, 32)) to ``magnitude``.

    Among the shortest candidates the one closest to the exact value wins (an exact
    tie goes to the even digit), as in Go's strconv. Exact integer arithmetic
    avoids double rounding through float64.
    """
    bits = _f32_bits(magnitude)
    exponent, fraction = bits >> 23, bits & 0x7FFFFF
    mantissa, power = (fraction | 0x800000, exponent - 150) if exponent else (fraction, -149)
    # the value and its rounding interval, in units of 2^(power-2)
    centre = mantissa << 2
    high = centre + 2
    low = centre - (1 if fraction == 0 and exponent > 1 else 2)
    unit = power - 2
    inclusive = mantissa % 2 == 0
    exp10 = math.floor(math.log10(magnitude))
    for precision in range(1, 10):
        scale = exp10 - precision + 1
        # scale everything to integers: candidate c stands for c·10^scale
        ten = 10 ** max(0, -scale)
        two = 1 << max(0, -unit)
        step = (10**scale if scale >= 0 else 1) * two
        to_int = (1 << unit if unit >= 0 else 1) * ten
        exact, lo, hi = centre * to_int, low * to_int, high * to_int
        guess = (2 * exact + step) // (2 * step)
        best = None
        best_gap = 0
        for candidate in (guess - 1, guess, guess + 1):
            if candidate <= 0:
                continue
            value = candidate * step
            inside = (lo <= value <= hi) if inclusive else (lo < value < hi)
            if not inside:
                continue
            gap = abs(value - exact)
            if best is None or gap < best_gap or (gap == best_gap and candidate % 2 == 0):
                best, best_gap = candidate, gap
        if best is not None:
            digits = str(best)
            return digits.rstrip("0"), scale + len(digits)
    raise AssertionError("a float32 always has a 9-digit representation")  # pragma: no cover


def format_float32(value: float) -> str:
    """What Go writes for a float32 (shortest 32-bit digits, float32 cutoffs)."""
    if math.isnan(value) or math.isinf(value):
        raise EncodeError(f"json: unsupported value: {value} (Go cannot write NaN or Inf)")
    value = to_float32(value)
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    digits, point = _float32_digits(magnitude)
    return _layout(value < 0, digits, point, magnitude < _F32_SMALL or magnitude >= _F32_LARGE)


def _write(value: Any, out: list[str], f32: bool) -> None:
    kind = type(value)
    if kind is str:
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append("true" if value else "false")
    elif kind is int:
        out.append(str(value))
    elif kind is JSONNumber:
        out.append(value.literal)
    elif kind is Float32:
        out.append(format_float32(value))
    elif kind is float:
        out.append(format_float32(value) if f32 else format_float64(value))
    elif kind is Struct:
        out.append("{")
        first = True
        for key, item in value:
            if not first:
                out.append(",")
            first = False
            out.append(f'"{key}":')
            _write(item, out, f32)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, f32)
        out.append("]")
    elif isinstance(value, dict):
        _write_map(value, out, f32)
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append('"' + base64.b64encode(bytes(value)).decode("ascii") + '"')
    elif isinstance(value, datetime):
        out.append('"' + format_rfc3339(value) + '"')
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_float32(value) if f32 else format_float64(value))
    else:
        raise EncodeError(f"json: unsupported type: {type(value).__name__}")


FAST_MAPS = True
"""Maps of strings, integers, flags and nulls written by msgspec (the differential tests
turn it off to get the key-by-key bytes they compare with)."""
_SORTED_JSON = msgspec.json.Encoder(order="sorted").encode
_NOT_GO_BYTES = (b"\\", b"<", b">", b"&")
"""In msgspec's output, what Go would write otherwise: any escape, ``<>&`` (and U+2028/9,
looked for only in a text that is not all ASCII)."""
_NOT_GO_UNICODE = ("\u2028".encode(), "\u2029".encode())


_PLAIN_LEAVES = frozenset({str, int, bool, type(None)})
"""Leaves msgspec writes as Go does, looked up by exact type (an int subclass is not one)."""


def _plain(value: Any) -> bool:
    """Only strings, integers, flags, nulls, lists and string-keyed maps: values that
    msgspec writes as Go does (no floats, bytes, times or json.Number literals)."""
    kind = type(value)
    if kind in _PLAIN_LEAVES:
        return True
    if kind is dict:
        for key, item in value.items():  # leaves inline: most of a map, a call each saved
            if type(key) is not str or (type(item) not in _PLAIN_LEAVES and not _plain(item)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 - a loop: all() costs twice the time
            if type(item) not in _PLAIN_LEAVES and not _plain(item):
                return False
        return True
    return False


def _quick_map(value: dict[Any, Any]) -> str | None:
    """Go's bytes of a plain map by msgspec (sorted keys, compact), or None where they
    could differ: anything not plain, or a text Go escapes its own way."""
    try:
        if not _plain(value):
            return None
        text = _SORTED_JSON(value)
    except (RecursionError, UnicodeEncodeError):  # too deep; a lone surrogate
        return None
    return text.decode("utf-8") if written_as_go(text) else None


def written_as_go(text: bytes) -> bool:
    """Whether msgspec's compact JSON ``text`` is what Go writes: no escape (Go spells some
    its own way), no ``<>&`` (Go escapes them) and no U+2028/9 (ditto)."""
    for odd in _NOT_GO_BYTES:  # a byte each, found by memchr: many times a regex's speed
        if odd in text:
            return False
    if not text.isascii():
        for odd in _NOT_GO_UNICODE:
            if odd in text:
                return False
    return True


def _write_map(value: dict[Any, Any], out: list[str], f32: bool) -> None:
    if FAST_MAPS and value:
        text = _quick_map(value)
        if text is not None:
            out.append(text)
            return
    for key in value:
        if not isinstance(key, str):
            raise EncodeError(f"json: map keys must be strings, not {type(key).__name__}")
    out.append("{")
    for index, key in enumerate(sorted(value)):
        if index:
            out.append(",")
        out.append(quote(key))
        out.append(":")
        _write(value[key], out, f32)
    out.append("}")


def write(value: Any, out: list[str], *, f32: bool = False) -> None:
    """Append the Go JSON text of ``value`` to ``out`` (floats as float32 if ``f32``)."""
    _write(value, out, f32)


def dumps(value: Any, *, f32: bool = False) -> bytes:
    """``json.Marshal(value)`` as Go writes it."""
    out: list[str] = []
    _write(value, out, f32)
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- reading


def _replace_per_byte(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("bridge.go_fffd", _replace_per_byte)

_WHITESPACE = " \t\r\n"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Pairs(list):  # type: ignore[type-arg]
    """A decoded JSON object as its ``(key, value)`` pairs, in document order."""

    __slots__ = ()


def _parse_int(literal: str) -> int | JSONNumber:
    return JSONNumber(literal) if literal == "-0" else int(literal)


MAX_INT_DIGITS = 4000
"""Longer integer literals stay ``JSONNumber`` (Python refuses to parse over 4,300 digits;
Go's ``json.Number`` keeps any literal, and no Go integer type holds more than 20 digits)."""


def clip_number(literal: str, limit: int = 40) -> str:
    """A number literal for an error text: whole up to ``limit`` characters (as Go shows it),
    else its start and how long it is."""
    if len(literal) <= limit:
        return literal
    return f"{literal[:limit // 2]}...({len(literal)} characters)"


def _parse_any_int(literal: str) -> int | JSONNumber:
    if literal == "-0" or len(literal) > MAX_INT_DIGITS:
        return JSONNumber(literal)
    return int(literal)


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid character {name[0]!r} looking for beginning of value")


_DECODER = json.JSONDecoder(
    object_pairs_hook=Pairs,
    parse_float=JSONNumber,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
)
# The same without a Python call per integer: it reads exactly what _DECODER reads from a
# text without a -0 literal (the one integer _parse_int keeps as a JSONNumber). A -0 literal
# is "-0" followed by neither a fraction nor an exponent, nor a digit: "-01" inside a value
# is an error for both, but at the very start it is -0 followed by ignored trailing bytes.
# Inside a document a value follows ":", "[" or "," (or whitespace): "-0a" in a UUID's text
# is not one (3.8% of random UUIDs hold one; each took the pairs path, 5x slower). "-0" is
# searched first (a literal: fast), then the byte before it.
MINUS_ZERO = re.compile(r"-0(?<=[:\[, \t\n\r]-0)(?![0-9.eE])")
"""A ``-0`` integer literal inside a document (Go's json.Number keeps it; an int cannot);
one at the very start is the caller's to check."""
_DECODER_NO_MINUS_ZERO = json.JSONDecoder(
    object_pairs_hook=Pairs,
    parse_float=JSONNumber,
    parse_constant=_reject_constant,
)
# for texts with integers too long for int(): the slow path, taken after the others refuse
_DECODER_LONG_INTS = json.JSONDecoder(
    object_pairs_hook=Pairs,
    parse_float=JSONNumber,
    parse_int=_parse_any_int,
    parse_constant=_reject_constant,
)
# their C scanners (what raw_decode calls): (value, end), or StopIteration(position)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_SCAN_NO_MINUS_ZERO: Callable[[str, int], tuple[Any, int]] = (
    _DECODER_NO_MINUS_ZERO.scan_once)  # type: ignore[attr-defined]
_SCAN_LONG_INTS: Callable[[str, int], tuple[Any, int]] = (
    _DECODER_LONG_INTS.scan_once)  # type: ignore[attr-defined]


def to_text(data: bytes | bytearray | memoryview | str) -> str:
    """Bytes as Go sees them: UTF-8 with each invalid byte read as U+FFFD."""
    if isinstance(data, str):
        return data
    return bytes(data).decode("utf-8", "bridge.go_fffd")


def loads_raw(data: bytes | bytearray | memoryview | str) -> Any:
    """The first JSON value in ``data``, objects left as ``Pairs``.

    Like Go's Decoder: leading whitespace skipped, trailing bytes ignored.
    """
    text = to_text(data)
    if "-0" in text and (MINUS_ZERO.search(text) is not None
                         or text.lstrip(_WHITESPACE).startswith("-0")):
        return _loads_raw(text, _SCAN)
    return _loads_raw(text, _SCAN_NO_MINUS_ZERO)


def loads_raw_exact(data: bytes | bytearray | memoryview | str) -> Any:
    """``loads_raw`` without its fast paths (the reference they are tested against)."""
    text = to_text(data)
    start = 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    if start == len(text):
        raise DecodeError("empty message: no JSON value")
    try:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError as exc:  # an integer literal int() refuses: json.Number, as Go
            if isinstance(exc, json.JSONDecodeError):
                raise
            value, _ = _DECODER_LONG_INTS.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    return value


def _loads_raw(text: str, scan: Callable[[str, int], tuple[Any, int]]) -> Any:
    start = 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    if start == len(text):
        raise DecodeError("empty message: no JSON value")
    try:
        try:
            value, _ = scan(text, start)  # = JSONDecoder.raw_decode, one Python call less
        except StopIteration as stop:
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    except ValueError:  # an integer literal int() refuses (over 4,300 digits)
        if scan is _SCAN_LONG_INTS:
            raise
        return _loads_raw(text, _SCAN_LONG_INTS)
    return value


def plain(value: Any) -> Any:
    """A decoded ``interface{}`` value as plain Python: objects → dicts (last key wins)."""
    kind = type(value)
    if kind is Pairs:
        return {clean_str(k): plain(v) for k, v in value}
    if kind is list:
        return [plain(v) for v in value]
    if kind is str:
        return clean_str(value)
    return value


def clean_str(text: str) -> str:
    """Go turns a lone ``\\ud800`` escape into U+FFFD when it decodes."""
    if text.isascii() or _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The first JSON value in ``data`` as plain Python (objects as dicts)."""
    return plain(loads_raw(data))


def fold_key(key: str) -> str:
    """Go's case-insensitive field match (bytes.EqualFold) folded to compare with ASCII names."""
    if key.isascii():
        return key.lower()
    return "".join(
        "k" if ch == "\u212a" else "s" if ch == "\u017f" else ch.lower() if ch.isascii() else ch
        for ch in key
    )
