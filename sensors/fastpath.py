"""Fast decode of ``counts/1`` reports straight into rows, agreeing with the reference decoder.

Why this exists: at city scale (thousands of controllers, 16 detectors each,
every few seconds) the reference decoder :func:`traffic.messages.decode_counts`
(``json.loads`` into dicts, then one frozen dataclass per record) costs about
as much CPU as everything else in the ingest worker together. Here msgspec
parses and type-checks the payload in C into small structs, the value-range
rules run in one tight loop, and the result is the rows to store, with no
intermediate message objects.

Contract: this path *accepts* exactly what the reference accepts and produces
the same rows. When it rejects, or when msgspec cannot tell (an integer too
large for 64 bits, say), it hands the payload to the reference decoder, which
either raises the canonical :class:`~traffic.errors.MessageError` (so the
dead-letter reason is the same whichever path ran) or, should the two ever
disagree, wins. A property test (``tests/test_sensors_pipeline.py``) checks the
agreement on generated valid and corrupted reports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from sensors.records import CountRow
from traffic import messages

__all__ = ["decode_count_rows"]


# Range rules msgspec checks in C (same bounds as traffic.messages.decode_counts).
_Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
_Occupancy = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]


class _Record(msgspec.Struct, gc=False):
    detector_id: _Ident
    count: _Count
    occupancy_pct: _Occupancy
    motorcycle_count: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _Report(msgspec.Struct, gc=False):
    schema: str
    controller_id: _Ident
    seq: Annotated[int, msgspec.Meta(ge=0)]
    interval_start: str
    interval_s: Annotated[int, msgspec.Meta(ge=1, le=3600)]
    records: Annotated[list[_Record], msgspec.Meta(min_length=1, max_length=messages.MAX_RECORDS)]


_DECODER = msgspec.json.Decoder(_Report)
_UTC = UTC
# ``CountRow(...)`` goes through the namedtuple's Python-level ``__new__``,
# which profiling showed to cost as much as the whole msgspec decode;
# ``tuple.__new__`` builds the same CountRow instance in C.
_new_tuple = tuple.__new__


class _Reject(Exception):
    """Internal: the fast path declines; the reference decoder decides and explains."""


# Identifiers already found printable: detector and controller ids repeat in
# every report, so the check runs once per distinct id (bounded memory).
_PRINTABLE: set[str] = set()
_PRINTABLE_MAX = 1 << 16


def _ident_ok(value: str) -> bool:
    """The rest of the reference's identifier rule (length is checked by msgspec)."""
    if value in _PRINTABLE:
        return True
    if not value.isprintable():
        return False
    if len(_PRINTABLE) < _PRINTABLE_MAX:
        _PRINTABLE.add(value)
    return True


def _fast(payload: bytes, received_at: datetime) -> list[CountRow]:
    if len(payload) > messages.MAX_PAYLOAD_BYTES:
        raise _Reject
    try:
        # Decode the bytes first, as the reference does: msgspec would accept
        # some invalid UTF-8 outside strings as a syntax error with another reason.
        report = _DECODER.decode(payload.decode("utf-8"))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError is a DecodeError
        raise _Reject from exc
    if report.schema != messages.COUNTS_SCHEMA or not _ident_ok(report.controller_id):
        raise _Reject
    records = report.records
    try:
        start = datetime.fromisoformat(report.interval_start)
    except ValueError as exc:
        raise _Reject from exc
    if start.tzinfo is None:
        raise _Reject
    start = start.astimezone(_UTC)
    cid, secs = report.controller_id, report.interval_s
    seen: set[str] = set()
    rows: list[CountRow] = []
    append = rows.append
    for r in records:
        det, count, moto = r.detector_id, r.count, r.motorcycle_count
        if det in seen or not _ident_ok(det) or (moto is not None and moto > count):
            raise _Reject
        seen.add(det)
        append(_new_tuple(CountRow, (cid, det, start, secs, count, r.occupancy_pct, moto, received_at)))
    return rows


def decode_count_rows(payload: bytes, received_at: datetime) -> tuple[str, list[CountRow]]:
    """``(controller_id, rows)`` of a ``counts/1`` payload; MessageError with the reference's reason.

    Same acceptance and the same rows as ``decode_counts`` followed by the
    router's row mapping (see the module docstring for how that is kept).
    """
    try:
        rows = _fast(payload, received_at)
        return rows[0].controller_id, rows
    except _Reject:
        pass
    report = messages.decode_counts(payload)  # raises the canonical MessageError
    return report.controller_id, [
        CountRow(report.controller_id, r.detector_id, report.interval_start, report.interval_s, r.count,
                 r.occupancy_pct, r.motorcycle_count, received_at)
        for r in report.records
    ]
