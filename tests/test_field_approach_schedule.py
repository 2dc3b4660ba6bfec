"""Arrival scheduling from approach sensors (issue #14): the pure decision and the program applying it.

Phase 1 releases links 0-1 (lane ``a``), phase 2 links 2-3 (lane ``b``), as
in :func:`field_firmware_stubs.samples.two_phase`.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import approach_schedule as sched
from field_firmware_stubs.approach_schedule import ApproachVehicle, SchedulePhase
from field_firmware_stubs.clearance_monitor import ClearanceMonitor
from field_firmware_stubs.program import SignalProgram
from field_firmware_stubs.samples import two_phase

PHASES = (SchedulePhase(1, "GGrr", 5.0, 40.0, 6.0), SchedulePhase(2, "rrGG", 5.0, 40.0, 6.0))
A, B = frozenset({0, 1}), frozenset({2, 3})


def _car(lane: str, links: frozenset[int], distance: float, speed: float = 0.0) -> ApproachVehicle:
    return ApproachVehicle(lane, links, distance, speed)


def test_a_lane_is_served_by_the_phases_that_show_all_its_signal_groups():
    phases = (SchedulePhase(1, "GGr", 5, 40, 6), SchedulePhase(2, "rGG", 5, 40, 6), SchedulePhase(3, "GGG", 5, 40, 6))
    assert sched.serving_phases(phases, {0, 1}) == {1, 3}
    assert sched.serving_phases(phases, {1}) == {1, 2, 3}
    # no phase shows both 0 and 2 green: those showing most of them (one each)
    split = (SchedulePhase(1, "Gr", 5, 40, 6), SchedulePhase(2, "rG", 5, 40, 6))
    assert sched.serving_phases(split, {0, 1}) == {1, 2}
    assert sched.serving_phases(split, set()) == frozenset()


def test_a_platoon_arriving_on_the_green_holds_it_against_one_waiting_car():
    platoon = [_car("a", A, 20.0 + 15.0 * i, 12.0) for i in range(6)]
    waiting = [_car("b", B, 2.0)]
    decision = sched.decide(PHASES, 0, platoon + waiting, room_s=30.0)
    assert decision.hold
    assert decision.cost_best < decision.cost_now


def test_an_empty_green_ends_for_a_queue_and_names_its_phase_next():
    queue = [_car("b", B, 2.0 + 7.0 * i) for i in range(5)]
    decision = sched.decide(PHASES, 0, queue, room_s=30.0)
    assert not decision.hold
    assert decision.next_phase == 2


def test_a_moving_queue_on_the_green_waits_only_for_those_ahead_and_a_standing_one_is_blocked():
    creeping = [_car("a", A, 2.0 + 7.0 * i, 0.7) for i in range(4)]  # queued, but its head is moving
    cost, _ = sched.schedule_cost(PHASES, 0, creeping, 8.0)
    assert abs(cost - sched.CAR_HEADWAY_S * (0 + 1 + 2 + 3)) < 1e-6
    # the same queue standing still past the green's minimum: its exit is full, the green moves nobody
    standing = [_car("a", A, 2.0 + 7.0 * i, 0.0) for i in range(4)]
    assert sched.schedule_cost(PHASES, 0, standing, 8.0)[0] > cost + 4 * 8.0
    assert not sched.decide(PHASES, 0, standing + [_car("b", B, 3.0)], room_s=30.0).hold


THREE = (SchedulePhase(1, "GGrrrr", 5.0, 40.0, 6.0), SchedulePhase(2, "rrGGrr", 5.0, 40.0, 6.0),
         SchedulePhase(3, "rrrrGG", 5.0, 40.0, 6.0))
C = frozenset({4, 5})


def test_a_phase_passed_over_for_long_is_served_next_for_fewer_vehicles():
    """Four vehicles just arrived on phase 2, two wait on phase 3: phase 2 first, unless phase 3's last
    green ended long ago (one vehicle more for every AGE_WEIGHT_S)."""
    waiting = [_car("b", B, 2.0 + 7.0 * i) for i in range(4)] + [_car("c", C, 2.0 + 7.0 * i) for i in range(2)]
    assert sched.decide(THREE, 0, waiting, room_s=0.0).next_phase == 2
    long_ago = 3 * sched.AGE_WEIGHT_S
    aged = (THREE[0], THREE[1], replace(THREE[2], idle_s=long_ago))
    assert sched.decide(aged, 0, waiting, room_s=0.0).next_phase == 3
    # just short of the two vehicles' difference: still phase 2
    younger = (THREE[0], THREE[1], replace(THREE[2], idle_s=1.9 * sched.AGE_WEIGHT_S))
    assert sched.decide(younger, 0, waiting, room_s=0.0).next_phase == 2


def test_a_phase_that_shares_its_lanes_with_another_does_not_age():
    """A left lane the through phase releases in gaps (``g``) and the protected-left phase releases (``G``):
    skipping the protected phase starves nobody, so its idle time does not make it win."""
    phases = (SchedulePhase(1, "GGrr", 5.0, 40.0, 6.0), SchedulePhase(2, "rrGg", 5.0, 40.0, 6.0),
              SchedulePhase(3, "rrrG", 5.0, 40.0, 6.0, idle_s=10 * sched.AGE_WEIGHT_S))
    through, left = frozenset({2}), frozenset({3})
    waiting = [_car("t", through, 2.0 + 7.0 * i) for i in range(3)] + [_car("l", left, 2.0)]
    assert sched.serving_phases(phases, left) == {2, 3}
    assert sched.decide(phases, 0, waiting, room_s=0.0).next_phase == 2
    # the same left lane with no permissive release: only phase 3 serves it, and its wait counts
    protected_only = (phases[0], replace(phases[1], greens="rrGr"), phases[2])
    assert sched.decide(protected_only, 0, waiting, room_s=0.0).next_phase == 3


def test_age_alone_never_calls_a_phase_nobody_waits_for():
    forgotten = (THREE[0], THREE[1], replace(THREE[2], idle_s=10_000.0))
    assert sched.decide(forgotten, 0, [_car("b", B, 3.0)], room_s=0.0).next_phase == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("bc"), st.floats(0.0, 190.0), st.floats(0.0, 15.0)), max_size=12),
       st.floats(0.0, 300.0), st.floats(0.0, 300.0))
def test_however_long_a_phase_has_waited_the_schedule_names_one_with_vehicles_at_its_stop_line(raw, idle_b, idle_c):
    """Age weighs only phases with vehicles waiting: it never hands the junction to an empty one."""
    vehicles = [_car(lane, B if lane == "b" else C, d, v) for lane, d, v in raw]
    phases = (THREE[0], replace(THREE[1], idle_s=idle_b), replace(THREE[2], idle_s=idle_c))
    named = sched.decide(phases, 0, vehicles, room_s=0.0).next_phase
    by = THREE[0].change_s + 5.0  # the first choice is made at the end of the change, on who is there by then

    def there(v: ApproachVehicle) -> bool:
        if v.speed_mps < sched.QUEUED_SPEED_MPS:
            return True
        return v.distance_m / max(v.speed_mps, sched.MIN_ARRIVAL_SPEED_MPS) <= by

    waiting = {2 if v.lane == "b" else 3 for v in vehicles if there(v)}
    if waiting:
        assert named in waiting


def test_the_program_tells_the_schedule_how_long_each_phase_has_waited_since_its_green():
    program, _ = _free_program()
    t = _settle_in_phase_1(program)
    assert {p.number: p.idle_s for p in program._sched_phases()}[2] == 0.0  # never served: no age to claim
    served_2, back_in_1 = None, None
    while back_in_1 is None and t < 300.0:
        program.step(t, {"d1": served_2 is not None, "d2": served_2 is None})  # a call on 2, then back to 1
        if program.phase == 2 and program.interval == "green":
            served_2 = t
        elif served_2 is not None and program.phase == 1 and program.interval == "green":
            back_in_1 = t
        t += 1.0
    assert served_2 is not None and back_in_1 is not None
    for _ in range(10):
        program.step(t, {"d1": False, "d2": False})
        t += 1.0
    idle = {p.number: p.idle_s for p in program._sched_phases()}[2]
    assert t - 1.0 - served_2 - 1.0 <= idle <= t - 1.0 - served_2  # since phase 2's green ended, to the step
    assert idle >= 10.0


def test_no_room_left_means_no_hold():
    platoon = [_car("a", A, 10.0 + 10.0 * i, 12.0) for i in range(6)]
    assert not sched.decide(PHASES, 0, platoon + [_car("b", B, 2.0)], room_s=0.0).hold


def test_a_queue_the_green_cannot_serve_is_charged_until_the_horizon():
    """Vehicles waiting on a lane no phase releases are never discharged: they wait the whole horizon."""
    stuck = [_car("x", frozenset({9}), 5.0)]
    assert sched.schedule_cost(PHASES, 0, stuck, 0.0)[0] == 0.0  # link 9 is served by no phase: not counted
    phases = (*PHASES, SchedulePhase(3, "rrrrrrrrrG", 5.0, 40.0, 6.0))
    cost, _ = sched.schedule_cost(phases, 0, stuck, 0.0, horizon_s=60.0)
    assert 0.0 < cost <= 60.0


_vehicles = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(0.0, 200.0), st.floats(0.0, 15.0),
                               st.booleans()), max_size=25)


def _fleet(raw) -> list[ApproachVehicle]:
    return [ApproachVehicle(lane, A if lane == "a" else B, d, v, moto) for lane, d, v, moto in raw]


@settings(max_examples=200, deadline=None)
@given(raw=_vehicles, end_in=st.sampled_from(sched.EXTENSIONS_S))
def test_the_cost_is_bounded_by_every_vehicle_waiting_the_whole_horizon(raw, end_in):
    """(The continuation is a greedy policy, so one more vehicle may reorder the phases and lower the
    total: no monotonicity is claimed.)"""
    fleet = _fleet(raw)
    cost, following = sched.schedule_cost(PHASES, 0, fleet, end_in)
    assert 0.0 <= cost <= len(fleet) * sched.HORIZON_S + 1e-6
    assert following == 2


@settings(max_examples=200, deadline=None)
@given(raw=_vehicles, room=st.floats(0.0, 60.0))
def test_a_hold_is_only_ever_chosen_for_a_real_saving(raw, room):
    decision = sched.decide(PHASES, 0, _fleet(raw), room_s=room)
    assert decision.cost_best <= decision.cost_now
    assert decision.hold == (decision.cost_best < decision.cost_now - sched.HOLD_MARGIN_VEH_S)
    if not raw:
        assert not decision.hold  # nobody seen: nothing to hold for


def _free_program() -> tuple[SignalProgram, object]:
    spec = two_phase()
    spec = replace(spec, phases=tuple(replace(p, ped_crossing_m=0.0) for p in spec.phases))
    plan = spec.plan_from_splits([30.0, 30.0], mode="free", coord_phase=2)
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=40.0, phasePassage=2.0) for p in plan.phases))
    return SignalProgram(spec, plan, start_time=0.0), plan


def _green_end_after(program: SignalProgram, phase: int, since: float, until: float, presence, approach) -> float:
    """Step each second from ``since``; the time ``phase``'s green ended (``until`` if it did not)."""
    t = since
    while t <= until:
        program.step(t, presence(t), approach(t))
        if not (program.phase == phase and program.interval == "green"):
            return t
        t += 1.0
    return until


