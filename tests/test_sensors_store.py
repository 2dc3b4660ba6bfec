"""CountStore (idempotent COPY writes, status upsert) and the rollup view, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sensors.records import Batch, CountRow, DeadLetter, EventRow, StatusRow
from sensors.rollups import counts_15min, rollup
from sensors.store import CountStore, is_transient
from traffic.errors import StorageError
from traffic.messages import MODE_CENTRAL, OFFLINE, ONLINE, StatusMessage

T0 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def counts(n: int, controller: str = "c1", start: datetime = T0) -> list[CountRow]:
    return [CountRow(controller, f"d{i % 4}", start + timedelta(minutes=i // 4), 60, i, 10.0, i // 2, T0)
            for i in range(n)]


def test_counts_are_stored_once_however_often_they_arrive(pg_dsn):
    rows = counts(40)
    with CountStore(pg_dsn) as store:
        assert store.write_counts(rows) == 40
        assert store.write_counts(rows) == 0                      # redelivery
        assert store.write_counts(rows[:10] + counts(8, start=T0 + timedelta(hours=1))) == 8
        assert store.write_counts(rows[:3] + rows[:3]) == 0       # duplicates inside one batch
        assert store.count_rows("detector_counts") == 48
        assert store.count_rows("detector_counts", {"detector_id": "d1"}) == 12
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute("SELECT vehicle_count, motorcycle_count, occupancy_pct FROM detector_counts"
                           " WHERE detector_id = 'd3' AND interval_start = %s", (T0,)).fetchone()
    assert got == (3, 1, 10.0)


def test_events_dead_letters_and_a_whole_batch(pg_dsn):
    ev = [EventRow("c1", T0 + timedelta(seconds=i / 10), 82, i) for i in range(50)]
    raw = bytes(range(256))
    batch = Batch(counts=counts(4), events=ev, dead_letters=[DeadLetter("t/x", "bad", raw, T0)])
    with CountStore(pg_dsn) as store:
        result = store.write_batch(batch)
        assert (result.counts_stored, result.events_stored, result.dead_letters) == (4, 50, 1)
        again = store.write_batch(Batch(counts=batch.counts, events=batch.events))
        assert (again.counts_stored, again.counts_duplicate, again.events_duplicate) == (0, 4, 50)
        assert store.write_events(ev[:5]) == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT topic, reason, payload FROM dead_letters").fetchall() == [("t/x", "bad", raw)]


def test_status_keeps_history_and_the_newest_state(pg_dsn):
    with CountStore(pg_dsn) as store:
        store.upsert_status(StatusMessage("c1", ONLINE, MODE_CENTRAL, "p7", 3, T0), site="hn")
        # The last will knows no plan: the controller's plan fields are kept.
        store.upsert_status(StatusRow("hn", "c1", OFFLINE, None, None, None, None, "", T0 + timedelta(minutes=5)))
        # An older status replayed late must not win.
        store.upsert_status(StatusMessage("c1", ONLINE, MODE_CENTRAL, "p6", 2, T0 - timedelta(hours=1)), site="hn")
        assert store.count_rows("controller_status", {"controller_id": "c1"}) == 3
        with pytest.raises(StorageError):
            store.upsert_status(StatusMessage("c1", ONLINE))        # StatusMessage needs the site
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT site, state, mode, active_plan_id, active_version, last_seen FROM controllers"
                           " WHERE controller_id = 'c1'").fetchone()
    assert row == ("hn", OFFLINE, MODE_CENTRAL, "p7", 3, T0 + timedelta(minutes=5))


def test_errors_are_mapped_and_say_whether_a_retry_can_help(pg_dsn):
    with CountStore(pg_dsn) as store:
        bad = CountRow("c1", "d1", T0, 60, 2**40, 1.0, None, T0)  # integer out of range: never storable
        with pytest.raises(StorageError) as info:
            store.write_counts([bad])
        assert not is_transient(info.value) and "vehicle_count" in str(info.value)
        with pytest.raises(StorageError) as info:                # PostgreSQL text cannot hold NUL
            store.write_counts([CountRow("c1", "d\x00", T0, 60, 1, 1.0, None, T0)])
        assert not is_transient(info.value) and isinstance(info.value.__cause__, psycopg.DataError)
        assert store.count_rows("detector_counts") == 0
    with CountStore("postgresql://postgres@127.0.0.1:1/none", timeout=0.5) as down:
        with pytest.raises(StorageError) as info:
            down.write_counts(counts(1))
        assert is_transient(info.value)
        assert down.ping() is False


def test_15_minute_view_and_rollup_agree(pg_dsn):
    # 40 one-minute intervals from 08:00 for two detectors; d1 misses minute 20.
    rows = [CountRow("c1", d, T0 + timedelta(minutes=m), 60, 10 + m % 3, 20.0 if d == "d0" else 10.0, 6, T0)
            for m in range(40) for d in ("d0", "d1") if not (d == "d1" and m == 20)]
    with CountStore(pg_dsn) as store:
        store.write_counts(rows)
    view = counts_15min(pg_dsn, controller_id="c1")
    assert [(b.detector_id, b.bucket.minute, b.intervals) for b in view] == [
        ("d0", 0, 15), ("d0", 15, 15), ("d0", 30, 10), ("d1", 0, 15), ("d1", 15, 14), ("d1", 30, 10)]
    d1_15 = view[4]
    expected = sum(r.vehicle_count for r in rows
                   if r.detector_id == "d1" and 15 <= (r.interval_start - T0).total_seconds() / 60 < 30)
    assert d1_15.vehicle_count == expected and d1_15.covered_s == 14 * 60
    assert d1_15.flow_veh_h == pytest.approx(expected * 3600 / (14 * 60))
    assert view[0].occupancy_pct == pytest.approx(20.0) and view[0].motorcycle_count == 90
    assert rollup(pg_dsn, timedelta(minutes=15), controller_id="c1") == view
    hourly = rollup(pg_dsn, timedelta(hours=1), start=T0, end=T0 + timedelta(hours=1))
    assert [b.vehicle_count for b in hourly] == [
        sum(r.vehicle_count for r in rows if r.detector_id == d) for d in ("d0", "d1")]
    window = counts_15min(pg_dsn, start=T0 + timedelta(minutes=15), end=T0 + timedelta(minutes=30))
    assert {b.bucket for b in window} == {T0 + timedelta(minutes=15)}
