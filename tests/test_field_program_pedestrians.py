"""Pedestrian service in the signal program: on demand in free mode, every cycle otherwise.

What must hold whatever the traffic: every walk shown is followed by its full
flashing don't-walk inside the same green (the pedestrian minimum is timed
whenever the walk is shown), a crossing without push buttons still gets a
walk at least every ``PED_MAX_WAIT_S`` (plus the longest turn already
running), and a push-button call gets the walk at the phase's next service.
"""

from __future__ import annotations

from dataclasses import replace

from field_firmware_stubs import events as ev
from field_firmware_stubs.program import DYNAMIC_MAX_LIMIT_S, PED_MAX_WAIT_S, SignalProgram
from field_firmware_stubs.samples import four_leg

SPEC = four_leg()
PED_PHASES = {p.phase for p in SPEC.phases if p.ped_crossing_m > 0}


def _events(program: SignalProgram, start: float, end: float, presence, dt: float = 0.5) -> list:
    out = []
    steps = int(round((end - start) / dt))
    for k in range(steps + 1):
        t = round(start + k * dt, 1)
        program.step(t, presence(t))
        out.extend(program.drain_events())
    return out


def _free_plan():
    plan = SPEC.plan_from_splits([30.0, 30.0, 30.0, 30.0], mode="free", coord_phase=1)
    return replace(plan, phases=tuple(replace(p, phaseMaximum1=40.0) for p in plan.phases))


def _greens(events) -> list[tuple[int, float, float, bool]]:
    """(phase, green start, green end, walk shown) for every completed green."""
    out, open_ = [], {}
    for e in events:
        if e.code == ev.PHASE_BEGIN_GREEN:
            open_[e.param] = [e.time, False]
        elif e.code == ev.PED_BEGIN_WALK and e.param in open_:
            open_[e.param][1] = True
        elif e.code == ev.PHASE_END_GREEN and e.param in open_:
            start, walk = open_.pop(e.param)
            out.append((e.param, start, e.time, walk))
    return out


def test_free_mode_walks_are_fully_timed_and_at_most_max_wait_apart():
    plan = _free_plan()
    program = SignalProgram(SPEC, plan, start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in SPEC.detectors}  # noqa: E731
    greens = _greens(_events(program, 0.0, 1800.0, busy))
    # maxima raised by dynamic max (DYNAMIC_MAX_LIMIT_S at most)
    longest_turn = max(max(p.phaseMaximum1, DYNAMIC_MAX_LIMIT_S) + p.phaseYellowChange + p.phaseRedClear
                       for p in plan.phases)
    for ped in PED_PHASES:
        timing = plan.phase(ped)
        walks = [start for phase, start, _end, walk in greens if phase == ped and walk]
        assert len(walks) >= 1800 / (PED_MAX_WAIT_S + longest_turn) - 2
        assert max(b - a for a, b in zip(walks, walks[1:], strict=False)) <= PED_MAX_WAIT_S + longest_turn
        for phase, start, end, walk in greens:
            if phase == ped and walk:
                assert end - start >= timing.phaseWalk + timing.phasePedestrianClear - 1e-6


def test_free_mode_serves_vehicles_without_a_walk_between_pedestrian_services():
    plan = _free_plan()
    program = SignalProgram(SPEC, plan, start_time=0.0)
    # short platoons on every approach: phases are called every cycle, each green gaps out early
    platoons = lambda t: {d.detector_id: (t % 20.0) < 2.0 for d in SPEC.detectors}  # noqa: E731
    greens = _greens(_events(program, 0.0, 1200.0, platoons))
    for ped in PED_PHASES:
        timing = plan.phase(ped)
        without = [(s, e) for phase, s, e, walk in greens if phase == ped and not walk]
        with_walk = [(s, e) for phase, s, e, walk in greens if phase == ped and walk]
        assert without and with_walk
        # a vehicle-only service may end before the pedestrian minimum would have allowed
        assert min(e - s for s, e in without) < timing.phaseWalk + timing.phasePedestrianClear


def test_push_button_call_gets_the_walk_at_the_next_service():
    plan = _free_plan()
    program = SignalProgram(SPEC, plan, start_time=0.0)
    platoons = lambda t: {d.detector_id: (t % 20.0) < 2.0 for d in SPEC.detectors}  # noqa: E731
    _events(program, 0.0, 30.0, platoons)  # the first walks are not due before PED_MAX_WAIT_S
    ped = min(PED_PHASES)
    program.place_ped_call(ped)
    program.place_ped_call(99)  # a miswired button is ignored
    greens = _greens(_events(program, 30.5, 30.0 + PED_MAX_WAIT_S - 10.0, platoons))
    services = [walk for phase, start, _end, walk in greens if phase == ped and start > 30.0]
    assert services and services[0] is True


