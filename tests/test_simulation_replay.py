"""Demand from counts (routeSampler + GEH) and replay of a recorded period, on real PostgreSQL and SUMO."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulation.backend import sumo_api
from simulation.calibrate import demand_from_counts, geh, modelled_edge_flows, station_flows, write_edgedata
from simulation.corridor import generate_corridor
from simulation.replay import recorded_schedules, write_schedule_additional
from simulation.runner import build_command
from traffic.errors import SimulationError
from traffic.intersection import Corridor, DetectorSpec, IntersectionSpec, PhaseSpec

T1 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def corridor(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("replay"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=600)


# ---- GEH and counting locations, by hand ------------------------------------------------------

def test_geh_by_hand() -> None:
    assert geh(100.0, 100.0) == 0.0
    assert geh(150.0, 100.0) == pytest.approx(math.sqrt(2 * 50 ** 2 / 250))  # 4.472
    assert geh(0.0, 0.0) == 0.0
    assert geh(0.0, 50.0) == pytest.approx(10.0)  # sqrt(2 * 2500 / 50)
    with pytest.raises(SimulationError):
        geh(-1.0, 10.0)
    with pytest.raises(SimulationError):
        geh(float("nan"), 10.0)


flows = st.floats(min_value=0, max_value=1e5).map(lambda x: round(x, 2))  # hourly flows, 0.01 veh/h resolution


@given(flows, flows)
def test_geh_symmetric_and_zero_only_when_equal(m: float, c: float) -> None:
    assert geh(m, c) == pytest.approx(geh(c, m))
    assert (geh(m, c) == 0.0) == (m == c)
    if m + c > 0:
        assert geh(m, c) ** 2 * (m + c) == pytest.approx(2 * (m - c) ** 2)


def _toy() -> Corridor:
    phase = PhaseSpec(phase=1, greens="GG", approach_speed_mps=10.0)
    dets = (DetectorSpec("d1", "a_0", 1, edge_id="a"), DetectorSpec("d2", "a_0", 1, edge_id="a"),
            DetectorSpec("d3", "a_1", 1, edge_id="a"), DetectorSpec("d4", "b_0", 1, edge_id="b"),
            DetectorSpec("d5", "b_1", 1, edge_id="b"))
    return Corridor(name="toy", intersections=(IntersectionSpec("j", "J", 2, (phase,), dets),))


def test_station_flows_average_loops_per_lane_and_skip_incomplete_edges() -> None:
    flows = station_flows(_toy(), {"j.d1": 100.0, "j.d2": 140.0, "j.d3": 300.0, "j.d4": 50.0})
    # edge a: lane a_0 has two loops (mean 120) + lane a_1 300; edge b lacks lane b_1's count -> unconstrained
    assert flows == {"a": (420.0, ("j.d1", "j.d2", "j.d3"))}
    with pytest.raises(SimulationError, match="unknown"):
        station_flows(_toy(), {"j.d9": 1.0})


def test_edgedata_and_modelled_flows_round_trip(tmp_path: Path) -> None:
    data = write_edgedata({"a": 360.0, "b": 90.0}, tmp_path / "c.xml", begin=0, end=600)
    text = data.read_text()
    assert 'entered="60"' in text and 'entered="15"' in text  # veh/h x 1/6 h
    routes = tmp_path / "r.xml"
    routes.write_text('<routes><flow id="f" begin="0" end="600" number="30"><route edges="a c"/></flow>'
                      '<vehicle id="v" depart="3"><route edges="b a"/></vehicle></routes>')
    assert modelled_edge_flows(routes, begin=0, end=600) == {"a": 186.0, "c": 180.0, "b": 6.0}


def test_demand_from_counts_matches_the_counts(corridor, tmp_path: Path) -> None:
    specs = corridor.corridor.intersections
    rates = {f"{s.controller_id}.{d.detector_id}": (500.0 if d.entry else 120.0) for s in specs for d in s.detectors}
    cal = demand_from_counts(corridor, rates, tmp_path, begin=0, end=600)
    assert cal.stations and cal.share_geh_ok >= 0.85
    for station in cal.stations:
        expected = sum(rates[k] for k in station.detectors)
        assert station.counted_veh_h == pytest.approx(expected)
    assert "mix" in cal.route_file.read_text()  # the scenario's vehicle mix is kept
    with pytest.raises(SimulationError, match="no counting location"):
        demand_from_counts(corridor, {}, tmp_path / "x", begin=0, end=600)


# ---- replay ------------------------------------------------------------------------------------

def _insert_counts(dsn: str, corridor, minutes: int, *, entry: int, inner: int) -> None:
    rows = []
    for spec in corridor.corridor.intersections:
        for det in spec.detectors:
            for m in range(minutes):
                rows.append((spec.controller_id, det.detector_id, T1 + timedelta(minutes=m), 60,
                             entry if det.entry else inner, 10.0))
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s, vehicle_count,"
            " occupancy_pct) VALUES (%s, %s, %s, %s, %s, %s)", rows)


def _insert_active(dsn: str, plan, at: datetime) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO plans (plan_id, controller_id, version, state, created_by, body)"
                     " VALUES (%s, %s, %s, 'active', 'test', %s)",
                     (plan.plan_id, plan.controller_id, plan.version, json.dumps(plan.to_dict())))
        conn.execute("INSERT INTO plan_events (plan_id, controller_id, at, state, actor)"
                     " VALUES (%s, %s, %s, 'active', 'field')", (plan.plan_id, plan.controller_id, at))


def test_recorded_schedule_switches_programs_in_sumo(corridor, pg_dsn, tmp_path: Path) -> None:
    spec = corridor.corridor.intersections[0]
    early = spec.plan_from_splits([40.0, 30.0], version=1)
    later = spec.plan_from_splits([50.0, 30.0], version=2)
    _insert_active(pg_dsn, early, T1 - timedelta(hours=2))
    _insert_active(pg_dsn, later, T1 + timedelta(minutes=2))
    _insert_active(pg_dsn, spec.plan_from_splits([45.0, 30.0], version=3), T1 + timedelta(hours=3))  # after
    with psycopg.connect(pg_dsn) as conn:
        schedules = recorded_schedules(conn, corridor.corridor, T1, T1 + timedelta(minutes=10))
    assert [(o, p.plan_id) for o, p in schedules[spec.controller_id]] == [(0.0, early.plan_id),
                                                                           (120.0, later.plan_id)]
    assert set(schedules) == {spec.controller_id}
    add = write_schedule_additional(corridor, schedules, tmp_path / "rec.add.xml", begin=0)
    api = sumo_api()
    cmd = build_command(corridor, seed=1, begin=0, end=200, tripinfo=tmp_path / "t.xml",
                        statistics=tmp_path / "s.xml", additional_files=(*corridor.additional_files, add),
                        route_files=corridor.route_files)
    api.start(cmd)
    try:
        seen = {}
        for t in (5, 60, 125, 190):
            api.simulationStep(t)
            seen[t] = api.trafficlight.getProgram(spec.tls_id)
        other = api.trafficlight.getProgram(corridor.corridor.intersections[1].tls_id)
    finally:
        api.close()
    assert seen == {5: "rec0", 60: "rec0", 125: "rec1", 190: "rec1"}
    assert other not in ("rec0", "rec1")  # no recorded plan: the network's own program


def test_replay_cli_compares_recorded_network_and_candidate(corridor, pg_dsn, tmp_path: Path) -> None:
    from app.cli import main

    _insert_counts(pg_dsn, corridor, 5, entry=5, inner=1)
    for spec in corridor.corridor.intersections:
        _insert_active(pg_dsn, spec.plan_from_splits([40.0, 30.0], version=1), T1 - timedelta(hours=1))
    out = tmp_path / "replay.json"
    code = main(["replay", "--from", T1.isoformat(), "--to", (T1 + timedelta(minutes=5)).isoformat(),
                 "--plans", "candidate", "--scenario", str(corridor.sumocfg.parent), "--dsn", pg_dsn,
                 "--seeds", "1", "--json", str(out), "--workdir", str(tmp_path / "w")])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc["variants"]) == {"network", "recorded", "candidate"}
    for variant in doc["variants"].values():
        assert variant["summary"]["vehicles"]["mean"] > 30
    assert doc["calibration"]["share_geh_ok"] >= 0.85
    assert doc["end"] - doc["begin"] == 300
    cand = doc["plans"]["candidate"]
    assert set(cand) == {s.controller_id for s in corridor.corridor.intersections}
    # nothing stored for the window -> a clear error, exit code 2
    assert main(["replay", "--from", "2020-01-01T00:00:00+00:00", "--to", "2020-01-01T00:10:00+00:00",
                 "--scenario", str(corridor.sumocfg.parent), "--dsn", pg_dsn,
                 "--workdir", str(tmp_path / "w2")]) == 2


def test_binned_counts_keep_the_time_profile(corridor, pg_dsn, tmp_path: Path) -> None:
    from simulation.calibrate import read_binned_rates, read_rates

    rows = []
    for spec in corridor.corridor.intersections:
        for det in spec.detectors:
            for m in range(10):  # quiet first five minutes, a peak in the next five
                rows.append((spec.controller_id, det.detector_id, T1 + timedelta(minutes=m), 60,
                             (2 if m < 5 else 8) if det.entry else 1, 5.0))
    with psycopg.connect(pg_dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s, vehicle_count,"
            " occupancy_pct) VALUES (%s, %s, %s, %s, %s, %s)", rows)
        end = T1 + timedelta(minutes=10)
        whole = read_rates(conn, corridor.corridor, T1, end)
        bins = read_binned_rates(conn, corridor.corridor, T1, end, 300)
    entry = next(f"{s.controller_id}.{d.detector_id}" for s in corridor.corridor.intersections
                 for d in s.detectors if d.entry)
    assert [b[entry] for b in bins] == [120.0, 480.0] and whole[entry] == 300.0
    cal = demand_from_counts(corridor, whole, tmp_path, begin=0, end=600, binned_rates=bins)
    import xml.etree.ElementTree as ET

    from simulation.calibrate import flow_vehicles
    early = late = 0.0
    for flow in ET.parse(cal.route_file).getroot().iter("flow"):
        if float(flow.get("begin")) < 300:
            early += flow_vehicles(flow)
        else:
            late += flow_vehicles(flow)
    assert late > 2 * early  # the peak stays a peak
    assert cal.share_geh_ok >= 0.85
