"""The central safety check: every rule a plan must pass before it may leave the centre.

The field emulator checks the same rules independently (written separately on
purpose, so one bug cannot let an unsafe plan through both). The rule ids and
their tolerances are therefore a contract: IDENTITY, PHASES, CYCLE_SUM,
CYCLE_RANGE, OFFSET, COORD_PHASE, MIN_GREEN, MAX_GREEN, YELLOW, RED_CLEAR,
PED_WALK, PED_CLEAR, CONFLICT, SERVES_ALL.

:func:`check_plan` collects *all* violations rather than stopping at the first,
so an engineer (or the optimizer's test) sees everything wrong in one pass.
Comparisons are written as ``not (value >= bound)`` so a NaN in a plan built in
code (the JSON decoder already refuses NaN) counts as a violation, never as a
pass.
"""

from __future__ import annotations

import math

from traffic.clearance import (
    FLOOR_RED_CLEAR_S,
    FLOOR_YELLOW_S,
    MAX_YELLOW_S,
    MIN_WALK_S,
    TOLERANCE_S,
    pedestrian_clear_s,
    red_clearance_s,
    yellow_change_s,
)
from traffic.errors import ScenarioError, UnsafePlanError
from traffic.intersection import IntersectionSpec, PhaseSpec
from traffic.plan import SIGNAL_CHARS, PhaseTiming, TimingPlan, Violation
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

GREEN_CHARS = frozenset("Gg")
_TIMING_FIELDS = ("splitTime", "phaseMinimumGreen", "phaseMaximum1", "phasePassage", "phaseYellowChange",
                  "phaseRedClear", "phaseWalk", "phasePedestrianClear")
# Rules with no stated tolerance (MIN_GREEN, MAX_GREEN) still compare sums of
# 0.1 s values; this absorbs binary float noise only, never a real shortfall.
_FLOAT_EPS = 1e-6


def check_plan(plan: TimingPlan, spec: IntersectionSpec) -> list[Violation]:
    """Return every safety rule ``plan`` breaks for intersection ``spec`` (empty list: safe)."""
    out: list[Violation] = []
    if plan.controller_id != spec.controller_id:
        out.append(Violation(IDENTITY, f"plan is for {plan.controller_id!r}, spec is {spec.controller_id!r}"))
    spec_phases = {p.phase: p for p in spec.phases}
    out.extend(_check_structure(plan, spec, spec_phases))
    out.extend(_check_cycle(plan, spec))
    for phase in plan.phases:
        phase_spec = spec_phases.get(phase.phase)
        if phase_spec is not None:
            out.extend(_check_phase(phase, phase_spec))
    out.extend(_check_conflicts(plan, spec))
    out.extend(_check_served(plan, spec))
    return out


def ensure_safe(plan: TimingPlan, spec: IntersectionSpec) -> None:
    """Raise :class:`UnsafePlanError` listing every violation, or return if the plan is safe."""
    violations = check_plan(plan, spec)
    if violations:
        raise UnsafePlanError(violations)


# ---------------------------------------------------------------------------
# rule groups

def _check_structure(plan: TimingPlan, spec: IntersectionSpec,
                     spec_phases: dict[int, PhaseSpec]) -> list[Violation]:
    out: list[Violation] = []
    if not plan.phases:
        out.append(Violation(PHASES, "plan has no phases"))
    seen: set[int] = set()
    for p in plan.phases:
        if p.phase in seen:
            out.append(Violation(PHASES, f"phase {p.phase} appears more than once", p.phase))
        seen.add(p.phase)
        if p.phase not in spec_phases:
            out.append(Violation(PHASES, f"phase {p.phase} is not a phase of {spec.controller_id} "
                                         f"(known: {sorted(spec_phases)})", p.phase))
        if len(p.greens) != spec.link_count:
            out.append(Violation(PHASES, f"greens has {len(p.greens)} signal groups, intersection has "
                                         f"{spec.link_count}", p.phase))
        bad = set(p.greens) - SIGNAL_CHARS
        if bad:
            out.append(Violation(PHASES, f"greens may only use G, g, r; found {''.join(sorted(bad))!r}", p.phase))
        for name in _TIMING_FIELDS:
            value = getattr(p, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                    and value >= 0):
                out.append(Violation(PHASES, f"{name} must be a finite, non-negative number of seconds, "
                                             f"got {value!r}", p.phase))
    return out


def _check_cycle(plan: TimingPlan, spec: IntersectionSpec) -> list[Violation]:
    out: list[Violation] = []
    cycle, offset = plan.patternCycleTime, plan.patternOffsetTime
    total = math.fsum(p.splitTime for p in plan.phases)
    if not (abs(total - cycle) <= TOLERANCE_S):
        out.append(Violation(CYCLE_SUM, f"splits sum to {total:.2f} s, cycle is {cycle} s"))
    if not (0.0 < cycle <= spec.max_cycle_s):
        out.append(Violation(CYCLE_RANGE, f"cycle {cycle} s outside (0, {spec.max_cycle_s}] s"))
    if not (0.0 <= offset < cycle):
        out.append(Violation(OFFSET, f"offset {offset} s outside [0, cycle {cycle} s)"))
    if all(p.phase != plan.splitCoordPhase for p in plan.phases):
        out.append(Violation(COORD_PHASE, f"coordinated phase {plan.splitCoordPhase} is not in the plan"))
    return out


