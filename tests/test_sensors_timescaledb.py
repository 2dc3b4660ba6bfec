"""Storage layouts: TimescaleDB (hypertables, compression, continuous aggregate, drop_chunks
retention) and the plain-PostgreSQL pieces of the same decision.

The first group runs on plain PostgreSQL (this machine): refusal where the
extension is unavailable, the conversion step a partitioned table needs
before it can become a hypertable, layout detection by the hypertable
catalog, one retention result on every layout. The second group needs a
server with TimescaleDB (``CREATE EXTENSION timescaledb`` possible) and
skips with "TimescaleDB extension not available on this server" elsewhere;
each of its tests is complete as written (migrate --timescaledb, extension
added after a plain migrate, drop_chunks retention, writes into compressed
chunks, continuous aggregate equal to the view).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sensors import partitions
from sensors.records import CountRow, EventRow
from sensors.rollups import counts_15min
from sensors.store import CountStore
from tests.conftest import ADMIN_DSN, _dsn_for
from traffic import db
from traffic.errors import StorageError

UTC = UTC
T0 = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
CUTOFF_3D = datetime(2026, 3, 1, tzinfo=UTC)      # apply_retention(3, at=T0) keeps 2026-03-01 onwards


def _server_has_timescaledb() -> bool:
    try:
        with db.connect(ADMIN_DSN) as conn:
            return db.timescaledb_available(conn)
    except StorageError:
        return False


needs_timescaledb = pytest.mark.skipif(not _server_has_timescaledb(), reason=db.TIMESCALEDB_UNAVAILABLE)


@pytest.fixture
def empty_dsn():
    """A fresh database with no migration applied; dropped afterwards."""
    name = f"traffic_test_{uuid.uuid4().hex[:10]}"
    try:
        db.create_database(ADMIN_DSN, name)
    except StorageError as exc:
        pytest.skip(f"PostgreSQL at {ADMIN_DSN}: {exc}")
    try:
        yield _dsn_for(name)
    finally:
        db.drop_database(ADMIN_DSN, name)


def _insert_days(dsn: str) -> None:
    """One count a day at 17:00 for days -9..0 before T0, plus events on days -8 and 0."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        partitions.ensure_partitions(conn, T0 - timedelta(days=5), T0)   # no-op unless partitioned
        conn.execute("INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                     " vehicle_count, occupancy_pct) SELECT 'c1', 'd0', %s - g * interval '1 day', 60, 1, 1.0"
                     " FROM generate_series(0, 9) g", (T0,))
        conn.execute("INSERT INTO controller_events VALUES ('c1', %s, 1, 2), ('c1', %s, 1, 2)",
                     (T0 - timedelta(days=8), T0))


def _left(dsn: str) -> tuple[list[datetime], int]:
    with psycopg.connect(dsn) as conn:
        counts = [r[0] for r in conn.execute("SELECT interval_start FROM detector_counts ORDER BY 1")]
        events = conn.execute("SELECT count(*) FROM controller_events").fetchone()[0]
    return counts, events


KEPT = [T0 - timedelta(days=k) for k in (3, 2, 1, 0)]


# ---------------------------------------------------------------------------
# plain PostgreSQL (runs here)

def test_migrate_timescaledb_refuses_where_the_server_lacks_it(empty_dsn):
    if _server_has_timescaledb():
        pytest.skip("this server has TimescaleDB: the refusal cannot happen")
    with pytest.raises(StorageError, match=db.TIMESCALEDB_UNAVAILABLE) as info:
        db.migrate(empty_dsn, timescaledb=True)
    assert "shared_preload_libraries" in str(info.value) and "without --timescaledb" in str(info.value)
    with psycopg.connect(empty_dsn) as conn:                       # refused before touching the schema
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
    assert "120_timescaledb.sql" in db.migrate(empty_dsn)          # the plain layout is still one call away


def test_timescaledb_setup_names_the_command_when_the_extension_is_missing(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        if db.timescaledb_installed(conn):
            pytest.skip("extension installed")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="traffic migrate --timescaledb"):
            conn.execute("SELECT timescaledb_setup()")


