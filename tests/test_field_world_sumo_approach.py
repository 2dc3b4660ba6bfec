"""Approach sensors in the SUMO world (issue #14): zones on the lanes feeding a signal, read every step,
and the free-mode program deciding its greens from them on a real junction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_field_world_sumo import scenario, spec_from  # noqa: F401 - the fixture is used by name

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.world_sumo import SumoWorld
from traffic.config import FieldSettings, MqttSettings

pytestmark = pytest.mark.sumo


def _emulator(tmp_path) -> FieldEmulator:
    spec = spec_from(tmp_path / "net.net.xml")
    return FieldEmulator(spec, site="t", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC),
                         tod_plan=spec.plan_from_splits([24.0, 20.0], mode="free"), settings=FieldSettings())


def test_the_sensor_sees_every_approaching_vehicle_within_range_and_the_program_schedules_on_it(scenario, tmp_path):  # noqa: F811
    emulator = _emulator(tmp_path)
    lanes = {"n_in_0", "s_in_0", "e_in_0", "w_in_0"}
    with SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=200, approach_range_m=100.0) as world:
        seen_most = 0
        arrived = 0
        while world.time < 200:
            world.step()
            arrived += world.api.simulation.getArrivedNumber()
            seen = world._read_approach("C")  # noqa: SLF001 - what the program was given this step
            assert seen is not None
            truth = sum(1 for lane in lanes for v in world.api.lane.getLastStepVehicleIDs(lane)
                        if world.api.lane.getLength(lane) - world.api.vehicle.getLanePosition(v) <= 100.0)
            assert len(seen) == truth
            for v in seen:
                assert v.lane in lanes and 0.0 <= v.distance_m <= 100.0
                assert v.motorcycle == (v.lane in ("s_in_0", "w_in_0"))  # the s and w flows are motorcycles
            seen_most = max(seen_most, len(seen))
        assert seen_most >= 4
        assert arrived > 40
        stats = emulator.program.schedule_stats
        assert stats["hold"] > 0 and stats["end"] > 0  # the greens were decided by the schedule
        assert not emulator.monitor.tripped


def test_without_a_range_the_world_reports_no_sensor_and_the_loops_decide(scenario, tmp_path):  # noqa: F811
    emulator = _emulator(tmp_path)
    with SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=120) as world:
        world.run_until(120)
        assert world._read_approach("C") is None  # noqa: SLF001
    assert emulator.program.schedule_stats == {"hold": 0, "end": 0, "next_phase": 0, "floor": 0}


def _scenario(tmp_path, nodes: list[str], edges: list[str], flows: str, *netconvert_options: str):
    """Build a plain-XML network with netconvert, and a scenario with ``flows`` (``<flow>`` elements of
    type ``car``) on it; returns the ``.sumocfg``."""
    import subprocess

    from field_firmware_stubs.world_sumo import sumo_binary

    (tmp_path / "n.nod.xml").write_text("<nodes>" + "".join(nodes) + "</nodes>")
    (tmp_path / "n.edg.xml").write_text("<edges>" + "".join(edges) + "</edges>")
    subprocess.run([sumo_binary("netconvert"), "-n", "n.nod.xml", "-e", "n.edg.xml", "-o", "net.net.xml",
                    "--no-turnarounds", "true", "--no-warnings", "true", *netconvert_options], cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "r.rou.xml").write_text(f'<routes><vType id="car" vClass="passenger"/>{flows}</routes>')
    (tmp_path / "s.sumocfg").write_text('<configuration><input><net-file value="net.net.xml"/>'
                                        '<route-files value="r.rou.xml"/></input></configuration>')
    return tmp_path / "s.sumocfg"


def _split_approach(tmp_path, side_exit: bool, turning_away: bool = False, split_m: float = 30.0):
    """A signal C fed from the north by a road SUMO splits at node M, 30 m before C (the edges m_in,
    100 m, and n_in, 30 m). With ``side_exit`` a street leaves the road at M, so a vehicle upstream of
    M may turn away; with ``turning_away`` one vehicle in two does."""
    nodes = ['<node id="C" x="0" y="0" type="traffic_light"/>', f'<node id="M" x="0" y="{split_m}"/>',
             '<node id="N" x="0" y="130"/>', '<node id="S" x="0" y="-150"/>', '<node id="E" x="150" y="0"/>',
             '<node id="W" x="-150" y="0"/>']
    edges = ['<edge id="m_in" from="N" to="M" numLanes="1" speed="13.9"/>',
             '<edge id="n_in" from="M" to="C" numLanes="1" speed="13.9"/>']
    edges += [f'<edge id="{a}_in" from="{a.upper()}" to="C" numLanes="1" speed="13.9"/>' for a in "sew"]
    edges += [f'<edge id="{a}_out" from="C" to="{a.upper()}" numLanes="1" speed="13.9"/>' for a in "nsew"]
    if side_exit:
        nodes.append(f'<node id="X" x="100" y="{split_m}"/>')
        edges.append('<edge id="x_out" from="M" to="X" numLanes="1" speed="13.9"/>')
    flows = '<flow id="f" type="car" from="m_in" to="s_out" begin="0" end="240" period="6"/>'
    if turning_away:
        flows += '<flow id="g" type="car" from="m_in" to="x_out" begin="2" end="240" period="6"/>'
    return _scenario(tmp_path, nodes, edges, flows)


class _Idle:
    """Just enough of an emulator for the world to bind zones: it shows one state and reads nothing."""

    def __init__(self, links: int) -> None:
        from traffic.intersection import IntersectionSpec, PhaseSpec

        self.spec = IntersectionSpec("c", "C", links, (PhaseSpec(1, "G" * links, approach_speed_mps=13.9),))
        self.controller_id = "c"
        self.program = None
        self.seen: list[object] = []

    def tick(self, now, readings, approach=None):
        self.seen.append(approach)
        return "G" * self.spec.link_count


@pytest.mark.parametrize("side_exit", [False, True])
def test_zones_follow_the_road_across_an_edge_split_but_not_past_a_junction_where_it_splits(tmp_path, side_exit):
    cfg = _split_approach(tmp_path, side_exit)
    from sumolib.net import readNet

    links = len(readNet(str(tmp_path / "net.net.xml")).getTLS("C").getConnections())
    idle = _Idle(links)
    with SumoWorld(cfg, emulators={"C": idle}, seed=1, begin=0, end=40, approach_range_m=200.0) as world:
        world.run_until(40)
        zones = world._zones.get("C")  # noqa: SLF001
    if side_exit:
        # the road before C is covered for 30 m only: the zones go on past the split at M, flagged with it
        watched = {z.watched: z for z in zones}
        assert watched["n_in_0"].split is None
        assert watched["m_in_0"].split == "m_in_0" and watched["m_in_0"].approach == "n_in_0"
        assert watched["m_in_0"].offset_m > 0.0
    else:
        watched = {z[0]: z for z in zones}
        assert "m_in_0" in watched and watched["m_in_0"][1] == "n_in_0"  # counted on C's approach lane
        assert watched["m_in_0"][3] > 0.0  # its distance includes the 30 m edge before C
        assert watched["m_in_0"].split is None  # every vehicle there comes to C: no split
        far = [v for seen in idle.seen if seen for v in seen if v.distance_m > watched["m_in_0"][3]]
        assert far and all(v.lane == "n_in_0" for v in far)


def _joined_pair(tmp_path, split_inner: bool):
    """Two junctions 40 m apart under one program J (a joined cluster): W - C1 - C2 - E, a side street at
    each. With ``split_inner`` the inner road is two edges (SUMO splits it at a node where nothing turns)."""
    nodes = ['<node id="C1" x="0" y="0" type="traffic_light" tl="J"/>',
             '<node id="C2" x="40" y="0" type="traffic_light" tl="J"/>',
             '<node id="W" x="-200" y="0"/>', '<node id="E" x="240" y="0"/>',
             '<node id="N1" x="0" y="200"/>', '<node id="S2" x="40" y="-200"/>']
    edges = ['<edge id="w_in" from="W" to="C1" numLanes="1" speed="13.9"/>',
             '<edge id="n1_in" from="N1" to="C1" numLanes="1" speed="13.9"/>',
             '<edge id="s2_in" from="S2" to="C2" numLanes="1" speed="13.9"/>',
             '<edge id="e_out" from="C2" to="E" numLanes="1" speed="13.9"/>']
    if split_inner:
        nodes.append('<node id="M" x="20" y="0"/>')
        edges += ['<edge id="inner_a" from="C1" to="M" numLanes="1" speed="13.9"/>',
                  '<edge id="inner" from="M" to="C2" numLanes="1" speed="13.9"/>']
    else:
        edges.append('<edge id="inner" from="C1" to="C2" numLanes="1" speed="13.9"/>')
    return _scenario(tmp_path, nodes, edges,
                     '<flow id="f" type="car" from="w_in" to="e_out" begin="0" end="60" period="4"/>')


@pytest.mark.parametrize("split_inner", [False, True])
def test_an_inner_approach_of_a_joined_signal_is_seen_back_to_its_own_stop_line(tmp_path, split_inner):
    """The 40 m inner road is shorter than the 60 m minimum cover, but the signal's own stop line ends it:
    no queue stands out of sight there, so the signal gets a sensor and the zone covers the inner road."""
    from field_firmware_stubs.world_sumo import APPROACH_MIN_COVER_M

    cfg = _joined_pair(tmp_path, split_inner)
    from sumolib.net import readNet

    net = readNet(str(tmp_path / "net.net.xml"))
    assert net.getEdge("inner").getLength() < APPROACH_MIN_COVER_M
    idle = _Idle(len(net.getTLS("J").getConnections()))
    with SumoWorld(cfg, emulators={"J": idle}, seed=1, begin=0, end=60, approach_range_m=200.0) as world:
        world.run_until(60)
        zones = world._zones.get("J")  # noqa: SLF001
    assert zones is not None
    watched = {z[0]: z for z in zones}
    assert watched["inner_0"][1] == "inner_0"
    if split_inner:
        assert watched["inner_a_0"][1] == "inner_0"  # the split's first edge counts on the inner approach
    assert "w_in_0" in watched and "e_out_0" not in watched  # an exit is no approach
    inner_seen = [v for seen in idle.seen if seen for v in seen if v.lane == "inner_0"]
    assert inner_seen and all(0.0 <= v.distance_m <= 40.5 for v in inner_seen)


def test_a_signal_with_modelled_crosswalks_keeps_its_approach_sensor(tmp_path):
    """A crossing's link starts on a walking area inside the junction: it is no approach road. Until
    session 12 it got a zone of its own, and where the sidewalks before it were short (drt-osm,
    braunschweig-fokr) that zone's short cover cost the signal its sensor."""
    nodes = ['<node id="C" x="0" y="0" type="traffic_light"/>'] + [
        f'<node id="{a}" x="{x}" y="{y}"/>' for a, x, y in (("N", 0, 150), ("S", 0, -150), ("E", 150, 0),
                                                              ("W", -150, 0))]
    edges = [f'<edge id="{a}_in" from="{a.upper()}" to="C" numLanes="1" speed="11.1"/>' for a in "nsew"]
    edges += [f'<edge id="{a}_out" from="C" to="{a.upper()}" numLanes="1" speed="11.1"/>' for a in "nsew"]
    cfg = _scenario(tmp_path, nodes, edges, '<flow id="f" type="car" from="w_in" to="e_out" begin="0" end="30" '
                    'period="5"/>', "--sidewalks.guess", "true", "--crossings.guess", "true")
    import xml.etree.ElementTree as ET

    links = 1 + max(int(c.get("linkIndex")) for c in ET.parse(tmp_path / "net.net.xml").getroot().iter("connection")
                    if c.get("tl") == "C")
    idle = _Idle(links)
    with SumoWorld(cfg, emulators={"C": idle}, seed=1, begin=0, end=30,
                   approach_range_m=200.0) as world:
        crossing_links = [c for group in world.api.trafficlight.getControlledLinks("C") for c in group
                          if c[0].startswith(":")]
        world.run_until(30)
        zones = world._zones.get("C")  # noqa: SLF001
    assert crossing_links  # the net really models crossings: their links start on walking areas
    assert zones is not None
    assert not any(z[0].startswith(":") for z in zones)
    assert any(v.lane.startswith("w_in") for seen in idle.seen if seen for v in seen)


