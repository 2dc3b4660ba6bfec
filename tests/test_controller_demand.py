"""Demand estimation: pure maths on totals, and the one query on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from controller.demand import DetectorTotals, detector_pcu_per_h, estimate, phase_demand
from controller.examples import four_leg
from traffic import db
from traffic.config import OptimizerSettings, Settings
from traffic.errors import TrafficError

SPEC = four_leg("c1")  # phase 1: d1, d2, d3; phase 2: d4, d5
OPT = OptimizerSettings(pcu_motorcycle=0.3, pcu_car=1.0, motorcycle_share_default=0.8, smoothing_alpha=0.5)
T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_classified_and_default_share():
    # 600 s of data: 100 vehicles, 80 motorcycles -> 80*0.3 + 20 = 44 pcu -> 264 pcu/h
    assert detector_pcu_per_h(DetectorTotals(600, 100, 80, 0), OPT) == pytest.approx(264.0)
    # unclassified 100 vehicles at the default 80 % share -> same 44 pcu
    assert detector_pcu_per_h(DetectorTotals(600, 0, 0, 100), OPT) == pytest.approx(264.0)
    # all cars: 100 pcu in 10 min -> 600 pcu/h
    assert detector_pcu_per_h(DetectorTotals(600, 100, 0, 0), OPT) == pytest.approx(600.0)


def test_phase_takes_busiest_lane_and_flags_missing():
    totals = {
        "d1": DetectorTotals(600, 100, 0, 0),   # 600 pcu/h
        "d2": DetectorTotals(600, 50, 0, 0),    # 300
        # d3 missing -> mean of d1, d2 = 450
        "d4": DetectorTotals(300, 20, 0, 0),    # 240 (only half the window had data)
        # d5 missing -> mean of d4 = 240
    }
    d = estimate(SPEC, totals, OPT)
    assert d.phases == (1, 2)
    assert d.flow_pcu_h_lane == pytest.approx((600.0, 240.0))
    assert d.missing == ("d3", "d5")
    assert d.substituted == {"d3": "phase-mean", "d5": "phase-mean"}
    assert d.detector_flow_pcu_h["d3"] == pytest.approx(450.0)


def test_whole_phase_silent_uses_previous_then_smooths():
    first = estimate(SPEC, {"d1": DetectorTotals(600, 100, 0, 0), "d4": DetectorTotals(600, 40, 0, 0)}, OPT)
    assert first.flow_pcu_h_lane == pytest.approx((600.0, 240.0))
    # phase 2 goes silent: its detectors fall back to their previous estimates
    second = estimate(SPEC, {"d1": DetectorTotals(600, 50, 0, 0)}, OPT, previous=first)
    assert second.substituted["d4"] == "previous"
    assert second.raw_flow_pcu_h_lane == pytest.approx((300.0, 240.0))
    # smoothing: 0.5 * 300 + 0.5 * 600 = 450; phase 2 stays at 240
    assert second.flow_pcu_h_lane == pytest.approx((450.0, 240.0))
    # nothing at all and no history: zero, flagged
    empty = estimate(SPEC, {}, OPT)
    assert empty.flow_pcu_h_lane == (0.0, 0.0)
    assert empty.phases_without_data == (1, 2)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=5, max_size=5),
       st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=5, max_size=5),
       st.floats(min_value=0.05, max_value=1.0))
def test_properties(counts, moto_share, alpha):
    opt = OptimizerSettings(smoothing_alpha=alpha)
    totals = {f"d{i + 1}": DetectorTotals(900, c, int(c * m), 0)
              for i, (c, m) in enumerate(zip(counts, moto_share, strict=False))}
    d = estimate(SPEC, totals, opt)
    per_det = {k: detector_pcu_per_h(v, opt) for k, v in totals.items()}
    assert d.flow(1) == pytest.approx(max(per_det["d1"], per_det["d2"], per_det["d3"]))
    # pcu never exceed vehicle counts when pcu_motorcycle < pcu_car and never fall below motorcycle pcu
    for k, v in totals.items():
        assert v.classified_vehicles * opt.pcu_motorcycle * 4 - 1e-9 <= per_det[k] <= v.classified_vehicles * 4 + 1e-9
    # smoothing keeps the estimate between the previous one and the new measurement
    again = estimate(SPEC, {k: DetectorTotals(900, 0, 0, 0) for k in totals}, opt, previous=d)
    for new, old in zip(again.flow_pcu_h_lane, d.flow_pcu_h_lane, strict=False):
        assert 0.0 - 1e-9 <= new <= old + 1e-9
        assert new == pytest.approx((1 - alpha) * old)


def _insert(conn, rows):
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s, vehicle_count,"
            " occupancy_pct, motorcycle_count) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)


def test_phase_demand_from_database(pg_dsn):
    with db.connect(pg_dsn, autocommit=True) as conn:
        rows = []
        for minute in range(10):
            ts = T0 + timedelta(minutes=minute)
            rows.append(("c1", "d1", ts, 60, 10, 12.0, 8))     # classified: 8 moto + 2 cars = 4.4 pcu/min
            rows.append(("c1", "d2", ts, 60, 10, 12.0, None))  # default 80 %: 4.4 pcu/min
            rows.append(("c1", "d4", ts, 60, 5, 5.0, 0))       # 5 cars/min = 300 pcu/h
            rows.append(("c2", "d4", ts, 60, 50, 5.0, 0))      # another controller: ignored
        rows.append(("c1", "d1", T0 + timedelta(minutes=10), 60, 100, 50.0, 0))  # outside the window
        _insert(conn, rows)
        d = phase_demand(conn, SPEC, start=T0, end=T0 + timedelta(minutes=10), settings=Settings(optimizer=OPT))
    assert d.flow(1) == pytest.approx(264.0)
    assert d.flow(2) == pytest.approx(300.0)
    assert d.missing == ("d3", "d5")
    assert d.start == T0


def test_empty_window_is_an_error(pg_dsn):
    with db.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(TrafficError):
            phase_demand(conn, SPEC, start=T0, end=T0, settings=OPT)
