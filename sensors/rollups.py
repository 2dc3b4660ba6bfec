"""Time-bucketed detector counts: the ``detector_counts_15min`` view and ad-hoc rollups.

The view (migration ``100_sensors.sql``) uses ``date_bin()``, so it works on
plain PostgreSQL; with TimescaleDB the same view runs over the hypertable.
Dashboards query the view by name; Python callers (demand estimation, the
CLI) use :func:`counts_15min` or :func:`rollup` for another bucket width.

With TimescaleDB, :func:`counts_15min` reads the continuous aggregate
``detector_counts_15min_cagg`` instead (``120_timescaledb.sql``): the same
columns and values as the view, real-time (buckets newer than the last
refresh come from the raw rows), materialized every 5 minutes over the last
7 days. Rows that arrive for older buckets reach it through
:func:`refresh_rollups` (the view would show them at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from sensors._conn import ConnOrDsn, connection
from traffic.errors import StorageError

VIEW_15MIN = "detector_counts_15min"
CAGG_15MIN = "detector_counts_15min_cagg"   # TimescaleDB only
BUCKET_ORIGIN = "2000-01-01 00:00:00+00"   # fixed UTC midnight: buckets align to the quarter hour

_COLUMNS = ("controller_id", "detector_id", "bucket", "vehicle_count", "motorcycle_count", "covered_s",
            "intervals", "occupancy_pct", "flow_veh_h")


@dataclass(frozen=True)
class CountBucket:
    """Counts of one detector over one bucket."""

    controller_id: str
    detector_id: str
    bucket: datetime
    vehicle_count: int
    motorcycle_count: int | None
    covered_s: int                # seconds of the bucket actually reported
    intervals: int
    occupancy_pct: float | None   # time-weighted mean
    flow_veh_h: float | None      # vehicle_count scaled to an hour over covered_s


def _where(controller_id: str | None, start: datetime | None, end: datetime | None,
           time_col: sql.Composable) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    if controller_id is not None:
        parts.append(sql.SQL("controller_id = %s"))
        params.append(controller_id)
    if start is not None:
        parts.append(sql.SQL("{} >= %s").format(time_col))
        params.append(start)
    if end is not None:
        parts.append(sql.SQL("{} < %s").format(time_col))
        params.append(end)
    return sql.SQL(" AND ").join(parts), params


def counts_15min(conn_or_dsn: ConnOrDsn, *, controller_id: str | None = None, start: datetime | None = None,
                 end: datetime | None = None, source: str = "auto") -> list[CountBucket]:
    """Rows of the 15-minute rollup whose bucket starts in ``[start, end)``.

    ``source``: ``auto`` (the continuous aggregate where it exists, else the
    view), ``view`` or ``cagg``.
    """
    where, params = _where(controller_id, start, end, sql.Identifier("bucket"))
    with connection(conn_or_dsn, "15-minute rollup") as conn:
        relation = _source(conn, source)
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY controller_id, detector_id, bucket").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.Identifier(relation), where)
        return [_bucket(r) for r in conn.execute(query, params).fetchall()]


def _source(conn: Any, source: str) -> str:
    if source == "view":
        return VIEW_15MIN
    has_cagg = conn.execute("SELECT to_regclass(%s)", (CAGG_15MIN,)).fetchone()[0] is not None
    if source == "cagg":
        if not has_cagg:
            raise StorageError(f"{CAGG_15MIN} does not exist here (TimescaleDB layout only)")
        return CAGG_15MIN
    if source != "auto":
        raise StorageError(f"rollup source must be auto, view or cagg, got {source!r}")
    return CAGG_15MIN if has_cagg else VIEW_15MIN


def refresh_rollups(dsn: str, start: datetime | None = None, end: datetime | None = None) -> bool:
    """Materialize ``[start, end)`` of the continuous aggregate now; False where there is none (plain PostgreSQL)."""
    from traffic.db import refresh_rollup

    return refresh_rollup(dsn, start, end)


def rollup(conn_or_dsn: ConnOrDsn, width: timedelta, *, controller_id: str | None = None,
           start: datetime | None = None, end: datetime | None = None) -> list[CountBucket]:
    """Same aggregation as the view for any bucket ``width`` (``[start, end)`` on interval starts)."""
    if width <= timedelta(0):
        raise StorageError(f"rollup width must be positive, got {width}")
    where, params = _where(controller_id, start, end, sql.Identifier("interval_start"))
    query = sql.SQL(
        "SELECT controller_id, detector_id,"
        " date_bin(%s::interval, interval_start, %s::timestamptz) AS bucket,"
        " sum(vehicle_count)::bigint, sum(motorcycle_count)::bigint, sum(interval_s)::integer, count(*)::integer,"
        " (sum(occupancy_pct * interval_s) / nullif(sum(interval_s), 0))::double precision,"
        " (sum(vehicle_count) * 3600.0 / nullif(sum(interval_s), 0))::double precision"
        " FROM detector_counts WHERE {} GROUP BY controller_id, detector_id, bucket"
        " ORDER BY controller_id, detector_id, bucket"
    ).format(where)
    with connection(conn_or_dsn, "rollup") as conn:
        return [_bucket(r) for r in conn.execute(query, [width, BUCKET_ORIGIN, *params]).fetchall()]


def _bucket(row: Any) -> CountBucket:
    cid, det, bucket, count, moto, covered, n, occ, flow = row
    return CountBucket(cid, det, bucket, int(count), None if moto is None else int(moto), int(covered), int(n),
                       None if occ is None else float(occ), None if flow is None else float(flow))
