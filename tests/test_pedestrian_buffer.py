"""Pedestrian clearance with the MUTCD buffer interval (yellow + red clearance after the flashing don't-walk).

The invariant that matters for safety: a pedestrian who leaves the kerb on
the last second of walk has at least the full crossing time (length / 1.07
m/s) before any conflicting movement is released, i.e. flashing don't-walk
+ yellow + red clearance >= crossing time, and the flashing interval itself
is never shorter than the policy floor. Both plan checks (centre and field)
must enforce exactly that, and the intersection's policy flag
``ped_clear_in_buffer=False`` must restore the whole-crossing-in-green rule.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import safety as centre
from controller.examples import four_leg
from field_firmware_stubs import plan_check as field
from traffic.clearance import (
    MIN_BUFFER_S,
    MIN_PED_CHANGE_S,
    TOLERANCE_S,
    WALKING_SPEED_MPS,
    pedestrian_clear_s,
    pedestrian_clearance_time_s,
)
from traffic.plan import TimingPlan


def _with_phase(plan: TimingPlan, index: int, **changes) -> TimingPlan:
    phases = list(plan.phases)
    phases[index] = replace(phases[index], **changes)
    return replace(plan, phases=tuple(phases))


def _rules(plan: TimingPlan, spec) -> tuple[set[str], set[str]]:
    return {v.rule for v in centre.check_plan(plan, spec)}, {v.rule for v in field.check_plan(plan, spec)}


@settings(max_examples=300, deadline=None)
@given(crossing=st.floats(min_value=0.5, max_value=60.0), buffer=st.floats(min_value=0.0, max_value=12.0))
def test_flashing_plus_buffer_always_covers_the_crossing(crossing, buffer):
    flashing = pedestrian_clear_s(crossing, buffer)
    counted = buffer if buffer >= MIN_BUFFER_S - TOLERANCE_S else 0.0
    assert flashing + counted >= crossing / WALKING_SPEED_MPS - 1e-9
    assert flashing >= min(MIN_PED_CHANGE_S, pedestrian_clearance_time_s(crossing)) - 1e-9
    assert flashing <= pedestrian_clearance_time_s(crossing) + 1e-9  # the buffer never lengthens it


def test_buffer_shortens_the_flashing_interval_by_exactly_yellow_plus_red():
    assert pedestrian_clearance_time_s(19.2) == 18.0
    assert pedestrian_clear_s(19.2) == 18.0
    assert pedestrian_clear_s(19.2, 6.0) == 12.0
    assert pedestrian_clear_s(19.2, 2.9) == 18.0   # under MUTCD's 3 s minimum buffer: it does not count
    assert pedestrian_clear_s(6.0, 8.0) == MIN_PED_CHANGE_S  # never below the flashing floor
    assert pedestrian_clear_s(2.0, 8.0) == pedestrian_clearance_time_s(2.0)  # a short crossing: its own time
    assert pedestrian_clear_s(0.0, 8.0) == 0.0


def test_phase_spec_follows_the_policy_flag():
    spec = four_leg("c1", ped_crossing_m=19.2)
    ped = spec.phases[0]
    buffer = ped.yellow_s + ped.red_clear_s
    assert ped.ped_clear_s == pytest.approx(18.0 - buffer)
    strict = replace(ped, ped_clear_in_buffer=False)
    assert strict.ped_clear_s == 18.0
    assert strict.min_split_s == pytest.approx(ped.min_split_s + buffer)


@pytest.mark.parametrize("in_buffer", [True, False])
def test_both_checks_accept_the_minimum_and_refuse_a_tenth_less(in_buffer):
    spec = four_leg("c1", ped_crossing_m=19.2)
    spec = replace(spec, phases=tuple(replace(p, ped_clear_in_buffer=in_buffer) for p in spec.phases))
    plan = spec.plan_from_splits([60.0, 30.0])
    assert _rules(plan, spec) == (set(), set())
    need = spec.phases[0].ped_clear_s
    assert plan.phases[0].phasePedestrianClear == pytest.approx(need)
    short = _with_phase(plan, 0, phasePedestrianClear=round(need - 0.1, 1))
    assert _rules(short, spec) == ({"PED_CLEAR"}, {"PED_CLEAR"})


def test_a_longer_yellow_in_the_plan_counts_as_buffer_in_both_checks():
    spec = four_leg("c1", ped_crossing_m=19.2)
    plan = spec.plan_from_splits([60.0, 30.0])
    p = plan.phases[0]
    longer = _with_phase(plan, 0, phaseYellowChange=p.phaseYellowChange + 1.0,
                         phasePedestrianClear=round(p.phasePedestrianClear - 1.0, 1))
    assert _rules(longer, spec) == (set(), set())
    strict = replace(spec, phases=tuple(replace(x, ped_clear_in_buffer=False) for x in spec.phases))
    centre_rules, field_rules = _rules(longer, strict)
    assert "PED_CLEAR" in centre_rules and "PED_CLEAR" in field_rules


def test_spec_round_trip_keeps_the_flag():
    spec = four_leg("c1")
    spec = replace(spec, phases=tuple(replace(p, ped_clear_in_buffer=False) for p in spec.phases))
    again = type(spec).from_dict(spec.to_dict())
    assert all(not p.ped_clear_in_buffer for p in again.phases)
