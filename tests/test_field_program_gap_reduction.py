"""Free mode gap reduction (volume-density operation, issue #14 b): the passage shrinks while a
conflicting call waits, so sparse arrivals cannot hold a green that others queue for."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs import program as prog
from field_firmware_stubs.program import (
    GAP_REDUCE_AFTER_S,
    GAP_REDUCE_OVER_S,
    MIN_GAP_S,
    SignalProgram,
    reduced_passage,
    to_ds,
)
from field_firmware_stubs.samples import two_phase


@settings(max_examples=300, deadline=None)
@given(passage=st.integers(1, 100), a=st.integers(-1000, 10_000), b=st.integers(-1000, 10_000))
def test_reduced_passage_is_bounded_and_never_grows_with_the_wait(passage, a, b):
    lo, hi = min(a, b), max(a, b)
    floor = min(passage, to_ds(MIN_GAP_S))
    for waited in (lo, hi):
        assert floor <= reduced_passage(passage, waited) <= passage
    assert reduced_passage(passage, hi) <= reduced_passage(passage, lo)
    assert reduced_passage(passage, to_ds(GAP_REDUCE_AFTER_S)) == passage
    assert reduced_passage(passage, to_ds(GAP_REDUCE_AFTER_S + GAP_REDUCE_OVER_S)) == floor


def _green_ends(program: SignalProgram, presence, end: float) -> list[tuple[int, float]]:
    """(phase, time its green ended) for every green that ended before ``end``."""
    out, start, last = [], None, None
    for k in range(int(end * 10) + 1):
        t = k / 10.0
        program.step(t, presence(t))
        key = (program.phase, program.interval)
        if key != last:
            if last is not None and last[1] == "green" and start is not None:
                out.append((last[0], t))
            start, last = t, key
    return out


def test_sparse_arrivals_yield_to_a_waiting_call_sooner(monkeypatch):
    """Phase 2 sees a vehicle every 2.5 s (never a 3 s gap): without reduction it runs to its maximum;
    with it, the green gaps out once phase 1's call has waited long enough, before the maximum."""
    spec = two_phase()
    spec = replace(spec, phases=tuple(replace(p, ped_crossing_m=0.0) for p in spec.phases))
    plan = spec.plan_from_splits([30.0, 40.0], mode="free", coord_phase=2)
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=50.0, phasePassage=3.0) for p in plan.phases))

    def presence(t: float) -> dict[str, bool]:
        return {"d1": 100.0 <= t < 101.0, "d2": (t * 10) % 25 < 5}

    monkeypatch.setattr(prog, "MIN_GAP_S", 3.0)  # no reduction: passage stays 3 s
    plain = _green_ends(SignalProgram(spec, plan, start_time=0.0), presence, 300.0)
    monkeypatch.setattr(prog, "MIN_GAP_S", 2.0)
    reduced = _green_ends(SignalProgram(spec, plan, start_time=0.0), presence, 300.0)
    # the phase-2 green that phase 1 interrupts: the call came at 100 s
    ended_plain = next(t for p, t in plain if p == 2 and t > 100.0)
    ended_reduced = next(t for p, t in reduced if p == 2 and t > 100.0)
    assert ended_plain >= 100.0 + 50.0 - 0.5  # max-out: max timer from the call
    assert ended_reduced < ended_plain
    assert ended_reduced >= 100.0 + GAP_REDUCE_AFTER_S  # not before the reduction began


def test_a_stop_line_loop_keeps_its_full_passage(monkeypatch):
    """At a stop-line loop the gaps are the queue's discharge headways: no reduction there."""
    spec = two_phase()
    spec = replace(spec, phases=tuple(replace(p, ped_crossing_m=0.0) for p in spec.phases),
                   detectors=tuple(replace(d, distance_to_stopline_m=4.0) for d in spec.detectors))
    plan = spec.plan_from_splits([30.0, 40.0], mode="free", coord_phase=2)
    plan = replace(plan, phases=tuple(replace(p, phaseMaximum1=50.0, phasePassage=3.0) for p in plan.phases))

    def presence(t: float) -> dict[str, bool]:
        return {"d1": 100.0 <= t < 101.0, "d2": (t * 10) % 25 < 5}

    ends = _green_ends(SignalProgram(spec, plan, start_time=0.0), presence, 300.0)
    assert next(t for p, t in ends if p == 2 and t > 100.0) >= 100.0 + 50.0 - 0.5  # max-out, as without reduction