def test_a_tram_track_through_the_junction_is_no_approach_and_costs_the_signal_nothing(tmp_path):
    """A tram track that starts 5 m before the stop line (at its own rail signal in drt-osm) is covered
    for 5 m only. Until session 13 it counted as an approach too short to see, and its signal kept its
    loops; no road vehicle queues on it."""
    nodes = ['<node id="C" x="0" y="0" type="traffic_light"/>', '<node id="T" x="4" y="3"/>',
             '<node id="U" x="-120" y="-90"/>'] + [
        f'<node id="{a}" x="{x}" y="{y}"/>' for a, x, y in (("N", 0, 150), ("S", 0, -150), ("E", 150, 0),
                                                              ("W", -150, 0))]
    edges = [f'<edge id="{a}_in" from="{a.upper()}" to="C" numLanes="1" speed="11.1"/>' for a in "nsew"]
    edges += [f'<edge id="{a}_out" from="C" to="{a.upper()}" numLanes="1" speed="11.1"/>' for a in "nsew"]
    edges += ['<edge id="t_in" from="T" to="C" numLanes="1" speed="8.0" allow="tram"/>',
              '<edge id="t_out" from="C" to="U" numLanes="1" speed="8.0" allow="tram"/>']
    cfg = _scenario(tmp_path, nodes, edges, '<flow id="f" type="car" from="w_in" to="e_out" begin="0" end="30" '
                    'period="5"/>')
    import xml.etree.ElementTree as ET

    links = 1 + max(int(c.get("linkIndex")) for c in ET.parse(tmp_path / "net.net.xml").getroot().iter("connection")
                    if c.get("tl") == "C")
    idle = _Idle(links)
    with SumoWorld(cfg, emulators={"C": idle}, seed=1, begin=0, end=30, approach_range_m=200.0) as world:
        tram_links = [c for group in world.api.trafficlight.getControlledLinks("C") for c in group
                      if c[0] == "t_in_0"]
        world.run_until(30)
        zones = world._zones.get("C")  # noqa: SLF001
    assert tram_links  # the signal really controls the tram track
    assert zones is not None
    assert not any(z.watched.startswith("t_in") or z.approach.startswith("t_in") for z in zones)
    assert any(v.lane.startswith("w_in") for seen in idle.seen if seen for v in seen)


