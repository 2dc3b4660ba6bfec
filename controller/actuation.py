"""How the field should run a plan: mode, maximum greens and passage times.

Why this exists: a fixed plan per 10-minute epoch cannot follow traffic that
changes from one cycle to the next; real controllers run their plans
*actuated* (gap-out when the queue has cleared, skip phases nobody waits
for) and the central optimizer's job is to set the limits well. The most
important limit is the maximum green: it caps a phase when every approach
is busy, so under saturation the maximum greens *are* the plan, and they
should share the cycle the way Webster (or the delay optimum) shares it.
Under light traffic gap-out decides and the maximums hardly matter, so
they get a floor that lets a platoon through.

Pure functions; the plan returned has the same splits, cycle and offset as
the one given, so every safety rule it passed it still passes (maximum green
is only ever raised above the minimum green).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from traffic.errors import PlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import MODES, PlanMode, TimingPlan

__all__ = ["max_greens", "actuate"]


def max_greens(greens_s: Sequence[float], min_greens_s: Sequence[float], *, factor: float, floor_s: float,
               cap_s: float) -> list[float]:
    """Maximum green per phase: ``factor`` x the optimal green, at least ``floor_s`` and the minimum green.

    ``greens_s`` are the optimizer's greens at the planned cycle (what each
    phase needs at the measured demand); ``factor`` > 1 leaves room for
    cycle-to-cycle fluctuation before a phase maxes out; ``cap_s`` bounds a
    single green (so crossing traffic never waits more than a few of them).
    """
    if factor <= 0 or floor_s < 0 or cap_s <= 0:
        raise PlanError(f"max green needs factor > 0, floor >= 0, cap > 0; got {factor}, {floor_s}, {cap_s}")
    if len(greens_s) != len(min_greens_s):
        raise PlanError(f"{len(greens_s)} greens for {len(min_greens_s)} minimum greens")
    out = []
    for green, minimum in zip(greens_s, min_greens_s, strict=False):
        value = min(max(factor * max(0.0, float(green)), floor_s), cap_s)
        out.append(round(max(value, float(minimum)), 1))
    return out


def actuate(plan: TimingPlan, spec: IntersectionSpec, greens_s: Sequence[float], *, mode: str, factor: float,
            floor_s: float, cap_s: float, passage_s: float) -> TimingPlan:
    """``plan`` to be run in ``mode`` with maximum greens from :func:`max_greens` and ``passage_s``.

    ``pretimed`` returns the plan with only the mode set (maximums unused).
    """
    if mode not in MODES:
        raise PlanError(f"mode must be one of {MODES}, got {mode!r}")
    if passage_s <= 0:
        raise PlanError(f"passage time must be positive, got {passage_s}")
    if mode == PlanMode.PRETIMED:
        return replace(plan, mode=mode)
    minimum = [max(p.phaseMinimumGreen, p.phaseWalk + p.phasePedestrianClear) for p in plan.phases]
    maxima = max_greens(greens_s, minimum, factor=factor, floor_s=floor_s, cap_s=cap_s)
    phases = tuple(replace(p, phaseMaximum1=m, phasePassage=round(passage_s, 1))
                   for p, m in zip(plan.phases, maxima, strict=False))
    return replace(plan, phases=phases, mode=mode)
