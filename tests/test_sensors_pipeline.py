"""Pipeline pieces on real PostgreSQL: fast decode agreement, partitions, retention, idempotent events, health."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors import health, partitions
from sensors.fastpath import decode_count_rows
from sensors.health import DetectorHealth, failed_detectors, health_of, store_health
from sensors.records import CountRow, EventRow
from sensors.store import CountStore
from traffic import messages
from traffic.db import has_timescaledb
from traffic.errors import MessageError, StorageError

T0 = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 4, 18, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------
# fast path == reference decoder

def _reference(payload: bytes) -> tuple[str, object]:
    try:
        report = messages.decode_counts(payload)
    except MessageError as exc:
        return "reject", str(exc)
    return "accept", [(report.controller_id, r.detector_id, report.interval_start, report.interval_s, r.count,
                       r.occupancy_pct, r.motorcycle_count) for r in report.records]


def _fast(payload: bytes) -> tuple[str, object]:
    try:
        _cid, rows = decode_count_rows(payload, NOW)
    except MessageError as exc:
        return "reject", str(exc)
    assert all(type(r) is CountRow and r.received_at == NOW for r in rows)
    return "accept", [tuple(r[:7]) for r in rows]


_odd_values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                        st.text(max_size=70), st.lists(st.integers(), max_size=2), st.just({}))
_record = st.fixed_dictionaries({
    "detector_id": st.one_of(st.text(min_size=0, max_size=66), st.sampled_from(["d0", "d1", "d\t", "d\\x"])),
    "count": st.integers(-2, 10_002),
    "occupancy_pct": st.one_of(st.floats(-1, 101, allow_nan=False), st.integers(-1, 101)),
}, optional={"motorcycle_count": st.one_of(st.none(), st.integers(-1, 10_001)), "extra": _odd_values})
_report = st.fixed_dictionaries({
    "schema": st.sampled_from([messages.COUNTS_SCHEMA, messages.COUNTS_SCHEMA, "counts/2"]),
    "controller_id": st.one_of(st.sampled_from(["c1", "c\n", ""]), st.text(max_size=66)),
    "seq": st.integers(-1, 2**70),
    "interval_start": st.sampled_from(["2026-03-04T17:00:00+00:00", "2026-03-04T19:00:00+07:00",
                                       "2026-03-04T17:00:00", "2026-03-04 17:00Z", "yesterday"]),
    "interval_s": st.integers(-1, 3601),
    "records": st.lists(_record, min_size=0, max_size=4),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=_report, drop=st.sampled_from([None, "schema", "seq", "records", "interval_start", "controller_id"]),
       replace=st.one_of(st.none(), st.tuples(st.sampled_from(["seq", "interval_s", "records", "controller_id",
                                                               "interval_start"]), _odd_values)))
def test_fast_decoder_agrees_with_the_reference(report, drop, replace):
    if drop:
        report.pop(drop, None)
    if replace:
        report[replace[0]] = replace[1]
    payload = json.dumps(report).encode()
    assert _fast(payload) == _reference(payload)


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe{}", b"[]", b'{"schema": "counts/1"', b"x" * 300_000,
                                     b'{"schema":"counts/1","controller_id":"c1","seq":0,"interval_start":'
                                     b'"2026-03-04T17:00:00+00:00","interval_s":60,"records":[{"detector_id":"d",'
                                     b'"count":1,"occupancy_pct":1e400}]}'])
def test_fast_decoder_agrees_on_broken_bytes(payload):
    assert _fast(payload) == _reference(payload)


# ---------------------------------------------------------------------------
# partitions and retention (plain PostgreSQL; TimescaleDB makes chunks itself)

def rows_for(day_offsets, controller="c1", detectors=2) -> list[CountRow]:
    return [CountRow(controller, f"d{j}", T0 + timedelta(days=k), 60, 5 + j, 10.0, None, T0)
            for k in day_offsets for j in range(detectors)]


def where_stored(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM detector_counts GROUP BY 1"))


@pytest.fixture
def plain_pg(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        if has_timescaledb(conn):
            pytest.skip("TimescaleDB installed: hypertable chunks replace the native partitions tested here")
    return pg_dsn


# TimescaleDB layout, conversion and drop_chunks retention: tests/test_sensors_timescaledb.py


def test_fresh_install_is_partitioned_by_day_with_a_default(plain_pg):
    assert partitions.layout(plain_pg) == partitions.PARTITIONED
    assert partitions.partitions(plain_pg) == ["detector_counts_default"]


def test_ingest_creates_the_day_partitions_and_rows_land_in_them(plain_pg):
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    with CountStore(plain_pg) as store:
        rows = [r._replace(interval_start=today + timedelta(days=k)) for r in rows_for([0]) for k in (-1, 0, 1)]
        assert store.write_counts(rows) == 6
        assert store.write_counts(rows) == 0                       # idempotent across partitions
        wild = rows_for([0])[0]._replace(interval_start=datetime(1999, 1, 1, tzinfo=UTC))
        assert store.write_counts([wild]) == 1                     # outside the horizon: default, not refused
    days = [(today + timedelta(days=k)).strftime("%Y%m%d") for k in (-1, 0, 1)]
    assert partitions.partitions(plain_pg) == [f"detector_counts_p{d}" for d in days] + ["detector_counts_default"]
    assert where_stored(plain_pg) == {**{f"detector_counts_p{d}": 2 for d in days}, "detector_counts_default": 1}


def test_a_new_partition_takes_over_rows_the_default_already_holds(plain_pg):
    with psycopg.connect(plain_pg, autocommit=True) as conn:
        conn.execute("INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                     " vehicle_count, occupancy_pct) VALUES ('c1', 'd0', %s, 60, 3, 1.0)", (T0,))
        assert where_stored(plain_pg) == {"detector_counts_default": 1}
        assert partitions.ensure_partitions(conn, T0, T0 + timedelta(days=1)) == 2
        assert partitions.ensure_partitions(conn, T0, T0) == 0
    assert where_stored(plain_pg) == {"detector_counts_p20260304": 1}
    with pytest.raises(StorageError, match="400 days"):
        partitions.ensure_partitions(plain_pg, T0, T0 + timedelta(days=401))


def test_retention_drops_old_partitions_and_old_stragglers(plain_pg):
    with psycopg.connect(plain_pg, autocommit=True) as conn:
        partitions.ensure_partitions(conn, T0 - timedelta(days=5), T0)
        conn.execute("INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                     " vehicle_count, occupancy_pct) SELECT 'c1', 'd0', %s - g * interval '1 day', 60, 1, 1.0"
                     " FROM generate_series(0, 9) g", (T0,))     # days -5..0 partitioned, -9..-6 in default
        conn.execute("INSERT INTO controller_events VALUES ('c1', %s, 1, 2), ('c1', %s, 1, 2)",
                     (T0 - timedelta(days=8), T0))
    result = partitions.apply_retention(plain_pg, 3, at=T0)       # keep 2026-03-01 onwards
    assert result.partitions_dropped == 2                         # 02-27, 02-28
    assert result.rows_deleted == 2 + 4 + 1     # the 2 dropped days, 02-23..02-26 from default, one event
    cutoff = T0 - timedelta(days=3) - timedelta(hours=17)
    assert (result.layout, result.cutoff, result.rollup_rows_deleted) == ("partitioned", cutoff, 0)
    with psycopg.connect(plain_pg) as conn:
        left = [r[0] for r in conn.execute("SELECT interval_start FROM detector_counts ORDER BY 1")]
        assert left == [T0 - timedelta(days=k) for k in (3, 2, 1, 0)]
        assert conn.execute("SELECT count(*) FROM controller_events").fetchone()[0] == 1
    with pytest.raises(StorageError):
        partitions.apply_retention(plain_pg, 0)


def test_day_ranges_groups_contiguous_days_inside_the_horizon():
    today = date(2026, 3, 4)
    days = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 4), date(1999, 1, 1), date(2026, 3, 9)]
    midnight = lambda d: datetime.combine(d, datetime.min.time(), UTC)  # noqa: E731
    assert partitions.day_ranges(days, today) == [
        (midnight(date(2026, 3, 1)), midnight(date(2026, 3, 2))),
        (midnight(date(2026, 3, 4)), midnight(date(2026, 3, 4))),
    ]


# ---------------------------------------------------------------------------
# idempotent writes: the optimistic COPY and its duplicate fallback

def test_partly_duplicate_batches_store_only_the_new_rows(pg_dsn):
    first = rows_for([0], detectors=4)
    second = rows_for([0], detectors=6)                           # 4 already stored + 2 new
    events = [EventRow("c1", T0 + timedelta(seconds=0.1 * i), 82, i % 3) for i in range(10)]
    with CountStore(pg_dsn) as store:
        assert store.write_counts(first) == 4
        assert store.write_counts(second) == 2
        assert store.write_events(events[:6]) == 6
        assert store.write_events(events) == 4                    # a re-sent event batch (same seq) adds nothing
        assert store.write_events(events) == 0
        assert store.count_rows("detector_counts") == 6 and store.count_rows("controller_events") == 10


# ---------------------------------------------------------------------------
# detector health for the optimizer

def test_failed_detectors_lists_every_non_ok_state_with_since(pg_dsn):
    verdicts = [DetectorHealth("c1", "d0", health.OK, T0), DetectorHealth("c1", "d1", health.STUCK_ON, T0, "x"),
                DetectorHealth("c1", "d2", health.STUCK_OFF, T0), DetectorHealth("c1", "d3", health.CHATTERING, T0),
                DetectorHealth("c1", "d4", health.MISSING, T0), DetectorHealth("c2", "d1", health.MISSING, T0)]
    store_health(pg_dsn, verdicts, now=NOW)
    assert failed_detectors(pg_dsn, "c1") == {"d1", "d2", "d3", "d4"}
    assert failed_detectors(pg_dsn, "c9") == set()
    assert [(h.detector_id, h.state, h.since) for h in health_of(pg_dsn, "c1")] == [
        (v.detector_id, v.state, v.since) for v in verdicts[:5]]
    store_health(pg_dsn, [DetectorHealth("c1", "d1", health.OK, NOW)], now=NOW)
    assert failed_detectors(pg_dsn, "c1") == {"d2", "d3", "d4"}


# ---------------------------------------------------------------------------
# load generator: the same schema, byte for byte, and a known total

def test_loadgen_payload_is_the_schema_message_byte_for_byte_and_totals_reconcile():
    from sensors.loadgen import LoadGenerator, expected_total
    from traffic.config import MqttSettings

    gen = LoadGenerator(MqttSettings(url="mqtt://127.0.0.1:1"), site="s", controllers=7, detectors=5,
                        interval_s=60, first_controller=11)
    total = 0
    for k in range(13):
        for c in range(7):
            payload = gen.payload(c, k)
            assert payload == gen.report(c, k).to_json()
            report = messages.decode_counts(payload)
            total += sum(r.count for r in report.records)
    assert total == expected_total(18, 5, range(13)) - expected_total(11, 5, range(13))
