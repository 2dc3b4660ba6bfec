"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes a plan signature covers.

Why JCS and not ``json.dumps(sort_keys=True)``: a signature is only useful if
a second implementation (a cabinet's firmware in C, a verifier in Go or
JavaScript) can rebuild the signed bytes from the JSON it received. Python's
``json.dumps`` writes ``40.0`` where every other JSON library writes ``40``,
escapes non-ASCII, and sorts keys by code point; JCS fixes each of these the
way ECMAScript's ``JSON.stringify`` does, so the rules are the same in every
language that has an RFC 8785 library (and short enough to implement where
there is none):

* objects: members sorted by the UTF-16 code units of their names, no
  whitespace; arrays in order;
* strings: UTF-8, only ``"``, ``\\`` and the control characters U+0000-U+001F
  escaped (``\\b \\f \\n \\r \\t``, the rest ``\\u00xx`` in lower case);
  everything else literal;
* numbers: IEEE 754 doubles printed as ECMAScript's ``Number.prototype.toString``
  (shortest round-trip digits; ``40.0`` -> ``40``, ``1e21`` -> ``1e+21``,
  ``0.000001`` -> ``0.000001``, ``1e-7`` -> ``1e-7``); ``-0`` -> ``0``.

Refused (:class:`CanonicalisationError`): NaN and infinities, integers outside
+-(2**53 - 1) (they would not survive a double, so two different values could
share one canonical form and one signature), strings with lone surrogates,
non-string object keys, and any other Python type.

No maintained PyPI package was a better choice here: ``jcs`` (0.2.1) has had no
release since 2022; this module is small, and ``tests/test_security_jcs.py``
checks it against the RFC's own examples (section 3.2.3 and the number table
of appendix B).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CanonicalisationError", "canonicalize", "number_to_string", "MAX_SAFE_INTEGER"]

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CanonicalisationError(ValueError):
    """The value has no RFC 8785 canonical form (see the module docstring)."""


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (dict, list, str, int, float, bool, None)."""
    out: list[str] = []
    _emit(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalisationError(f"string holds a lone surrogate: {exc.reason}") from exc


def _emit(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise CanonicalisationError("nested deeper than 64 levels")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalisationError(f"integer {value} is outside +-(2**53 - 1) (not exact as a double)")
        out.append(str(value))  # exact, and |value| < 1e21: ECMAScript prints the same digits
    elif isinstance(value, float):
        out.append(number_to_string(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalisationError(f"object key {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out, depth + 1)
        out.append("]")
    else:
        raise CanonicalisationError(f"{type(value).__name__} is not a JSON value")


def _utf16_key(name: str) -> bytes:
    # big-endian UTF-16 bytes compare like the sequence of UTF-16 code units
    return name.encode("utf-16-be", "surrogatepass")


def _string(text: str) -> str:
    parts = ['"']
    for ch in text:
        if ch in _ESCAPES:
            parts.append(_ESCAPES[ch])
        elif ch < " ":
            parts.append(f"\\u{ord(ch):04x}")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def number_to_string(x: float) -> str:
    """ECMAScript ``Number.prototype.toString(x)`` for a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise CanonicalisationError(f"{x!r} is not a JSON number")
    if x == 0:
        return "0"  # also -0
    if x < 0:
        return "-" + number_to_string(-x)
    # repr() gives the shortest digits that round-trip (the closest such, as ECMAScript requires)
    text = repr(x)
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    n = len(whole) + (int(exp) if exp else 0)  # x = 0.<digits> * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"
