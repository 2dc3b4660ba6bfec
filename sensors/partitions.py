"""Partition maintenance and retention for the detector time series.

Migration ``110_sensors_storage.sql`` lays the table out (TimescaleDB
hypertable, or native daily range partitions with a DEFAULT partition on
plain PostgreSQL) and defines the SQL functions ``ensure_partitions`` and
``apply_retention``; this module is their Python face, plus the pure logic
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
from datetime import date, datetime, time, timedelta, timezone

from sensors._conn import ConnOrDsn, connection
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
    """What :func:`apply_retention` removed."""

    partitions_dropped: int
    rows_deleted: int


def utc_day(ts: datetime) -> date:
    return ts.astimezone(timezone.utc).date()


def day_ranges(days: Iterable[date], today: date) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of ``days`` inside the horizon, as ``(first midnight, last midnight)`` UTC.

    Pure; the store turns each run into one ``ensure_partitions`` call.
    """
    lo, hi = today - PARTITION_HORIZON_PAST, today + PARTITION_HORIZON_FUTURE
    wanted = sorted({d for d in days if lo <= d <= hi})
    runs: list[tuple[datetime, datetime]] = []
    for d in wanted:
        start = datetime.combine(d, time(), timezone.utc)
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
    """Drop detector data (and controller events) older than ``keep_days`` whole UTC days before ``at``."""
    if keep_days < 1:
        raise StorageError(f"keep_days must be >= 1, got {keep_days}")
    with connection(conn_or_dsn, "apply retention") as conn:
        if at is None:
            row = conn.execute("SELECT * FROM apply_retention(%s)", (keep_days,)).fetchone()
        else:
            row = conn.execute("SELECT * FROM apply_retention(%s, %s)", (keep_days, at)).fetchone()
    assert row is not None
    result = RetentionResult(int(row[0]), int(row[1]))
    log.info("retention %d days: %s", keep_days, result)
    return result


def partitions(conn_or_dsn: ConnOrDsn) -> list[str]:
    """Names of detector_counts' partitions (daily ones sorted, then the default); [] if not partitioned."""
    with connection(conn_or_dsn, "list partitions") as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'detector_counts'::regclass ORDER BY c.relname = 'detector_counts_default', 1"
        ).fetchall()
    return [r[0] for r in rows]


def layout(conn_or_dsn: ConnOrDsn) -> str:
    """``timescaledb``, ``partitioned`` or ``plain``: how detector_counts is stored here."""
    with connection(conn_or_dsn, "storage layout") as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            return TIMESCALEDB
        if conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'detector_counts'::regclass"
                        ).fetchone():
            return PARTITIONED
    return PLAIN
