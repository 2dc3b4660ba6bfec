"""The sumo batch runner: options, plan injection, failures mapped to SimulationError."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulation.corridor import generate_corridor
from simulation.runner import RunJob, build_command, merge_options, plans_by_tls, run, run_many
from traffic.errors import SimulationError


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("run"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=300, demand_scale=0.6)


def test_merge_options_last_wins() -> None:
    merged = merge_options(["--lateral-resolution", "0.8", "--time-to-teleport", "-1"],
                           ["--time-to-teleport", "300", "--no-warnings"], ["--lateral-resolution", "1.6"])
    assert merged == ["--time-to-teleport", "300", "--no-warnings", "--lateral-resolution", "1.6"]
    with pytest.raises(SimulationError):
        merge_options(["0.8"])


def test_command_has_required_options(scenario, tmp_path: Path) -> None:
    cmd = build_command(scenario, seed=7, begin=0, end=300, tripinfo=tmp_path / "t.xml",
                        statistics=tmp_path / "s.xml", additional_files=scenario.additional_files,
                        route_files=scenario.route_files)
    text = " ".join(cmd)
    for needle in ("--seed 7", "--tripinfo-output.write-undeparted true", "--time-to-teleport -1",
                   "--no-step-log true", "--lateral-resolution 0.8", "--ignore-junction-blocker 20",
                   "--collision.action warn"):
        assert needle in text
    names = [c for c in cmd if c.startswith("--")]
    assert len(names) == len(set(names))  # SUMO refuses an option given twice
    with pytest.raises(SimulationError, match="runner"):
        build_command(scenario, seed=1, begin=0, end=10, tripinfo=tmp_path / "t", statistics=tmp_path / "s",
                      additional_files=(), route_files=(), extra_options=("--seed", "3"))


def test_plans_change_the_outcome_and_seeds_are_reproducible(scenario) -> None:
    specs = scenario.corridor.intersections
    starving = {s.tls_id: s.plan_from_splits([s.phases[0].min_split_s, 80.0]) for s in specs}
    jobs = [RunJob(scenario, seed=3, end=240), RunJob(scenario, seed=3, end=240),
            RunJob(scenario, seed=3, end=240, plans=starving)]
    base, again, starved = run_many(jobs, processes=2)
    assert base.to_dict() | {"wall_s": 0} == again.to_dict() | {"wall_s": 0}
    assert starved.mean_delay_s > base.mean_delay_s


def test_failures_are_simulation_errors(scenario, tmp_path: Path) -> None:
    bad = tmp_path / "bad.rou.xml"
    bad.write_text('<routes><flow id="f" begin="0" end="60" vehsPerHour="100" from="nope" to="J1_W"/></routes>')
    with pytest.raises(SimulationError, match="nope"):
        run(scenario, seed=1, end=60, route_files=[bad])
    with pytest.raises(SimulationError, match="does not exist"):
        run(scenario, seed=1, end=60, route_files=[tmp_path / "missing.rou.xml"])
    with pytest.raises(SimulationError, match="unknown TLS"):
        run(scenario, seed=1, end=60, plans={"X9": scenario.corridor.intersections[0].default_plan()})
    spec = scenario.corridor.intersections[0]
    short = spec.plan_from_splits([40.0, 40.0])
    from dataclasses import replace
    short = replace(short, phases=tuple(replace(p, greens=p.greens[:-1]) for p in short.phases))
    with pytest.raises(SimulationError, match="signal groups"):
        run(scenario, seed=1, end=60, plans={spec.tls_id: short})
    with pytest.raises(SimulationError):
        run(scenario, seed=1, begin=100, end=50)
    with pytest.raises(SimulationError):
        run_many([RunJob(scenario, seed=1, end=60, route_files=(bad,))], processes=1)


def test_plans_by_tls(scenario) -> None:
    plans = [s.default_plan() for s in scenario.corridor.intersections]
    keyed = plans_by_tls(scenario, plans)
    assert {k: p.controller_id for k, p in keyed.items()} == {"J1": "j1", "J2": "j2"}
    with pytest.raises(SimulationError, match="two plans"):
        plans_by_tls(scenario, plans + plans[:1])
    from dataclasses import replace
    with pytest.raises(SimulationError, match="unknown controller"):
        plans_by_tls(scenario, [replace(plans[0], controller_id="zz")])


def test_workdir_keeps_outputs(scenario, tmp_path: Path) -> None:
    k = run(scenario, seed=2, end=60, workdir=tmp_path / "out")
    assert list((tmp_path / "out").glob("tripinfo-*.xml"))
    assert k.vehicles > 0
