"""Cycle, splits and offsets from demand: Webster now, with bounded change.

Why bounded: a controller moving from a 60 s to a 140 s cycle in one step
runs a long transition and disturbs its neighbours' progression; moving at
most ``max_cycle_step_s`` per epoch keeps every step small and lets the
simulation gate judge a plan close to what is running.

Every plan this module returns has passed :func:`controller.safety.check_plan`;
if a bug ever produced an unsafe one it raises :class:`UnsafePlanError` rather
than return it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from controller import webster
from controller.actuation import actuate
from controller.bandwidth import CorridorBands, corridor_bands
from controller.bounds import Bounds
from controller.cycle_search import CycleChoice, best_cycle, best_cycles
from controller.demand import PhaseDemand
from controller.safety import ensure_safe
from traffic.config import OptimizerSettings
from traffic.errors import PlanError
from traffic.intersection import Corridor, IntersectionSpec
from traffic.plan import PlanMode, TimingPlan

log = logging.getLogger(__name__)

CREATED_BY = "optimizer"


@dataclass(frozen=True)
class Proposal:
    """A candidate plan and the numbers behind it."""

    plan: TimingPlan
    explanation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sizing:
    """Webster's quantities for one intersection (internal)."""

    q: np.ndarray
    s: np.ndarray
    y: np.ndarray
    lost: np.ndarray
    min_split: np.ndarray
    c0: float
    min_cycle: float
    max_cycle: float


def _size(spec: IntersectionSpec, demand: PhaseDemand, settings: OptimizerSettings,
          bounds: Bounds | None = None) -> _Sizing:
    if demand.controller_id != spec.controller_id:
        raise PlanError(f"demand is for {demand.controller_id!r}, not {spec.controller_id!r}")
    flows = {p: f for p, f in zip(demand.phases, demand.flow_pcu_h_lane, strict=False)}
    q = np.array([float(flows.get(p.phase, 0.0)) for p in spec.phases])
    if not np.all(np.isfinite(q)) or np.any(q < 0):
        raise PlanError(f"{spec.controller_id}: demand must be finite and >= 0, got {q.tolist()}")
    s = np.array([p.saturation_flow_pcu_h_lane or settings.saturation_flow_pcu_per_lane_h for p in spec.phases])
    y = webster.flow_ratios(q, s)
    lost = webster.phase_lost_time([p.yellow_s for p in spec.phases], [p.red_clear_s for p in spec.phases],
                                   min_lost_s=settings.lost_time_per_phase_s)
    b = bounds.check(spec) if bounds is not None else Bounds()
    # engineer minimums rounded up to the plans' 0.1 s resolution, so rounding the splits cannot undercut them
    min_split = np.array([max(p.min_split_s, math.ceil(b.min_split_s.get(p.phase, 0.0) * 10 - 1e-6) / 10)
                          for p in spec.phases])
    max_cycle = min(settings.max_cycle_s, spec.max_cycle_s, b.max_cycle_s or math.inf)
    min_cycle = max(settings.min_cycle_s, b.min_cycle_s or 0.0, math.ceil(float(min_split.sum())))
    if min_cycle > max_cycle:
        # the design itself needs more than the policy maximum; the spec's (and engineer's) limits still bind
        max_cycle = min(spec.max_cycle_s, b.max_cycle_s or math.inf)
        if min_cycle > max_cycle:
            raise PlanError(f"{spec.controller_id}: minimum splits need {min_cycle} s, max cycle is {max_cycle} s")
    c0 = float(webster.optimum_cycle(lost.sum(), y.sum(), min_cycle_s=min_cycle, max_cycle_s=max_cycle))
    return _Sizing(q, s, y, lost, min_split, min(float(math.ceil(c0)), max_cycle), min_cycle, max_cycle)


def _bounded(target: float, incumbent_cycle: float, step: float, lo: float, hi: float) -> float:
    cycle = min(max(target, incumbent_cycle - step), incumbent_cycle + step)
    return float(min(max(cycle, lo), hi))


