"""The emulator drives a real SUMO junction: heads follow the program, loops produce counts over MQTT."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest
from test_field_emulator_mqtt import Observer

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.world_sumo import SumoWorld, sumo_binary
from traffic import messages as msg
from traffic import topics
from traffic.config import FieldSettings, MqttSettings
from traffic.errors import ScenarioError
from traffic.intersection import DetectorSpec, IntersectionSpec, PhaseSpec

NODES = """<nodes>
 <node id="C" x="0" y="0" type="traffic_light"/>
 <node id="N" x="0" y="150"/> <node id="S" x="0" y="-150"/>
 <node id="E" x="150" y="0"/> <node id="W" x="-150" y="0"/>
</nodes>"""
EDGES = "<edges>" + "".join(
    f'<edge id="{a}_in" from="{a.upper()}" to="C" numLanes="1" speed="{v}"/>'
    f'<edge id="{a}_out" from="C" to="{a.upper()}" numLanes="1" speed="{v}"/>'
    for a, v in (("n", 13.9), ("s", 13.9), ("e", 11.1), ("w", 11.1))) + "</edges>"
ROUTES = """<routes>
 <vType id="car" vClass="passenger"/>
 <vType id="moto" vClass="motorcycle" length="2" minGap="1"/>
 <flow id="ns" type="car" from="n_in" to="s_out" begin="0" end="150" period="6"/>
 <flow id="sn" type="moto" from="s_in" to="n_out" begin="0" end="150" period="4"/>
 <flow id="ew" type="car" from="e_in" to="w_out" begin="0" end="150" period="8"/>
 <flow id="we" type="moto" from="w_in" to="e_out" begin="0" end="150" period="5"/>
</routes>"""


def loops(controller: str) -> str:
    return "<additional>" + "".join(
        f'<inductionLoop id="{controller}.d{a}" lane="{a}_in_0" pos="110" period="60" file="NUL"/>'
        for a in "nsew") + "</additional>"


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    (tmp_path / "n.nod.xml").write_text(NODES)
    (tmp_path / "n.edg.xml").write_text(EDGES)
    subprocess.run([sumo_binary("netconvert"), "-n", "n.nod.xml", "-e", "n.edg.xml", "-o", "net.net.xml",
                    "--no-turnarounds", "true", "--no-warnings", "true"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    (tmp_path / "routes.rou.xml").write_text(ROUTES)
    (tmp_path / "loops.add.xml").write_text(loops("c"))
    (tmp_path / "s.sumocfg").write_text(
        '<configuration><input><net-file value="net.net.xml"/><route-files value="routes.rou.xml"/>'
        '<additional-files value="loops.add.xml"/></input></configuration>')
    return tmp_path / "s.sumocfg"


def spec_from(net: Path) -> IntersectionSpec:
    """The junction as an engineer would enter it: SUMO's green stages, conflicts across stages."""
    logic = ElementTree.parse(net).getroot().find("tlLogic")
    greens = [p.get("state") for p in logic.findall("phase") if "y" not in p.get("state")]
    served = [{i for i, c in enumerate(g) if c in "Gg"} for g in greens]
    conflicts = frozenset((i, j) for a in served for b in served if a is not b for i in a for j in b
                          if i < j and not any(i in s and j in s for s in served))
    phases = tuple(PhaseSpec(k + 1, g, approach_speed_mps=13.9 if k == 0 else 11.1, min_green_s=5.0)
                   for k, g in enumerate(greens))
    detectors = (DetectorSpec("dn", "n_in_0", 1), DetectorSpec("ds", "s_in_0", 1),
                 DetectorSpec("de", "e_in_0", 2), DetectorSpec("dw", "w_in_0", 2))
    return IntersectionSpec("c", "C", len(greens[0]), phases, detectors, conflicts=conflicts)


def test_emulator_drives_the_sumo_junction_and_counts_arrive(scenario, tmp_path, mqtt_url, site):
    spec = spec_from(tmp_path / "net.net.xml")
    emulator = FieldEmulator(spec, site=site, mqtt=MqttSettings(url=mqtt_url), count_interval_s=60,
                             clock_origin=datetime(2026, 3, 2, 7, tzinfo=UTC),
                             tod_plan=spec.plan_from_splits([24.0, 20.0], mode="actuated"),
                             settings=FieldSettings())
    observer = Observer(mqtt_url, site)
    emulator.start()
    tripinfo = tmp_path / "tripinfo.xml"
    try:
        with SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=180, tripinfo=tripinfo) as world:
            mismatches = arrived = 0
            while world.time < 180:
                world.step()
                arrived += world.api.simulation.getArrivedNumber()
                if world.api.trafficlight.getRedYellowGreenState("C") != emulator.program.state:
                    mismatches += 1
            assert mismatches == 0
            assert not emulator.monitor.tripped
        counts_topic = topics.topic(site, "c", topics.COUNTS)
        observer.wait_for(lambda m: m[0] == counts_topic and msg.decode_counts(m[1]).seq == 2)
        reports = [msg.decode_counts(m[1]) for m in observer.on(counts_topic)]
        totals = {r.detector_id: 0 for r in reports[0].records}
        motos = dict(totals)
        for report in reports:
            for r in report.records:
                totals[r.detector_id] += r.count
                motos[r.detector_id] += r.motorcycle_count or 0
        # flows: n 1/6 s, s 1/4 s (motorcycles), e 1/8 s, w 1/5 s, for 150 s; loops 40 m before the stop line
        assert 15 <= totals["dn"] <= 26 and 25 <= totals["ds"] <= 38
        assert motos["ds"] == totals["ds"] and motos["dn"] == 0 and motos["dw"] == totals["dw"] > 0
        assert arrived > 40  # the heads the emulator drove let traffic through
        assert emulator.stats.events_published > 0
    finally:
        emulator.stop(discard_session=True)
        observer.close()
    text = tripinfo.read_text()
    assert text.count("<tripinfo ") >= 40


def test_missing_detector_is_a_scenario_error_and_sumo_is_closed(scenario, tmp_path):
    spec = spec_from(tmp_path / "net.net.xml")
    bad = IntersectionSpec(spec.controller_id, spec.tls_id, spec.link_count, spec.phases,
                           spec.detectors + (DetectorSpec("dx", "nowhere_0", 1),), conflicts=spec.conflicts)
    emulator = FieldEmulator(bad, site="t", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ScenarioError, match="dx"):
        SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=10)
    # the failed world closed its simulation: a new one can start in this process
    with SumoWorld(scenario, emulators={}, seed=1, begin=0, end=10) as world:
        world.run_until(5)
        assert world.time == 5.0


def test_traci_backend_drives_the_lights_and_leaves_no_process(scenario, tmp_path):
    spec = spec_from(tmp_path / "net.net.xml")
    emulator = FieldEmulator(spec, site="t", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC))
    world = SumoWorld(scenario, emulators={"C": emulator}, seed=2, begin=0, end=60, backend="traci")
    try:
        assert world.backend == "traci"
        process = world.api._process  # noqa: SLF001 - checking the child process itself
        world.run_until(60)
        assert world.api.trafficlight.getRedYellowGreenState("C") == emulator.program.state
        assert world.time == 60.0
    finally:
        world.close()
    assert process.poll() is not None
