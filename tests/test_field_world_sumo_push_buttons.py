"""People SUMO walks press the push buttons of the crossings they wait at (SumoWorld).

A modelled crossing has push buttons (``PhaseSpec.ped_push_button``): in
fully actuated operation its walk is shown on a press only, and the press
comes from a person standing at the crossing, once per person. Without
people nobody presses and no walk is ever shown; with people every walk shown
belongs to a phase that times a crossing somebody waited at.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_field_world_sumo import NODES  # the same four-arm junction, here with sidewalks and crossings

from field_firmware_stubs import events as ev
from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.world_sumo import SumoWorld, sumo_binary
from simulation.scenario import load_scenario
from traffic.config import FieldSettings, MqttSettings

pytestmark = pytest.mark.sumo

EDGES = "<edges>" + "".join(
    f'<edge id="{a}_in" from="{a.upper()}" to="C" numLanes="2" speed="13.0"/>'
    f'<edge id="{a}_out" from="C" to="{a.upper()}" numLanes="2" speed="13.0"/>' for a in "nsew") + "</edges>"
VEHICLES = """ <flow id="ns" from="n_in" to="s_out" begin="0" end="400" period="5"/>
 <flow id="ew" from="e_in" to="w_out" begin="0" end="400" period="5"/>"""
PEOPLE = """ <personFlow id="p" begin="0" end="300" period="30"><walk from="n_in" to="s_out"/></personFlow>"""


def _scenario(folder: Path, people: bool):
    folder.mkdir()
    (folder / "n.nod.xml").write_text(NODES)
    (folder / "n.edg.xml").write_text(EDGES)
    subprocess.run([sumo_binary("netconvert"), "-n", "n.nod.xml", "-e", "n.edg.xml", "-o", "net.net.xml",
                    "--no-turnarounds", "true", "--sidewalks.guess", "--crossings.guess", "--no-warnings", "true"],
                   cwd=folder, check=True, capture_output=True, timeout=60)
    (folder / "r.rou.xml").write_text(f"<routes>\n{VEHICLES}\n{PEOPLE if people else ''}\n</routes>")
    (folder / "s.sumocfg").write_text(
        '<configuration><input><net-file value="net.net.xml"/><route-files value="r.rou.xml"/></input>'
        '<time><begin value="0"/><end value="400"/></time></configuration>')
    return load_scenario(folder, detectors_dir=folder / "det")


def _run(scenario) -> list:
    spec = scenario.corridor.intersections[0]
    plan = spec.plan_from_splits([30.0] * len(spec.phases), mode="free", coord_phase=spec.phases[0].phase)
    emulator = FieldEmulator(spec, site="t", mqtt=MqttSettings(), count_interval_s=3600,
                             clock_origin=datetime(2026, 1, 1, tzinfo=UTC), tod_plan=plan, settings=FieldSettings())
    options = ["--additional-files", ",".join(str(p) for p in scenario.additional_files)]
    with SumoWorld(scenario.sumocfg, emulators={spec.tls_id: emulator}, seed=1, begin=0, end=400,
                   options=options) as world:
        world.run_until(400)
        assert not emulator.monitor.tripped
    return list(emulator._events)  # noqa: SLF001 - the hi-res log before it is published


def test_modelled_crossings_have_push_buttons(tmp_path):
    spec = _scenario(tmp_path / "net", people=False).corridor.intersections[0]
    timed = [p for p in spec.phases if p.ped_crossing_m > 0]
    assert timed and all(p.ped_push_button for p in timed)


def test_no_people_no_press_no_walk(tmp_path):
    events = _run(_scenario(tmp_path / "empty", people=False))
    assert not [e for e in events if e.code in (ev.PED_DETECTOR_ON, ev.PED_BEGIN_WALK)]
    assert [e for e in events if e.code == ev.PHASE_BEGIN_GREEN]          # vehicles were served


def test_waiting_people_press_and_get_their_walk(tmp_path):
    scenario = _scenario(tmp_path / "people", people=True)
    spec = scenario.corridor.intersections[0]
    events = _run(scenario)
    presses = [e for e in events if e.code == ev.PED_DETECTOR_ON]
    walks = [e for e in events if e.code == ev.PED_BEGIN_WALK]
    assert presses and walks
    assert len(presses) <= 10 * 2                                          # once per person (10) and crossing
    pressed = {e.param for e in presses}
    assert {e.param for e in walks} <= pressed                             # a walk only where somebody pressed
    assert all(spec.phase(p).ped_push_button for p in pressed)
