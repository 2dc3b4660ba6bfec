"""The validation gate: the pure decision rule, then accept and reject with real SUMO."""

from __future__ import annotations

import pytest

from simulation.corridor import generate_corridor
from simulation.gate import ENTRY_STUCK_S, judge, mean_kpis, validate
from simulation.kpi import Kpis
from traffic.errors import SimulationError


def _k(delay: float, undeparted: int = 0, teleports: int = 0, waited: float = 0.0) -> Kpis:
    return Kpis(mean_delay_s=delay, mean_trip_time_s=100.0, mean_waiting_s=10.0, mean_stops=1.0, vehicles=100,
                completed=90, undeparted=undeparted, teleports=teleports, throughput_veh_h=360.0, wall_s=1.0,
                undeparted_wait_max_s=waited)


def test_judge_rules() -> None:
    assert judge([_k(50), _k(52)], [_k(60), _k(62)], margin=0.02)[0]
    # within the margin: accepted; beyond it: rejected, and the reason carries the numbers
    assert judge([_k(61)], [_k(60)], margin=0.02)[0]
    ok, reason = judge([_k(61.5)], [_k(60)], margin=0.02)
    assert not ok and "61.5" in reason and "60.0" in reason
    ok, reason = judge([_k(40, undeparted=3, waited=ENTRY_STUCK_S + 1)], [_k(60, undeparted=1)], margin=0.02)
    assert not ok and "undeparted" in reason
    # more undeparted, but every one of them due in the window's last seconds: an insertion slip, not spillback
    assert judge([_k(40, undeparted=3, waited=2.0)], [_k(60, undeparted=1)], margin=0.02)[0]
    assert not judge([_k(40, undeparted=3, waited=2.0), _k(40, undeparted=1, waited=ENTRY_STUCK_S + 5)],
                     [_k(60, undeparted=1), _k(60)], margin=0.02)[0]
    ok, reason = judge([_k(40, teleports=1)], [_k(60)], margin=0.02)
    assert not ok and "teleport" in reason
    assert mean_kpis([_k(50), _k(70)])["mean_delay_s"] == pytest.approx(60.0)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("gate"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=600)


def test_bad_arguments(scenario) -> None:
    plans = {s.tls_id: s.default_plan() for s in scenario.corridor.intersections}
    with pytest.raises(SimulationError):
        validate(scenario, candidate=plans, incumbent=plans, seeds=(), begin=0, end=60)
    with pytest.raises(SimulationError):
        validate(scenario, candidate={}, incumbent=plans, begin=0, end=60)
    with pytest.raises(SimulationError):
        validate(scenario, candidate=plans, incumbent=plans, begin=0, end=60, margin=-0.1)


@pytest.mark.slow
def test_gate_accepts_better_and_rejects_starving_plans(scenario) -> None:
    specs = scenario.corridor.intersections
    # legacy: equal share of the spare time, long cycle
    incumbent = {s.tls_id: s.default_plan(100.0) for s in specs}
    # better: arterial gets the time, shorter cycle, offsets progress eastbound at 50 km/h
    better = {s.tls_id: s.plan_from_splits([38.0, 32.0], offset_s=k * 300 / 13.89) for k, s in enumerate(specs)}
    # terrible but safe: the arterial starved down to its minimum split
    starving = {s.tls_id: s.plan_from_splits([s.phases[0].min_split_s, 80.0]) for s in specs}

    good = validate(scenario, candidate=better, incumbent=incumbent, begin=0, end=420)
    assert good.accepted, good.reason
    assert good.candidate["mean_delay_s"] < good.incumbent["mean_delay_s"]
    assert good.delay_change < 0
    assert [r["seed"] for r in good.per_seed_candidate] == [1, 2]

    bad = validate(scenario, candidate=starving, incumbent=incumbent, begin=0, end=420)
    assert not bad.accepted
    assert "mean delay" in bad.reason or "undeparted" in bad.reason
    assert bad.candidate["mean_delay_s"] > bad.incumbent["mean_delay_s"]
    # same incumbent runs, same seeds: identical numbers (common random numbers)
    assert bad.incumbent == {**good.incumbent, "wall_s": bad.incumbent["wall_s"]}
    assert bad.to_dict()["accepted"] is False and bad.wall_s > 0


def test_empty_incumbent_means_the_network_program(scenario) -> None:
    from simulation.runner import run

    plans = {s.tls_id: s.default_plan(60.0) for s in scenario.corridor.intersections}
    verdict = validate(scenario, candidate=plans, incumbent={}, seeds=(4,), begin=0, end=180, processes=1)
    network_program = run(scenario, seed=4, end=180)
    assert verdict.incumbent["mean_delay_s"] == pytest.approx(network_program.mean_delay_s)
    assert verdict.seeds == (4,) and len(verdict.per_seed_incumbent) == 1
