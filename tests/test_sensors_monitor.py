"""Scheduled detector health reaches detector_health and the optimizer's demand (and its explanation)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from controller.demand import phase_demand
from controller.examples import four_leg
from sensors.monitor import Monitor
from sensors.records import CountRow
from sensors.store import CountStore
from traffic.config import Settings

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=30)


def _fill(dsn: str) -> None:
    spec = four_leg("c1")
    rows = []
    for i in range(30):
        start = T0 + timedelta(minutes=i)
        rows.append(CountRow("c1", "d1", start, 60, 15, 12.0, None, NOW))
        rows.append(CountRow("c1", "d2", start, 60, 0, 100.0, None, NOW))     # stuck on: reads "saturated"
        rows.append(CountRow("c1", "d3", start, 60, 14, 11.0, None, NOW))
        rows.append(CountRow("c1", "d4", start, 60, 6, 5.0, None, NOW))
        rows.append(CountRow("c1", "d5", start, 60, 8, 6.0, None, NOW))
    with CountStore(dsn) as store:
        store.write_counts(rows)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO controllers (controller_id, site, spec) VALUES ('c1', 'hn', %s)",
                     (Jsonb(spec.to_dict()),))


def test_monitor_round_stores_health_and_the_demand_leaves_the_failed_detector_out(pg_dsn):
    _fill(pg_dsn)
    spec = four_leg("c1")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = phase_demand(conn, spec, start=T0, end=NOW, settings=Settings())
    assert before.failed == {}

    monitor = Monitor(pg_dsn, clock=lambda: NOW)
    result = monitor.run_once()
    assert result.ran and result.health_verdicts == 5 and result.failed == {"c1": ["d2"]} and not result.errors

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        after = phase_demand(conn, spec, start=T0, end=NOW, settings=Settings())
        stale = phase_demand(conn, spec, start=T0, end=NOW + timedelta(hours=3), settings=Settings())
    assert after.failed == {"d2": "stuck_on"}
    assert after.substituted["d2"] == "phase-mean"
    # d2's stuck-on zero counts no longer drag phase 1 down, and the explanation says why
    assert after.detector_flow_pcu_h["d2"] == (after.detector_flow_pcu_h["d1"] + after.detector_flow_pcu_h["d3"]) / 2
    assert after.to_dict()["failed"] == {"d2": "stuck_on"}
    assert stale.failed == {}      # a verdict hours older than the window is not trusted


def test_only_one_monitor_runs_a_round_at_a_time(pg_dsn):
    held = psycopg.connect(pg_dsn, autocommit=True)
    try:
        held.execute("SELECT pg_advisory_lock(%s)", (0x7AFF2D,))
        assert Monitor(pg_dsn, clock=lambda: NOW).run_once().ran is False
    finally:
        held.close()
    assert Monitor(pg_dsn, clock=lambda: NOW).run_once().ran is True


def test_monitor_thread_runs_on_its_schedule_and_stops(pg_dsn):
    _fill(pg_dsn)
    monitor = Monitor(pg_dsn, health_every_s=0.2, atspm_every_s=0.2, clock=lambda: NOW)
    monitor.start()
    try:
        deadline = time.monotonic() + 20
        while monitor.last is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        monitor.stop()
    assert monitor.last is not None and monitor.last.ran
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM detector_health").fetchone()[0] == 5