def _green_end_partial(program: SignalProgram, phase: int, since: float, until: float, presence, approach) -> float:
    """As :func:`_green_end_after`, with a sensor that sees part of some approach only."""
    t = since
    while t <= until:
        program.step(t, presence(t), approach(t), partial_view=True)
        if not (program.phase == phase and program.interval == "green"):
            return t
        t += 1.0
    return until


def _settle_in_phase_1(program: SignalProgram) -> float:
    """Run until phase 1 shows green with nobody calling anywhere; returns the time."""
    t = 0.0
    while not (program.phase == 1 and program.interval == "green") or t < 30.0:
        program.step(t, {"d1": False, "d2": False})
        t += 1.0
    return t


def test_the_program_holds_a_green_past_its_gap_out_for_a_platoon_the_sensor_sees():
    """The loop on lane a sees nothing (a gap-out at once), but a platoon is 60-150 m away: with the
    approach sensor the green is held for it; without, it ends at the call."""
    results = {}
    for sensed in (False, True):
        program, _ = _free_program()
        t0 = _settle_in_phase_1(program)

        def approach(t: float, t0: float = t0, sensed: bool = sensed):
            if not sensed:
                return None
            ahead = [_car("a_0", A, 60.0 + 15.0 * i - 12.0 * (t - t0), 12.0) for i in range(7)]
            return [v for v in ahead if v.distance_m > 0.0] + [_car("b_0", B, 3.0)]

        results[sensed] = _green_end_after(program, 1, t0, t0 + 60.0,
                                           lambda t, t0=t0: {"d1": False, "d2": t >= t0}, approach) - t0
    assert results[False] <= 8.0          # the call came at t0: minimum green, then gap-out
    assert results[True] >= 8.0 + 4.0     # held for the platoon
    assert results[True] <= 40.0 + 2.0    # never past the maximum


