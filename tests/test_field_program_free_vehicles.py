"""Free mode chooses the next phase by estimated waiting vehicles, not by lanes with a call.

Why it matters: with lane counting, a lane with one car and a lane with a
queue weigh the same, so the stage whose call is a few seconds older wins
even when the other holds the queue. The estimate counts vehicles that
reached each lane's (upstream) loop since the lane last had green; a loop
occupied without a break has a standing queue over it, worth at least the
vehicles that fit between loop and stop line.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import events as ev
from field_firmware_stubs.program import QUEUE_SPACING_M, STANDING_S, SignalProgram
from traffic.intersection import DetectorSpec, IntersectionSpec, PhaseSpec

DT = 0.5  # s between steps


def _spec() -> IntersectionSpec:
    """Three mutually conflicting single-lane approaches, one loop each, 40 m upstream; phases 2 and 3 alike."""
    conflicts = frozenset({(0, 1), (0, 2), (1, 2)})
    phases = tuple(PhaseSpec(n, greens, approach_speed_mps=11.1, clearance_width_m=14.0, min_green_s=5.0)
                   for n, greens in ((1, "Grr"), (2, "rGr"), (3, "rrG")))
    detectors = tuple(DetectorSpec(f"d{n}", f"lane{n}_0", n, distance_to_stopline_m=40.0) for n in (1, 2, 3))
    return IntersectionSpec(controller_id="c1", tls_id="c1", link_count=3, phases=phases, detectors=detectors,
                            conflicts=conflicts)


SPEC = _spec()


def _program() -> SignalProgram:
    plan = SPEC.plan_from_splits([30.0, 30.0, 30.0], mode="free", coord_phase=3)
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=60.0) for p in plan.phases))
    return SignalProgram(SPEC, plan, start_time=0.0)


def _next_green_after_phase1(presence) -> int:
    """Run phase 1 (busy until 30 s, so it cannot end before) and return the phase served after it."""
    program = _program()
    assert program.phase == 1 and program.interval == "green"
    t = 0.0
    while t < 120.0:
        t = round(t + DT, 1)
        program.step(t, presence(t))
        for e in program.drain_events():
            if e.code == ev.PHASE_BEGIN_GREEN and e.param != 1:
                return e.param
    raise AssertionError("phase 1 never ended")


def _pulses(first: float, n: int):
    """``n`` vehicles over a loop: 1 s occupied, 1 s free, from ``first``."""
    return lambda t: any(first + 2 * k <= t < first + 2 * k + 1 for k in range(n))


def _presence(lane2, lane3):
    return lambda t: {"d1": t < 30.0, "d2": lane2(t), "d3": lane3(t)}


def test_more_vehicles_beat_an_older_call():
    # phase 2: one car that called first; phase 3: four cars that started calling one second later
    assert _next_green_after_phase1(_presence(_pulses(2.0, 1), _pulses(3.0, 4))) == 3


def test_a_standing_queue_over_the_loop_counts_as_the_vehicles_before_it():
    # phase 2: four separate cars from 2 s; phase 3: a queue reaching its loop from 4 s (never a break)
    standing = lambda t: t >= 4.0  # noqa: E731
    assert 1 + 40.0 / QUEUE_SPACING_M > 4 and STANDING_S < 26.0  # the queue is worth more than the four cars
    assert _next_green_after_phase1(_presence(_pulses(2.0, 4), standing)) == 3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8))
def test_the_longer_queue_is_served_first(n2: int, n3: int):
    """Same call time, same phase cost: the lane with strictly more vehicles is served next."""
    if n2 == n3:
        return
    chosen = _next_green_after_phase1(_presence(_pulses(2.0, n2), _pulses(2.0, n3)))
    assert chosen == (2 if n2 > n3 else 3)


def test_counts_restart_after_the_lane_is_served():
    """A lane's count covers only the vehicles since its last green: the ones it already served do not linger."""
    program = _program()
    lane2_first = _pulses(2.0, 5)   # five cars for phase 2 while phase 1 runs
    lane3_first = _pulses(2.0, 4)   # four for phase 3: phase 2 goes first, then 3
    later: dict[str, float] = {}    # when phase 3's green began
    served: list[int] = []

    def presence(t: float) -> dict[str, bool]:
        t3 = later.get("t3")
        fresh = t3 is not None and t >= t3
        return {"d1": t < 30.0 or (fresh and _pulses(t3 + 1.0, 2)(t)),  # two new cars for phase 1, later
                "d2": lane2_first(t) or (fresh and _pulses(t3 + 0.5, 1)(t)),  # one new car for phase 2, first
                "d3": lane3_first(t)}

    t = 0.0
    while t < 200.0 and len(served) < 5:
        t = round(t + DT, 1)
        program.step(t, presence(t))
        for e in program.drain_events():
            if e.code == ev.PHASE_BEGIN_GREEN:
                served.append(e.param)
                if e.param == 3 and "t3" not in later:
                    later["t3"] = e.time
    # phase 2's five old cars were served with it: two new cars for phase 1 beat one for phase 2 that
    # called earlier (lane counting would serve 2 for its older call; stale counts would give 2 six cars)
    assert served[:4] == [1, 2, 3, 1]  # the first is the initial green
