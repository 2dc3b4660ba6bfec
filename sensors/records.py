"""Rows the ingest path stores, and the batch that carries them.

These are plain tuples in table column order so the store can hand them to
``COPY`` without reshaping, and the spool can write them as JSON without a
schema of its own. No I/O here: the store, the spool and the router all
share these types.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
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


class Source(NamedTuple):
    """The MQTT message some rows of a batch came from, and how many rows of each kind.

    Why a batch remembers its messages: when PostgreSQL refuses a batch, the
    store narrows the refusal down to the messages responsible and stores
    each of those as a dead letter with its raw payload. A batch is many
    messages merged, so without this the rows of a poison message could not
    be told apart from their neighbours, nor its payload kept.
    """

    topic: str
    payload: bytes
    received_at: datetime
    counts: int
    events: int
    dead_letters: int
    statuses: int


def safe_text(value: str) -> str:
    """``value`` made storable in a PostgreSQL ``text`` column, losing nothing readable.

    PostgreSQL text holds neither NUL nor anything that is not UTF-8, and a
    Python ``str`` can hold both (``"\\u0000"``, a lone surrogate such as
    ``"\\ud800"`` from JSON). Those characters are written as backslash
    escapes. Used for every text that goes into ``dead_letters`` (topic,
    reason), because the dead letter of a poison message must not fail on
    the same poison.
    """
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


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
    # The messages the rows came from, in row order (empty: unknown, e.g. a
    # spool file written before sources were recorded, or a hand-made batch).
    sources: list[Source] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.counts) + len(self.events) + len(self.dead_letters) + len(self.statuses)

    def extend(self, other: Batch) -> None:
        self.counts.extend(other.counts)
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        self.statuses.extend(other.statuses)
        self.sources.extend(other.sources)

    def add_message(self, topic: str, payload: bytes, received_at: datetime, rows: Batch) -> None:
        """Append the rows decoded from one message, remembering the message (see :class:`Source`)."""
        self.counts.extend(rows.counts)
        self.events.extend(rows.events)
        self.dead_letters.extend(rows.dead_letters)
        self.statuses.extend(rows.statuses)
        self.sources.append(Source(topic, payload, received_at, len(rows.counts), len(rows.events),
                                   len(rows.dead_letters), len(rows.statuses)))

    def split(self) -> list[Batch]:
        """The batch cut into the smallest units a refusal can be pinned on.

        One unit per message when the sources account for every row (each
        unit carries its one source); otherwise one unit per row, without a
        source. The store writes units, halves of units, and finally single
        units to find what the database refuses.
        """
        src = self.sources
        if src and (sum(s.counts for s in src), sum(s.events for s in src), sum(s.dead_letters for s in src),
                    sum(s.statuses for s in src)) == (len(self.counts), len(self.events),
                                                      len(self.dead_letters), len(self.statuses)):
            units: list[Batch] = []
            c = e = d = st = 0
            for s in src:
                units.append(Batch(self.counts[c:c + s.counts], self.events[e:e + s.events],
                                   self.dead_letters[d:d + s.dead_letters], self.statuses[st:st + s.statuses],
                                   [s]))
                c, e, d, st = c + s.counts, e + s.events, d + s.dead_letters, st + s.statuses
            return units
        return ([Batch(counts=[r]) for r in self.counts] + [Batch(events=[r]) for r in self.events]
                + [Batch(dead_letters=[r]) for r in self.dead_letters]
                + [Batch(statuses=[r]) for r in self.statuses])

    @classmethod
    def merge(cls, parts: Sequence[Batch]) -> Batch:
        """One batch holding ``parts`` in order (sources included)."""
        out = cls()
        for part in parts:
            out.extend(part)
        return out

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
            # Optional (an older reader ignores it, an older file lacks it):
            # lets a replay pin a refusal on one message and keep its payload.
            "sources": [[s.topic, base64.b64encode(s.payload).decode("ascii"), s.received_at.isoformat(),
                         s.counts, s.events, s.dead_letters, s.statuses] for s in self.sources],
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
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
                sources=[Source(t, base64.b64decode(p, validate=True), ts(r), int(nc), int(ne), int(nd), int(ns))
                         for t, p, r, nc, ne, nd, ns in obj.get("sources", ())],
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StorageError(f"unreadable spool batch: {exc}") from exc