def test_the_program_ends_a_green_the_loops_would_extend_when_it_serves_nobody_seen():
    """A loop stuck on (a parked vehicle) keeps extending by gap logic; the sensor sees an empty lane
    and a queue on b: the green ends at its minimum."""
    results = {}
    for sensed in (False, True):
        program, _ = _free_program()
        t0 = _settle_in_phase_1(program)

        def approach(t: float, sensed: bool = sensed):
            return [_car("b_0", B, 2.0 + 7.0 * i) for i in range(6)] if sensed else None

        results[sensed] = _green_end_after(program, 1, t0, t0 + 60.0,
                                           lambda t, t0=t0: {"d1": True, "d2": t >= t0}, approach) - t0
    assert results[False] >= 30.0    # held by the occupied loop up to its maximum
    assert results[True] <= 8.0
    program, _ = _free_program()
    assert program.schedule_stats == {"hold": 0, "end": 0, "next_phase": 0, "floor": 0}


def test_a_sensor_that_sees_part_of_the_road_may_hold_a_green_but_never_ends_one_before_the_loops():
    """Where a lane is covered too short to see its whole queue (``partial_view``), the schedule still
    holds the green for a platoon it sees, but ends no green the loops would extend: the vehicles the
    loop detects may come from beyond the view."""
    program, _ = _free_program()
    t0 = _settle_in_phase_1(program)

    def platoon(t: float, t0: float = t0):
        ahead = [_car("a_0", A, 60.0 + 15.0 * i - 12.0 * (t - t0), 12.0) for i in range(7)]
        return [v for v in ahead if v.distance_m > 0.0] + [_car("b_0", B, 3.0)]

    held = _green_end_partial(program, 1, t0, t0 + 60.0, lambda t, t0=t0: {"d1": False, "d2": t >= t0},
                              platoon) - t0
    assert 8.0 + 4.0 <= held <= 40.0 + 2.0  # held past the gap-out for the platoon, never past the maximum

    program, _ = _free_program()
    t0 = _settle_in_phase_1(program)
    queue_on_b = [_car("b_0", B, 2.0 + 7.0 * i) for i in range(6)]
    extended = _green_end_partial(program, 1, t0, t0 + 60.0, lambda t, t0=t0: {"d1": True, "d2": t >= t0},
                                  lambda t: queue_on_b) - t0
    assert extended >= 30.0  # the occupied loop extends it as without a sensor; the schedule alone ended it at 8 s
    assert program.schedule_stats["end"] > 0  # the schedule did want to end it