def _check_phase(p: PhaseTiming, s: PhaseSpec) -> list[Violation]:
    out: list[Violation] = []
    n = p.phase
    green = p.splitTime - p.phaseYellowChange - p.phaseRedClear
    floor = max(p.phaseMinimumGreen, s.min_green_s)
    if not (green >= floor - _FLOAT_EPS):
        out.append(Violation(MIN_GREEN, f"green {green:.2f} s < minimum {floor} s", n))
    if not (p.phaseMinimumGreen >= s.min_green_s - _FLOAT_EPS):
        out.append(Violation(MIN_GREEN, f"phaseMinimumGreen {p.phaseMinimumGreen} s < policy {s.min_green_s} s", n))
    if not (p.phaseMaximum1 >= p.phaseMinimumGreen - _FLOAT_EPS):
        out.append(Violation(MAX_GREEN, f"phaseMaximum1 {p.phaseMaximum1} s < phaseMinimumGreen "
                                        f"{p.phaseMinimumGreen} s", n))
    if not (p.phasePassage > 0):
        # an actuated phase with no passage time would gap out at once; the field refuses it too
        out.append(Violation(MAX_GREEN, f"phasePassage {p.phasePassage} s must be positive", n))
    # the site's clearance policy: the agency's intervals for this approach when configured, else ITE;
    # the project's floor applies to both and to anything a spec could carry
    try:
        if s.agency_yellow_s is None:
            need_yellow, why_yellow = yellow_change_s(s.approach_speed_mps, s.approach_grade), \
                f"ITE at {s.approach_speed_mps} m/s, grade {s.approach_grade}"
        else:
            need_yellow, why_yellow = float(s.agency_yellow_s), "agency policy"
        if s.agency_red_clear_s is None:
            need_red, why_red = red_clearance_s(s.approach_speed_mps, s.clearance_width_m), \
                f"ITE, width {s.clearance_width_m} m"
        else:
            need_red, why_red = float(s.agency_red_clear_s), "agency policy"
    except ValueError as exc:
        raise ScenarioError(f"phase {n} design data unusable: {exc}") from exc
    if not (need_yellow >= FLOOR_YELLOW_S):
        need_yellow, why_yellow = FLOOR_YELLOW_S, "project floor"
    if not (need_red >= FLOOR_RED_CLEAR_S):
        need_red, why_red = FLOOR_RED_CLEAR_S, "project floor"
    if not (need_yellow - TOLERANCE_S <= p.phaseYellowChange <= MAX_YELLOW_S):
        out.append(Violation(YELLOW, f"yellow {p.phaseYellowChange} s outside [{need_yellow}, {MAX_YELLOW_S}] s "
                                     f"({why_yellow})", n))
    if not (p.phaseRedClear >= need_red - TOLERANCE_S):
        out.append(Violation(RED_CLEAR, f"red clearance {p.phaseRedClear} s < {need_red} s ({why_red})", n))
    if s.ped_crossing_m > 0 and not (p.phaseWalk >= MIN_WALK_S - TOLERANCE_S):
        out.append(Violation(PED_WALK, f"walk {p.phaseWalk} s < {MIN_WALK_S} s for a "
                                       f"{s.ped_crossing_m} m crossing", n))
    # the yellow + red shown after the green are the MUTCD buffer that may cover part of the crossing
    buffer = p.phaseYellowChange + p.phaseRedClear if s.ped_clear_in_buffer else 0.0
    need_ped = pedestrian_clear_s(s.ped_crossing_m, buffer)
    if not (p.phasePedestrianClear >= need_ped - TOLERANCE_S):
        out.append(Violation(PED_CLEAR, f"pedestrian clearance {p.phasePedestrianClear} s < {need_ped} s "
                                        f"for {s.ped_crossing_m} m", n))
    if s.ped_crossing_m > 0 or p.serves_pedestrians:
        ped_total = p.phaseWalk + p.phasePedestrianClear
        if not (green >= ped_total - TOLERANCE_S):
            out.append(Violation(PED_CLEAR, f"green {green:.2f} s < walk + pedestrian clearance {ped_total:.2f} s", n))
    return out


def _check_conflicts(plan: TimingPlan, spec: IntersectionSpec) -> list[Violation]:
    out: list[Violation] = []
    for p in plan.phases:
        greens = p.greens
        for i, j in sorted(spec.conflicts):
            if i < len(greens) and j < len(greens) and greens[i] in GREEN_CHARS and greens[j] in GREEN_CHARS:
                out.append(Violation(CONFLICT, f"conflicting signal groups {i} and {j} both green", p.phase))
        for i, j in sorted(spec.exclusive_foes):  # foes the junction does not resolve (docs/foes.md)
            if i < len(greens) and j < len(greens) and greens[i] == "G" and greens[j] == "G":
                out.append(Violation(CONFLICT, f"foe signal groups {i} and {j} both protected green", p.phase))
    return out


def _check_served(plan: TimingPlan, spec: IntersectionSpec) -> list[Violation]:
    needed = {i for s in spec.phases for i, c in enumerate(s.greens) if c in GREEN_CHARS}
    served = {i for p in plan.phases for i, c in enumerate(p.greens) if c in GREEN_CHARS}
    missing = sorted(needed - served)
    if missing:
        return [Violation(SERVES_ALL, f"signal groups {missing} are never green")]
    return []