@pytest.mark.parametrize("turning_away", [False, True])
def test_a_vehicle_seen_past_a_split_weighs_the_share_that_turned_onto_the_approach(tmp_path, turning_away):
    """Every vehicle on m_in goes on to C, or one in two turns away at M: the world counts where those
    leaving m_in went, and a moving vehicle seen on m_in weighs that share (Laplace's rule on the counts)."""
    cfg = _split_approach(tmp_path, side_exit=True, turning_away=turning_away)
    from sumolib.net import readNet

    net = readNet(str(tmp_path / "net.net.xml"))
    before_split = net.getLane("n_in_0").getLength()  # C's own lane: every vehicle on it comes to C
    idle = _Idle(len(net.getTLS("C").getConnections()))
    with SumoWorld(cfg, emulators={"C": idle}, seed=1, begin=0, end=240, approach_range_m=200.0) as world:
        went_on = went_away = 0
        while world.time < 240:
            world.step()
            went_on += sum(1 for v in world.api.simulation.getArrivedIDList() if v.startswith("f"))
            went_away += sum(1 for v in world.api.simulation.getArrivedIDList() if v.startswith("g"))
        share = world._turns["C"].share("m_in_0", "n_in_0")  # noqa: SLF001
    assert went_on >= 20 and (went_away >= 20) == turning_away
    if turning_away:
        assert 0.35 <= share <= 0.65
    else:
        assert share >= 0.9
    late = [v for seen in idle.seen[-60:] if seen for v in seen
            if v.distance_m > before_split + 1.0 and v.speed_mps > 1.0]
    assert late and all(abs(v.weight - share) < 0.1 for v in late)
    assert all(v.weight == 1.0 for seen in idle.seen if seen for v in seen if v.distance_m < before_split - 0.5)


