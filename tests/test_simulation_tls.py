"""Plan -> SUMO tlLogic: the XML, and SUMO running it (read back through libsumo)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulation.corridor import generate_corridor
from simulation.tls_program import plan_to_tllogic_xml, write_plans_additional
from traffic.errors import SimulationError
from traffic.signals import cycle_intervals, cycle_start_offset


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("tls"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=300)


def test_tllogic_follows_cycle_intervals(scenario) -> None:
    spec = scenario.corridor.intersections[0]
    plan = spec.plan_from_splits([40.3, 35.0], offset_s=17.0)
    el = ET.fromstring(plan_to_tllogic_xml(plan, spec.tls_id, "opt"))
    assert el.get("type") == "static" and el.get("programID") == "opt" and el.get("id") == spec.tls_id
    assert float(el.get("offset")) == pytest.approx(cycle_start_offset(plan))
    phases = [(float(p.get("duration")), p.get("state")) for p in el.findall("phase")]
    assert phases == [(i.duration, i.state) for i in cycle_intervals(plan)]
    assert sum(d for d, _ in phases) == pytest.approx(plan.patternCycleTime)
    # change intervals carry yellow, then all red between the two stages
    assert "y" in phases[1][1] and set(phases[2][1]) == {"r"}


def test_inconsistent_plan_is_refused(scenario) -> None:
    spec = scenario.corridor.intersections[0]
    plan = spec.plan_from_splits([40.0, 35.0])
    from dataclasses import replace
    broken = replace(plan, patternCycleTime=80.0)
    with pytest.raises(SimulationError, match="patternCycleTime"):
        plan_to_tllogic_xml(broken, spec.tls_id, "x")
    with pytest.raises(SimulationError):
        plan_to_tllogic_xml(plan, "", "x")


def test_sumo_runs_the_written_program(scenario, tmp_path: Path) -> None:
    import libsumo

    specs = scenario.corridor.intersections
    plans = {s.tls_id: s.plan_from_splits([40.3, 35.0], offset_s=17.0 + 10 * k) for k, s in enumerate(specs)}
    add = write_plans_additional(plans, tmp_path / "plans.add.xml", program_id="opt")
    libsumo.start(["sumo", "-n", str(scenario.net_file), "-a", str(add), "--no-step-log", "true",
                   "--no-warnings", "true"])
    try:
        for spec in specs:
            tls = spec.tls_id
            assert libsumo.trafficlight.getProgram(tls) == "opt"  # the loaded program is active
            logic = next(lg for lg in libsumo.trafficlight.getAllProgramLogics(tls) if lg.programID == "opt")
            got = [(round(p.duration, 1), p.state) for p in logic.phases]
            assert got == [(i.duration, i.state) for i in cycle_intervals(plans[tls])]
        # offset: the first interval starts at offset + k * cycle (within one 1 s step)
        tls = specs[0].tls_id
        plan = plans[tls]
        starts, previous = [], None
        for _ in range(260):
            phase = libsumo.trafficlight.getPhase(tls)
            if phase == 0 and previous not in (None, 0):
                starts.append(libsumo.simulation.getTime())
            previous = phase
            libsumo.simulationStep()
    finally:
        libsumo.close()
    offset = cycle_start_offset(plan)
    expected = [offset + k * plan.patternCycleTime for k in range(3)]
    assert len(starts) >= 3
    for got, want in zip(starts, expected, strict=False):
        assert want <= got <= want + 1.0 + 1e-6


@settings(max_examples=50, deadline=None)
@given(extra=st.lists(st.floats(0, 60), min_size=2, max_size=2), offset=st.floats(0, 500))
def test_tllogic_cycle_and_offset_properties(scenario, extra, offset) -> None:
    spec = scenario.corridor.intersections[0]
    splits = [p.min_split_s + e for p, e in zip(spec.phases, extra, strict=False)]
    plan = spec.plan_from_splits(splits, offset_s=offset)
    el = ET.fromstring(plan_to_tllogic_xml(plan, spec.tls_id, "p"))
    durations = [float(p.get("duration")) for p in el.findall("phase")]
    assert sum(durations) == pytest.approx(plan.patternCycleTime, abs=0.051)
    assert 0.0 <= float(el.get("offset")) < plan.patternCycleTime + 0.05
    assert all(len(p.get("state")) == spec.link_count for p in el.findall("phase"))
    # no signal group jumps from green straight to red: a yellow always comes between
    states = [p.get("state") for p in el.findall("phase")]
    for a, b in zip(states, states[1:] + states[:1], strict=False):
        for x, y in zip(a, b, strict=False):
            assert not (x in "Gg" and y == "r")


def test_actuated_and_free_plans_become_sumo_actuated_programs(scenario, tmp_path: Path) -> None:
    from dataclasses import replace

    import libsumo

    spec = scenario.corridor.intersections[0]
    fixed = spec.plan_from_splits([40.3, 35.0])
    for mode in ("actuated", "free"):
        plan = replace(fixed, mode=mode)
        el = ET.fromstring(plan_to_tllogic_xml(plan, spec.tls_id, "act"))
        assert el.get("type") == "actuated"
        greens = [p for p in el.findall("phase") if p.get("name", "").endswith("-green")]
        for phase_el, timing in zip(greens, plan.phases, strict=False):
            min_green = max(timing.phaseMinimumGreen, timing.phaseWalk + timing.phasePedestrianClear)
            assert float(phase_el.get("minDur")) == pytest.approx(min_green)
            assert float(phase_el.get("maxDur")) == pytest.approx(max(min_green, timing.phaseMaximum1))
        # change intervals are not stretched by actuation
        assert all(p.get("minDur") is None for p in el.findall("phase") if not p.get("name", "").endswith("-green"))
    # SUMO loads it as an actuated program whose greens vary with traffic
    add = write_plans_additional({spec.tls_id: replace(fixed, mode="free")}, tmp_path / "act.add.xml", "act")
    additional = ",".join([*map(str, scenario.additional_files), str(add)])
    libsumo.start(["sumo", "-c", str(scenario.sumocfg), "-a", additional,
                   "--no-step-log", "true", "--no-warnings", "true"])
    try:
        logic = next(lg for lg in libsumo.trafficlight.getAllProgramLogics(spec.tls_id) if lg.programID == "act")
        assert logic.type == 3  # TRAFFICLIGHT_TYPE_ACTUATED
        assert libsumo.trafficlight.getProgram(spec.tls_id) == "act"
    finally:
        libsumo.close()