@settings(max_examples=25, deadline=None)
@given(seed_fleet=st.lists(st.tuples(st.sampled_from(["a_0", "b_0"]), st.floats(0.0, 200.0),
                                     st.floats(0.0, 15.0)), max_size=20))
def test_whatever_the_sensor_reports_greens_keep_their_minimum_and_maximum(seed_fleet):
    """The schedule only decides between the minimum and the maximum green: under any sensor reading
    every green lasts at least its minimum and at most its maximum (with its dynamic extension). Both
    loops stay occupied, so the other phase always calls and the maximum runs from the green's start."""
    program, plan = _free_program()
    fleet = [ApproachVehicle(lane, A if lane == "a_0" else B, d, v) for lane, d, v in seed_fleet]
    greens: list[tuple[int, float, float]] = []
    start, last = 0.0, (program.phase, program.interval)
    for k in range(400):
        t = float(k)
        program.step(t, {"d1": True, "d2": True}, fleet)
        key = (program.phase, program.interval)
        if key != last:
            if last[1] == "green":
                greens.append((last[0], start, t))
            start, last = t, key
    assert greens, "the program never changed phase"
    minimum = {p.phase: p.min_green_s for p in program.spec.phases}
    for phase, began, ended in greens[1:]:
        timing = next(p for p in plan.phases if p.phase == phase)
        assert ended - began >= max(minimum[phase], timing.phaseMinimumGreen) - 1.0
        assert ended - began <= 60.0 + 1.0  # DYNAMIC_MAX_LIMIT_S


def test_a_queue_is_left_while_a_lane_of_the_green_shows_a_vehicle_standing_or_crawling():
    assert sched.queue_left(PHASES, 0, [_car("a", A, 2.0), _car("b", B, 2.0)])
    assert sched.queue_left(PHASES, 0, [_car("a", A, 30.0, 0.5)])          # crawling counts as queued
    assert not sched.queue_left(PHASES, 0, [_car("a", A, 30.0, 12.0)])     # arriving, not queued
    assert not sched.queue_left(PHASES, 0, [_car("b", B, 2.0)])            # the queue is on the red
    assert sched.queue_left(PHASES, 1, [_car("b", B, 2.0)])
    assert not sched.queue_left(PHASES, 0, [])