def test_layout_is_decided_by_the_hypertable_catalog_not_the_extension(pg_dsn):
    """A stand-in for timescaledb_information.hypertables: only a listed table counts as a hypertable."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        if db.timescaledb_installed(conn):
            pytest.skip("the real catalog is here")
        assert partitions.layout(conn) == partitions.PARTITIONED and not db.has_timescaledb(conn)
        conn.execute("CREATE SCHEMA timescaledb_information")
        conn.execute("CREATE TABLE timescaledb_information.hypertables (hypertable_schema name, hypertable_name name)")
        assert partitions.layout(conn) == partitions.PARTITIONED     # catalog present, table not in it
        conn.execute("INSERT INTO timescaledb_information.hypertables VALUES ('public', 'controller_events')")
        assert db.is_hypertable(conn, "controller_events") and not db.is_hypertable(conn, "detector_counts")
        assert partitions.layout(conn) == partitions.PARTITIONED
        conn.execute("INSERT INTO timescaledb_information.hypertables VALUES ('public', 'detector_counts')")
        assert partitions.layout(conn) == partitions.TIMESCALEDB and db.has_timescaledb(conn)
        conn.execute("DROP SCHEMA timescaledb_information CASCADE")


def test_retention_counts_mean_the_same_partitioned_and_unpartitioned(pg_dsn):
    """rows_deleted counts every row removed, in a dropped partition or not: same number on every layout."""
    _insert_days(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        view_before = conn.execute("SELECT * FROM detector_counts_15min ORDER BY 1, 2, 3").fetchall()
        assert conn.execute("SELECT detector_counts_unpartition()").fetchone()[0] == 10
        conn.commit()
        assert conn.execute("SELECT detector_counts_unpartition()").fetchone()[0] == 0   # idempotent
        conn.commit()
        assert partitions.layout(conn) == partitions.PLAIN and partitions.partitions(conn) == []
        assert conn.execute("SELECT * FROM detector_counts_15min ORDER BY 1, 2, 3").fetchall() == view_before
        assert conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'detector_counts_time_brin'"
                            ).fetchone()[0].endswith("USING brin (interval_start)")
        assert conn.execute("SELECT has_table_privilege('traffic_grafana', 'detector_counts_15min', 'SELECT')"
                            ).fetchone()[0]
    with CountStore(pg_dsn) as store:                               # the key still makes writes idempotent
        again = CountRow("c1", "d0", T0, 60, 1, 1.0, None, T0)
        assert store.write_counts([again]) == 0
        assert store.write_counts([again._replace(detector_id="d9")]) == 1
    plain = partitions.apply_retention(pg_dsn, 3, at=T0)
    assert (plain.layout, plain.cutoff, plain.partitions_dropped, plain.rows_deleted, plain.rollup_rows_deleted) == (
        "plain", CUTOFF_3D, 0, 6 + 1, 0)
    assert _left(pg_dsn) == (sorted(KEPT + [T0]), 1)


def test_retention_on_the_partitioned_layout(pg_dsn):
    _insert_days(pg_dsn)
    result = partitions.apply_retention(pg_dsn, 3, at=T0)
    # days -5..-4 were partitions (dropped whole), -9..-6 in the default (deleted), one event
    assert (result.layout, result.partitions_dropped, result.rows_deleted) == ("partitioned", 2, 6 + 1)
    assert _left(pg_dsn) == (KEPT, 1)


def test_unpartition_refuses_when_another_view_uses_the_table(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE VIEW my_counts AS SELECT controller_id FROM detector_counts")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="my_counts"):
            conn.execute("SELECT detector_counts_unpartition()")


def test_rollup_source_is_the_view_without_timescaledb(pg_dsn):
    _insert_days(pg_dsn)
    assert counts_15min(pg_dsn) == counts_15min(pg_dsn, source="view") != []
    with pytest.raises(StorageError, match="TimescaleDB layout only"):
        counts_15min(pg_dsn, source="cagg")
    assert db.refresh_rollup(pg_dsn) is False


# ---------------------------------------------------------------------------
# TimescaleDB (skipped where the server lacks it)

@pytest.fixture
def ts_dsn(empty_dsn):
    db.migrate(empty_dsn, timescaledb=True)
    return empty_dsn


def _chunks(conn: psycopg.Connection, table: str) -> list[tuple[datetime, datetime, bool]]:
    return conn.execute("SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks"
                        " WHERE hypertable_name = %s ORDER BY range_start", (table,)).fetchall()


def _columns(conn: psycopg.Connection, rel: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
                        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        (rel,)).fetchall()


def _compression_settings(conn: psycopg.Connection, table: str) -> tuple[str, str]:
    for view in ("timescaledb_information.hypertable_columnstore_settings",
                 "timescaledb_information.hypertable_compression_settings"):
        if conn.execute("SELECT to_regclass(%s)", (view,)).fetchone()[0] is not None:
            return conn.execute(f"SELECT segmentby, orderby FROM {view} WHERE hypertable = %s::regclass",  # noqa: S608
                                (table,)).fetchone()
    raise AssertionError("no compression settings view")


@needs_timescaledb
def test_migrate_timescaledb_builds_the_whole_layout(ts_dsn):
    assert db.migrate(ts_dsn, timescaledb=True) == []              # idempotent
    with psycopg.connect(ts_dsn) as conn:
        assert db.timescaledb_installed(conn) and partitions.layout(conn) == partitions.TIMESCALEDB
        assert db.is_hypertable(conn, "controller_events")
        assert _columns(conn, "detector_counts_15min_cagg") == _columns(conn, "detector_counts_15min")
        assert conn.execute("SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
                            " WHERE view_name = 'detector_counts_15min_cagg'").fetchone() == (False,)
        segment, order = _compression_settings(conn, "controller_events")
        assert segment == "device_id" and all(c in order for c in ("ts", "event_code", "event_param"))
        segment, order = _compression_settings(conn, "detector_counts")
        assert "controller_id" in segment and "detector_id" in segment and "interval_start" in order
        assert conn.execute("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
                            ).fetchone()[0] == 2
        refresh = conn.execute("SELECT config FROM timescaledb_information.jobs"
                               " WHERE proc_name = 'policy_refresh_continuous_aggregate'").fetchone()[0]
        assert refresh["start_offset"] in ("7 days", "7 days 00:00:00") and refresh["end_offset"] in (
            "00:15:00", "15 mins", "15 minutes")


@needs_timescaledb
def test_extension_added_after_a_plain_migrate(empty_dsn):
    """The defect: extension created later made every apply_retention fail ("not a hypertable")."""
    db.migrate(empty_dsn)                                          # plain layout: daily partitions
    _insert_days(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")               # what a DBA might do
        assert partitions.layout(conn) == partitions.PARTITIONED   # tables unchanged: still partitioned
        view_before = conn.execute("SELECT * FROM detector_counts_15min ORDER BY 1, 2, 3").fetchall()
    db.migrate(empty_dsn)                                          # warns, converts nothing
    assert partitions.layout(empty_dsn) == partitions.PARTITIONED
    kept = partitions.apply_retention(empty_dsn, 30, at=T0)        # works on the layout it finds
    assert (kept.layout, kept.rows_deleted) == ("partitioned", 0)

    db.migrate(empty_dsn, timescaledb=True)                        # the conversion
    with psycopg.connect(empty_dsn) as conn:
        assert partitions.layout(conn) == partitions.TIMESCALEDB and db.is_hypertable(conn, "controller_events")
        assert conn.execute("SELECT * FROM detector_counts_15min ORDER BY 1, 2, 3").fetchall() == view_before
        assert conn.execute("SELECT * FROM detector_counts_15min_cagg ORDER BY 1, 2, 3").fetchall() == view_before
        assert len(_chunks(conn, "detector_counts")) == 10
        assert conn.execute("SELECT to_regclass('detector_counts_default')").fetchone()[0] is None
    result = partitions.apply_retention(empty_dsn, 3, at=T0)
    assert (result.layout, result.partitions_dropped, result.rows_deleted) == ("timescaledb", 6, 6 + 1)
    assert _left(empty_dsn) == (KEPT, 1)


@needs_timescaledb
def test_retention_drops_chunks_of_both_tables_and_of_the_aggregate(ts_dsn):
    _insert_days(ts_dsn)
    assert db.refresh_rollup(ts_dsn, None, T0 + timedelta(hours=1))
    with psycopg.connect(ts_dsn) as conn:
        assert len(_chunks(conn, "detector_counts")) == 10 and len(_chunks(conn, "controller_events")) == 2
    result = partitions.apply_retention(ts_dsn, 3, at=T0)
    # same data as test_retention_on_the_partitioned_layout: rows_deleted equal (7); here every day is a chunk
    assert (result.layout, result.cutoff, result.partitions_dropped, result.rows_deleted,
            result.rollup_rows_deleted) == ("timescaledb", CUTOFF_3D, 6, 6 + 1, 6)
    assert _left(ts_dsn) == (KEPT, 1)
    with psycopg.connect(ts_dsn) as conn:
        assert all(start >= CUTOFF_3D for start, _end, _c in _chunks(conn, "detector_counts"))
        assert all(start >= CUTOFF_3D for start, _end, _c in _chunks(conn, "controller_events"))
        assert conn.execute("SELECT count(*) FROM show_chunks('detector_counts_15min_cagg', older_than => %s)",
                            (CUTOFF_3D,)).fetchone()[0] == 0
        assert conn.execute("SELECT min(bucket) FROM detector_counts_15min_cagg").fetchone()[0] >= CUTOFF_3D
        assert conn.execute("SELECT count(*) FROM detector_counts_15min_cagg").fetchone()[0] == 4
    again = partitions.apply_retention(ts_dsn, 3, at=T0)
    assert (again.partitions_dropped, again.rows_deleted, again.rollup_rows_deleted) == (0, 0, 0)


@needs_timescaledb
def test_writes_into_compressed_chunks_stay_idempotent(ts_dsn):
    day = T0 - timedelta(days=20)
    rows = [CountRow("c1", f"d{j}", day + timedelta(minutes=m), 60, m + j, 5.0, None, T0)
            for m in range(30) for j in range(4)]
    events = [EventRow("c1", day + timedelta(seconds=i / 10), 82, i % 5) for i in range(200)]
    with CountStore(ts_dsn) as store:
        assert store.write_counts(rows[:80]) == 80 and store.write_events(events[:100]) == 100
    with psycopg.connect(ts_dsn, autocommit=True) as conn:
        for table in ("detector_counts", "controller_events"):
            conn.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks(%s) c", (table,))
            assert [c for _s, _e, c in _chunks(conn, table)] == [True]
    with CountStore(ts_dsn) as store:
        assert store.write_counts(rows[:80]) == 0                 # redelivery against compressed rows
        assert store.write_counts(rows) == 40                     # 80 duplicates + 40 new (COPY fails, fallback)
        assert store.write_counts(rows[80:]) == 0
        assert store.write_events(events) == 100                  # 100 duplicates in the compressed chunk
        assert store.write_events(events[150:]) == 0
        assert store.count_rows("detector_counts") == 120 and store.count_rows("controller_events") == 200
    with psycopg.connect(ts_dsn) as conn:
        got = conn.execute("SELECT sum(vehicle_count) FROM detector_counts").fetchone()[0]
    assert got == sum(r.vehicle_count for r in rows)


@needs_timescaledb
def test_continuous_aggregate_refresh_equals_the_view(ts_dsn):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base = now - timedelta(days=2)
    rows = [CountRow(c, d, base + timedelta(minutes=m), 60, 7 + m % 5, 10.0 + (m % 7), (m % 3) or None, now)
            for m in range(0, 120) for c in ("c1", "c2") for d in ("d0", "d1")
            if not (d == "d1" and m % 11 == 0)]                    # gaps: covered_s and flow differ per bucket
    with CountStore(ts_dsn) as store:
        store.write_counts(rows)
    assert db.refresh_rollup(ts_dsn)

    def same(conn: psycopg.Connection) -> None:
        view = conn.execute("SELECT * FROM detector_counts_15min ORDER BY 1, 2, 3").fetchall()
        cagg = conn.execute("SELECT * FROM detector_counts_15min_cagg ORDER BY 1, 2, 3").fetchall()
        assert len(view) == len(cagg) > 0
        for v, c in zip(view, cagg, strict=False):
            assert v[:7] == c[:7]
            assert v[7] == pytest.approx(c[7], rel=1e-6) and v[8] == pytest.approx(c[8], rel=1e-9)

    with psycopg.connect(ts_dsn) as conn:
        same(conn)
        materialized = conn.execute("SELECT count(*) FROM detector_counts_15min_cagg").fetchone()[0]
    assert [(b.controller_id, b.detector_id, b.bucket, b.vehicle_count, b.covered_s, b.intervals)
            for b in counts_15min(ts_dsn)] == [
        (b.controller_id, b.detector_id, b.bucket, b.vehicle_count, b.covered_s, b.intervals)
        for b in counts_15min(ts_dsn, source="view")]

    # newest buckets, above the materialized range: real-time aggregation shows them at once
    ahead = datetime.now(UTC)
    fresh = [CountRow("c1", "d0", ahead + timedelta(minutes=m), 60, 3, 2.0, 1, now) for m in range(1, 10)]
    with CountStore(ts_dsn) as store:
        store.write_counts(fresh)
    with psycopg.connect(ts_dsn) as conn:
        same(conn)
        assert conn.execute("SELECT count(*) FROM detector_counts_15min_cagg").fetchone()[0] > materialized

    # a late row in an already materialized bucket: visible after the refresh (the policy does it every 5 min)
    with CountStore(ts_dsn) as store:
        store.write_counts([CountRow("c3", "d0", base + timedelta(minutes=1), 60, 99, 50.0, None, now)])
    db.refresh_rollup(ts_dsn, base - timedelta(hours=1), now)
    with psycopg.connect(ts_dsn) as conn:
        same(conn)
