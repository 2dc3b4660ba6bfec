"""Wire messages other than plans: detector counts, events, status, plan results.

Every payload is UTF-8 JSON with a ``schema`` field (``<name>/<major>``) so a
consumer can refuse a version it does not know instead of misreading it.
Decoding is strict: :func:`decode` raises :class:`MessageError` naming the
first bad field (hand-written checks first, for their precise reasons; then
the message's Struct in :mod:`traffic.wire`, the single source of the
published contract, so nothing accepted here breaks docs/asyncapi.yaml),
which the ingest service stores with the raw payload in the dead-letter
table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from traffic import wire
from traffic.errors import MessageError

COUNTS_SCHEMA = "counts/1"
EVENTS_SCHEMA = "events/1"
STATUS_SCHEMA = "status/1"
RESULT_SCHEMA = "plan-result/1"

# bounds of the published contract (traffic.wire, docs/asyncapi.yaml)
MAX_PAYLOAD_BYTES = wire.MAX_PAYLOAD_BYTES
MAX_RECORDS = wire.MAX_RECORDS
MAX_EVENTS = wire.MAX_EVENTS

class LinkState(StrEnum):
    """``status.state``: is the controller connected (``offline`` is the broker's last will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class FieldMode(StrEnum):
    """``status.mode``: what the controller is running."""

    CENTRAL = "central"       # running a plan from the centre
    TOD = "tod"               # local time-of-day plan (fallback or no plan yet)
    FLASH = "flash"           # conflict monitor tripped


class ResultStatus(StrEnum):
    """``plan-result.status``: the field's answer to a plan."""

    ACCEPTED = "accepted"     # valid, will apply at the next cycle boundary
    REJECTED = "rejected"     # refused; rule + reason say why
    APPLIED = "applied"       # now in force (at = time of the cycle boundary)


# the same members under their historical names (the wire values are the enums' values)
ONLINE, OFFLINE = LinkState.ONLINE, LinkState.OFFLINE
MODE_CENTRAL, MODE_TOD, MODE_FLASH = FieldMode.CENTRAL, FieldMode.TOD, FieldMode.FLASH
ACCEPTED, REJECTED, APPLIED = ResultStatus.ACCEPTED, ResultStatus.REJECTED, ResultStatus.APPLIED
RESULT_STATUSES = tuple(s.value for s in ResultStatus)


def utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise MessageError("timestamp must carry a UTC offset")
    return ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    return utc(ts).isoformat()


@dataclass(frozen=True)
class CountRecord:
    """Counts of one detector over one interval."""

    detector_id: str
    count: int                      # vehicles (all classes)
    occupancy_pct: float            # 0..100
    motorcycle_count: int | None = None  # when the detector classifies (video, radar)


@dataclass(frozen=True)
class CountReport:
    """All detectors of one controller for one interval. Key: (controller, detector, interval_start)."""

    controller_id: str
    seq: int
    interval_start: datetime
    interval_s: int
    records: tuple[CountRecord, ...]

    def to_json(self) -> bytes:
        return _dump({
            "schema": COUNTS_SCHEMA, "controller_id": self.controller_id, "seq": self.seq,
            "interval_start": iso(self.interval_start), "interval_s": self.interval_s,
            "records": [
                {"detector_id": r.detector_id, "count": r.count, "occupancy_pct": r.occupancy_pct,
                 **({} if r.motorcycle_count is None else {"motorcycle_count": r.motorcycle_count})}
                for r in self.records
            ],
        })


@dataclass(frozen=True)
class EventBatch:
    """Indiana hi-resolution events: (timestamp, event_code, event_param) at 0.1 s."""

    controller_id: str
    seq: int
    events: tuple[tuple[datetime, int, int], ...]

    def to_json(self) -> bytes:
        return _dump({
            "schema": EVENTS_SCHEMA, "controller_id": self.controller_id, "seq": self.seq,
            "events": [[iso(ts), code, param] for ts, code, param in self.events],
        })


@dataclass(frozen=True)
class StatusMessage:
    """Retained controller status; the broker publishes ``offline`` as last will."""

    controller_id: str
    state: str
    mode: str = MODE_TOD
    plan_id: str | None = None
    plan_version: int | None = None
    at: datetime | None = None
    detail: str = ""

    def to_json(self) -> bytes:
        return _dump({
            "schema": STATUS_SCHEMA, "controller_id": self.controller_id, "state": self.state,
            "mode": self.mode, "plan_id": self.plan_id, "plan_version": self.plan_version,
            "at": iso(self.at) if self.at else None, "detail": self.detail,
        })


@dataclass(frozen=True)
class PlanResult:
    """The field's application-level answer to a plan command."""

    controller_id: str
    plan_id: str
    status: str
    rule: str | None = None
    reason: str = ""
    at: datetime | None = None

    def to_json(self) -> bytes:
        return _dump({
            "schema": RESULT_SCHEMA, "controller_id": self.controller_id, "plan_id": self.plan_id,
            "status": self.status, "rule": self.rule, "reason": self.reason,
            "at": iso(self.at) if self.at else None,
        })


# ---------------------------------------------------------------------------
# decoding

def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _load(payload: bytes | bytearray) -> Mapping[str, Any]:
    if not isinstance(payload, (bytes, bytearray)):
        raise MessageError("payload must be bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"payload too large ({len(payload)} > {MAX_PAYLOAD_BYTES} bytes)")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MessageError(f"payload is not JSON: {exc.msg} at char {exc.pos}") from exc
    except ValueError as exc:
        raise MessageError(str(exc)) from exc
    if not isinstance(data, dict):
        raise MessageError("payload must be a JSON object")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in data or data[key] is None:
        if optional:
            return None
        raise MessageError("missing", field=key)
    value = data[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise MessageError(f"expected {kind}, got boolean", field=key)
    if not isinstance(value, kind):
        raise MessageError(f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}", field=key)
    return value


def _time(value: Any, key: str) -> datetime:
    if not isinstance(value, str):
        raise MessageError("expected ISO-8601 string", field=key)
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MessageError(f"not ISO-8601: {value[:40]!r}", field=key) from exc
    if ts.tzinfo is None:
        raise MessageError("timestamp must carry a UTC offset", field=key)
    return ts.astimezone(UTC)


def _ident(value: Any, key: str) -> str:
    if not isinstance(value, str) or not (1 <= len(value) <= 64) or not value.isprintable():
        raise MessageError("expected identifier string of 1-64 printable characters", field=key)
    return value


def _schema(data: Mapping[str, Any], expected: str) -> None:
    got = data.get("schema")
    if got != expected:
        raise MessageError(f"expected schema {expected!r}, got {got!r}", field="schema")


def decode_counts(payload: bytes | bytearray) -> CountReport:
    data = _load(payload)
    _schema(data, COUNTS_SCHEMA)
    controller_id = _ident(data.get("controller_id"), "controller_id")
    seq = _field(data, "seq", int)
    if seq < 0:
        raise MessageError("must be >= 0", field="seq")
    interval_s = _field(data, "interval_s", int)
    if not 1 <= interval_s <= 3600:
        raise MessageError("must be 1..3600 s", field="interval_s")
    interval_start = _time(data.get("interval_start"), "interval_start")
    raw_records = _field(data, "records", list)
    if not raw_records:
        raise MessageError("must not be empty", field="records")
    if len(raw_records) > MAX_RECORDS:
        raise MessageError(f"at most {MAX_RECORDS} records", field="records")
    records = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_records):
        where = f"records[{i}]"
        if not isinstance(raw, dict):
            raise MessageError("expected object", field=where)
        det = _ident(raw.get("detector_id"), f"{where}.detector_id")
        if det in seen:
            raise MessageError(f"duplicate detector {det!r}", field=where)
        seen.add(det)
        count = _field(raw, "count", int)
        if not 0 <= count <= 10_000:
            raise MessageError("must be 0..10000", field=f"{where}.count")
        occ = _field(raw, "occupancy_pct", (int, float))
        if not (math.isfinite(occ) and 0.0 <= occ <= 100.0):
            raise MessageError("must be 0..100", field=f"{where}.occupancy_pct")
        moto = _field(raw, "motorcycle_count", int, optional=True)
        if moto is not None and not 0 <= moto <= count:
            raise MessageError("must be 0..count", field=f"{where}.motorcycle_count")
        records.append(CountRecord(det, count, float(occ), moto))
    wire.conform(data, wire.CountsV1)
    return CountReport(controller_id, seq, interval_start, interval_s, tuple(records))


def decode_events(payload: bytes | bytearray) -> EventBatch:
    data = _load(payload)
    _schema(data, EVENTS_SCHEMA)
    controller_id = _ident(data.get("controller_id"), "controller_id")
    seq = _field(data, "seq", int)
    raw_events = _field(data, "events", list)
    if len(raw_events) > MAX_EVENTS:
        raise MessageError(f"at most {MAX_EVENTS} events", field="events")
    events = []
    for i, raw in enumerate(raw_events):
        if not (isinstance(raw, list) and len(raw) == 3):
            raise MessageError("expected [time, code, param]", field=f"events[{i}]")
        ts = _time(raw[0], f"events[{i}][0]")
        code, param = raw[1], raw[2]
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise MessageError("event code must be 0..255", field=f"events[{i}][1]")
        if isinstance(param, bool) or not isinstance(param, int) or not 0 <= param <= 65535:
            raise MessageError("event param must be 0..65535", field=f"events[{i}][2]")
        events.append((ts, code, param))
    wire.conform(data, wire.EventsV1)
    return EventBatch(controller_id, seq, tuple(events))


def decode_status(payload: bytes | bytearray) -> StatusMessage:
    data = _load(payload)
    _schema(data, STATUS_SCHEMA)
    state = _field(data, "state", str)
    if state not in (ONLINE, OFFLINE):
        raise MessageError(f"unknown state {state!r}", field="state")
    at = data.get("at")
    wire.conform(data, wire.StatusV1)
    return StatusMessage(
        controller_id=_ident(data.get("controller_id"), "controller_id"),
        state=state,
        mode=str(data.get("mode", MODE_TOD)),
        plan_id=_field(data, "plan_id", str, optional=True),
        plan_version=_field(data, "plan_version", int, optional=True),
        at=_time(at, "at") if at is not None else None,
        detail=str(data.get("detail", "")),
    )


def decode_result(payload: bytes | bytearray) -> PlanResult:
    data = _load(payload)
    _schema(data, RESULT_SCHEMA)
    status = _field(data, "status", str)
    if status not in RESULT_STATUSES:
        raise MessageError(f"unknown status {status!r}", field="status")
    at = data.get("at")
    wire.conform(data, wire.PlanResultV1)
    return PlanResult(
        controller_id=_ident(data.get("controller_id"), "controller_id"),
        plan_id=_field(data, "plan_id", str),
        status=status,
        rule=_field(data, "rule", str, optional=True),
        reason=str(data.get("reason", "")),
        at=_time(at, "at") if at is not None else None,
    )