def test_a_split_too_close_to_the_stop_line_is_not_followed_and_the_sensor_sees_part_of_the_road(tmp_path):
    """10 m before the stop line the approach holds one vehicle before the split: the queue is nearly all
    beyond it, and weighing it by turning shares starved such approaches (cologne3). The zones stop at the
    split and the signal is marked as seeing part of the road only: its schedule may lengthen greens, never
    shorten them (until session 13 such a signal had no sensor at all)."""
    from field_firmware_stubs.approach_zones import MIN_BEFORE_SPLIT_M

    cfg = _split_approach(tmp_path, side_exit=True, split_m=10.0)
    from sumolib.net import readNet

    net = readNet(str(tmp_path / "net.net.xml"))
    assert net.getLane("n_in_0").getLength() < MIN_BEFORE_SPLIT_M
    idle = _Idle(len(net.getTLS("C").getConnections()))
    assert not getattr(idle, "partial_approach_view", False)
    with SumoWorld(cfg, emulators={"C": idle}, seed=1, begin=0, end=30, approach_range_m=200.0) as world:
        world.run_until(30)
        zones = world._zones.get("C")  # noqa: SLF001
    assert zones is not None and not any(z.split for z in zones)  # nothing past the split
    assert idle.partial_approach_view
    assert any(a is not None for a in idle.seen)
