"""Incremental aggregation of ``controller_events`` into the ATSPM tables (migration ``400_atspm.sql``).

Why incremental with a settle time: a bin's measures depend on events after
it (an arrival on red waits for the next green; a split-failure cycle ends
5 s into red), and events arrive in batches. So a device's bins are computed
only up to ``floor_15(newest event - settle)``, and each run loads
``context`` before and after the bins it writes. Every run replaces the bins
it writes (delete + insert in one transaction), so running twice, or
recomputing a range after late data (:func:`recompute`), is harmless.

Detector configuration comes from ``atspm_detectors``; rows derived from
``controllers.spec`` (channel = 1-based position in the spec's detectors, the
parameter the emulators put on detector events) are refreshed on every run
by :func:`sync_detectors_from_specs`, and an agency's ``manual`` rows win.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from sensors._conn import ConnOrDsn, connection
from sensors.atspm.measures import (
    ADVANCE,
    FUNCTIONS,
    PRESENCE,
    YELLOW_RED,
    Detector,
    Event,
    Measures,
    Params,
    compute,
    floor_bin,
)
from traffic.errors import StorageError
from traffic.intersection import IntersectionSpec

log = logging.getLogger(__name__)

SETTLE = timedelta(minutes=5)      # > the longest cycle: the events a bin needs are in by then
CONTEXT = timedelta(minutes=10)    # loaded before and after the bins written (whole cycles, detector state)
CHUNK = timedelta(hours=6)         # bins written per transaction


@dataclass
class AggregationReport:
    """What one :func:`aggregate` run did, per device: ``[from, to)`` written."""

    ranges: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    phase_rows: int = 0
    cycle_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"devices": {d: [a.isoformat(), b.isoformat()] for d, (a, b) in self.ranges.items()},
                "phase_rows": self.phase_rows, "cycle_rows": self.cycle_rows}


def detectors_from_spec(spec: IntersectionSpec) -> list[tuple[int, int, str, str]]:
    """(channel, phase, function, detector_id) rows for a spec: every loop serves every use.

    The project's loops sit ``distance_to_stopline_m`` (40 m) upstream: they
    see arrivals (advance), extend greens and hold calls (used as presence
    for split failures) and catch late arrivals (yellow/red actuations).
    """
    rows = []
    for i, det in enumerate(spec.detectors, start=1):
        for phase in spec.detector_phases(det):
            for function in FUNCTIONS:
                rows.append((i, phase, function, det.detector_id))
    return rows


def sync_detectors_from_specs(conn_or_dsn: ConnOrDsn) -> int:
    """Refresh the ``spec`` rows of ``atspm_detectors`` from ``controllers.spec``; return rows written."""
    with connection(conn_or_dsn, "sync ATSPM detector config") as conn:
        specs = conn.execute("SELECT controller_id, spec FROM controllers WHERE spec IS NOT NULL").fetchall()
        manual = {r[0] for r in conn.execute("SELECT DISTINCT device_id FROM atspm_detectors WHERE source = 'manual'")}
        written = 0
        for cid, spec in specs:
            if cid in manual:
                continue
            try:
                rows = detectors_from_spec(IntersectionSpec.from_dict(spec))
            except Exception as exc:  # noqa: BLE001 - a partial spec must not stop the others
                log.warning("ATSPM config: spec of %s unreadable (%s); skipped", cid, exc)
                continue
            conn.execute("DELETE FROM atspm_detectors WHERE device_id = %s AND source = 'spec'", (cid,))
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO atspm_detectors (device_id, channel, phase, function, detector_id, source)"
                                " VALUES (%s, %s, %s, %s, %s, 'spec') ON CONFLICT DO NOTHING",
                                [(cid, *r) for r in rows])
            written += len(rows)
    return written


def load_detectors(conn: psycopg.Connection, device_id: str) -> list[Detector]:
    rows = conn.execute("SELECT channel, phase, function, detector_id FROM atspm_detectors WHERE device_id = %s"
                        " ORDER BY channel, phase, function", (device_id,)).fetchall()
    merged: dict[tuple[int, int], tuple[set[str], str]] = {}
    for ch, ph, fn, did in rows:
        merged.setdefault((ch, ph), (set(), did))[0].add(fn)
    return [Detector(ch, ph, frozenset(fns), did) for (ch, ph), (fns, did) in merged.items()]


def load_events(conn: psycopg.Connection, device_id: str, start: datetime, end: datetime) -> list[Event]:
    """Events of one device in ``[start, end)``."""
    rows = conn.execute("SELECT ts, event_code, event_param FROM controller_events"
                        " WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts, event_code, event_param",
                        (device_id, start, end)).fetchall()
    return [Event(ts, int(c), int(p)) for ts, c, p in rows]


def devices(conn: psycopg.Connection) -> list[str]:
    """Every device with events (a skip scan over the primary key: one index probe per device)."""
    rows = conn.execute(
        "WITH RECURSIVE d AS (SELECT min(device_id) AS id FROM controller_events"
        " UNION ALL SELECT (SELECT min(device_id) FROM controller_events WHERE device_id > d.id)"
        " FROM d WHERE d.id IS NOT NULL) SELECT id FROM d WHERE id IS NOT NULL").fetchall()
    return [r[0] for r in rows]


def aggregate(conn_or_dsn: ConnOrDsn, *, device_id: str | None = None, now: datetime | None = None,
              settle: timedelta = SETTLE, params: Params = Params()) -> AggregationReport:
    """Bring the ATSPM tables up to date with ``controller_events`` (one device or all)."""
    report = AggregationReport()
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise StorageError("aggregate: now must be timezone-aware")
    sync_detectors_from_specs(conn_or_dsn)
    with connection(conn_or_dsn, "ATSPM devices") as conn:
        todo = [device_id] if device_id is not None else devices(conn)
    for dev in todo:
        with connection(conn_or_dsn, f"ATSPM progress of {dev}") as conn:
            row = conn.execute("SELECT processed_until FROM atspm_progress WHERE device_id = %s", (dev,)).fetchone()
            bounds = conn.execute("SELECT min(ts), max(ts) FROM controller_events WHERE device_id = %s",
                                  (dev,)).fetchone()
        if bounds is None or bounds[0] is None:
            continue
        start = row[0] if row else floor_bin(bounds[0], params.bin_minutes)
        end = floor_bin(min(bounds[1] - settle, now), params.bin_minutes)
        if end <= start:
            continue
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + CHUNK)
            phase_rows, cycle_rows = _write_range(conn_or_dsn, dev, chunk_start, chunk_end, params, progress=True)
            report.phase_rows += phase_rows
            report.cycle_rows += cycle_rows
            chunk_start = chunk_end
        report.ranges[dev] = (start, end)
    return report


def recompute(conn_or_dsn: ConnOrDsn, device_id: str, start: datetime, end: datetime,
              params: Params = Params()) -> tuple[int, int]:
    """Rewrite the bins of ``[floor(start), ceil(end))`` (after late or corrected events); progress unchanged."""
    lo = floor_bin(start, params.bin_minutes)
    hi = floor_bin(end, params.bin_minutes)
    if hi < end:
        hi += timedelta(minutes=params.bin_minutes)
    return _write_range(conn_or_dsn, device_id, lo, hi, params, progress=False)


def measures_between(conn_or_dsn: ConnOrDsn, device_id: str, start: datetime, end: datetime,
                     params: Params = Params()) -> Measures:
    """Compute (not store) the measures of one device over ``[start, end)`` with the usual context."""
    with connection(conn_or_dsn, f"ATSPM measures of {device_id}") as conn:
        dets = load_detectors(conn, device_id)
        events = load_events(conn, device_id, start - CONTEXT, end + CONTEXT)
    return compute(events, dets, params)


def _write_range(conn_or_dsn: ConnOrDsn, dev: str, lo: datetime, hi: datetime, params: Params, *,
                 progress: bool) -> tuple[int, int]:
    with connection(conn_or_dsn, f"ATSPM aggregation of {dev}") as conn:
        dets = load_detectors(conn, dev)
        events = load_events(conn, dev, lo - CONTEXT, hi + CONTEXT)
        m = compute(events, dets, params)
        names = {d.channel: d.detector_id for d in dets if d.detector_id}
        phase_rows = [_phase_row(dev, b, p, v) for (b, p), v in sorted(m.phase.items()) if lo <= b < hi]
        det_rows = [(dev, b, ch, names.get(ch, ""), v.actuations, v.on_time_s)
                    for (b, ch), v in sorted(m.detector.items()) if lo <= b < hi]
        dev_rows = [(dev, b, v.events, v.has_data, v.max_gap_s) for b, v in sorted(m.device.items()) if lo <= b < hi]
        cyc_rows = [(dev, c.phase, c.green_start, c.yellow_start, c.red_start, c.red_clear_end, c.next_green,
                     c.termination, c.arrivals, c.arrivals_on_green)
                    for c in m.cycles if lo <= c.green_start < hi and c.next_green is not None]
        for table, col in (("atspm_phase_15min", "bin"), ("atspm_detector_15min", "bin"),
                           ("atspm_device_15min", "bin"), ("atspm_cycles", "green_start")):
            conn.execute(sql.SQL("DELETE FROM {} WHERE device_id = %s AND {} >= %s AND {} < %s").format(
                sql.Identifier(table), sql.Identifier(col), sql.Identifier(col)),
                (dev, lo, hi))
        with conn.cursor() as cur:
            _insert(cur, "atspm_phase_15min", _PHASE_COLUMNS, phase_rows)
            _insert(cur, "atspm_detector_15min",
                    ("device_id", "bin", "channel", "detector_id", "actuations", "on_time_s"), det_rows)
            _insert(cur, "atspm_device_15min", ("device_id", "bin", "events", "has_data", "max_gap_s"), dev_rows)
            _insert(cur, "atspm_cycles", ("device_id", "phase", "green_start", "yellow_start", "red_start",
                                          "red_clear_end", "next_green", "termination", "arrivals",
                                          "arrivals_on_green"), cyc_rows)
        if progress:
            conn.execute("INSERT INTO atspm_progress (device_id, processed_until) VALUES (%s, %s)"
                         " ON CONFLICT (device_id) DO UPDATE SET processed_until = EXCLUDED.processed_until,"
                         " updated_at = now()", (dev, hi))
    log.debug("ATSPM %s [%s, %s): %d phase rows, %d cycles", dev, lo, hi, len(phase_rows), len(cyc_rows))
    return len(phase_rows), len(cyc_rows)


_PHASE_COLUMNS = ("device_id", "bin", "phase", "arrivals", "arrivals_on_green", "arrivals_on_red", "total_delay_s",
                  "sf_cycles", "green_time_s", "green_occupancy", "red_occupancy", "split_failures", "services",
                  "avg_split_s", "max_split_s", "gap_outs", "max_outs", "force_offs", "yellow_actuations",
                  "red_actuations", "ped_services", "ped_actuations", "ped_delay_s", "ped_delay_samples")


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def _phase_row(dev: str, b: datetime, phase: int, v: Any) -> tuple:
    return (dev, b, phase, v.arrivals, v.arrivals_on_green, v.arrivals_on_red, v.total_delay_s, v.sf_cycles,
            _mean(v.green_time_s_sum, v.sf_cycles), _mean(v.green_occupancy_sum, v.sf_cycles),
            _mean(v.red_occupancy_sum, v.sf_cycles), v.split_failures, v.services,
            _mean(v.split_s_sum, v.services), v.max_split_s, v.gap_outs, v.max_outs, v.force_offs,
            v.yellow_actuations, v.red_actuations, v.ped_services, v.ped_actuations,
            _mean(v.ped_delay_s_sum, v.ped_delay_samples), v.ped_delay_samples)


def _insert(cur: psycopg.Cursor, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    rows = list(rows)
    if not rows:
        return
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    cur.executemany(query, rows)


__all__ = ["ADVANCE", "PRESENCE", "YELLOW_RED", "AggregationReport", "aggregate", "detectors_from_spec", "devices",
           "load_detectors", "load_events", "measures_between", "recompute", "sync_detectors_from_specs"]