def _incumbent_delay(incumbent: TimingPlan, spec: IntersectionSpec, sz: _Sizing) -> float | None:
    """Webster delay of the running plan under today's demand (None if its phases differ from the spec)."""
    try:
        greens = np.array([incumbent.phase(p.phase).splitTime for p in spec.phases]) - sz.lost
    except PlanError:
        return None
    cycle = incumbent.patternCycleTime
    if cycle <= 0 or np.any(greens <= 0):
        return None
    return webster.mean_delay(cycle, greens, sz.q, sz.s)


def _choice(sz: _Sizing) -> CycleChoice:
    return best_cycle(sz.q, sz.s, sz.lost, sz.min_split, min_cycle_s=sz.min_cycle, max_cycle_s=sz.max_cycle)


def optimize(spec: IntersectionSpec, demand: PhaseDemand, incumbent: TimingPlan, settings: OptimizerSettings, *,
             version: int, common_cycle: float | None = None, offset_s: float | None = None,
             reason: str = "", cycle_choice: CycleChoice | None = None,
             bounds: Bounds | None = None, _sizing: _Sizing | None = None) -> Proposal:
    """A plan for one intersection, moving at most ``max_cycle_step_s`` from ``incumbent``.

    The target cycle is the delay-optimal one under the constraints
    (:func:`controller.cycle_search.best_cycle`; ``cycle_choice`` when the
    caller already searched), splits by Webster's rule with minimums pinned,
    maximum greens and mode from :mod:`controller.actuation`.
    ``common_cycle`` replaces the target (corridor coordination);
    ``offset_s`` sets the offset (default: the incumbent's, wrapped into the
    new cycle). ``bounds`` are the engineer's limits (:class:`Bounds`).
    """
    sz = _sizing if _sizing is not None else _size(spec, demand, settings, bounds)
    choice = cycle_choice if cycle_choice is not None else _choice(sz)
    target = float(common_cycle) if common_cycle is not None else choice.cycle_s
    cycle = _bounded(target, incumbent.patternCycleTime, settings.max_cycle_step_s, sz.min_cycle, sz.max_cycle)
    cycle = float(round(cycle, 1))
    raw = (np.array(choice.splits_s) if abs(cycle - choice.cycle_s) < 1e-9 and common_cycle is None
           else webster.allocate_splits(cycle, sz.y, sz.lost, sz.min_split))  # the search already split it
    try:
        splits = webster.round_splits(raw, cycle, min_split_s=sz.min_split)
    except ValueError as exc:
        raise PlanError(f"{spec.controller_id}: {exc}") from exc
    coord = incumbent.splitCoordPhase if any(p.phase == incumbent.splitCoordPhase for p in spec.phases) \
        else spec.phases[0].phase
    offset = incumbent.patternOffsetTime if offset_s is None else offset_s
    why = reason or (f"{choice.method}-optimal cycle {choice.cycle_s:.0f}s (Webster C0={sz.c0:.0f}s), "
                     f"target={target:.0f}s cycle={cycle:.0f}s Y={float(sz.y.sum()):.3f}")
    plan = spec.plan_from_splits([float(x) for x in splits], offset_s=offset % cycle, created_by=CREATED_BY,
                                 version=version, reason=why, coord_phase=coord)
    plan = actuate(plan, spec, [p.green for p in plan.phases], mode=settings.plan_mode,
                   factor=settings.max_green_factor, floor_s=settings.max_green_floor_s,
                   cap_s=min(settings.max_green_cap_s, (bounds.max_green_cap_s if bounds else None) or math.inf),
                   passage_s=settings.passage_s)
    ensure_safe(plan, spec)
    greens_after = splits - sz.lost
    delay_before = _incumbent_delay(incumbent, spec, sz)
    delay_after = webster.mean_delay(cycle, greens_after, sz.q, sz.s)
    explanation = {
        "method": f"cycle search ({choice.method}) + webster splits",
        # the site's clearance policy the plan's yellow and red clearance follow (audit: traffic.clearance)
        "clearance_policy": spec.clearance_policy,
        "yellow_s": [p.yellow_s for p in spec.phases],
        "red_clear_s": [p.red_clear_s for p in spec.phases],
        "cycle_search": {"cycle_s": choice.cycle_s, "method": choice.method, "delay_s": round(choice.delay_s, 2),
                         "max_x": round(choice.max_x, 3), "candidates": choice.candidates},
        "phases": [p.phase for p in spec.phases],
        "flow_pcu_h_lane": _r(sz.q),
        "saturation_pcu_h_lane": _r(sz.s),
        "y": _r(sz.y, 4),
        "Y": round(float(sz.y.sum()), 4),
        "lost_s": _r(sz.lost),
        "L": round(float(sz.lost.sum()), 1),
        "C0": sz.c0,
        "target_cycle_s": target,
        "incumbent_cycle_s": incumbent.patternCycleTime,
        "cycle_s": cycle,
        "cycle_bounded": abs(cycle - target) > 0.05,
        "saturated": bool(sz.y.sum() >= webster.SATURATED_Y),
        "splits_s": _r(splits),
        "mode": plan.mode,
        "max_green_s": [p.phaseMaximum1 for p in plan.phases],
        "min_splits_s": _r(sz.min_split),
        "offset_s": plan.patternOffsetTime,
        "degree_of_saturation": _r(webster.degree_of_saturation(cycle, np.maximum(greens_after, 0.1), sz.q, sz.s), 3),
        "delay_before_s": None if delay_before is None else round(delay_before, 2),
        "delay_after_s": round(delay_after, 2),
        "incumbent_plan_id": incumbent.plan_id,
        "bounds": bounds.to_dict() if bounds is not None else None,
        "demand": demand.to_dict(),
    }
    return Proposal(plan, explanation)


