"""Rows the ingest path stores, and the batch that carries them.

These are plain tuples in table column order so the store can hand them to
``COPY`` without reshaping, and the spool can write them as JSON without a
schema of its own. No I/O here: the store, the spool and the router all
share these types.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from traffic.errors import StorageError

SPOOL_FORMAT = "ingest-batch/1"


class CountRow(NamedTuple):
    """One row of ``detector_counts`` (column order)."""

    controller_id: str
    detector_id: str
    interval_start: datetime
    interval_s: int
    vehicle_count: int
    occupancy_pct: float
    motorcycle_count: int | None
    received_at: datetime


class EventRow(NamedTuple):
    """One row of ``controller_events`` (column order)."""

    device_id: str
    ts: datetime
    event_code: int
    event_param: int


class DeadLetter(NamedTuple):
    """A message that could not be used, kept whole with the reason."""

    topic: str
    reason: str
    payload: bytes
    received_at: datetime


class StatusRow(NamedTuple):
    """A decoded status message plus where and when it arrived.

    ``site`` comes from the topic because the ``controllers`` row needs it and
    the status payload does not carry it.
    """

    site: str
    controller_id: str
    state: str
    mode: str | None
    plan_id: str | None
    plan_version: int | None
    at: datetime | None
    detail: str
    received_at: datetime


@dataclass
class Batch:
    """Everything one write transaction stores (and one spool file holds)."""

    counts: list[CountRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.counts) + len(self.events) + len(self.dead_letters) + len(self.statuses)

    def extend(self, other: "Batch") -> None:
        self.counts.extend(other.counts)
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        self.statuses.extend(other.statuses)

    # ---- spool serialisation ---------------------------------------------
    def to_json(self) -> bytes:
        """Lossless JSON (timestamps ISO-8601 with offset, payloads base64)."""
        return json.dumps({
            "format": SPOOL_FORMAT,
            "counts": [[r.controller_id, r.detector_id, r.interval_start.isoformat(), r.interval_s,
                        r.vehicle_count, r.occupancy_pct, r.motorcycle_count, r.received_at.isoformat()]
                       for r in self.counts],
            "events": [[r.device_id, r.ts.isoformat(), r.event_code, r.event_param] for r in self.events],
            "dead_letters": [[d.topic, d.reason, base64.b64encode(d.payload).decode("ascii"),
                              d.received_at.isoformat()] for d in self.dead_letters],
            "statuses": [[s.site, s.controller_id, s.state, s.mode, s.plan_id, s.plan_version,
                          s.at.isoformat() if s.at else None, s.detail, s.received_at.isoformat()]
                         for s in self.statuses],
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Batch":
        """Inverse of :meth:`to_json`; StorageError if the file is not one of ours."""
        try:
            obj: Any = json.loads(data)
            if not isinstance(obj, dict) or obj.get("format") != SPOOL_FORMAT:
                raise ValueError(f"not an {SPOOL_FORMAT} document")
            ts = datetime.fromisoformat
            return cls(
                counts=[CountRow(c, d, ts(s), int(i), int(n), float(o), None if m is None else int(m), ts(r))
                        for c, d, s, i, n, o, m, r in obj["counts"]],
                events=[EventRow(d, ts(t), int(c), int(p)) for d, t, c, p in obj["events"]],
                dead_letters=[DeadLetter(t, why, base64.b64decode(p, validate=True), ts(r))
                              for t, why, p, r in obj["dead_letters"]],
                statuses=[StatusRow(site, c, st, mode, pid, None if pv is None else int(pv),
                                    ts(at) if at else None, det, ts(r))
                          for site, c, st, mode, pid, pv, at, det, r in obj["statuses"]],
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StorageError(f"unreadable spool batch: {exc}") from exc
