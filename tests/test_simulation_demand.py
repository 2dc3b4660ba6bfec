"""Demand from counts: entry detectors -> entry-edge volumes -> rescaled flows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from simulation.corridor import generate_corridor
from simulation.demand import entry_flows_from_counts, scale_routes
from simulation.runner import run
from traffic.errors import SimulationError


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("dem"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=600, demand_scale=0.5)


def _entry_loops(scenario):
    return [(s.controller_id, d) for s in scenario.corridor.intersections for d in s.detectors if d.entry]


def test_entry_flows_sum_lanes_and_ignore_interior(scenario) -> None:
    counts, expected = {}, defaultdict(float)
    for k, (cid, det) in enumerate(_entry_loops(scenario)):
        counts[f"{cid}.{det.detector_id}"] = 100.0 + k
        expected[det.edge_id] += 100.0 + k
    interior = next((s.controller_id, d) for s in scenario.corridor.intersections for d in s.detectors if not d.entry)
    counts[f"{interior[0]}.{interior[1].detector_id}"] = 5000.0
    flows = entry_flows_from_counts(counts, scenario.corridor)
    assert flows == pytest.approx(dict(expected))
    assert set(flows) == {"W_J1", "E_J2", "N1_J1", "S1_J1", "N2_J2", "S2_J2"}


def test_bad_counts_are_refused(scenario) -> None:
    cid, det = _entry_loops(scenario)[0]
    with pytest.raises(SimulationError, match="unknown"):
        entry_flows_from_counts({"j9.d01": 10.0}, scenario.corridor)
    with pytest.raises(SimulationError, match="ambiguous"):
        entry_flows_from_counts({det.detector_id: 10.0}, scenario.corridor)
    with pytest.raises(SimulationError, match="non-negative"):
        entry_flows_from_counts({f"{cid}.{det.detector_id}": -1.0}, scenario.corridor)
    with pytest.raises(SimulationError, match="non-negative"):
        entry_flows_from_counts({f"{cid}.{det.detector_id}": float("nan")}, scenario.corridor)


def _rates_by_edge(path: Path, begin: float, end: float) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for f in ET.parse(path).getroot().iter("flow"):
        lo, hi = max(float(f.get("begin")), begin), min(float(f.get("end")), end)
        if hi <= lo:
            continue
        period = f.get("period")
        rate = float(period[4:-1]) if period else float(f.get("vehsPerHour")) / 3600
        out[f.get("from")] += rate * (hi - lo)
    return {e: v / ((end - begin) / 3600) for e, v in out.items()}


def test_scaled_routes_carry_the_measured_volumes(scenario, tmp_path: Path) -> None:
    before = _rates_by_edge(scenario.route_files[0], 0, 300)
    measured = {"W_J1": 2 * before["W_J1"], "N1_J1": 0.5 * before["N1_J1"], "E_J2": 0.0}
    out = scale_routes(scenario, measured, tmp_path / "scaled.rou.xml", begin=0, end=300)
    after = _rates_by_edge(out, 0, 300)
    assert after["W_J1"] == pytest.approx(measured["W_J1"], rel=1e-3)
    assert after["N1_J1"] == pytest.approx(measured["N1_J1"], rel=1e-3)
    assert "E_J2" not in after
    assert after["S1_J1"] == pytest.approx(before["S1_J1"], rel=1e-3)  # unmeasured edges keep their demand
    # destinations and types are kept: same OD shares on the scaled edge
    root = ET.parse(out).getroot()
    assert root.find("vTypeDistribution") is not None
    ods = {(f.get("from"), f.get("to")) for f in root.iter("flow") if f.get("from") == "W_J1"}
    assert len(ods) > 3
    # no flow outlives the window
    assert all(float(f.get("end")) <= 300 for f in root.iter("flow"))
    # and SUMO runs it: about twice the vehicles enter from the west (Poisson arrivals)
    run(scenario, seed=1, end=300, workdir=tmp_path / "base")
    run(scenario, seed=1, end=300, route_files=[out], workdir=tmp_path / "scaled")

    def west(folder: Path) -> int:
        trips = ET.parse(next(folder.glob("tripinfo-*.xml"))).getroot().iter("tripinfo")
        return sum(1 for t in trips if "_W_J1_" in t.get("id"))

    ratio = west(tmp_path / "scaled") / west(tmp_path / "base")
    assert 1.5 < ratio < 2.6


def test_unscalable_edge_is_an_error(scenario, tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="no modelled flow"):
        scale_routes(scenario, {"J1_J2": 300.0}, tmp_path / "x.rou.xml", begin=0, end=300)
