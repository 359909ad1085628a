"""The canonical text of typed values, shared with the Go harness (compat_fixtures/README.md).

Go's harness writes CANON for what machinery's ReflectValue gives; these helpers
compute the same from what bridge.types gives, so the two can be compared.
"""

from __future__ import annotations

import math
from typing import Any

from bridge.protocol.gojson import _digits, _float32_digits, _layout, to_float32

INT_TYPES = {"int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
             "uint64"}


def format_g(value: float, bits: int) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, bits)``."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if bits == 32:
        value = to_float32(value)
        digits, point = _float32_digits(abs(value))
    else:
        digits, point = _digits(value)
    sign = "-" if value < 0 else ""
    exp = point - 1
    if exp < -4 or exp >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return _layout(value < 0, digits, point, exponent_form=False)


def canon(go_type: str, value: Any) -> Any:
    """CANON of a typed Python value of Go type ``go_type``."""
    if go_type in ("[]byte", "[]uint8"):
        assert isinstance(value, bytes), value
        return value.hex()
    if go_type.startswith("[]"):
        return [canon(go_type[2:], item) for item in value]
    if go_type in INT_TYPES:
        assert type(value) is int, value
        return str(value)
    if go_type == "float32":
        return format_g(value, 32)
    if go_type == "float64":
        return format_g(value, 64)
    if go_type == "bool":
        assert type(value) is bool
        return value
    assert go_type == "string" and type(value) is str, (go_type, value)
    return value