def test_coordinated_mode_shows_the_walk_every_cycle():
    plan = SPEC.plan_from_splits([30.0, 30.0, 30.0, 30.0], mode="actuated", coord_phase=1)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    idle = lambda t: {d.detector_id: False for d in SPEC.detectors}  # noqa: E731
    greens = _greens(_events(program, 0.0, 10 * plan.patternCycleTime, idle))
    for ped in PED_PHASES:
        # (the green in force at power-up was entered before recording began: its walk event is not replayed)
        services = [walk for phase, start, _e, walk in greens if phase == ped and start > 0.0]
        assert len(services) >= 8 and all(services)


def test_free_mode_recycles_the_walk_into_a_running_green_and_holds_the_green_for_it():
    plan = _free_plan()
    program = SignalProgram(SPEC, plan, start_time=0.0)
    ped = min(PED_PHASES)
    own = {d.detector_id for d in SPEC.detectors if ped in SPEC.detector_phases(d)}
    # only the pedestrian phase's lanes are busy: it rests in green, and its walk falls due meanwhile
    events = _events(program, 0.0, 400.0, lambda t: {d.detector_id: d.detector_id in own for d in SPEC.detectors},
                     dt=0.1)
    greens = _greens(events)
    walks = [e.time for e in events if e.code == ev.PED_BEGIN_WALK and e.param == ped]
    recycled = [w for w in walks if any(p == ped and s < w - 1.0 < e for p, s, e, _walk in greens)]
    assert recycled, (walks, greens)
    timing = plan.phase(ped)
    for w in recycled:
        end = next(e for p, s, e, _walk in greens if p == ped and s < w <= e)
        assert end - w >= timing.phaseWalk + timing.phasePedestrianClear - 1e-6


def test_push_button_press_logs_the_ped_detector_and_the_registered_call():
    """Indiana 90 on every press, 45 once per latched call; timed recall logs no call (issue #15 ped delay)."""
    program = SignalProgram(SPEC, _free_plan(), start_time=0.0)
    idle = lambda t: {d.detector_id: False for d in SPEC.detectors}  # noqa: E731
    recall_only = _events(program, 0.0, PED_MAX_WAIT_S + 60.0, idle)
    assert any(e.code == ev.PED_BEGIN_WALK for e in recall_only)
    assert not [e for e in recall_only if e.code in (ev.PED_DETECTOR_ON, ev.PED_CALL_REGISTERED)]
    ped = min(PED_PHASES)
    now = PED_MAX_WAIT_S + 60.0
    program.place_ped_call(ped)
    program.place_ped_call(ped)
    program.place_ped_call(99)  # ignored, and not logged
    pressed = program.drain_events()
    assert [(e.time, e.code, e.param) for e in pressed] == [
        (now, ev.PED_DETECTOR_ON, ped), (now, ev.PED_CALL_REGISTERED, ped), (now, ev.PED_DETECTOR_ON, ped)]
    after = _events(program, now + 0.5, now + PED_MAX_WAIT_S, idle)
    assert any(e.code == ev.PED_BEGIN_WALK and e.param == ped and e.time > now for e in after)


def _push_button_spec():
    return replace(SPEC, phases=tuple(replace(p, ped_push_button=p.ped_crossing_m > 0) for p in SPEC.phases))


def test_push_button_crossing_gets_no_walk_without_a_press():
    spec = _push_button_spec()
    program = SignalProgram(spec, _free_plan(), start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in spec.detectors}  # noqa: E731
    events = _events(program, 0.0, 1200.0, busy)
    assert not [e for e in events if e.code == ev.PED_BEGIN_WALK]          # nobody pressed: no walk, ever
    assert {phase for phase, *_ in _greens(events)} >= PED_PHASES          # the phases still serve vehicles


def test_push_button_press_gets_a_fully_timed_walk_at_the_next_service():
    spec = _push_button_spec()
    plan = _free_plan()
    program = SignalProgram(spec, plan, start_time=0.0)
    busy = lambda t: {d.detector_id: True for d in spec.detectors}  # noqa: E731
    events = _events(program, 0.0, 300.0, busy)
    ped = min(PED_PHASES)
    program.place_ped_call(ped)
    events = _events(program, 300.5, 600.0, busy)
    walks = [(phase, s, e) for phase, s, e, walk in _greens(events) if walk]
    assert [phase for phase, _s, _e in walks] == [ped]                     # one press, one walk, its own phase
    timing = plan.phase(ped)
    assert walks[0][2] - walks[0][1] >= timing.phaseWalk + timing.phasePedestrianClear - 1e-6
