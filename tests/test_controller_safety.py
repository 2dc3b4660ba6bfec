"""Central safety rules: one failing and one passing example per rule, plus properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import safety
from controller.examples import four_leg, three_phase
from traffic.clearance import pedestrian_clear_s, red_clearance_s, yellow_change_s
from traffic.errors import ScenarioError, UnsafePlanError
from traffic.plan import TimingPlan

SPEC = four_leg("c1")
SPEC3 = three_phase("c3")


def base() -> TimingPlan:
    return SPEC.plan_from_splits([40.0, 30.0])


def with_phase(plan: TimingPlan, index: int, **changes) -> TimingPlan:
    phases = list(plan.phases)
    phases[index] = replace(phases[index], **changes)
    return replace(plan, phases=tuple(phases))


def rules(plan: TimingPlan, spec=SPEC) -> set[str]:
    return {v.rule for v in safety.check_plan(plan, spec)}


def test_base_plans_pass():
    assert safety.check_plan(base(), SPEC) == []
    assert safety.check_plan(SPEC3.default_plan(), SPEC3) == []
    safety.ensure_safe(base(), SPEC)  # does not raise


# (mutation, rule expected) — each row is a failing example of exactly one rule;
# the passing example for every rule is the base plan above plus the near-miss cases below.
FAILING = [
    ("IDENTITY", lambda p: replace(p, controller_id="other")),
    ("PHASES", lambda p: with_phase(p, 1, phase=9)),                      # unknown phase
    ("PHASES", lambda p: with_phase(p, 0, greens="GgGgrrr")),              # wrong length
    ("PHASES", lambda p: with_phase(p, 0, greens="GgGgrrry")),             # bad letter
    ("CYCLE_SUM", lambda p: replace(p, patternCycleTime=70.2)),
    ("CYCLE_RANGE", lambda p: p.with_splits([120.0, 70.0], plan_id=p.plan_id)),
    ("OFFSET", lambda p: replace(p, patternOffsetTime=70.0)),
    ("OFFSET", lambda p: replace(p, patternOffsetTime=-1.0)),
    ("COORD_PHASE", lambda p: replace(p, splitCoordPhase=3)),
    ("MIN_GREEN", lambda p: with_phase(p, 0, phaseMinimumGreen=6.0, phaseMaximum1=30.0)),
    ("MAX_GREEN", lambda p: with_phase(p, 1, phaseMaximum1=4.9)),
    ("MAX_GREEN", lambda p: with_phase(p, 1, phasePassage=0.0)),
    ("PHASES", lambda p: with_phase(p, 1, phaseWalk=-1.0)),               # negative time on a no-ped phase
    ("YELLOW", lambda p: with_phase(p, 1, phaseYellowChange=3.2)),
    ("YELLOW", lambda p: with_phase(p, 1, phaseYellowChange=6.1)),
    ("RED_CLEAR", lambda p: with_phase(p, 1, phaseRedClear=1.5)),
    ("PED_WALK", lambda p: with_phase(p, 0, phaseWalk=6.9)),
    ("PED_CLEAR", lambda p: with_phase(p, 0, phasePedestrianClear=SPEC.phases[0].ped_clear_s - 1.0)),
    ("CONFLICT", lambda p: with_phase(p, 1, greens="rrrgGgGg")),           # S left with E-W
    ("CONFLICT", lambda p: with_phase(p, 0, greens="GgGGrrrr")),           # foes 0 and 3 both G
    ("SERVES_ALL", lambda p: with_phase(p, 1, greens="rrrrGgGr")),         # group 7 never green
]


@pytest.mark.parametrize("rule,mutate", FAILING, ids=[f"{r}-{i}" for i, (r, _) in enumerate(FAILING)])
def test_each_rule_fails_alone(rule, mutate):
    plan = mutate(base())
    found = safety.check_plan(plan, SPEC)
    assert {v.rule for v in found} == {rule}, found
    with pytest.raises(UnsafePlanError) as info:
        safety.ensure_safe(plan, SPEC)
    assert rule in info.value.rules


def test_duplicate_phase_number():
    plan = with_phase(base(), 1, phase=1)
    found = rules(plan)
    assert "PHASES" in found  # also judged against phase 1's design data, so more rules fire


def test_min_green_by_split_and_ped_total():
    # green = 12.9 - 3.3 - 1.6 = 8.0 >= 7 but < walk 7 + ped 13.1 -> only PED_CLEAR
    plan = SPEC.plan_from_splits([12.9, 30.0])
    assert rules(plan) == {"PED_CLEAR"}
    # phase 2 green 4.9 < 5 -> MIN_GREEN
    plan = SPEC.plan_from_splits([40.0, 9.8])
    assert rules(plan) == {"MIN_GREEN"}


PASSING_NEAR_MISS = [
    lambda p: with_phase(p, 1, phaseYellowChange=3.26),   # within 0.05 of ITE 3.3
    lambda p: with_phase(p, 1, phaseYellowChange=6.0),     # at the cap
    lambda p: with_phase(p, 1, phaseRedClear=1.56),
    lambda p: with_phase(p, 0, phaseWalk=6.96),
    lambda p: with_phase(p, 0, phasePedestrianClear=13.06),
    lambda p: replace(p, patternCycleTime=70.04),
    lambda p: replace(p, patternOffsetTime=69.9),
    lambda p: with_phase(p, 1, phaseMaximum1=5.0),
    lambda p: with_phase(p, 0, greens="ggggrrrr"),   # all permissive: foes may share a phase when they yield
]


def test_near_misses_pass():
    for mutate in PASSING_NEAR_MISS:
        plan = mutate(base())
        assert safety.check_plan(plan, SPEC) == [], plan


def test_dropping_a_movement_fails_serves_all():
    assert rules(with_phase(base(), 0, greens="GgGrrrrr")) == {"SERVES_ALL"}


def test_all_violations_collected():
    plan = with_phase(replace(base(), controller_id="x", splitCoordPhase=7, patternCycleTime=99.0), 1,
                      phaseYellowChange=1.0, phaseRedClear=0.0, greens="GrrrGgGg")
    assert rules(plan) >= {"IDENTITY", "COORD_PHASE", "YELLOW", "RED_CLEAR", "CONFLICT", "CYCLE_SUM"}


def test_nan_is_never_a_pass():
    plan = with_phase(base(), 1, phaseYellowChange=float("nan"))
    assert "YELLOW" in rules(plan)
    plan = replace(base(), patternCycleTime=float("nan"))
    assert {"CYCLE_SUM", "CYCLE_RANGE", "OFFSET"} <= rules(plan)


def test_bad_spec_is_a_scenario_error():
    bad = replace(SPEC, phases=(replace(SPEC.phases[0], approach_speed_mps=0.0), SPEC.phases[1]))
    with pytest.raises(ScenarioError):
        safety.check_plan(base(), bad)


def test_rule_ids_are_the_contract():
    assert safety.RULES == ("IDENTITY", "PHASES", "CYCLE_SUM", "CYCLE_RANGE", "OFFSET", "COORD_PHASE",
                            "MIN_GREEN", "MAX_GREEN", "YELLOW", "RED_CLEAR", "PED_WALK", "PED_CLEAR",
                            "CONFLICT", "SERVES_ALL")


# ---------------------------------------------------------------------------
# properties

speeds = st.floats(min_value=8.0, max_value=22.0)
extra = st.lists(st.floats(min_value=0.0, max_value=40.0), min_size=3, max_size=3)


@st.composite
def spec_and_plan(draw):
    spec = draw(st.sampled_from([four_leg("p1", speed_mps=draw(speeds)), three_phase("p3", speed_mps=draw(speeds))]))
    spare = draw(extra)[: len(spec.phases)]
    splits = [round(p.min_split_s + s, 1) for p, s in zip(spec.phases, spare, strict=False)]
    cycle = sum(splits)
    offset = draw(st.floats(min_value=0.0, max_value=500.0))
    spec = replace(spec, max_cycle_s=max(spec.max_cycle_s, cycle + 1))
    return spec, spec.plan_from_splits(splits, offset_s=offset)


@settings(max_examples=150, deadline=None)
@given(spec_and_plan())
def test_plans_from_min_splits_pass(data):
    spec, plan = data
    assert safety.check_plan(plan, spec) == []


MUTATIONS = {
    "YELLOW": lambda p, s, d: {"phaseYellowChange": yellow_change_s(s.approach_speed_mps) - 0.1 - d},
    "RED_CLEAR": lambda p, s, d: {
        "phaseRedClear": red_clearance_s(s.approach_speed_mps, s.clearance_width_m) - 0.1 - d},
    "MIN_GREEN": lambda p, s, d: {"splitTime": p.phaseYellowChange + p.phaseRedClear + s.min_green_s - 0.1 - d},
    "PED_WALK": lambda p, s, d: {"phaseWalk": 6.9 - d},
    # the flashing don't-walk needed given the yellow + red buffer the plan shows after it (MUTCD 4E.06)
    "PED_CLEAR": lambda p, s, d: {"phasePedestrianClear": pedestrian_clear_s(
        s.ped_crossing_m, p.phaseYellowChange + p.phaseRedClear) - 0.1 - d},
}


@settings(max_examples=150, deadline=None)
@given(spec_and_plan(), st.sampled_from(sorted(MUTATIONS)), st.floats(min_value=0.0, max_value=3.0),
       st.integers(min_value=0, max_value=2))
def test_shortening_a_safety_interval_fails_with_its_rule(data, rule, delta, index):
    spec, plan = data
    index %= len(plan.phases)
    if rule in ("PED_WALK", "PED_CLEAR"):
        index = next(i for i, s in enumerate(spec.phases) if s.ped_crossing_m > 0)
    phase, phase_spec = plan.phases[index], spec.phases[index]
    mutated = with_phase(plan, index, **MUTATIONS[rule](phase, phase_spec, delta))
    assert rule in rules(mutated, spec)


@settings(max_examples=150, deadline=None)
@given(spec_and_plan(), st.data())
def test_adding_a_conflicting_green_fails_with_conflict(data, draw):
    spec, plan = data
    pairs = sorted(spec.conflicts)
    i, j = draw.draw(st.sampled_from(pairs))
    index = draw.draw(st.integers(min_value=0, max_value=len(plan.phases) - 1))
    greens = list(plan.phases[index].greens)
    greens[i] = draw.draw(st.sampled_from("Gg"))
    greens[j] = draw.draw(st.sampled_from("Gg"))
    mutated = with_phase(plan, index, greens="".join(greens))
    assert "CONFLICT" in rules(mutated, spec)