def _phase_greens(program: SignalProgram, fleet: list[ApproachVehicle], seconds: int) -> list[tuple[int, float]]:
    """Run with both loops occupied and a fixed sensor reading; (phase, green length) of each green."""
    greens: list[tuple[int, float]] = []
    start, last = 0.0, (program.phase, program.interval)
    for k in range(seconds):
        program.step(float(k), {"d1": True, "d2": True}, fleet)
        key = (program.phase, program.interval)
        if key != last:
            if last[1] == "green":
                greens.append((last[0], float(k) - start))
            start, last = float(k), key
    return greens[1:]  # the first green started before the run's first step


def test_a_green_whose_queue_still_stands_runs_the_green_the_centre_planned_before_the_schedule_ends_it():
    """Lane a's short queue stands still (the schedule counts it blocked and would give the junction to
    lane b's long queue at once); the envelope floor keeps the green to its planned length. With nobody
    on lane a the schedule ends the green at its minimum: the floor only protects a queue that is there."""
    program, plan = _free_program()
    planned = {p.phase: p.splitTime - p.phaseYellowChange - p.phaseRedClear for p in plan.phases}
    queued = [_car("a_0", A, 2.0 + 7.0 * i) for i in range(3)] + [_car("b_0", B, 2.0 + 7.0 * i) for i in range(12)]
    greens = [g for phase, g in _phase_greens(program, queued, 400) if phase == 1]
    assert greens and all(planned[1] - 1.0 <= g <= planned[1] + 1.0 for g in greens), (greens, planned)
    assert program.schedule_stats["floor"] >= len(greens)

    program, _ = _free_program()
    empty_a = [_car("b_0", B, 2.0 + 7.0 * i) for i in range(12)]
    greens = [g for phase, g in _phase_greens(program, empty_a, 400) if phase == 1]
    minimum = next(p.min_green_s for p in program.spec.phases if p.phase == 1)
    assert greens and all(g <= minimum + 1.0 < planned[1] for g in greens), (greens, minimum)


def test_a_queue_is_leaving_while_its_head_moves_and_vehicles_stand_behind_it():
    leaving = [_car("a", A, 3.0, 4.0)] + [_car("a", A, 10.0 + 7.0 * i) for i in range(3)]
    assert sched.queue_leaving(PHASES, 0, leaving)
    assert not sched.queue_leaving(PHASES, 1, leaving)                                  # not its green
    assert not sched.queue_leaving(PHASES, 0, [_car("a", A, 2.0 + 7.0 * i) for i in range(4)])  # head stands
    assert not sched.queue_leaving(PHASES, 0, [_car("a", A, 3.0, 4.0), _car("a", A, 10.0)])   # one car behind
    assert not sched.queue_leaving(PHASES, 0, [_car("a", A, 20.0 + 15.0 * i, 12.0) for i in range(4)])  # arriving


def test_a_green_whose_queue_is_still_leaving_runs_to_its_maximum_whatever_waits_elsewhere():
    """Lane a's queue leaves (head moving, cars standing behind); three lanes of b wait, which leave
    three times as fast, so the schedule alone cuts a's green for them. The floor lets the green run to
    its maximum (40 s, or more once dynamic max has raised it after a max-out). With only one car behind
    the moving head the queue is not leaving: the green stops at the planned green."""
    program, plan = _free_program()
    b_queue = [_car(f"b_{k}", B, 2.0 + 7.0 * i) for k in range(3) for i in range(15)]
    leaving = [_car("a_0", A, 3.0, 4.0)] + [_car("a_0", A, 10.0 + 7.0 * i) for i in range(3)]
    assert not sched.decide(PHASES, 0, leaving + b_queue, room_s=30.0).hold   # the schedule would end it
    greens = [g for phase, g in _phase_greens(program, leaving + b_queue, 400) if phase == 1]
    assert greens and all(40.0 - 1.0 <= g <= 60.0 + 1.0 for g in greens), greens

    program, _ = _free_program()
    planned = next(p.splitTime - p.phaseYellowChange - p.phaseRedClear for p in plan.phases if p.phase == 1)
    short = [_car("a_0", A, 3.0, 4.0), _car("a_0", A, 10.0)]
    greens = [g for phase, g in _phase_greens(program, short + b_queue, 400) if phase == 1]
    assert greens and all(planned - 1.0 <= g <= planned + 1.0 for g in greens), (greens, planned)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sensor_gaps=st.booleans())
