"""Demand from what a loop can see of filtering motorcycles (issue #14 c): pulses, occupancy, classes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from controller.demand import MIN_CALIBRATION_VEHICLES, DetectorTotals, detector_pcu_per_h, seen_vehicles
from traffic.config import OptimizerSettings
from traffic.errors import ConfigError

OPT = OptimizerSettings()
MIX = OPT.motorcycle_share_default * OPT.pcu_motorcycle + (1 - OPT.motorcycle_share_default) * OPT.pcu_car

totals_st = st.builds(
    DetectorTotals,
    covered_s=st.floats(60.0, 3600.0),
    unclassified_vehicles=st.floats(0.0, 3000.0),
    unclassified_occupied_s=st.floats(0.0, 3600.0),
    light_occupied_s=st.floats(0.0, 1000.0),
    light_vehicles=st.floats(0.0, 2000.0),
)


@hsettings(max_examples=300, deadline=None)
@given(t=totals_st, cap=st.floats(1.0, 4.0))
def test_seen_vehicles_between_pulses_and_the_cap(t, cap):
    seen = seen_vehicles(t, cap)
    assert t.unclassified_vehicles - 1e-9 <= seen <= cap * t.unclassified_vehicles + 1e-9


@hsettings(max_examples=200, deadline=None)
@given(t=totals_st)
def test_off_or_uncalibrated_means_pulses(t):
    assert seen_vehicles(t, 1.0) == t.unclassified_vehicles
    assert seen_vehicles(replace(t, light_vehicles=MIN_CALIBRATION_VEHICLES - 1), 2.0) == t.unclassified_vehicles
    assert seen_vehicles(replace(t, unclassified_occupied_s=0.0), 2.0) == t.unclassified_vehicles


@hsettings(max_examples=200, deadline=None)
@given(n=st.integers(200, 2000), abreast=st.floats(0.0, 0.5), per_vehicle_s=st.floats(0.2, 1.5))
def test_side_by_side_riders_are_recovered_from_occupancy(n, abreast, per_vehicle_s):
    """``n`` vehicles, a share riding abreast of another (two make one pulse); the loop's occupancy
    grows with every vehicle, so the estimate finds them again where pulses lose them."""
    pairs = int(n * abreast / 2)
    pulses = n - pairs
    t = DetectorTotals(3600.0, unclassified_vehicles=float(pulses), unclassified_occupied_s=n * per_vehicle_s,
                       light_occupied_s=100 * per_vehicle_s, light_vehicles=100.0)
    seen = seen_vehicles(t, 2.0)
    assert seen == pytest.approx(n, rel=1e-6)
    assert detector_pcu_per_h(t, OPT) == pytest.approx(n * MIX, rel=1e-6)


def test_classified_loops_keep_their_classes():
    t = DetectorTotals(3600.0, classified_vehicles=100.0, motorcycles=80.0, unclassified_occupied_s=900.0,
                       light_occupied_s=50.0, light_vehicles=100.0)
    assert detector_pcu_per_h(t, OPT) == pytest.approx(80 * OPT.pcu_motorcycle + 20 * OPT.pcu_car)


def test_uplift_setting_is_validated():
    with pytest.raises(ConfigError, match="occupancy_uplift_max"):
        OptimizerSettings(occupancy_uplift_max=0.5)