def green_wave_offsets(corridor: Corridor, cycle_s: float,
                       anchors: Mapping[str, float] | None = None) -> dict[str, float]:
    """One-direction green-wave offsets: downstream = upstream + distance / speed (mod cycle).

    Walks ``corridor.links`` from every intersection with no upstream link (its
    offset is taken from ``anchors`` or 0), so a platoon released at the start
    of one coordinated green reaches the next stop line as its green starts.
    Intersections not reached by any link keep their anchor (or 0).
    """
    anchors = dict(anchors or {})
    ids = [i.controller_id for i in corridor.intersections]
    downstream: dict[str, list[tuple[str, float]]] = {c: [] for c in ids}
    has_upstream: set[str] = set()
    for up, down, distance, speed in corridor.links:
        if up not in downstream or down not in downstream:
            raise PlanError(f"corridor {corridor.name}: link {up}->{down} names an unknown intersection")
        if speed <= 0 or distance < 0:
            raise PlanError(f"corridor {corridor.name}: link {up}->{down} needs distance >= 0 and speed > 0")
        downstream[up].append((down, distance / speed))
        has_upstream.add(down)
    offsets: dict[str, float] = {}
    roots = [c for c in ids if c not in has_upstream] or ids[:1]
    for root in roots:
        if root in offsets:
            continue
        offsets[root] = anchors.get(root, 0.0) % cycle_s
        queue = deque([root])
        while queue:
            node = queue.popleft()
            for nxt, travel in downstream[node]:
                if nxt not in offsets:  # first path wins; a second upstream cannot also be satisfied
                    offsets[nxt] = (offsets[node] + travel) % cycle_s
                    queue.append(nxt)
    for c in ids:
        offsets.setdefault(c, anchors.get(c, 0.0) % cycle_s)
    return {c: round(v, 1) % cycle_s for c, v in offsets.items()}


