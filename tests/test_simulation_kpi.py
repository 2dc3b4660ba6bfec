"""KPI maths from tripinfo files written by hand, and one real SUMO run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tripinfo_rows import trip as _trip
from tripinfo_rows import undeparted as _undeparted
from tripinfo_rows import write_tripinfo as _write

from simulation.kpi import Kpis, read_teleports, read_tripinfo
from traffic.errors import SimulationError


def test_one_vehicle(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.xml", [_trip("a", depart=10, depart_delay=2, time_loss=30, arrival=130, duration=120,
                                          waiting=20, stops=2)])
    k = read_tripinfo(f, end_s=3600)
    assert k.mean_delay_s == pytest.approx(32.0)
    assert k.mean_trip_time_s == pytest.approx(120.0)
    assert k.mean_waiting_s == pytest.approx(20.0)
    assert k.mean_stops == pytest.approx(2.0)
    assert (k.vehicles, k.completed, k.undeparted) == (1, 1, 0)
    assert k.throughput_veh_h == pytest.approx(1.0)


def test_few_vehicles_with_unfinished_and_undeparted(tmp_path: Path) -> None:
    rows = [
        _trip("a", depart=0, depart_delay=0, time_loss=10, arrival=100, duration=100, waiting=4, stops=1),
        _trip("b", depart=5, depart_delay=1, time_loss=29, arrival=205, duration=200, waiting=8, stops=3),
        # still driving at the end: counts for delay/waiting/stops, not for trip time or throughput
        _trip("c", depart=500, depart_delay=4, time_loss=56, arrival=-1, duration=100, waiting=30, stops=2),
        # never entered: charged its departDelay = end - scheduled departure (600 - 480)
        _undeparted("d", 120.0),
    ]
    k = read_tripinfo(_write(tmp_path / "t.xml", rows), end_s=600)
    assert k.vehicles == 4 and k.completed == 2 and k.undeparted == 1
    assert k.mean_delay_s == pytest.approx((10 + 30 + 60 + 120) / 4)
    assert k.mean_trip_time_s == pytest.approx(150.0)
    assert k.mean_waiting_s == pytest.approx((4 + 8 + 30) / 3)
    assert k.mean_stops == pytest.approx(2.0)
    assert k.throughput_veh_h == pytest.approx(2 / (600 / 3600))


def test_undeparted_without_delay_is_charged_from_schedule(tmp_path: Path) -> None:
    row = ('<tripinfo id="x" depart="-1" desiredDepart="450" arrival="-1" duration="0" waitingTime="0" '
           'waitingCount="0" timeLoss="0"/>')
    k = read_tripinfo(_write(tmp_path / "t.xml", [row]), end_s=600)
    assert k.undeparted == 1
    assert k.mean_delay_s == pytest.approx(150.0)


def test_empty_and_broken_files(tmp_path: Path) -> None:
    k = read_tripinfo(_write(tmp_path / "e.xml", []), end_s=60)
    assert k == Kpis(0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0.0, 0.0)
    (tmp_path / "bad.xml").write_text("<tripinfos><tripinfo id='a' depart='x'")
    with pytest.raises(SimulationError):
        read_tripinfo(tmp_path / "bad.xml", end_s=60)
    with pytest.raises(SimulationError):
        read_tripinfo(tmp_path / "missing.xml", end_s=60)
    bad_value = _write(tmp_path / "v.xml", ['<tripinfo id="a" depart="3" departDelay="0" timeLoss="nan" '
                                             'arrival="9" duration="6" waitingTime="0" waitingCount="0"/>'])
    with pytest.raises(SimulationError, match="timeLoss"):
        read_tripinfo(bad_value, end_s=60)
    with pytest.raises(SimulationError):
        read_tripinfo(bad_value, end_s=0)


def test_teleports_from_statistics(tmp_path: Path) -> None:
    f = tmp_path / "s.xml"
    f.write_text('<statistics><teleports total="3" jam="2" yield="1" wrongLane="0"/></statistics>')
    assert read_teleports(f) == 3
    f.write_text("<statistics/>")
    assert read_teleports(f) == 0


trips = st.lists(st.tuples(st.floats(0, 500), st.floats(0, 60), st.booleans(), st.booleans()), min_size=1,
                 max_size=30)


@settings(max_examples=40, deadline=None)
@given(trips)
def test_mean_delay_is_the_mean_over_all_vehicles(tmp_path_factory, rows) -> None:
    path = tmp_path_factory.mktemp("h") / "t.xml"
    xml, expected = [], []
    for i, (loss, delay, departed, arrived) in enumerate(rows):
        if departed:
            xml.append(_trip(f"v{i}", depart=1, depart_delay=delay, time_loss=loss,
                             arrival=50 if arrived else -1, duration=49))
            expected.append(round(loss, 2) + round(delay, 2))
        else:
            xml.append(_undeparted(f"v{i}", delay))
            expected.append(round(delay, 2))
    k = read_tripinfo(_write(path, xml), end_s=100)
    assert k.vehicles == len(rows)
    assert k.undeparted == sum(1 for r in rows if not r[2])
    assert k.mean_delay_s == pytest.approx(sum(expected) / len(expected), abs=1e-3)
    assert k.to_dict()["vehicles"] == len(rows)


def test_real_run_reports_consistent_kpis(tmp_path: Path) -> None:
    from simulation.corridor import generate_corridor
    from simulation.runner import run

    scenario = generate_corridor(tmp_path / "c", n_intersections=1, duration_s=300, demand_scale=0.5)
    k = run(scenario, seed=1, end=300)
    assert k.vehicles > 20
    assert 0 < k.completed <= k.vehicles
    assert k.undeparted == 0 and k.teleports == 0
    assert k.mean_delay_s > 0 and k.mean_trip_time_s > 0
    assert k.wall_s > 0
