"""Signal program engine: timing follows the plan, plans change only at boundaries, transitions are bounded."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import events as ev
from field_firmware_stubs.conflict_monitor import ConflictMonitor
from field_firmware_stubs.program import DYNAMIC_MAX_LIMIT_S, DYNAMIC_MAX_STEP_S, SignalProgram
from field_firmware_stubs.samples import four_leg, two_phase
from traffic.errors import UnsafePlanError
from traffic.signals import cycle_intervals

SPEC = four_leg()


def run(program: SignalProgram, start: float, end: float, dt: float = 0.1, presence=None):
    """Step from start to end; return the list of (time, state, phase, interval) at each change."""
    changes = []
    steps = int(round((end - start) / dt))
    last = None
    for k in range(steps + 1):
        t = round(start + k * dt, 1)
        state = program.step(t, presence(t) if presence else None)
        key = (state, program.phase, program.interval)
        if key != last:
            changes.append((t, *key))
            last = key
    return changes


def durations(changes):
    return [(b[0] - a[0], a[1], a[2], a[3]) for a, b in zip(changes, changes[1:], strict=False)]


def test_pretimed_intervals_last_exactly_what_the_plan_says():
    plan = SPEC.plan_from_splits([30.3, 12.1, 25.7, 11.9], offset_s=17.3)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    changes = run(program, 0.0, 3 * plan.patternCycleTime)
    observed = [(round(d, 1), state, phase, kind) for d, state, phase, kind in durations(changes)[1:]]
    expected = [(i.duration, i.state, i.phase, i.kind) for i in cycle_intervals(plan)]
    # one full cycle of the observed sequence, rotated to start like cycle_intervals
    first = next(k for k, o in enumerate(observed) if o[1:] == expected[0][1:])
    assert observed[first:first + len(expected)] == expected


def test_coordinated_green_starts_at_the_offset():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=23.4, coord_phase=3)
    program = SignalProgram(SPEC, plan, start_time=5.0)
    changes = run(program, 5.0, 5.0 + 2 * plan.patternCycleTime)
    starts = [t for t, state, phase, kind in changes if phase == 3 and kind == "green"]
    assert starts and all(round((t - 23.4) % plan.patternCycleTime, 1) == 0.0 for t in starts[1:])


def test_new_plan_takes_effect_only_at_the_cycle_boundary():
    plan = SPEC.default_plan(80)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    run(program, 0.0, 10.0)
    new = SPEC.default_plan(80, version=2)
    new = new.with_splits([25.0, 12.0, 30.0, 13.0], version=2)
    boundary = program.next_boundary
    program.request_plan(new)
    t = 10.0
    while t < boundary - 0.05:
        t = round(t + 0.1, 1)
        program.step(t)
        if t < boundary:
            assert program.plan.plan_id == plan.plan_id
    assert program.plan.plan_id == new.plan_id
    applied = program.drain_applied()
    assert applied == [(boundary, new)]
    codes = [e.code for e in program.drain_events() if e.time == boundary]
    assert ev.COORD_PATTERN_CHANGE in codes and ev.SPLIT_CHANGE_BASE in codes


def test_offset_change_is_reached_in_bounded_steps_never_below_min_green():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=0.0)
    program = SignalProgram(SPEC, plan, start_time=0.0, transition_max_step_s=4.0)
    new = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=37.0, version=2)
    program.request_plan(new)
    changes = run(program, 0.0, 12 * 80.0, dt=0.5)
    assert program.transitions, "an offset change must trigger a transition"
    assert all(abs(tr.adjust_s) <= 4.0 + 1e-9 for tr in program.transitions)
    assert program.transitions[-1].remaining_s == 0.0 and not program.in_transition
    coord_min = SPEC.phase(1).min_green_s
    coord_greens = [d for d, state, phase, kind in durations(changes) if phase == 1 and kind == "green"]
    assert min(coord_greens) >= max(coord_min, 7.0 + SPEC.phase(1).ped_clear_s) - 1e-9
    starts = [t for t, state, phase, kind in changes if phase == 1 and kind == "green"]
    assert round((starts[-1] - 37.0) % 80.0, 1) == 0.0  # in step with the new offset


def test_actuated_skips_uncalled_phases_and_returns_unused_time_to_the_coordinated_phase():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], mode="actuated", coord_phase=1)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    # no vehicles anywhere: phases with detectors and no call are skipped, pedestrian phases gap out at min
    no_cars = lambda t: {d.detector_id: False for d in SPEC.detectors}  # noqa: E731
    changes = run(program, 0.0, 4 * 80.0, presence=no_cars)
    greens = {}
    for d, _state, phase, kind in durations(changes)[1:]:
        if kind == "green":
            greens.setdefault(phase, []).append(round(d, 1))
    skipped = [p.phase for p in SPEC.phases if p.ped_crossing_m == 0 and p.phase != 1]
    assert skipped and all(len(greens.get(n, [])) <= 1 for n in skipped)  # at most before detectors reported
    assert max(greens[3]) == pytest.approx(7.0 + SPEC.phase(3).ped_clear_s)  # pedestrians still served
    coord_pretimed = plan.phase(1).green
    assert min(greens[1][1:]) > coord_pretimed + 5
    events = program.drain_events()
    assert any(e.code == ev.PHASE_GAP_OUT for e in events)
    ends = [t for t, state, phase, kind in changes if phase == 1 and kind == "yellow"]
    assert len(ends) >= 3 and {round(b - a, 1) for a, b in itertools.pairwise(ends)} == {80.0}  # cycle stays fixed


def test_actuated_call_on_a_skipped_phase_is_served_next_cycle():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], mode="actuated", coord_phase=1)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    det = next(d for d in SPEC.detectors if SPEC.detector_phases(d) == (2,))
    # one vehicle over phase 2's loop for 1 s at t=100, nothing else
    presence = lambda t: {d.detector_id: (d.detector_id == det.detector_id and 100 <= t < 101)  # noqa: E731
                          for d in SPEC.detectors}
    changes = run(program, 0.0, 400.0, presence=presence)
    starts = [t for t, state, phase, kind in changes if phase == 2 and kind == "green"]
    late = [t for t in starts if t > 100]
    assert len(late) == 1 and late[0] < 100 + 80  # served once, within a cycle, then skipped again


def test_actuated_phase_with_steady_demand_runs_to_force_off():
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], mode="actuated", coord_phase=1)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    changes = run(program, 0.0, 3 * 80.0, presence=busy)
    phase3 = [round(d, 1) for d, s, phase, kind in durations(changes)[1:] if phase == 3 and kind == "green"]
    assert phase3 and set(phase3) == {round(plan.phase(3).green, 1)}
    assert any(e.code == ev.PHASE_FORCE_OFF and e.param == 3 for e in program.drain_events())


def test_events_are_in_time_order_and_follow_the_interval_sequence():
    plan = SPEC.default_plan(90)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    run(program, 0.0, 200.0, dt=1.0)
    events = program.drain_events()
    times = [e.time for e in events]
    assert times == sorted(times)
    per_phase = [e.code for e in events if e.param == 2 and e.code in (1, 7, 8, 9, 10, 11)]
    first = per_phase.index(1)
    assert per_phase[first:first + 6] == [1, 7, 8, 9, 10, 11]
    walks = [e for e in events if e.code in (21, 22, 23) and e.param == 1]
    assert [e.code for e in walks][:3] in ([21, 22, 23], [22, 23, 21], [23, 21, 22])


def test_unsafe_plan_is_refused_by_the_engine_itself():
    plan = SPEC.default_plan()
    program = SignalProgram(SPEC, plan, start_time=0.0)
    bad = replace(plan, phases=(replace(plan.phases[0], phaseYellowChange=1.0),) + plan.phases[1:])
    with pytest.raises(UnsafePlanError) as err:
        program.request_plan(bad)
    assert "YELLOW" in err.value.rules


def test_time_cannot_go_backwards():
    program = SignalProgram(SPEC, SPEC.default_plan(), start_time=10.0)
    program.step(12.0)
    with pytest.raises(Exception, match="backwards"):
        program.step(11.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=8, max_size=8), st.sampled_from([0.1, 0.5, 1.0]),
       st.sampled_from(["pretimed", "actuated", "free"]), st.integers(1, 4), st.integers(0, 3000))
def test_driven_states_never_trip_the_conflict_monitor(extra, dt, mode, coord, offset_tenths):
    """Across plan changes (splits, offset, coordinated phase), the output stays safe."""
    mins = [p.min_split_s for p in SPEC.phases]
    a = SPEC.plan_from_splits([m + e / 10 for m, e in zip(mins, extra[:4], strict=False)], mode=mode)
    b_splits = [m + e / 10 for m, e in zip(mins, extra[4:], strict=False)]
    b = SPEC.plan_from_splits(b_splits, offset_s=offset_tenths / 10.0 % sum(b_splits), mode=mode,
                              coord_phase=coord, version=2)
    program = SignalProgram(SPEC, a, start_time=3.0, transition_max_step_s=10.0)
    monitor = ConflictMonitor(SPEC)
    presence = lambda t: {"d2": int(t) % 7 < 3, "d3": int(t) % 5 == 0}  # noqa: E731
    t, n = 3.0, 0
    horizon = 3.0 + 4 * max(a.patternCycleTime, b.patternCycleTime)
    while t < horizon:
        t = round(t + dt, 1)
        n += 1
        if n == 50:
            program.request_plan(b)
        state = program.step(t, presence(t))
        monitor.observe(t, state)
        assert not monitor.tripped, monitor.reason
    assert program.plan.plan_id == b.plan_id


def _greens(changes):
    out = {}
    for d, _state, phase, kind in durations(changes)[1:]:
        if kind == "green":
            out.setdefault(phase, []).append(round(d, 1))
    return out


def test_free_mode_rests_in_green_without_conflicting_calls():
    spec = two_phase()
    plan = spec.plan_from_splits([30.0, 20.0], mode="free", coord_phase=2)
    program = SignalProgram(spec, plan, start_time=0.0)
    quiet = lambda t: {"d1": False, "d2": False}  # noqa: E731
    run(program, 0.0, 200.0, presence=quiet)
    # phase 1 times pedestrians (recall), so the junction alternates only as far as that recall asks
    program2 = SignalProgram(two_phase_no_peds(), replace(plan, controller_id="c1"), start_time=0.0)
    changes = run(program2, 0.0, 300.0, presence=quiet)
    assert changes[-1][3] == "green" and changes[-1][0] < 100  # rests in one green for the last 200 s


def test_free_mode_gaps_out_and_serves_the_calling_phase():
    spec = two_phase_no_peds()
    plan = spec.plan_from_splits([30.0, 20.0], mode="free", coord_phase=2)
    program = SignalProgram(spec, plan, start_time=0.0)
    # steady traffic on phase 2's loop, a short burst on phase 1's every 60 s
    presence = lambda t: {"d1": int(t) % 60 < 4, "d2": int(t) % 2 == 0}  # noqa: E731
    changes = run(program, 0.0, 600.0, presence=presence)
    greens = _greens(changes)
    p1 = spec.phase(1)
    assert greens[1] and max(greens[1]) <= p1.min_green_s + 6  # burst served, then gap-out
    # phase 2 rests until phase 1 calls (t = 60 k), then maxes out phaseMaximum1 later (max timer from the call)
    p2 = plan.phase(2)
    starts = [t for t, state, phase, kind in changes if phase == 1 and kind == "green" and t > 60]
    expected = p2.phaseMaximum1 + p2.phaseYellowChange + p2.phaseRedClear
    # the first service after maxing out phaseMaximum1; each max-out raises phase 2's maximum one
    # dynamic-max step, never above DYNAMIC_MAX_LIMIT_S
    waits = [t % 60 for t in starts]
    assert len(waits) > 2 and waits[0] == pytest.approx(expected, abs=1.1)
    assert waits[1] == pytest.approx(expected + DYNAMIC_MAX_STEP_S, abs=1.1)
    assert all(b >= a - 1.1 for a, b in zip(waits, waits[1:], strict=False))
    assert max(waits) <= DYNAMIC_MAX_LIMIT_S + p2.phaseYellowChange + p2.phaseRedClear + 1.1
    codes = {e.code for e in program.drain_events()}
    assert ev.PHASE_GAP_OUT in codes and ev.PHASE_MAX_OUT in codes


def test_free_mode_applies_a_new_plan_at_the_sequence_wrap():
    spec = two_phase_no_peds()
    plan = spec.plan_from_splits([30.0, 20.0], mode="free", coord_phase=2)
    program = SignalProgram(spec, plan, start_time=0.0)
    presence = lambda t: {"d1": True, "d2": True}  # noqa: E731
    run(program, 0.0, 50.0, presence=presence)
    new = spec.plan_from_splits([25.0, 25.0], mode="free", coord_phase=2, version=2)
    program.request_plan(new)
    run(program, 50.1, 200.0, presence=presence)
    applied = program.drain_applied()
    assert [p.plan_id for _, p in applied] == [new.plan_id] and program.plan.plan_id == new.plan_id


def two_phase_no_peds():

    spec = two_phase()
    return replace(spec, phases=tuple(replace(p, ped_crossing_m=0.0) for p in spec.phases))


def test_free_mode_serves_pedestrian_phases_within_the_max_wait_under_heavy_traffic():
    from field_firmware_stubs.program import PED_MAX_WAIT_S

    plan = SPEC.plan_from_splits([30.0, 30.0, 30.0, 30.0], mode="free", coord_phase=1)
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=40.0) for p in plan.phases))
    program = SignalProgram(SPEC, plan, start_time=0.0)
    # queues everywhere, all the time: every phase wants the junction
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    changes = run(program, 0.0, 1200.0, dt=0.5, presence=busy)
    # maxima raised by dynamic max (DYNAMIC_MAX_LIMIT_S at most)
    longest_turn = max(max(p.phaseMaximum1, DYNAMIC_MAX_LIMIT_S) + p.phaseYellowChange + p.phaseRedClear
                       for p in plan.phases)
    for ped in (p.phase for p in SPEC.phases if p.ped_crossing_m > 0):
        ends = [t for t, state, phase, kind in changes if phase == ped and kind == "yellow"]
        starts = [t for t, state, phase, kind in changes if phase == ped and kind == "green"]
        assert len(starts) >= 4
        waits = [s - e for e, s in zip(ends, [x for x in starts if x > ends[0]], strict=False)]
        assert max(waits) <= PED_MAX_WAIT_S + 2 * longest_turn
    greens = _greens(changes)
    assert set(greens) == {p.phase for p in SPEC.phases}  # nobody starves
