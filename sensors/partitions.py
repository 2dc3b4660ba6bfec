"""Partition maintenance and retention for the detector time series.

Migration ``110_sensors_storage.sql`` lays the table out (native daily
range partitions with a DEFAULT partition on plain PostgreSQL; the
hypertables come from ``100_sensors.sql`` / ``120_timescaledb.sql``) and
defines ``ensure_partitions``; ``120_timescaledb.sql`` defines
``apply_retention`` for every layout. This module is their Python face, plus the pure logic
that decides which days a batch needs (unit-tested without a database).

Why ingest creates partitions itself instead of a cron job: a worker may
receive data for a day nobody prepared (a controller's clock is off, a
backlog replays yesterday), and the DEFAULT partition would then swallow a
whole day, which makes every later ``ATTACH`` scan it. Asking once per new
day costs one round trip per day per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sensors._conn import ConnOrDsn, connection
from traffic.db import is_hypertable
from traffic.errors import StorageError

log = logging.getLogger(__name__)

__all__ = ["RetentionResult", "apply_retention", "day_ranges", "ensure_partitions", "layout", "partitions",
           "PARTITION_HORIZON_PAST", "PARTITION_HORIZON_FUTURE"]

# Days outside [today - PAST, today + FUTURE] get no partition of their own:
# their rows land in the DEFAULT partition (stored, never refused), so a
# controller with a wild clock cannot make ingest create thousands of tables.
PARTITION_HORIZON_PAST = timedelta(days=400)
PARTITION_HORIZON_FUTURE = timedelta(days=2)

TIMESCALEDB = "timescaledb"
PARTITIONED = "partitioned"
PLAIN = "plain"


@dataclass(frozen=True)
class RetentionResult:
    """What :func:`apply_retention` removed; every field means the same on every layout.

    ``rows_deleted``: rows of ``detector_counts`` and ``controller_events``
    before the cut-off that are gone, whether they went with a dropped
    partition or chunk or were deleted one by one (the same number for the
    same data on plain PostgreSQL and on TimescaleDB).
    ``partitions_dropped``: whole daily storage units of ``detector_counts``
    dropped: daily partitions, or 1-day chunks.
    ``rollup_rows_deleted``: materialized rows of the continuous aggregate
    ``detector_counts_15min_cagg`` dropped (0 without it: the plain view
    stores nothing). ``cutoff``: the first instant kept (a UTC midnight).
    ``layout``: ``timescaledb``, ``partitioned`` or ``plain``.
    """

    partitions_dropped: int
    rows_deleted: int
    rollup_rows_deleted: int = 0
    layout: str = ""
    cutoff: datetime | None = None


def utc_day(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


def day_ranges(days: Iterable[date], today: date) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of ``days`` inside the horizon, as ``(first midnight, last midnight)`` UTC.

    Pure; the store turns each run into one ``ensure_partitions`` call.
    """
    lo, hi = today - PARTITION_HORIZON_PAST, today + PARTITION_HORIZON_FUTURE
    wanted = sorted({d for d in days if lo <= d <= hi})
    runs: list[tuple[datetime, datetime]] = []
    for d in wanted:
        start = datetime.combine(d, time(), UTC)
        if runs and runs[-1][1] + timedelta(days=1) == start:
            runs[-1] = (runs[-1][0], start)
        else:
            runs.append((start, start))
    return runs


def ensure_partitions(conn_or_dsn: ConnOrDsn, start: datetime, end: datetime) -> int:
    """Create the daily partitions covering ``[start, end]``; return how many were new (0 with TimescaleDB)."""
    with connection(conn_or_dsn, "ensure partitions") as conn:
        row = conn.execute("SELECT ensure_partitions(%s, %s)", (start, end)).fetchone()
    return int(row[0]) if row else 0


def apply_retention(conn_or_dsn: ConnOrDsn, keep_days: int, at: datetime | None = None) -> RetentionResult:
    """Drop detector data, controller events and 15-minute rollups older than ``keep_days`` whole UTC days
    before ``at``.

    Plain PostgreSQL: whole daily partitions dropped, stragglers deleted.
    TimescaleDB (``detector_counts`` a hypertable): ``drop_chunks`` on both
    tables and on ``detector_counts_15min_cagg``. Rows before the cut-off are
    counted before they go (a run reads the expiring day once).
    """
    if keep_days < 1:
        raise StorageError(f"keep_days must be >= 1, got {keep_days}")
    with connection(conn_or_dsn, "apply retention") as conn:
        if at is None:
            row = conn.execute(_RETENTION + "(%s)", (keep_days,)).fetchone()
        else:
            row = conn.execute(_RETENTION + "(%s, %s)", (keep_days, at)).fetchone()
    assert row is not None
    layout_, cutoff, dropped, deleted, rollup_deleted = row
    result = RetentionResult(int(dropped), int(deleted), int(rollup_deleted), str(layout_), cutoff)
    log.info("retention %d days: %s", keep_days, result)
    return result


_RETENTION = ("SELECT layout, cutoff, partitions_dropped, rows_deleted, rollup_rows_deleted"
              " FROM apply_retention")


def partitions(conn_or_dsn: ConnOrDsn) -> list[str]:
    """Names of detector_counts' partitions (daily ones sorted, then the default); [] if not partitioned."""
    with connection(conn_or_dsn, "list partitions") as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'detector_counts'::regclass ORDER BY c.relname = 'detector_counts_default', 1"
        ).fetchall()
    return [r[0] for r in rows]


def layout(conn_or_dsn: ConnOrDsn) -> str:
    """``timescaledb``, ``partitioned`` or ``plain``: how detector_counts is stored here.

    ``timescaledb`` means detector_counts IS a hypertable
    (``timescaledb_information.hypertables``); an installed extension over
    tables migrated without it is still ``partitioned`` or ``plain``.
    """
    with connection(conn_or_dsn, "storage layout") as conn:
        if is_hypertable(conn, "detector_counts"):
            return TIMESCALEDB
        if conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'detector_counts'::regclass"
                        ).fetchone():
            return PARTITIONED
    return PLAIN
