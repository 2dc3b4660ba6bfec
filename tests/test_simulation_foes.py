"""How the safety model reads SUMO's foe relation, on networks built here (issue #11, failure class 2).

A two-signal corridor is generated with netgenerate, then signal A0's
approved program is rewritten the way real city programs look:

* **resolved**: the left turns run on a green ball (``G``) beside the
  opposing through movement; the junction's right-of-way table makes the
  left turn give way, so the approved program is accepted and the plans of
  both safety checks (centre and field) and the field's conflict monitor
  accept that pair protected together, and only that pair;
* **unresolved**: two straight movements that cross are both ``G``. Nobody
  gives way, so A0 is left on its own program with a finding that names the
  two movements, and every control still runs to the end on the rest of the
  network (B0).
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

import app.sim_adaptive  # noqa: F401 - the composition root: registers adaptive, installs the safety check
from controller.safety import check_plan as centre_check
from field_firmware_stubs.conflict_monitor import ConflictMonitor
from field_firmware_stubs.plan_check import check_plan as field_check
from simulation.binaries import sumo_binary, sumo_tool
from simulation.controls import control, controllable
from simulation.network import corridor_from_net
from simulation.scenario import load_scenario
from simulation.site_check import UNUSABLE, USABLE_WITH_FINDINGS, check_site, render

pytestmark = pytest.mark.sumo

#: A0's link indices (netgenerate 2x1 grid): 1 = top->bottom through, 2 = top->B0 left,
#: 4 = B0->left through, 7 = bottom->top through, 8 = bottom->left left
RESOLVED_PROGRAM = ("GGGrrrGGGrrr", "yyyrrryyyrrr", "rrrGGgrrrGGg", "rrryyyrrryyy")
UNRESOLVED_PROGRAM = ("rGrrGrrrrrrr", "ryrryrrrrrrr", "GrgrrrGGgrrr", "yryrrryyyrrr", "rrrrrGrrrGGG",
                      "rrrrryrrryyy")


def _corridor_net(out: Path, program: tuple[str, ...]) -> Path:
    """2x1 grid of signals (A0, B0) with A0's approved program replaced by ``program``."""
    net = out / "net.net.xml"
    subprocess.run([sumo_binary("netgenerate"), "--grid", "--grid.x-number", "2", "--grid.y-number", "1",
                    "--grid.length", "200", "--grid.attach-length", "150", "--default-junction-type", "traffic_light",
                    "--tls.default-type", "static", "--no-turnarounds", "true", "--no-warnings", "-o", str(net)],
                   check=True, capture_output=True)
    tree = ET.parse(net)
    logic = next(t for t in tree.getroot().iter("tlLogic") if t.get("id") == "A0")
    for phase in list(logic):
        logic.remove(phase)
    for state in program:
        ET.SubElement(logic, "phase", duration="3" if "y" in state else "30", state=state)
    tree.write(net, encoding="UTF-8", xml_declaration=True)
    return net


def _scenario(out: Path, program: tuple[str, ...]):
    net = _corridor_net(out, program)
    subprocess.run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o", str(out / "t.trips.xml"),
                    "-r", str(out / "c.rou.xml"), "-e", "400", "-p", "1.5", "--fringe-factor", "100", "--seed", "5",
                    "--validate"], check=True, capture_output=True)
    (out / "c.sumocfg").write_text(
        '<configuration><input><net-file value="net.net.xml"/><route-files value="c.rou.xml"/></input>'
        '<time><begin value="0"/><end value="500"/></time></configuration>')
    return load_scenario(out, detectors_dir=out / "det")


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    return _scenario(tmp_path_factory.mktemp("resolved"), RESOLVED_PROGRAM)


@pytest.fixture(scope="module")
def unresolved(tmp_path_factory):
    return _scenario(tmp_path_factory.mktemp("unresolved"), UNRESOLVED_PROGRAM)


def test_left_turns_on_a_green_ball_are_resolved_by_the_junction(resolved) -> None:
    a0 = resolved.corridor.by_id()["a0"]
    assert (2, 7) in a0.resolved_foes and (1, 8) in a0.resolved_foes  # left beside opposing through
    assert a0.resolved_foes <= a0.foes
    assert (1, 4) in a0.exclusive_foes  # the crossing throughs stay exclusive
    finding = next(f for f in resolved.corridor.findings if f.rule == "RESOLVED_FOES")
    assert finding.tls_id == "A0" and "turn-yield" in finding.message and "top0A0 -> A0B0" in finding.message
    plan = a0.default_plan()
    assert centre_check(plan, a0) == [] and field_check(plan, a0) == []
    monitor = ConflictMonitor(a0)
    assert monitor.observe(0.0, a0.phases[0].greens) == a0.phases[0].greens and not monitor.tripped


