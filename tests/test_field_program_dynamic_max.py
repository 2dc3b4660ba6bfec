"""Dynamic max in free mode (NTCIP 1202 phaseDynamicMaxStep / phaseDynamicMaxLimit).

A loop under a standing queue counts only what discharges, so the centre
can under-rate a saturated approach; the field raises a phase's maximum
green one step per max-out and lowers it one step per gap-out, never below
the centre's maximum nor above the limit.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import events as ev
from field_firmware_stubs.program import DYNAMIC_MAX_LIMIT_S, DYNAMIC_MAX_STEP_S, SignalProgram, to_ds
from field_firmware_stubs.samples import four_leg

SPEC = replace(four_leg(), phases=tuple(replace(p, ped_crossing_m=0.0) for p in four_leg().phases))
MAX_S = 20.0


def _plan():
    plan = SPEC.plan_from_splits([30.0, 30.0, 30.0, 30.0], mode="free", coord_phase=1)
    return replace(plan, phases=tuple(replace(p, phaseMaximum1=MAX_S) for p in plan.phases))


def _greens(program: SignalProgram, start: float, end: float, presence) -> list[tuple[int, float, int]]:
    """(phase, green length, termination code) of every green ended in [start, end]."""
    out, begun, code = [], {}, 0
    t = start
    while t <= end:
        program.step(t, presence(t))
        for e in program.drain_events():
            if e.code == ev.PHASE_BEGIN_GREEN:
                begun[e.param], code = e.time, 0
            elif e.code in (ev.PHASE_GAP_OUT, ev.PHASE_MAX_OUT):
                code = e.code
            elif e.code == ev.PHASE_END_GREEN and e.param in begun:
                out.append((e.param, round(e.time - begun.pop(e.param), 1), code))
        t = round(t + 0.5, 1)
    return out


def test_saturated_phases_step_up_to_the_limit_and_never_beyond():
    program = SignalProgram(replace(SPEC, max_cycle_s=600.0), _plan(), start_time=0.0)  # room for every phase
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    greens = _greens(program, 0.0, 3600.0, busy)
    for phase in {p for p, _g, _c in greens}:
        lengths = [g for p, g, c in greens if p == phase and c == ev.PHASE_MAX_OUT]
        assert lengths[0] <= MAX_S + 1.0                                  # starts at the centre's maximum
        assert lengths[1] >= lengths[0] + DYNAMIC_MAX_STEP_S - 1.0         # one step up after a max-out
        assert max(lengths) <= DYNAMIC_MAX_LIMIT_S + 1.0                   # never above the limit
        assert max(lengths) >= DYNAMIC_MAX_LIMIT_S - 1.0                   # reached under saturation


def test_gap_outs_bring_the_maximum_back_down_to_the_centres():
    program = SignalProgram(SPEC, _plan(), start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    _greens(program, 0.0, 1800.0, busy)                                    # raised by an hour of max-outs
    sparse = lambda t: {d.detector_id: (t % 40.0) < 1.0 for d in SPEC.detectors}  # noqa: E731
    _greens(program, 1800.5, 5400.0, sparse)                               # gap-outs step it back down
    greens = _greens(program, 5400.5, 9000.0, busy)
    first = {}
    for phase, length, code in greens:
        if code == ev.PHASE_MAX_OUT:
            first.setdefault(phase, length)
    assert first and all(length <= MAX_S + DYNAMIC_MAX_STEP_S + 1.0 for length in first.values())


def test_the_centres_maximum_above_the_limit_stands():
    plan = _plan()
    high = replace(plan, phases=tuple(replace(p, phaseMaximum1=DYNAMIC_MAX_LIMIT_S + 20.0) for p in plan.phases))
    program = SignalProgram(SPEC, high, start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    lengths = [g for _p, g, c in _greens(program, 0.0, 1800.0, busy) if c == ev.PHASE_MAX_OUT]
    assert lengths and all(abs(g - (DYNAMIC_MAX_LIMIT_S + 20.0)) <= 1.0 for g in lengths)


def test_raised_maxima_together_never_exceed_the_longest_cycle():
    spec = replace(SPEC, max_cycle_s=120.0)
    program = SignalProgram(spec, _plan(), start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in spec.detectors}  # noqa: E731
    greens = _greens(program, 0.0, 3600.0, busy)
    plan = _plan()
    change = {p.phase: p.phaseYellowChange + p.phaseRedClear for p in plan.phases}
    n = len(plan.phases)
    for k in range(n, len(greens) - n):
        window = greens[k:k + n]                                           # one turn of every phase
        if {p for p, _g, _c in window} == set(change):
            assert sum(g + change[p] for p, g, _c in window) <= spec.max_cycle_s + n * 1.0
    assert max(g for _p, g, _c in greens) > MAX_S + 1.0                    # it did raise them


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
       st.floats(120.0, 300.0), st.floats(8.0, 50.0))
def test_dynamic_maxima_stay_within_their_bounds_whatever_the_traffic(seed, density, max_cycle_s, maximum_s):
    """Any arrivals: every maximum between the centre's and the limit, all of them within the longest cycle."""
    spec = replace(SPEC, max_cycle_s=max_cycle_s)
    plan = _plan()
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=max(maximum_s, p.phaseMinimumGreen))
                                      for p in plan.phases))
    program = SignalProgram(spec, plan, start_time=0.0)
    rng = random.Random(seed)
    share = {d.detector_id: density[i % 4] for i, d in enumerate(spec.detectors)}
    t = 0.0
    while t <= 1200.0:
        program.step(t, {d: rng.random() < p for d, p in share.items()})
        program.drain_events()
        t = round(t + 1.0, 1)
    phases = program._order  # noqa: SLF001 - the running maxima are the program's own state
    fits = sum(p.max_green + p.yellow + p.red for p in phases) <= to_ds(max_cycle_s)
    for p in phases:
        current = program._max_green(p)  # noqa: SLF001
        assert p.max_green <= current <= max(p.max_green, to_ds(DYNAMIC_MAX_LIMIT_S))
    if fits:  # raised only while every phase at its maximum still fits the longest cycle
        assert sum(program._max_green(p) + p.yellow + p.red for p in phases) <= to_ds(max_cycle_s)  # noqa: SLF001
