"""The validation gate: a candidate plan set must beat (or match) the incumbent in SUMO.

Candidate and incumbent run on the same demand with the same seeds (common
random numbers), so the comparison measures the plans, not the dice. The
verdict is conservative: the candidate is rejected when it

* leaves more vehicles undeparted than the incumbent *and* one of them had
  waited more than ``ENTRY_STUCK_S`` at the end (a queue spilling back to
  an entry is the first sign of gridlock; a vehicle due in the window's
  last seconds whose insertion slips by a step is not, and any plan can
  lose one that way: see ``simulation.kpi``),
* causes any teleport (runs have teleporting off, so this is only SUMO's
  last resort),
* or has a mean delay worse than the incumbent's by more than ``margin``.

Every verdict carries the numbers, per seed, for the plan's audit trail.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulation.kpi import Kpis
from simulation.runner import RunJob, run_many
from simulation.scenario import Scenario
from traffic.errors import SimulationError
from traffic.plan import TimingPlan

#: an undeparted vehicle that had waited longer than this at the end is stuck behind a queue, not late
ENTRY_STUCK_S = 60.0

_MEAN_FIELDS = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "mean_stops", "vehicles", "completed",
                "undeparted", "teleports", "throughput_veh_h", "wall_s")


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`validate`; ``candidate``/``incumbent`` hold KPI means over the seeds."""

    accepted: bool
    reason: str
    candidate: dict[str, float]
    incumbent: dict[str, float]
    per_seed_candidate: list[dict[str, Any]] = field(default_factory=list)
    per_seed_incumbent: list[dict[str, Any]] = field(default_factory=list)
    seeds: tuple[int, ...] = ()
    margin: float = 0.0
    wall_s: float = 0.0

    @property
    def delay_change(self) -> float:
        """Relative change of mean delay, candidate vs incumbent (negative = better)."""
        base = self.incumbent.get("mean_delay_s", 0.0)
        return (self.candidate.get("mean_delay_s", 0.0) - base) / base if base > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "candidate": dict(self.candidate),
            "incumbent": dict(self.incumbent),
            "per_seed_candidate": list(self.per_seed_candidate),
            "per_seed_incumbent": list(self.per_seed_incumbent),
            "seeds": list(self.seeds),
            "margin": self.margin,
            "delay_change": round(self.delay_change, 4),
            "wall_s": self.wall_s,
        }


def mean_kpis(results: Sequence[Kpis]) -> dict[str, float]:
    """Field-wise mean of several runs' KPIs."""
    if not results:
        return {}
    return {name: round(sum(float(getattr(k, name)) for k in results) / len(results), 3) for name in _MEAN_FIELDS}


def judge(candidate: Sequence[Kpis], incumbent: Sequence[Kpis], *, margin: float) -> tuple[bool, str]:
    """Pure decision rule of the gate (see module docstring); returns (accepted, reason)."""
    cand, inc = mean_kpis(candidate), mean_kpis(incumbent)
    if sum(k.teleports for k in candidate) > 0:
        return False, f"candidate caused {sum(k.teleports for k in candidate)} teleport(s)"
    stuck_s = max((k.undeparted_wait_max_s for k in candidate if k.undeparted), default=0.0)
    if cand["undeparted"] > inc["undeparted"] and stuck_s > ENTRY_STUCK_S:
        return False, (f"candidate leaves more vehicles undeparted ({cand['undeparted']:.1f} vs "
                       f"{inc['undeparted']:.1f}), one waiting {stuck_s:.0f} s: queues spill back to the entries")
    limit = inc["mean_delay_s"] * (1.0 + margin)
    if cand["mean_delay_s"] > limit:
        return False, (f"mean delay {cand['mean_delay_s']:.1f} s exceeds incumbent {inc['mean_delay_s']:.1f} s "
                       f"x (1 + {margin:g}) = {limit:.1f} s")
    return True, (f"mean delay {cand['mean_delay_s']:.1f} s vs incumbent {inc['mean_delay_s']:.1f} s "
                  f"(limit {limit:.1f} s), undeparted {cand['undeparted']:.1f} vs {inc['undeparted']:.1f}, "
                  "no teleports")


def validate(scenario: Scenario, *, candidate: Mapping[str, TimingPlan], incumbent: Mapping[str, TimingPlan],
             seeds: Sequence[int] = (1, 2), begin: int, end: int, route_files: Sequence[Path] | None = None,
             margin: float = 0.02, processes: int = 2, executor: Any = None) -> Verdict:
    """Simulate candidate and incumbent plan sets (keyed by SUMO tls id) and judge the candidate.

    An empty ``incumbent`` mapping means "the network's own programs".
    ``executor`` (``simulation.executor``, from ``[executor]``) runs the
    simulations; without one they run here, ``processes`` at a time.
    """
    if not seeds:
        raise SimulationError("the gate needs at least one seed")
    if margin < 0:
        raise SimulationError(f"margin must be non-negative, got {margin}")
    if not candidate:
        raise SimulationError("the candidate plan set is empty")
    routes = tuple(route_files) if route_files is not None else None
    jobs = [RunJob(scenario, seed=s, plans=dict(candidate), begin=begin, end=end, route_files=routes) for s in seeds]
    jobs += [RunJob(scenario, seed=s, plans=dict(incumbent) or None, begin=begin, end=end, route_files=routes)
             for s in seeds]
    started = time.perf_counter()
    results = run_many(jobs, processes=processes, executor=executor)
    wall = round(time.perf_counter() - started, 3)
    cand, inc = results[:len(seeds)], results[len(seeds):]
    accepted, reason = judge(cand, inc, margin=margin)
    return Verdict(
        accepted=accepted,
        reason=reason,
        candidate=mean_kpis(cand),
        incumbent=mean_kpis(inc),
        per_seed_candidate=[{"seed": s, **k.to_dict()} for s, k in zip(seeds, cand, strict=False)],
        per_seed_incumbent=[{"seed": s, **k.to_dict()} for s, k in zip(seeds, inc, strict=False)],
        seeds=tuple(seeds),
        margin=margin,
        wall_s=wall,
    )
