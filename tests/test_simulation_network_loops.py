"""Advance loops on short approach lanes: the placement walks upstream over geometry nodes.

The networks are built here with netconvert: a signalised cross whose west
approach is split by a geometry node into a 200 m and a 10 m edge (SUMO does
that wherever the road's shape or attributes change), and the same with a
side road merging at that node (an ambiguous chain: the walk must stop).
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sim_adaptive import with_detector_links
from simulation.binaries import sumo_binary
from simulation.network import (
    DETECTOR_DISTANCE_M,
    DETECTOR_MARGIN_M,
    corridor_from_net,
    loop_id,
    place_on_chain,
    write_detectors_additional,
)
from traffic.errors import ScenarioError
from traffic.intersection import DetectorSpec, IntersectionSpec

NODES = {"w": (-210, 0), "g": (-10, 0), "c": (0, 0), "e": (200, 0), "n": (0, 200), "s": (0, -200),
         "m": (-10, 150)}


def _build(out: Path, *, merge: bool) -> Path:
    """A signalised cross ``c``; west approach w -> g (200 m) -> c (10 m); with ``merge`` m -> g joins it."""
    out.mkdir(parents=True, exist_ok=True)
    nodes = ET.Element("nodes")
    for node, (x, y) in NODES.items():
        if node == "m" and not merge:
            continue
        ET.SubElement(nodes, "node", id=node, x=str(x), y=str(y),
                      type="traffic_light" if node == "c" else "priority")
    edges = ET.Element("edges")
    pairs = [("w", "g", "far"), ("g", "c", "near"), ("c", "e", "out_e"), ("e", "c", "in_e"), ("n", "c", "in_n"),
             ("c", "s", "out_s"), ("s", "c", "in_s"), ("c", "n", "out_n")]
    if merge:
        pairs.append(("m", "g", "side"))
    for a, b, eid in pairs:
        ET.SubElement(edges, "edge", id=eid, attrib={"from": a, "to": b, "numLanes": "1", "speed": "13.89"})
    ET.ElementTree(nodes).write(out / "n.nod.xml")
    ET.ElementTree(edges).write(out / "e.edg.xml")
    net = out / "t.net.xml"
    subprocess.run([sumo_binary("netconvert"), "-n", str(out / "n.nod.xml"), "-e", str(out / "e.edg.xml"),
                    "--no-turnarounds", "true", "--tls.default-type", "static", "--no-warnings", "true",
                    "-o", str(net)], check=True, capture_output=True)
    return net


@pytest.fixture(scope="module")
def split_net(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("split"), merge=False)


@pytest.fixture(scope="module")
def merge_net(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("merge"), merge=True)


def _lane_lengths(net: Path) -> dict[str, float]:
    return {lane.get("id"): float(lane.get("length")) for lane in ET.parse(net).getroot().iter("lane")}


def _west_detectors(net: Path, **kwargs) -> tuple[IntersectionSpec, list[DetectorSpec]]:
    """The controller and the detectors of the short west approach, farthest from the stop line first."""
    corridor = corridor_from_net(net, site="t", **kwargs)
    (spec,) = corridor.intersections
    dets = sorted((d for d in spec.detectors if d.lane_id in ("near_0", "far_0")),
                  key=lambda d: -d.distance_to_stopline_m)
    return spec, dets


def test_loop_walks_over_the_geometry_node(split_net: Path, tmp_path: Path) -> None:
    lengths = _lane_lengths(split_net)
    assert lengths["near_0"] < DETECTOR_DISTANCE_M < lengths["far_0"]  # the case: stop-line lane too short
    spec, (det, stop) = _west_detectors(split_net)
    # the advance loop sits on the upstream lane, 40 m along the chain; it is no counting station of its own
    assert det.lane_id == "far_0"
    assert det.distance_to_stopline_m == pytest.approx(DETECTOR_DISTANCE_M)
    assert det.edge_id == "" and det.entry is False
    # the short stop-line lane keeps its presence loop mid-lane, on the same phase and approach
    assert stop.lane_id == "near_0" and stop.edge_id == "near" and stop.phase == det.phase
    assert stop.distance_to_stopline_m == pytest.approx(lengths["near_0"] / 2, abs=0.06)
    # long approaches are untouched: their loop is on the stop-line lane, 40 m back
    others = [d for d in spec.detectors if d.lane_id not in ("near_0", "far_0")]
    assert others and all(d.lane_id.startswith(d.edge_id + "_") for d in others)
    assert all(d.distance_to_stopline_m == pytest.approx(DETECTOR_DISTANCE_M) for d in others)
    # the written loop lies on far_0 at its own position (not 40 m from far_0's end)
    out = write_detectors_additional(corridor_from_net(split_net, site="t"), tmp_path / "d.add.xml",
                                     net_file=split_net)
    loops = {el.get("id"): el for el in ET.parse(out).getroot()}
    el = loops[loop_id(spec.controller_id, det.detector_id)]
    assert el.get("lane") == "far_0"
    via = sum(length for lane, length in lengths.items() if lane.startswith(":g_"))  # internal lane at g
    expected = lengths["far_0"] - (DETECTOR_DISTANCE_M - lengths["near_0"] - via)
    assert float(el.get("pos")) == pytest.approx(expected, abs=0.06)
    # reading the written file back binds the same loops (no new ones placed)
    again = corridor_from_net(split_net, site="t", additional_files=(out,))
    assert again.intersections == (spec,)


def test_signal_groups_come_from_the_stop_line_lane(split_net: Path) -> None:
    spec, dets = _west_detectors(split_net)
    linked = with_detector_links(corridor_from_net(split_net, site="t"), split_net)
    got = {d.detector_id: d.links for d in linked.intersections[0].detectors}
    root = ET.parse(split_net).getroot()
    expected = tuple(sorted(int(c.get("linkIndex")) for c in root.iter("connection")
                            if c.get("from") == "near" and c.get("tl") == spec.tls_id))
    assert expected and [got[d.detector_id] for d in dets] == [expected, expected]


def test_a_merge_stops_the_walk(merge_net: Path) -> None:
    lengths = _lane_lengths(merge_net)
    _spec, (det,) = _west_detectors(merge_net)
    # near_0 is fed by far_0 and side_0: a loop upstream would miss one of them, so it stays mid-lane
    assert det.lane_id == "near_0"
    assert det.distance_to_stopline_m == pytest.approx(lengths["near_0"] / 2, abs=0.06)


def test_placed_loops_count_every_vehicle(split_net: Path, tmp_path: Path) -> None:
    """Real SUMO: the upstream loop counts each vehicle that crosses the stop line of the short lane."""
    import libsumo

    corridor = corridor_from_net(split_net, site="t")
    (spec,) = corridor.intersections
    det_file = write_detectors_additional(corridor, tmp_path / "d.add.xml", net_file=split_net)
    routes = tmp_path / "r.rou.xml"
    routes.write_text('<routes><route id="we" edges="far near out_e"/><route id="ns" edges="in_n out_s"/>'
                      '<flow id="fw" route="we" begin="0" end="60" period="6"/>'
                      '<flow id="fn" route="ns" begin="0" end="60" period="10"/></routes>')
    libsumo.start([sumo_binary("sumo"), "-n", str(split_net), "-r", str(routes), "-a", str(det_file),
                   "--no-step-log", "true", "--no-warnings", "true", "--end", "400"])
    try:
        loop = {d.lane_id: loop_id(spec.controller_id, d.detector_id) for d in spec.detectors}
        assert len(loop) == len(spec.detectors)
        distance = libsumo.simulation.getDistanceRoad(
            "far", libsumo.inductionloop.getPosition(loop["far_0"]), "near",
            libsumo.lane.getLength("near_0"), isDriving=True)
        seen: dict[str, set[str]] = {lane: set() for lane in loop}
        arrived: set[str] = set()
        while libsumo.simulation.getMinExpectedNumber() > 0 and libsumo.simulation.getTime() < 400:
            libsumo.simulationStep()
            for lane, lid in loop.items():
                seen[lane].update(libsumo.inductionloop.getLastStepVehicleIDs(lid))
            arrived.update(libsumo.simulation.getArrivedIDList())
        assert libsumo.simulation.getMinExpectedNumber() == 0
    finally:
        libsumo.close()
    assert distance == pytest.approx(DETECTOR_DISTANCE_M, abs=0.2)  # SUMO's own road distance to the stop line
    west = {v for v in arrived if v.startswith("fw.")}
    north = {v for v in arrived if v.startswith("fn.")}
    assert len(west) >= 9 and len(north) >= 5
    assert seen["far_0"] == west     # the advance loop saw every vehicle of the short approach, nothing else
    assert seen["near_0"] == west    # and so did the stop-line lane's own loop
    assert seen["in_n_0"] == north


def test_write_refuses_a_lane_off_the_chain(split_net: Path, tmp_path: Path) -> None:
    corridor = corridor_from_net(split_net, site="t")
    spec = corridor.intersections[0]
    from dataclasses import replace

    stray = replace(spec, detectors=(replace(spec.detectors[0], lane_id="out_e_0"),))
    with pytest.raises(ScenarioError, match="out_e_0"):
        write_detectors_additional(replace(corridor, intersections=(stray,)), tmp_path / "x.xml",
                                   net_file=split_net)


lanes = st.lists(st.tuples(st.floats(0.5, 120.0), st.floats(0.0, 20.0)), min_size=1, max_size=6)


def _chain(spec: list[tuple[float, float]]) -> list[tuple[str, float, float]]:
    """(lane length, internal length before the next lane downstream) -> (id, length, end distance)."""
    out: list[tuple[str, float, float]] = []
    end = 0.0
    for k, (length, via) in enumerate(spec):
        out.append((f"l{k}", length, end))
        end += length + via
    return out


@given(lanes)
def test_place_on_chain_properties(spec: list[tuple[float, float]]) -> None:
    chain = _chain(spec)
    lane_id, pos, distance = place_on_chain(chain)
    by_id = {c[0]: c for c in chain}
    _lid, length, end = by_id[lane_id]
    assert 0.0 <= pos <= length
    assert distance == pytest.approx(end + length - pos)  # the position and the distance agree
    total = chain[-1][2] + chain[-1][1]
    target = DETECTOR_DISTANCE_M if total > DETECTOR_DISTANCE_M + DETECTOR_MARGIN_M else total / 2
    gaps = [via for _l, via in spec[:-1]]
    # exactly at the target, or at a lane end next to an internal lane the target falls in
    assert abs(distance - target) <= max(gaps, default=0.0) / 2 + 1e-6
    assert distance <= total + 1e-9


@given(st.floats(DETECTOR_DISTANCE_M + DETECTOR_MARGIN_M + 0.01, 500.0))
def test_a_long_stop_line_lane_keeps_its_loop(length: float) -> None:
    assert place_on_chain([("l0", length, 0.0), ("l1", 50.0, length)]) == \
        ("l0", pytest.approx(length - DETECTOR_DISTANCE_M), pytest.approx(DETECTOR_DISTANCE_M))


def test_an_advance_loop_is_no_extra_counting_station(split_net: Path) -> None:
    """Calibration adds lane counts up per edge: the advance loop must not count the short lane twice."""
    from simulation.calibrate import station_flows

    corridor = corridor_from_net(split_net, site="t")
    spec = corridor.intersections[0]
    rates = {loop_id(spec.controller_id, d.detector_id): 300.0 for d in spec.detectors}
    stations = station_flows(corridor, rates)
    assert "far" not in stations
    assert stations["near"][0] == pytest.approx(300.0)
    assert {e for e in stations} == {"near", "in_e", "in_n", "in_s"}
