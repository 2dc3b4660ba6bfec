"""Actuated plans from the optimizer: maximum greens, mode, and the safety rules they keep."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.actuation import actuate, max_greens
from controller.demand import PhaseDemand
from controller.optimizer import optimize
from controller.safety import check_plan
from field_firmware_stubs.samples import four_leg
from traffic.config import OptimizerSettings
from traffic.errors import PlanError

SPEC = four_leg()


def test_max_green_is_factor_times_green_within_floor_and_cap():
    out = max_greens([10.0, 30.0, 2.0, 50.0], [5.0, 5.0, 5.0, 5.0], factor=2.0, floor_s=20.0, cap_s=70.0)
    assert out == [20.0, 60.0, 20.0, 70.0]


def test_max_green_never_below_minimum_green_even_with_a_low_cap():
    assert max_greens([10.0], [25.0], factor=1.0, floor_s=0.0, cap_s=15.0) == [25.0]


@pytest.mark.parametrize("kwargs", [dict(factor=0.0, floor_s=1.0, cap_s=1.0), dict(factor=1.0, floor_s=-1, cap_s=1.0),
                                    dict(factor=1.0, floor_s=1.0, cap_s=0.0)])
def test_max_green_refuses_nonsense_parameters(kwargs):
    with pytest.raises(PlanError):
        max_greens([10.0], [5.0], **kwargs)


def test_actuate_keeps_splits_cycle_offset_and_sets_mode_and_passage():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=17.0)
    out = actuate(plan, SPEC, [p.green for p in plan.phases], mode="free", factor=2.0, floor_s=20.0,
                  cap_s=60.0, passage_s=2.5)
    assert out.mode == "free" and out.splits == plan.splits and out.patternOffsetTime == plan.patternOffsetTime
    assert all(p.phasePassage == 2.5 for p in out.phases)
    assert [p.phaseMaximum1 for p in out.phases] == max_greens([p.green for p in plan.phases],
                                                                [max(p.phaseMinimumGreen, p.phaseWalk +
                                                                     p.phasePedestrianClear) for p in plan.phases],
                                                                factor=2.0, floor_s=20.0, cap_s=60.0)
    assert check_plan(out, SPEC) == []
    with pytest.raises(PlanError):
        actuate(plan, SPEC, [1.0] * 4, mode="adaptive", factor=2.0, floor_s=20.0, cap_s=60.0, passage_s=2.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1200), min_size=4, max_size=4), st.sampled_from(["free", "actuated", "pretimed"]),
       st.floats(1.0, 3.0), st.floats(0.0, 40.0))
def test_optimizer_plans_are_always_safe_whatever_the_demand_and_actuation(flows, mode, factor, floor):
    settings_ = OptimizerSettings(plan_mode=mode, max_green_factor=factor, max_green_floor_s=floor)
    phases = tuple(p.phase for p in SPEC.phases)
    demand = PhaseDemand(SPEC.controller_id, None, None, phases, tuple(flows), tuple(flows))
    proposal = optimize(SPEC, demand, SPEC.default_plan(90), settings_, version=2)
    plan = proposal.plan
    assert check_plan(plan, SPEC) == [] and plan.mode == mode
    for p in plan.phases:
        design = SPEC.phase(p.phase)
        assert p.green >= design.min_green_s - 1e-6
        assert p.phaseMaximum1 >= p.phaseMinimumGreen
    assert proposal.explanation["mode"] == mode
