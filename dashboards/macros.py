"""Expand Grafana's PostgreSQL macros and template variables outside Grafana.

Why: every panel's SQL is run against a real database in the tests (and can
be run by tools), so the macro text must become plain, safe SQL the same way
Grafana would make it. Only what :mod:`dashboards.queries` uses is
supported; anything else that looks like a macro or variable is an error
rather than being passed to PostgreSQL half-expanded.

Safety: time bounds are rendered from ``datetime`` objects as ISO-8601
``timestamptz`` literals (digits, ``-:+.T`` only) and variable values are
quoted as SQL string literals with psycopg's own quoting, so no input can
change the statement's structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from psycopg import sql

from traffic.errors import ConfigError

_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\)")
_TIME_FROM = re.compile(r"\$__timeFrom\(\s*\)")
_TIME_TO = re.compile(r"\$__timeTo\(\s*\)")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_LEFTOVER_MACRO = re.compile(r"\$__[A-Za-z]+")


def timestamptz_literal(value: datetime) -> str:
    """``'2024-05-01T07:00:00+00:00'::timestamptz`` for an aware datetime (naive is refused)."""
    if not isinstance(value, datetime):
        raise ConfigError(f"time bound must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"time bound {value!r} has no time zone; Grafana ranges are absolute instants")
    iso = value.astimezone(UTC).isoformat()
    return f"'{iso}'::timestamptz"


def quote_values(values: str | Sequence[str]) -> str:
    """Comma-separated quoted SQL string literals, as Grafana renders a multi-value variable."""
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise ConfigError("a template variable needs at least one value (Grafana sends all values for 'All')")
    parts = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"template variable values must be strings, not {type(item).__name__}")
        if "\x00" in item:
            raise ConfigError("template variable value contains a NUL byte")
        try:
            parts.append(sql.Literal(item).as_string(None).strip())
        except UnicodeEncodeError as exc:
            raise ConfigError(f"template variable value {item!r} is not valid UTF-8 text") from exc
    return ", ".join(parts)


def expand(
    text: str,
    time_from: datetime,
    time_to: datetime,
    variables: Mapping[str, str | Sequence[str]] | None = None,
) -> str:
    """Return ``text`` with Grafana macros and ``$variables`` replaced by safe SQL.

    ``$__timeFilter(col)`` becomes ``col BETWEEN <from> AND <to>`` (Grafana's
    own expansion), ``$__timeFrom()``/``$__timeTo()`` the bounds. Every
    ``$name``/``${name}`` must be in ``variables``; values are quoted (the
    dashboard's variables are multi-value, which Grafana always quotes).
    """
    start, end = timestamptz_literal(time_from), timestamptz_literal(time_to)
    if time_to < time_from:
        raise ConfigError(f"time range ends ({time_to}) before it starts ({time_from})")
    variables = dict(variables or {})
    out = _TIME_FILTER.sub(lambda m: f"{m.group(1)} BETWEEN {start} AND {end}", text)
    out = _TIME_FROM.sub(start, out)
    out = _TIME_TO.sub(end, out)
    leftover = _LEFTOVER_MACRO.search(out)
    if leftover:
        raise ConfigError(f"unsupported Grafana macro {leftover.group(0)!r}")

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise ConfigError(f"template variable ${name} has no value")
        return quote_values(variables[name])

    return _VARIABLE.sub(variable, out)