def test_whatever_the_loops_and_the_sensor_report_the_heads_never_trip_the_monitor(seed, sensor_gaps):
    """Readings that change every second (loops flickering, queues forming and leaving, a sensor that
    sometimes misses a second so the loops decide) may move a green's computed end into the past; the
    heads showed that green at the last step, so the yellow must still be timed from then. A yellow
    shown shorter than its minimum is a fault the conflict monitor trips on (it did on merge/saturated:
    a green ended 2 s back, its 3.3 s yellow shown for 2 s)."""
    rng = random.Random(seed)
    program, _plan = _free_program()
    monitor = ClearanceMonitor(program.spec)  # conflicts, yellow and red clearance as shown
    for k in range(1, 600):
        presence = {"d1": rng.random() < 0.5, "d2": rng.random() < 0.5}
        fleet = [ApproachVehicle(rng.choice(["a_0", "b_0"]), A if rng.random() < 0.5 else B,
                                 rng.uniform(0.0, 200.0), rng.choice([0.0, 0.0, 0.3, 5.0, 12.0]))
                 for _ in range(rng.randrange(0, 15))]
        approach = None if sensor_gaps and rng.random() < 0.3 else fleet
        state = program.step(float(k), presence, approach)
        monitor.observe(float(k), state)
        assert not monitor.tripped, monitor.reason


# ---- vehicles seen past a split weigh their turning share (session 12) -------------------------------------------


def test_a_vehicle_seen_past_a_split_costs_its_share_of_a_vehicle_and_of_a_headway():
    """One car waits on the red lane b: held for 10 s it costs 10 s (and 10 + 6 s clearance before it
    leaves); the same car seen past a split where half the vehicles turn this way costs half."""
    full = [_car("b", B, 2.0)]
    half = [replace(full[0], weight=0.5)]
    for end_in in (0.0, 10.0):
        cost_full, _ = sched.schedule_cost(PHASES, 0, full, end_in)
        cost_half, _ = sched.schedule_cost(PHASES, 0, half, end_in)
        assert cost_full > 0.0 and abs(cost_half - 0.5 * cost_full) < 1e-9
    # three cars queued on b, the middle one seen past a split: it costs half its wait, and the car behind
    # it leaves half a headway sooner (a half-weight car takes half a headway at the stop line)
    queue = [_car("b", B, 2.0 + 7.0 * i) for i in range(3)]
    split = [queue[0], replace(queue[1], weight=0.5), queue[2]]
    second_leaves = PHASES[0].change_s + sched.START_LOST_S + sched.CAR_HEADWAY_S
    saving = sched.schedule_cost(PHASES, 0, queue, 0.0)[0] - sched.schedule_cost(PHASES, 0, split, 0.0)[0]
    half_leaves = second_leaves - 0.5 * sched.CAR_HEADWAY_S
    assert abs(saving - ((second_leaves - 0.5 * half_leaves) + 0.5 * sched.CAR_HEADWAY_S)) < 1e-9


def test_the_envelope_floor_counts_only_vehicles_that_weigh_in_full():
    assert not sched.queue_left(PHASES, 0, [replace(_car("a", A, 25.0), weight=0.6)])
    assert sched.queue_left(PHASES, 0, [replace(_car("a", A, 25.0), weight=1.0)])
    leaving = [_car("a", A, 3.0, 4.0)] + [replace(_car("a", A, 10.0 + 7.0 * i), weight=0.6) for i in range(3)]
    assert not sched.queue_leaving(PHASES, 0, leaving)


@settings(max_examples=150, deadline=None)
@given(raw=_vehicles, weights=st.lists(st.floats(0.0, 1.0), min_size=25, max_size=25),
       end_in=st.sampled_from(sched.EXTENSIONS_S))
def test_weighing_vehicles_down_never_raises_the_cost_bound(raw, weights, end_in):
    fleet = [replace(v, weight=w) for v, w in zip(_fleet(raw), weights, strict=False)]
    cost, _ = sched.schedule_cost(PHASES, 0, fleet, end_in)
    assert 0.0 <= cost <= sum(v.weight for v in fleet) * sched.HORIZON_S + 1e-6