def test_only_the_pairs_the_approved_program_shows_protected_together_are_accepted(resolved) -> None:
    """The permissive left of stage 2 (``g`` beside the opposing ``G``) made protected: refused everywhere.

    The junction would resolve it (the left gives way), but the approved
    program never showed it protected: the project does not invent pairs.
    """
    a0 = resolved.corridor.by_id()["a0"]
    plan = a0.default_plan()
    stage = plan.phases[1]
    assert stage.greens[5] == "g" and stage.greens[10] == "G" and (5, 10) in a0.foes
    greens = stage.greens[:5] + "G" + stage.greens[6:]
    bad = replace(plan, phases=(plan.phases[0], replace(stage, greens=greens), *plan.phases[2:]))
    for check in (centre_check, field_check):
        messages = [v.detail for v in check(bad, a0) if v.rule == "CONFLICT"]
        assert any("5 and 10 both protected" in m for m in messages), check
    monitor = ConflictMonitor(a0)
    assert monitor.observe(0.0, greens) == monitor.flash_state
    assert monitor.tripped and "foe groups 5 and" in monitor.reason and "both protected" in monitor.reason


def test_unresolved_crossing_leaves_the_signal_on_its_own_program_with_the_movements_named(unresolved) -> None:
    corridor = unresolved.corridor
    assert corridor.uncontrolled == ("A0",)
    assert [s.tls_id for s in corridor.intersections] == ["B0"]
    finding = next(f for f in corridor.findings if f.tls_id == "A0")
    assert finding.rule == "UNRESOLVED_FOES"
    assert "top0A0 -> A0bottom0" in finding.message and "B0A0 -> A0left0" in finding.message
    assert "check the signal program" in finding.advice


def test_site_check_reports_the_refused_signal_and_exit_codes(unresolved, tmp_path) -> None:
    report = check_site(unresolved.sumocfg)
    assert report.exit_code == USABLE_WITH_FINDINGS
    text = render(report)
    assert "A0: UNRESOLVED_FOES" in text and "B0 -> controller b0" in text
    doc = report.to_dict()
    assert doc["uncontrolled"] == ["A0"] and [s["tls_id"] for s in doc["signals"]] == ["B0"]
    assert check_site(tmp_path / "missing.sumocfg").exit_code == UNUSABLE
    (tmp_path / "broken.net.xml").write_text("<net><edge")
    assert check_site(tmp_path / "broken.net.xml").exit_code == UNUSABLE


def test_only_refused_signal_means_unusable(tmp_path) -> None:
    net = _corridor_net(tmp_path, UNRESOLVED_PROGRAM)
    tree = ET.parse(net)
    root = tree.getroot()
    for logic in root.iter("tlLogic"):  # give B0 the same unresolved program
        if logic.get("id") == "B0":
            for phase in list(logic):
                logic.remove(phase)
            for state in UNRESOLVED_PROGRAM:
                ET.SubElement(logic, "phase", duration="30", state=state)
    tree.write(net)
    assert check_site(net).exit_code == UNUSABLE
    corridor = corridor_from_net(net, site="t")  # SUMO still runs it: every signal keeps its own program
    assert corridor.intersections == () and corridor.uncontrolled == ("A0", "B0")


def test_no_controllable_signal_still_runs_every_control_to_the_end(tmp_path) -> None:
    """Both signals refused: each control runs the network's own programs and returns KPIs (never crashes)."""
    net = _corridor_net(tmp_path, UNRESOLVED_PROGRAM)
    tree = ET.parse(net)
    for logic in tree.getroot().iter("tlLogic"):
        if logic.get("id") == "B0":
            for phase in list(logic):
                logic.remove(phase)
            for state in UNRESOLVED_PROGRAM:
                ET.SubElement(logic, "phase", duration="3" if "y" in state else "30", state=state)
    tree.write(net)
    subprocess.run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o",
                    str(tmp_path / "t.trips.xml"), "-r", str(tmp_path / "c.rou.xml"), "-e", "200", "-p", "3",
                    "--seed", "5", "--validate"], check=True, capture_output=True)
    (tmp_path / "c.sumocfg").write_text(
        '<configuration><input><net-file value="net.net.xml"/><route-files value="c.rou.xml"/></input>'
        '<time><begin value="0"/><end value="250"/></time></configuration>')
    scenario = load_scenario(tmp_path, detectors_dir=tmp_path / "det")
    assert scenario.corridor.intersections == ()
    for name in ("actuated-safe", "max-pressure", "adaptive"):
        kpis = control(name)(scenario, 1, 0, 250, tmp_path / name)
        assert kpis.vehicles > 30, name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["actuated-safe", "max-pressure", "adaptive"])
def test_every_control_runs_to_the_end_with_the_refused_signal_on_its_own_program(unresolved, name, tmp_path) -> None:
    """A0's own program (two crossing throughs both green) jams in SUMO; the run still ends with KPIs."""
    scenario = controllable(unresolved)
    assert [s.tls_id for s in scenario.corridor.intersections] == ["B0"]
    kpis = control(name)(scenario, 1, 0, 500, tmp_path)
    assert kpis.vehicles > 100 and kpis.completed > 50


def test_sim_run_prints_the_signals_left_on_their_own_program(unresolved, tmp_path, capsys) -> None:
    from app.cli import main

    code = main(["sim", "run", "--scenario", str(unresolved.sumocfg), "--control", "actuated-safe", "--seed", "1",
                 "--end", "200", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 left on their own program" in out and "A0: UNRESOLVED_FOES" in out
    import json

    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["controlled"] == ["B0"] and any(f["tls_id"] == "A0" for f in doc["findings"])