def optimize_corridor(corridor: Corridor, demands: Mapping[str, PhaseDemand], incumbents: Mapping[str, TimingPlan],
                      settings: OptimizerSettings, versions: Mapping[str, int], *,
                      exclude: Collection[str] = (),
                      bounds: Mapping[str, Bounds] | None = None) -> dict[str, Proposal]:
    """Plans for every intersection of the corridor.

    ``settings.plan_mode == "free"`` (fully actuated): each intersection gets
    its own delay-optimal cycle; there is no cycle to share and no offset.
    Otherwise one common cycle with coordinated offsets: the common target is
    the largest individual optimum (the busiest intersection sets the pace),
    rounded up to a whole second. When every incumbent can reach one common
    value within ``max_cycle_step_s`` they all move there together; otherwise
    each moves its own bounded step towards it (and the explanation says the
    corridor is still converging). ``exclude`` (locked controllers) are
    neither sized nor re-planned; ``bounds`` (engineer's limits per
    controller) are kept by every plan.

    Offsets (``settings.offset_method``): ``"bandwidth"`` maximises the
    two-way through-bands along every simple chain of linked intersections
    (:mod:`controller.bandwidth`, on the coordinated greens the splits
    leave); a locked controller whose plan in ``incumbents`` runs the common
    cycle keeps its offset and the others fit around it. Where that does not
    apply (no common cycle yet, links that branch or loop, a solver failure)
    and with ``"green-wave"``, one-direction green-wave offsets
    (:func:`green_wave_offsets`). The explanation names the method used per
    intersection (``offset_method``) and the bands found (``bandwidth_s``
    outbound, ``bandwidth_inbound_s``, ``None`` when not computed or one-way;
    ``bandwidth_chain``: the chain in outbound order).
    """
    bounds = dict(bounds or {})
    specs = [s for s in corridor.intersections if s.controller_id not in set(exclude)]
    if not specs:
        return {}
    for s in specs:
        for needed, what in ((demands, "demand"), (incumbents, "incumbent plan"), (versions, "version")):
            if s.controller_id not in needed:
                raise PlanError(f"corridor {corridor.name}: no {what} for {s.controller_id}")
    sizes = {s.controller_id: _size(s, demands[s.controller_id], settings, bounds.get(s.controller_id))
             for s in specs}
    choices = _search_all(sizes)
    if settings.plan_mode == PlanMode.FREE:
        # fully actuated: no common cycle to keep, every intersection takes its own optimum
        out_free: dict[str, Proposal] = {}
        for s in specs:
            cid = s.controller_id
            out_free[cid] = optimize(s, demands[cid], incumbents[cid], settings, version=versions[cid],
                                     cycle_choice=choices[cid], bounds=bounds.get(cid), _sizing=sizes[cid])
            out_free[cid].explanation.update({"corridor": corridor.name, "corridor_common": False})
        return out_free
    target = float(math.ceil(max(c.cycle_s for c in choices.values())))
    step = settings.max_cycle_step_s
    lo = max(max(incumbents[c].patternCycleTime - step for c in sizes), max(sz.min_cycle for sz in sizes.values()))
    hi = min(min(incumbents[c].patternCycleTime + step for c in sizes), min(sz.max_cycle for sz in sizes.values()))
    common = lo <= hi
    cycle = float(math.ceil(min(max(target, lo), hi))) if common else None
    if cycle is not None and cycle > hi:
        cycle = float(math.floor(hi))
    anchor_cycle = cycle if cycle is not None else target
    anchors = {c: incumbents[c].patternOffsetTime for c in sizes}
    offsets = green_wave_offsets(corridor, anchor_cycle, anchors)
    reason = f"corridor {corridor.name}: common cycle target {target:.0f}s, green wave"
    out: dict[str, Proposal] = {}
    for s in specs:
        cid = s.controller_id
        out[cid] = optimize(s, demands[cid], incumbents[cid], settings, version=versions[cid],
                            common_cycle=cycle if cycle is not None else target, offset_s=offsets[cid],
                            cycle_choice=choices[cid], bounds=bounds.get(cid), _sizing=sizes[cid], reason=reason)
    bands = None
    if settings.offset_method == "bandwidth":
        if cycle is None:
            log.info("corridor %s: no common cycle yet, green-wave offsets", corridor.name)
        else:
            bands = _bandwidth_offsets(corridor, cycle, out, incumbents, exclude)
    chain_of = {c: list(chain) for chain in (bands.chains if bands is not None else []) for c in chain}
    for s in specs:
        cid = s.controller_id
        method = "green-wave"
        out_s: float | None = None
        in_s: float | None = None
        if bands is not None and cid in bands.offsets_s:
            method = "bandwidth"
            out_s, in_s = bands.bandwidth_s[cid], bands.bandwidth_inbound_s[cid]
            two_way = "two-way" if in_s is not None else "one-way"
            why = (f"corridor {corridor.name}: common cycle target {target:.0f}s, {two_way} bandwidth {out_s:.1f}s"
                   + (f"/{in_s:.1f}s" if in_s is not None else ""))
            out[cid] = _with_offset(out[cid], s, bands.offsets_s[cid], why)
        out[cid].explanation.update({
            "corridor": corridor.name,
            "corridor_target_cycle_s": target,
            "corridor_common": common,
            "green_wave_offset_s": offsets[cid],
            "offset_method": method,
            "bandwidth_s": out_s,             # None unless method == "bandwidth"
            "bandwidth_inbound_s": in_s,
            "bandwidth_chain": chain_of.get(cid) if method == "bandwidth" else None,  # outbound order
        })
    return out


