"""TLS -> controller mapping on generated networks (plain corridor, protected lefts, crossings)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulation.binaries import sumo_binary
from simulation.corridor import generate_corridor
from simulation.network import (
    all_red_seconds,
    corridor_from_net,
    green_stages,
    loop_id,
    missing_loops,
    sanitize_id,
    stages_over_programs,
)
from simulation.scenario import load_scenario
from traffic.errors import MessageError, ScenarioError
from traffic.intersection import IntersectionSpec
from traffic.topics import check_id

GREEN = set("Gg")


@pytest.fixture(scope="module")
def corridor_scenario(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("corr"), n_intersections=3, spacing_m=300,
                             side_length_m=150, duration_s=300)


@pytest.fixture(scope="module")
def left_ped_net(tmp_path_factory) -> Path:
    """2x2 grid with dedicated left-turn lanes (protected left phases), sidewalks and crossings."""
    out = tmp_path_factory.mktemp("grid") / "grid.net.xml"
    subprocess.run([sumo_binary("netgenerate"), "--grid", "--grid.number", "2", "--grid.length", "200",
                    "--grid.attach-length", "150", "-L", "2", "--turn-lanes", "1", "--turn-lanes.length", "40",
                    "-j", "traffic_light", "--tls.default-type", "static", "--no-turnarounds", "true",
                    "--sidewalks.guess", "--crossings.guess", "--no-warnings", "-o", str(out)],
                   check=True, capture_output=True)
    return out


def _net_programs(net: Path) -> dict[str, list[str]]:
    root = ET.parse(net).getroot()
    return {t.get("id"): [p.get("state") for p in t.findall("phase")] for t in root.findall("tlLogic")}


def _assert_consistent(spec: IntersectionSpec) -> None:
    check_id(spec.controller_id)
    assert all(len(p.greens) == spec.link_count for p in spec.phases)
    assert spec.conflicts <= spec.foes
    for a, b in spec.conflicts:
        for p in spec.phases:
            assert not (p.greens[a] in GREEN and p.greens[b] in GREEN), (spec.controller_id, p.phase, a, b)
    # every link is served by some phase
    assert all(any(p.greens[i] in GREEN for p in spec.phases) for i in range(spec.link_count))
    for p in spec.phases:
        assert p.approach_speed_mps > 0 and p.clearance_width_m > 0 and p.lanes >= 1
        spec.default_plan()  # the mapped design gives a buildable plan


def test_corridor_mapping_matches_network_program(corridor_scenario) -> None:
    corridor = corridor_scenario.corridor
    programs = _net_programs(corridor_scenario.net_file)
    assert [s.controller_id for s in corridor.intersections] == ["j1", "j2", "j3"]
    for spec in corridor.intersections:
        _assert_consistent(spec)
        states = programs[spec.tls_id]
        assert spec.link_count == len(states[0])
        expected = [s for s in states if "y" not in s and set(s) & GREEN]
        assert [p.greens for p in spec.phases] == expected
        arterial, side = spec.phases
        assert arterial.approach_speed_mps == pytest.approx(13.89)
        assert side.approach_speed_mps == pytest.approx(11.11)
        assert arterial.lanes == 6 and side.lanes == 4
        # pedestrians beside the side street cross the 6-lane arterial; beside the arterial a 4-lane side street
        assert side.ped_crossing_m == pytest.approx(6 * 3.2)
        assert arterial.ped_crossing_m == pytest.approx(4 * 3.2)
        assert 15 < arterial.clearance_width_m < 40


def test_corridor_foes_follow_geometry(corridor_scenario) -> None:
    spec = corridor_scenario.corridor.intersections[0]
    root = ET.parse(corridor_scenario.net_file).getroot()
    index = {}
    for c in root.findall("connection"):
        if c.get("tl") == spec.tls_id:
            index[(c.get("from"), c.get("to"), c.get("fromLane"))] = int(c.get("linkIndex"))
    n_through = index[("N1_J1", "J1_S1", "0")]
    w_through = index[("W_J1", "J1_J2", "0")]
    e_left = next(i for (f, t, _l), i in index.items() if f == "J2_J1" and t == "J1_S1")
    n_right = index[("N1_J1", "J1_W", "0")]
    s_right = index[("S1_J1", "J1_J2", "0")]
    assert spec.is_conflict(n_through, w_through)
    # a permissive left turn yields to opposing through traffic: foe, but green together (not a conflict)
    assert spec.is_foe(e_left, w_through) and not spec.is_conflict(e_left, w_through)
    assert not spec.is_foe(n_right, s_right)


def test_corridor_links_and_detectors(corridor_scenario) -> None:
    corridor = corridor_scenario.corridor
    links = {(a, b): (d, v) for a, b, d, v in corridor.links}
    assert set(links) == {("j1", "j2"), ("j2", "j1"), ("j2", "j3"), ("j3", "j2")}
    distance, speed = links[("j1", "j2")]
    assert 250 < distance <= 300 and speed == pytest.approx(13.89)
    for spec in corridor.intersections:
        # one loop per incoming lane: 3 + 3 arterial, 2 + 2 side
        assert len(spec.detectors) == 10
        assert len({d.detector_id for d in spec.detectors}) == 10
        for det in spec.detectors:
            check_id(det.detector_id)
            assert det.distance_to_stopline_m == pytest.approx(40.0)
            assert det.phase in {p.phase for p in spec.phases}
            assert det.edge_id.startswith(("W_", "E_", "N", "S")) == det.entry
    j1 = corridor.by_id()["j1"]
    arterial_phase = j1.phases[0].phase
    assert {d.phase for d in j1.detectors if d.edge_id in ("W_J1", "J2_J1")} == {arterial_phase}
    assert missing_loops(corridor, corridor_scenario.additional_files) == 0


def test_protected_lefts_and_crossings(left_ped_net: Path) -> None:
    corridor = corridor_from_net(left_ped_net, site="t", name="grid")
    programs = _net_programs(left_ped_net)
    sidewalks = {lane.get("id") for lane in ET.parse(left_ped_net).getroot().iter("lane")
                 if lane.get("allow") == "pedestrian"}
    assert sidewalks
    assert len(corridor.intersections) == 4
    for spec in corridor.intersections:
        _assert_consistent(spec)
        assert spec.link_count == len(programs[spec.tls_id][0])
        # through + permissive left, protected left, for each axis; crossing clearance stages merged
        assert len(spec.phases) == 4
        lefts = [p for p in spec.phases if p.ped_crossing_m == 0]
        throughs = [p for p in spec.phases if p.ped_crossing_m > 0]
        assert len(lefts) == 2 and len(throughs) == 2, [(p.greens, p.ped_crossing_m) for p in spec.phases]
        for p in lefts:  # protected: only G, and fewer movements than a through stage
            assert set(p.greens) == {"G", "r"}
            assert p.greens.count("G") < min(t.greens.count("G") + t.greens.count("g") for t in throughs)
        for p in throughs:
            assert 5 < p.ped_crossing_m < 30
            assert p.walk_s > 0 and p.ped_clear_s > 0
        # detectors were auto-placed on every vehicle lane feeding the signal, none on sidewalks
        assert spec.detectors and not {d.lane_id for d in spec.detectors} & sidewalks
        assert all(d.distance_to_stopline_m <= 40.0 for d in spec.detectors)


def test_green_stages_merges_pedestrian_clearance_only() -> None:
    program = [(37, "GGrrGr"), (5, "GGrrrr"), (3, "yyrrrr"), (6, "rrGrrr"), (3, "rryrrr"), (37, "rrrGrG")]
    stages = green_stages(program, frozenset({4, 5}))
    assert [s for s, _ in stages] == ["GGrrGr", "rrGrrr", "rrrGrG"]
    assert stages[0][1] == 42
    # without the pedestrian links declared, the clearance stage stays separate
    assert len(green_stages(program, frozenset())) == 4


@given(st.text(min_size=1, max_size=120))
def test_sanitize_id_always_gives_a_topic_level(raw: str) -> None:
    cid = sanitize_id(raw)
    assert check_id(cid) == cid


def test_sanitize_keeps_long_ids_unique() -> None:
    a, b = "cluster_" + "1" * 80 + "_a", "cluster_" + "1" * 80 + "_b"
    assert sanitize_id(a) != sanitize_id(b)
    assert sanitize_id("GS_cluster_2415878664_2415878665") == "gs_cluster_2415878664_2415878665"


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError):
        corridor_from_net(tmp_path / "none.net.xml", site="t")
    (tmp_path / "bad.net.xml").write_text("<net><edge")
    with pytest.raises(ScenarioError):
        corridor_from_net(tmp_path / "bad.net.xml", site="t")
    with pytest.raises(MessageError):
        check_id("Bad Id")


def test_load_scenario_auto_places_detectors(left_ped_net: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "s.sumocfg"
    routes = tmp_path / "r.rou.xml"
    routes.write_text("<routes/>")
    cfg.write_text(f'<configuration><input><net-file value="{left_ped_net}"/><route-files value="r.rou.xml"/>'
                   f'</input><time><begin value="0"/><end value="600"/></time></configuration>')
    scenario = load_scenario(tmp_path, site="t", detectors_dir=tmp_path / "det")
    assert scenario.end == 600 and scenario.route_files == (routes.resolve(),)
    det_file = tmp_path / "det" / "detectors.add.xml"
    assert scenario.additional_files == (det_file.resolve(),)
    ids = {el.get("id") for el in ET.parse(det_file).getroot()}
    expected = {loop_id(s.controller_id, d.detector_id) for s in scenario.corridor.intersections for d in s.detectors}
    assert ids == expected
    # reading it again with the loops present keeps the same ids and writes nothing new
    again = corridor_from_net(left_ped_net, site="t", additional_files=scenario.additional_files)
    assert again.intersections == scenario.corridor.intersections
    assert missing_loops(again, scenario.additional_files) == 0


def test_pedestrian_timing_follows_the_scenario(corridor_scenario, left_ped_net: Path) -> None:
    net = corridor_scenario.net_file
    # the generator knows people cross its streets (assume); the same network read as a scenario
    # models no crosswalk, so by default nobody crosses and no phase times pedestrians
    assert all(p.ped_crossing_m > 0 for s in corridor_scenario.corridor.intersections for p in s.phases)
    auto = corridor_from_net(net, site="t", additional_files=corridor_scenario.additional_files)
    assert all(p.ped_crossing_m == 0 and p.walk_s == 0 for s in auto.intersections for p in s.phases)
    for spec in auto.intersections:
        _assert_consistent(spec)
    # assumed crossings change only pedestrian fields (and so the smallest splits), nothing else
    assumed = corridor_from_net(net, site="hanoi", additional_files=corridor_scenario.additional_files,
                                pedestrians="assume", name=corridor_scenario.corridor.name)
    assert assumed.intersections == corridor_scenario.corridor.intersections  # what the generator passes
    for a, b in zip(auto.intersections, assumed.intersections, strict=False):
        assert [p.greens for p in a.phases] == [p.greens for p in b.phases]
        assert a.detectors == b.detectors and a.conflicts == b.conflicts
        assert all(pa.min_split_s < pb.min_split_s for pa, pb in zip(a.phases, b.phases, strict=False))
    # modelled crossings are timed by default and by "assume"; "none" drops them (what-if)
    modelled = corridor_from_net(left_ped_net, site="t")
    assert corridor_from_net(left_ped_net, site="t", pedestrians="assume") == modelled
    assert any(p.ped_crossing_m > 0 for s in modelled.intersections for p in s.phases)
    dropped = corridor_from_net(left_ped_net, site="t", pedestrians="none")
    assert all(p.ped_crossing_m == 0 for s in dropped.intersections for p in s.phases)


def test_unknown_pedestrian_choice_is_refused(left_ped_net: Path) -> None:
    with pytest.raises(ScenarioError, match="pedestrians"):
        corridor_from_net(left_ped_net, site="t", pedestrians="estimate")


def test_load_generated_corridor(corridor_scenario) -> None:
    loaded = load_scenario(corridor_scenario.sumocfg, site="hanoi")
    # a loaded scenario models no crosswalks ("auto"): same design except pedestrian timing
    strip = [[(p.phase, p.greens, p.lanes) for p in s.phases] for s in corridor_scenario.corridor.intersections]
    assert [[(p.phase, p.greens, p.lanes) for p in s.phases] for s in loaded.corridor.intersections] == strip
    assert [s.detectors for s in loaded.corridor.intersections] == \
        [s.detectors for s in corridor_scenario.corridor.intersections]
    assert loaded.additional_files == corridor_scenario.additional_files
    assert (loaded.begin, loaded.end) == (0, 300)
    with pytest.raises(ScenarioError):
        load_scenario(corridor_scenario.sumocfg.parent / "nope")


# ---- a design spread over several programs (switched from outside) -------------------------------------

def test_stages_over_programs_completes_a_first_program_that_leaves_movements_red() -> None:
    vehicle = frozenset(range(6))
    first = [(1000.0, "GGGrrr")]
    second = [(4.0, "yyyrrr"), (1000.0, "rrrGGg")]
    stages, used = stages_over_programs([first, second], frozenset(), vehicle)
    assert [g for g, _ in stages] == ["GGGrrr", "rrrGGg"] and used == 2
    # a first program that serves every vehicle link is the design on its own, whatever else exists
    full = [(30.0, "GGGrrr"), (3.0, "yyyrrr"), (30.0, "rrrGGg"), (3.0, "rrryyy")]
    stages, used = stages_over_programs([full, [(60.0, "GrrGrr")]], frozenset(), vehicle)
    assert [g for g, _ in stages] == ["GGGrrr", "rrrGGg"] and used == 1
    # a program with another state length (a different signal layout) and repeats of known stages add nothing
    stages, used = stages_over_programs([first, [(9.0, "GGGG")], [(9.0, "GGGrrr")]], frozenset(), vehicle)
    assert [g for g, _ in stages] == ["GGGrrr"] and used == 1
    # a link no program releases stays unserved: the mapping never invents a green
    stages, _ = stages_over_programs([first, second], frozenset(), frozenset(range(7)))
    assert all(len(g) == 6 for g, _ in stages)
    assert stages_over_programs([], frozenset(), vehicle) == ([], 0)


def _one_junction(folder: Path) -> tuple[Path, ET.ElementTree]:
    """A single four-arm signalised junction (netgenerate's two-stage program), and its parsed network."""
    net = folder / "one.net.xml"
    subprocess.run([sumo_binary("netgenerate"), "--grid", "--grid.number", "1", "--grid.attach-length", "150",
                    "-j", "traffic_light", "--tls.default-type", "static", "--no-turnarounds", "true",
                    "--no-warnings", "-o", str(net)], check=True, capture_output=True)
    return net, ET.parse(net)


def test_a_signal_whose_stages_are_separate_programs_maps_to_all_of_them(tmp_path: Path) -> None:
    net, tree = _one_junction(tmp_path)
    root = tree.getroot()
    logic = root.find("tlLogic")
    states = [p.get("state") for p in logic.findall("phase")]
    greens = [s for s in states if "G" in s or "g" in s]
    assert len(greens) == 2
    # one program per stage, as an external controller switching programs would run it
    for phase in list(logic):
        logic.remove(phase)
    ET.SubElement(logic, "phase", duration="1000", state=greens[0])
    second = ET.SubElement(root, "tlLogic", id=logic.get("id"), type="static", programID="1", offset="0")
    ET.SubElement(second, "phase", duration="1000", state=greens[1])
    root.remove(second)
    root.insert(list(root).index(logic) + 1, second)
    tree.write(net)
    corridor = corridor_from_net(net, site="t")
    (spec,) = corridor.intersections
    assert [p.greens for p in spec.phases] == greens
    _assert_consistent(spec)  # every link is served by some phase
    assert any(f.rule == "STAGES_FROM_PROGRAMS" for f in corridor.findings)
    # the first program alone (nothing to complete it from) leaves the other approaches red, as before
    root.remove(second)
    tree.write(net)
    (alone,) = corridor_from_net(net, site="t").intersections
    assert [p.greens for p in alone.phases] == greens[:1]


def test_all_red_seconds_counts_only_states_that_stop_every_vehicle_movement() -> None:
    vehicle = frozenset({0, 1, 2})
    # green, its yellow, a 5 s all-red pulse (pedestrian links 3 may be green meanwhile), a partial red
    program = [(82.0, "GGgr"), (3.0, "yyyr"), (5.0, "rrrG"), (10.0, "rGrr")]
    assert all_red_seconds(program, vehicle) == 5.0
    assert all_red_seconds([(30.0, "GGGr"), (3.0, "yyyr")], vehicle) == 0.0
    assert all_red_seconds([(10000.0, "sss"), (10000.0, "ggg")], vehicle) == 10000.0  # "s" stops too
    assert all_red_seconds(program, frozenset()) == 0.0


def test_a_one_stage_signal_whose_program_stops_traffic_is_flagged(tmp_path: Path) -> None:
    net, tree = _one_junction(tmp_path)
    logic = tree.getroot().find("tlLogic")
    green = logic.find("phase").get("state")  # the north-south stage of netgenerate's program
    for phase in list(logic):
        logic.remove(phase)
    # one stage with a metering pulse: its green, its yellow, then 6 s of red for everybody
    yellow = "".join("y" if c in "Gg" else "r" for c in green)
    for duration, state in ((80, green), (3, yellow), (6, "r" * len(green))):
        ET.SubElement(logic, "phase", duration=str(duration), state=state)
    tree.write(net)
    corridor = corridor_from_net(net, site="t")
    (spec,) = corridor.intersections
    assert len(spec.phases) == 1
    flagged = [f for f in corridor.findings if f.rule == "ONE_STAGE_HELD_GREEN"]
    assert len(flagged) == 1 and "6 s of its 89 s cycle" in flagged[0].message
    # the same junction with one stage and no red in its program is held green without a finding
    for phase in list(logic)[1:]:
        logic.remove(phase)
    tree.write(net)
    assert not any(f.rule == "ONE_STAGE_HELD_GREEN" for f in corridor_from_net(net, site="t").findings)
