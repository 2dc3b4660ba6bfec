"""Clearance policy as site configuration (issue #14 a): ITE by default, the agency's own intervals
within the project's floor, enforced by both plan checks, named in every plan's explanation."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from controller import safety
from controller.demand import PhaseDemand
from controller.examples import four_leg, uniform_corridor
from controller.optimizer import optimize, optimize_corridor
from field_firmware_stubs import plan_check
from traffic.clearance import (
    FLOOR_RED_CLEAR_S,
    FLOOR_YELLOW_S,
    ClearancePolicy,
    ceil_to_step,
    parse_approaches,
    policy_red_clear_s,
    policy_yellow_s,
)
from traffic.config import ClearanceSettings, OptimizerSettings, load_settings
from traffic.errors import ConfigError, ScenarioError
from traffic.intersection import IntersectionSpec, PhaseSpec
from traffic.rules import RED_CLEAR, YELLOW

OPT = OptimizerSettings()
NUMBERS = st.floats(min_value=-5.0, max_value=12.0) | st.sampled_from(
    [float("nan"), float("inf"), 2.99, 3.0, 0.99, 1.0])


def _rules(violations) -> set[str]:
    return {v.rule for v in violations}


def _both(plan, spec) -> tuple[set[str], set[str]]:
    return _rules(safety.check_plan(plan, spec)), _rules(plan_check.check_plan(plan, spec))


# ---- the floor: no configuration can go below it ----------------------------------------------------------


@hsettings(max_examples=200, deadline=None)
@given(yellow=NUMBERS, red=NUMBERS)
def test_no_setting_below_the_floor(yellow, red):
    try:
        settings = ClearanceSettings(policy="agency", yellow_s=yellow, red_clear_s=red)
    except ConfigError:
        return
    policy = settings.to_policy()
    assert policy.yellow_s >= FLOOR_YELLOW_S and policy.red_clear_s >= FLOOR_RED_CLEAR_S
    spec = four_leg("c1").with_clearance(policy)
    assert all(p.yellow_s >= FLOOR_YELLOW_S and p.red_clear_s >= FLOOR_RED_CLEAR_S for p in spec.phases)


@hsettings(max_examples=200, deadline=None)
@given(yellow=NUMBERS, red=NUMBERS)
def test_no_policy_or_phase_below_the_floor(yellow, red):
    try:
        policy = ClearancePolicy("agency", "x", yellow, red)
    except ValueError:
        assert not (FLOOR_YELLOW_S <= yellow <= 6.0 and FLOOR_RED_CLEAR_S <= red <= 6.0)
        return
    assert policy.yellow_s >= FLOOR_YELLOW_S and policy.red_clear_s >= FLOOR_RED_CLEAR_S
    with pytest.raises(ScenarioError) if yellow < FLOOR_YELLOW_S else _nothing():
        PhaseSpec(1, "Gr", 13.9, agency_yellow_s=yellow)


@hsettings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="J12:=/.;, 0345", max_size=30))
def test_approach_overrides_are_within_the_floor_or_refused(text):
    try:
        parsed = parse_approaches(text)
    except ValueError:
        with pytest.raises(ConfigError):
            ClearanceSettings(policy="agency", approaches=text)
        return
    for y, r in parsed.values():
        assert y >= FLOOR_YELLOW_S and r >= FLOOR_RED_CLEAR_S


@hsettings(max_examples=200, deadline=None)
@given(spec_y=st.floats(0.0, 8.0), spec_r=st.floats(0.0, 8.0), plan_y=st.floats(0.0, 7.0),
       plan_r=st.floats(0.0, 7.0), speed=st.floats(3.0, 25.0), width=st.floats(0.0, 40.0))
def test_both_checks_never_pass_an_interval_below_the_floor(spec_y, spec_r, plan_y, plan_r, speed, width):
    """Even a spec carrying below-floor agency values (built around the constructor) cannot lower the floor."""
    spec = four_leg("c1", speed_mps=speed)
    phases = []
    for p in spec.phases:
        p = replace(p, clearance_width_m=width)
        object.__setattr__(p, "agency_yellow_s", round(spec_y, 1))
        object.__setattr__(p, "agency_red_clear_s", round(spec_r, 1))
        phases.append(p)
    spec = replace(spec, phases=tuple(phases))
    plan = spec.default_plan(120.0)
    plan = replace(plan, phases=tuple(replace(t, phaseYellowChange=round(plan_y, 1), phaseRedClear=round(plan_r, 1),
                                              splitTime=t.splitTime) for t in plan.phases))
    centre, field = _both(plan, spec)
    if round(plan_y, 1) < FLOOR_YELLOW_S - 0.05:
        assert YELLOW in centre and YELLOW in field
    if round(plan_r, 1) < FLOOR_RED_CLEAR_S - 0.05:
        assert RED_CLEAR in centre and RED_CLEAR in field


# ---- the configured policy is what both checks enforce ----------------------------------------------------


def test_agency_policy_is_enforced_by_both_checks():
    ite = four_leg("c1")
    agency = ite.with_clearance(ClearancePolicy("agency", "QCVN", 3.0, 1.0))
    assert agency.clearance_policy == "agency:QCVN" and ite.clearance_policy == "ite"
    assert all(p.yellow_s == 3.0 and p.red_clear_s == 1.0 for p in agency.phases)
    short = agency.default_plan(90.0)
    assert _both(short, agency) == (set(), set())
    # the same 3 s / 1 s plan is refused where the site runs ITE (longer intervals at this speed)
    assert any(p.yellow_s > 3.0 or p.red_clear_s > 1.0 for p in ite.phases)
    centre, field = _both(replace(short, controller_id=ite.controller_id), ite)
    assert {YELLOW, RED_CLEAR} & centre and {YELLOW, RED_CLEAR} & field
    # and an agency plan shorter than the agency's own value is refused too
    stricter = ite.with_clearance(ClearancePolicy("agency", "", 4.0, 2.0))
    centre, field = _both(short, stricter)
    assert {YELLOW, RED_CLEAR} <= centre and {YELLOW, RED_CLEAR} <= field


def test_per_approach_overrides_win_over_the_site_pair():
    spec = four_leg("c1")
    policy = ClearancePolicy("agency", "", 3.0, 1.0, parse_approaches(f"{spec.tls_id}:{spec.phases[1].phase}=4.5/2.0"))
    out = spec.with_clearance(policy)
    assert (out.phases[0].yellow_s, out.phases[0].red_clear_s) == (3.0, 1.0)
    assert (out.phases[1].yellow_s, out.phases[1].red_clear_s) == (4.5, 2.0)


def test_ite_red_clearance_never_below_the_floor():
    # a narrow junction at speed: ITE (W + L) / v = (1 + 6.1) / 15 = 0.5 s; the floor gives 1 s
    assert policy_red_clear_s(15.0, 1.0) == FLOOR_RED_CLEAR_S
    assert policy_yellow_s(5.0) == FLOOR_YELLOW_S
    assert policy_yellow_s(13.9, agency_s=3.5) == 3.5


def test_ite_policy_takes_no_intervals():
    with pytest.raises(ValueError):
        ClearancePolicy("ite", "", 3.0, 1.0)
    with pytest.raises(ConfigError, match="approaches apply to policy 'agency'"):
        ClearanceSettings(policy="ite", approaches="J1=3/1")


def test_policy_from_environment_and_refused_below_floor():
    settings = load_settings(env={"TRAFFIC_CLEARANCE_POLICY": "agency", "TRAFFIC_CLEARANCE_YELLOW_S": "3.0",
                                  "TRAFFIC_CLEARANCE_RED_CLEAR_S": "1.5", "TRAFFIC_CLEARANCE_LABEL": "QCVN 41"},
                             path=None)
    assert settings.clearance.to_policy().name == "agency:QCVN 41"
    with pytest.raises(ConfigError, match=r"clearance.red_clear_s: 0.5 is out of range .*floor"):
        load_settings(env={"TRAFFIC_CLEARANCE_POLICY": "agency", "TRAFFIC_CLEARANCE_RED_CLEAR_S": "0.5"})
    with pytest.raises(ConfigError, match=r"clearance.yellow_s: 2.5"):
        load_settings(env={"TRAFFIC_CLEARANCE_POLICY": "agency", "TRAFFIC_CLEARANCE_YELLOW_S": "2.5"})


def test_policy_named_in_every_plan_explanation_and_survives_serialisation():
    corridor = uniform_corridor(3).with_clearance(ClearancePolicy("agency", "QCVN", 3.0, 1.5))
    for spec in corridor.intersections:
        assert IntersectionSpec.from_dict(spec.to_dict()) == spec
    demands = {s.controller_id: PhaseDemand(s.controller_id, None, None, tuple(p.phase for p in s.phases),
                                            (600.0,) * len(s.phases), (600.0,) * len(s.phases))
               for s in corridor.intersections}
    incumbents = {s.controller_id: s.default_plan() for s in corridor.intersections}
    versions = {s.controller_id: 2 for s in corridor.intersections}
    for mode in ("free", "actuated"):
        out = optimize_corridor(corridor, demands, incumbents, replace(OPT, plan_mode=mode), versions)
        for proposal in out.values():
            assert proposal.explanation["clearance_policy"] == "agency:QCVN"
            assert all(t.phaseYellowChange == 3.0 and t.phaseRedClear == 1.5 for t in proposal.plan.phases)
    single = corridor.intersections[0]
    one = optimize(single, demands[single.controller_id], incumbents[single.controller_id], OPT, version=3)
    assert one.explanation["clearance_policy"] == "agency:QCVN"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@given(st.floats(min_value=0.0, max_value=20.0, allow_nan=False), st.sampled_from([0.1, 0.5, 1.0]))
def test_an_interval_rounded_to_whole_steps_is_never_shorter_and_less_than_a_step_longer(value, step) -> None:
    shown = ceil_to_step(value, step)
    if value == 0.0:
        assert shown == 0.0
        return
    assert shown >= value - 1e-6 * step and shown - value < step + 1e-9  # within the float-noise guard
    assert abs(shown / step - round(shown / step)) < 1e-6
    assert ceil_to_step(3.3, 1.0) == 4.0 and ceil_to_step(2.0, 1.0) == 2.0 and ceil_to_step(1.7, 0.5) == 2.0
