"""Independent safety check of a timing plan, run inside the field controller.

The centre validates every plan before dispatch (``controller.safety``); the
field checks again with this separate implementation, written from the rules
rather than shared code, so that one bug cannot let an unsafe plan reach the
signal heads ("defence in depth", as a real cabinet's conflict monitor does
not trust the controller). Rule identifiers are stable and shared with the
centre so a rejection names the same rule on both sides.

All durations are seconds; comparisons allow :data:`TOLERANCE_S` because
plans carry 0.1 s resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from traffic.clearance import (
    FLOOR_RED_CLEAR_S,
    FLOOR_YELLOW_S,
    MAX_YELLOW_S,
    MIN_BUFFER_S,
    MIN_PED_CHANGE_S,
    MIN_WALK_S,
    TOLERANCE_S,
    WALKING_SPEED_MPS,
    ceil_tenth,
    red_clearance_s,
    yellow_change_s,
)
from traffic.intersection import IntersectionSpec, PhaseSpec
from traffic.plan import PhaseTiming, TimingPlan, Violation
from traffic.rules import (  # noqa: F401
    CONFLICT,
    COORD_PHASE,
    CYCLE_RANGE,
    CYCLE_SUM,
    IDENTITY,
    MAX_GREEN,
    MIN_GREEN,
    OFFSET,
    PED_CLEAR,
    PED_WALK,
    PHASES,
    RED_CLEAR,
    RULES,
    SERVES_ALL,
    YELLOW,
)

__all__ = [
    "IDENTITY", "PHASES", "CYCLE_SUM", "CYCLE_RANGE", "OFFSET", "COORD_PHASE", "MIN_GREEN", "MAX_GREEN",
    "YELLOW", "RED_CLEAR", "PED_WALK", "PED_CLEAR", "CONFLICT", "SERVES_ALL", "RULES", "check_plan",
]


_GREEN = frozenset("Gg")
_TIMING_FIELDS = ("splitTime", "phaseMinimumGreen", "phaseMaximum1", "phasePassage", "phaseYellowChange",
                  "phaseRedClear", "phaseWalk", "phasePedestrianClear")


def check_plan(plan: TimingPlan, spec: IntersectionSpec) -> list[Violation]:
    """Every safety rule ``plan`` breaks for the intersection ``spec``; empty means safe.

    Never raises on a bad plan: a field controller must answer any input with
    a reason, so even a structurally broken plan comes back as violations.
    """
    out: list[Violation] = []
    if plan.controller_id != spec.controller_id:
        out.append(Violation(IDENTITY,
                             f"plan is for {plan.controller_id!r}, this controller is {spec.controller_id!r}"))
    if not plan.phases:
        out.append(Violation(PHASES, "plan has no phases"))
        return out
    out.extend(_check_cycle(plan, spec))
    design = {p.phase: p for p in spec.phases}
    seen: set[int] = set()
    for timing in plan.phases:
        if timing.phase in seen:
            out.append(Violation(PHASES, f"phase number {timing.phase} appears twice", timing.phase))
            continue
        seen.add(timing.phase)
        structural = _check_structure(timing, spec, design)
        out.extend(structural)
        if structural:
            continue  # timing judgements against unknown design data would be noise
        out.extend(_check_phase_timing(timing, design[timing.phase]))
        out.extend(_check_conflicts(timing, spec))
    if plan.splitCoordPhase not in seen:
        out.append(Violation(COORD_PHASE, f"coordinated phase {plan.splitCoordPhase} is not in the plan"))
    out.extend(_check_serves_all(plan, spec))
    return out


def _check_cycle(plan: TimingPlan, spec: IntersectionSpec) -> Iterable[Violation]:
    cycle = plan.patternCycleTime
    total = sum(p.splitTime for p in plan.phases)
    if not math.isfinite(cycle) or not math.isfinite(total) or abs(total - cycle) > TOLERANCE_S:
        yield Violation(CYCLE_SUM, f"splits sum to {total:.2f} s, cycle is {cycle:.2f} s")
    if not (math.isfinite(cycle) and 0 < cycle <= spec.max_cycle_s + 1e-9):
        yield Violation(CYCLE_RANGE, f"cycle {cycle} s outside (0, {spec.max_cycle_s}] s")
    offset = plan.patternOffsetTime
    if not (math.isfinite(offset) and 0 <= offset < cycle):
        yield Violation(OFFSET, f"offset {offset} s outside [0, cycle {cycle} s)")


def _check_structure(timing: PhaseTiming, spec: IntersectionSpec, design: dict[int, PhaseSpec]) -> list[Violation]:
    out = []
    if timing.phase not in design:
        out.append(Violation(PHASES, f"phase {timing.phase} is not a phase of {spec.controller_id} "
                                     f"(known: {sorted(design)})", timing.phase))
    if len(timing.greens) != spec.link_count:
        out.append(Violation(PHASES, f"greens has {len(timing.greens)} signal groups, intersection has "
                                     f"{spec.link_count}", timing.phase))
    if set(timing.greens) - set("Ggr"):
        out.append(Violation(PHASES, f"greens {timing.greens!r} may only contain G, g, r", timing.phase))
    for name in _TIMING_FIELDS:
        value = getattr(timing, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            out.append(Violation(PHASES, f"{name} must be a finite non-negative number of seconds, got {value!r}",
                                 timing.phase))
    return out


def _check_phase_timing(t: PhaseTiming, d: PhaseSpec) -> Iterable[Violation]:
    n = t.phase
    green = t.splitTime - t.phaseYellowChange - t.phaseRedClear
    if t.phaseMinimumGreen < d.min_green_s - TOLERANCE_S:
        yield Violation(MIN_GREEN, f"phaseMinimumGreen {t.phaseMinimumGreen} s below policy {d.min_green_s} s", n)
    floor = max(t.phaseMinimumGreen, d.min_green_s)
    if green < floor - TOLERANCE_S:
        yield Violation(MIN_GREEN, f"green {green:.1f} s (split {t.splitTime} - Y {t.phaseYellowChange} "
                                   f"- R {t.phaseRedClear}) below minimum {floor} s", n)
    if t.phaseMaximum1 < t.phaseMinimumGreen - TOLERANCE_S:
        yield Violation(MAX_GREEN, f"phaseMaximum1 {t.phaseMaximum1} s below phaseMinimumGreen "
                                   f"{t.phaseMinimumGreen} s", n)
    if t.phasePassage <= 0:
        yield Violation(MAX_GREEN, f"phasePassage {t.phasePassage} s must be positive", n)
    # the clearance policy this controller was configured with: the agency's own interval for the
    # approach, or ITE; the project floor holds whatever the configuration says
    agency_y, agency_r = d.agency_yellow_s, d.agency_red_clear_s
    yellow_need = ceil_tenth(agency_y) if agency_y is not None else yellow_change_s(d.approach_speed_mps,
                                                                                     d.approach_grade)
    yellow_source = "agency" if agency_y is not None else f"ITE ({d.approach_speed_mps} m/s, grade {d.approach_grade})"
    if not yellow_need >= FLOOR_YELLOW_S:
        yellow_need, yellow_source = FLOOR_YELLOW_S, "floor"
    if not t.phaseYellowChange >= yellow_need - TOLERANCE_S:
        yield Violation(YELLOW, f"yellow {t.phaseYellowChange} s below {yellow_source} {yellow_need} s", n)
    if t.phaseYellowChange > MAX_YELLOW_S + TOLERANCE_S:
        yield Violation(YELLOW, f"yellow {t.phaseYellowChange} s above the {MAX_YELLOW_S} s maximum", n)
    red_need = ceil_tenth(agency_r) if agency_r is not None else red_clearance_s(d.approach_speed_mps,
                                                                                  d.clearance_width_m)
    red_source = "agency" if agency_r is not None else f"ITE ({d.clearance_width_m} m at {d.approach_speed_mps} m/s)"
    if not red_need >= FLOOR_RED_CLEAR_S:
        red_need, red_source = FLOOR_RED_CLEAR_S, "floor"
    if not t.phaseRedClear >= red_need - TOLERANCE_S:
        yield Violation(RED_CLEAR, f"red clearance {t.phaseRedClear} s below {red_source} {red_need} s", n)
    if d.ped_crossing_m > 0:
        if t.phaseWalk < MIN_WALK_S - TOLERANCE_S:
            yield Violation(PED_WALK, f"walk {t.phaseWalk} s below {MIN_WALK_S} s", n)
        crossing_time = ceil_tenth(d.ped_crossing_m / WALKING_SPEED_MPS)
        need_clear = crossing_time
        buffer = t.phaseYellowChange + t.phaseRedClear  # steady don't-walk before any conflicting release
        if d.ped_clear_in_buffer and buffer >= MIN_BUFFER_S - TOLERANCE_S:  # MUTCD 4E.06
            need_clear = max(min(MIN_PED_CHANGE_S, crossing_time), ceil_tenth(crossing_time - buffer))
        if t.phasePedestrianClear < need_clear - TOLERANCE_S:
            yield Violation(PED_CLEAR, f"pedestrian clearance {t.phasePedestrianClear} s below {need_clear} s "
                                       f"for a {d.ped_crossing_m} m crossing", n)
        if green < t.phaseWalk + t.phasePedestrianClear - TOLERANCE_S:
            yield Violation(PED_CLEAR, f"green {green:.1f} s shorter than walk {t.phaseWalk} s + "
                                       f"pedestrian clearance {t.phasePedestrianClear} s", n)


def _check_conflicts(t: PhaseTiming, spec: IntersectionSpec) -> Iterable[Violation]:
    greens = t.greens
    for i, j in sorted(spec.conflicts):
        if i < len(greens) and j < len(greens) and greens[i] in _GREEN and greens[j] in _GREEN:
            yield Violation(CONFLICT, f"conflicting signal groups {i} and {j} both green in {greens!r}", t.phase)
    for i, j in sorted(spec.exclusive_foes):  # foes the junction does not resolve (docs/foes.md)
        if i < len(greens) and j < len(greens) and greens[i] == "G" and greens[j] == "G":
            yield Violation(CONFLICT, f"foe signal groups {i} and {j} both protected green in {greens!r}", t.phase)


def _check_serves_all(plan: TimingPlan, spec: IntersectionSpec) -> Iterable[Violation]:
    required = {i for p in spec.phases for i, c in enumerate(p.greens) if c in _GREEN}
    served = {i for p in plan.phases for i, c in enumerate(p.greens) if c in _GREEN}
    missing = sorted(required - served)
    if missing:
        yield Violation(SERVES_ALL, f"signal groups {missing} are never green in this plan")