def _with_offset(proposal: Proposal, spec: IntersectionSpec, offset_s: float, reason: str) -> Proposal:
    """``proposal`` with another offset (same splits; re-checked, as :func:`optimize` checks every plan)."""
    plan = proposal.plan
    cycle = plan.patternCycleTime
    offset = round(round(offset_s % cycle, 1) % cycle, 1)  # as IntersectionSpec.plan_from_splits rounds
    moved = replace(plan, patternOffsetTime=offset, reason=reason)
    if offset != plan.patternOffsetTime:
        ensure_safe(moved, spec)
    return Proposal(moved, {**proposal.explanation, "offset_s": offset})


def _bandwidth_offsets(corridor: Corridor, cycle: float, proposals: Mapping[str, Proposal],
                       incumbents: Mapping[str, TimingPlan], exclude: Collection[str]) -> CorridorBands:
    """Two-way bandwidth offsets for the proposals (all on ``cycle``) and the locked plans that share it."""
    greens: dict[str, float] = {}
    fixed: dict[str, float] = {}
    for cid, proposal in proposals.items():
        plan = proposal.plan
        if abs(plan.patternCycleTime - cycle) < 0.05:  # a plan that could not reach the cycle stays out
            greens[cid] = plan.phase(plan.splitCoordPhase).green
    for cid in exclude:
        locked = incumbents.get(cid)
        if locked is not None and abs(locked.patternCycleTime - cycle) < 0.05:
            try:
                greens[cid] = locked.phase(locked.splitCoordPhase).green
            except PlanError:
                continue
            fixed[cid] = locked.patternOffsetTime
    anchors = {cid: incumbents[cid].patternOffsetTime for cid in proposals}
    return corridor_bands(corridor, cycle, greens, fixed_s=fixed, anchors_s=anchors)


def _search_all(sizes: Mapping[str, _Sizing]) -> dict[str, CycleChoice]:
    """One vectorised cycle search for all intersections (phases padded with empty ones)."""
    ids = list(sizes)
    width = max(len(sizes[c].q) for c in ids)

    def pad(values: np.ndarray, fill: float) -> np.ndarray:
        return np.concatenate([values, np.full(width - len(values), fill)])

    q = np.array([pad(sizes[c].q, 0.0) for c in ids])
    s = np.array([pad(sizes[c].s, 1900.0) for c in ids])
    lost = np.array([pad(sizes[c].lost, 0.0) for c in ids])
    minimum = np.array([pad(sizes[c].min_split, 0.0) for c in ids])
    found = best_cycles(q, s, lost, minimum, min_cycle_s=[sizes[c].min_cycle for c in ids],
                        max_cycle_s=[sizes[c].max_cycle for c in ids])
    out = {}
    for cid, choice in zip(ids, found, strict=False):
        n = len(sizes[cid].q)
        out[cid] = CycleChoice(choice.cycle_s, choice.splits_s[:n], choice.delay_s, choice.max_x, choice.method,
                               choice.candidates)
    return out


def _r(values: np.ndarray, digits: int = 1) -> list[float]:
    return [round(float(v), digits) for v in values]
