"""The field's independent safety check: safe plans pass, each kind of damage is caught by its rule."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import plan_check as pc
from field_firmware_stubs.plan_check import check_plan
from field_firmware_stubs.samples import four_leg, two_phase
from traffic.plan import TimingPlan

SPEC = four_leg()
MIN_SPLITS = [p.min_split_s for p in SPEC.phases]


@st.composite
def safe_plans(draw) -> TimingPlan:
    extra = draw(st.lists(st.integers(min_value=0, max_value=250), min_size=4, max_size=4))
    splits = [round(m + e / 10.0, 1) for m, e in zip(MIN_SPLITS, extra, strict=False)]
    cycle = round(sum(splits), 1)
    offset = draw(st.integers(min_value=0, max_value=int(cycle * 10) - 1)) / 10.0
    mode = draw(st.sampled_from(["pretimed", "actuated"]))
    coord = draw(st.sampled_from([1, 2, 3, 4]))
    return SPEC.plan_from_splits(splits, offset_s=offset, mode=mode, coord_phase=coord)


def with_phase(plan: TimingPlan, index: int, **changes) -> TimingPlan:
    phases = list(plan.phases)
    phases[index] = replace(phases[index], **changes)
    return replace(plan, phases=tuple(phases))


def rules(plan: TimingPlan, spec=SPEC) -> set[str]:
    return {v.rule for v in check_plan(plan, spec)}


@settings(max_examples=150, deadline=None)
@given(safe_plans())
def test_plans_built_from_the_design_at_or_above_min_split_are_accepted(plan):
    assert check_plan(plan, SPEC) == []


@settings(max_examples=60, deadline=None)
@given(safe_plans(), st.integers(0, 3), st.integers(1, 20))
def test_shorter_yellow_is_rejected_by_yellow(plan, index, cut_tenths):
    phase = plan.phases[index]
    bad = with_phase(plan, index, phaseYellowChange=round(phase.phaseYellowChange - cut_tenths / 10.0, 1),
                     splitTime=phase.splitTime)
    assert pc.YELLOW in rules(bad)


@settings(max_examples=60, deadline=None)
@given(safe_plans(), st.sampled_from([0, 2]), st.integers(1, 50))
def test_shorter_pedestrian_clearance_is_rejected_by_ped_clear(plan, index, cut_tenths):
    phase = plan.phases[index]
    bad = with_phase(plan, index, phasePedestrianClear=round(phase.phasePedestrianClear - cut_tenths / 10.0, 1))
    assert pc.PED_CLEAR in rules(bad)


@settings(max_examples=60, deadline=None)
@given(safe_plans(), st.integers(0, 3), st.data())
def test_conflicting_greens_are_rejected_by_conflict(plan, index, data):
    i, j = data.draw(st.sampled_from(sorted(SPEC.conflicts)))
    greens = list(plan.phases[index].greens)
    greens[i] = data.draw(st.sampled_from("Gg"))
    greens[j] = data.draw(st.sampled_from("Gg"))
    bad = with_phase(plan, index, greens="".join(greens))
    assert pc.CONFLICT in rules(bad)


@settings(max_examples=60, deadline=None)
@given(safe_plans(), st.integers(1, 300).map(lambda t: t / 10.0), st.booleans())
def test_cycle_not_equal_to_split_sum_is_rejected_by_cycle_sum(plan, delta, longer):
    cycle = plan.patternCycleTime + (delta if longer else -delta)
    bad = replace(plan, patternCycleTime=round(cycle, 1), patternOffsetTime=0.0)
    assert pc.CYCLE_SUM in rules(bad)


def test_permissive_left_with_opposing_through_is_allowed_but_protected_is_not():
    plan = SPEC.default_plan()
    assert check_plan(plan, SPEC) == []  # phase 1 has 'g' left with 'G' opposing through
    bad = with_phase(plan, 0, greens="GGrrGgrr")
    found = check_plan(bad, SPEC)
    assert [v.rule for v in found] == [pc.CONFLICT] and found[0].phase == 1


@pytest.mark.parametrize("change, rule", [
    (dict(phaseRedClear=0.5), pc.RED_CLEAR),
    (dict(phaseWalk=4.0), pc.PED_WALK),
    (dict(phaseMinimumGreen=3.0), pc.MIN_GREEN),
    (dict(phaseMaximum1=1.0), pc.MAX_GREEN),
    (dict(phaseYellowChange=6.5), pc.YELLOW),
    (dict(phase=9), pc.PHASES),
    (dict(greens="GgrrGgr"), pc.PHASES),
    (dict(phasePassage=float("nan")), pc.PHASES),
])
def test_each_phase_rule_is_named(change, rule):
    plan = SPEC.default_plan(100)
    assert rule in rules(with_phase(plan, 0, **change))


def test_green_shorter_than_min_green_is_rejected():
    plan = SPEC.default_plan()
    # keep the cycle sum right, but shift 3 s from phase 2 (already at its minimum) to phase 1
    bad = plan.with_splits([plan.splits[0] + 3, plan.splits[1] - 3, plan.splits[2], plan.splits[3]])
    assert {v.rule for v in check_plan(bad, SPEC)} == {pc.MIN_GREEN}


def test_green_shorter_than_walk_plus_clearance_is_rejected():
    spec = two_phase()
    plan = spec.default_plan()
    # a long walk that the green cannot hold
    bad = with_phase(plan, 0, phaseWalk=plan.phases[0].green)
    assert pc.PED_CLEAR in rules(bad, spec)


@pytest.mark.parametrize("changes, rule", [
    (dict(controller_id="other"), pc.IDENTITY),
    (dict(patternOffsetTime=-1.0), pc.OFFSET),
    (dict(splitCoordPhase=7), pc.COORD_PHASE),
])
def test_plan_level_rules(changes, rule):
    plan = replace(SPEC.default_plan(), **changes)
    assert rules(plan) == {rule}


def test_offset_equal_to_cycle_and_oversized_cycle_are_rejected():
    plan = SPEC.default_plan()
    assert pc.OFFSET in rules(replace(plan, patternOffsetTime=plan.patternCycleTime))
    long_plan = SPEC.default_plan(200)
    assert rules(long_plan) == {pc.CYCLE_RANGE}


def test_dropping_a_movement_is_rejected_by_serves_all():
    plan = SPEC.default_plan(100)
    # phase 4 (EW protected left) shows all red; groups 3/7 still served by phase 3's 'g'
    assert rules(with_phase(plan, 3, greens="rrrrrrrr")) == set()
    bad = with_phase(with_phase(plan, 3, greens="rrrrrrrr"), 2, greens="rrGrrrGr")
    assert rules(bad) == {pc.SERVES_ALL}


def test_duplicate_phase_numbers_are_rejected():
    plan = SPEC.default_plan()
    bad = with_phase(plan, 1, phase=1)
    assert pc.PHASES in rules(bad)
