"""Signal-state sequences: what the heads show through a cycle.

Both the field emulator (which drives heads live) and the simulation layer
(which writes SUMO ``tlLogic`` programs for the validation gate) must derive
the *same* change intervals from a plan, so the derivation lives here once.

States use SUMO's letters per signal group: ``G`` protected green, ``g``
permissive green, ``y`` yellow, ``r`` red. Between phase A and the next phase
B, a group that is green in A and red in B shows yellow for A's
``phaseYellowChange`` then red for A's ``phaseRedClear``; a group green in
both keeps its green (an overlap), taking B's letter once B starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from traffic.plan import TimingPlan

GREEN_CHARS = frozenset("Gg")

KIND_GREEN = "green"
KIND_YELLOW = "yellow"
KIND_RED = "red"


@dataclass(frozen=True)
class Interval:
    """One interval of the cycle: the state shown for ``duration`` seconds."""

    phase: int
    kind: str       # green / yellow / red
    state: str
    duration: float


def yellow_state(current: str, following: str) -> str:
    """State during the yellow change from ``current`` greens to ``following`` greens."""
    return "".join(
        ("y" if n not in GREEN_CHARS else c) if c in GREEN_CHARS else "r"
        for c, n in zip(current, following, strict=False)
    )


def red_clear_state(current: str, following: str) -> str:
    """State during red clearance: groups that keep green stay green, all others red."""
    return "".join(c if (c in GREEN_CHARS and n in GREEN_CHARS) else "r"
                   for c, n in zip(current, following, strict=False))


def cycle_intervals(plan: TimingPlan) -> list[Interval]:
    """The plan's cycle as intervals, starting at the first phase's green.

    Zero-length intervals are dropped (a phase with no red clearance).
    """
    out: list[Interval] = []
    phases = plan.phases
    for index, phase in enumerate(phases):
        following = phases[(index + 1) % len(phases)].greens
        out.append(Interval(phase.phase, KIND_GREEN, phase.greens, round(phase.green, 1)))
        if phase.phaseYellowChange > 0:
            out.append(Interval(phase.phase, KIND_YELLOW, yellow_state(phase.greens, following),
                                round(phase.phaseYellowChange, 1)))
        if phase.phaseRedClear > 0:
            out.append(Interval(phase.phase, KIND_RED, red_clear_state(phase.greens, following),
                                round(phase.phaseRedClear, 1)))
    return [i for i in out if i.duration > 0]


def coord_green_start(plan: TimingPlan) -> float:
    """Seconds from the cycle's first interval to the start of the coordinated phase's green."""
    t = 0.0
    for phase in plan.phases:
        if phase.phase == plan.splitCoordPhase:
            return t
        t += phase.splitTime
    return 0.0


def cycle_start_offset(plan: TimingPlan) -> float:
    """Where (in seconds after the cycle reference) the first interval of :func:`cycle_intervals` starts.

    NTCIP offset references the start of the coordinated phase's green; the
    sequence starts at the first phase, so shift by the time before the
    coordinated phase.
    """
    if plan.patternCycleTime <= 0:
        return 0.0
    return (plan.patternOffsetTime - coord_green_start(plan)) % plan.patternCycleTime
