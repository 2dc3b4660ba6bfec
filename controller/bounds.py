"""Engineers' bounds per intersection: limits the optimizer must keep on top of the design's own.

Why: an engineer knows things the counts do not (a school crossing that
needs a long pedestrian phase at 15:00, a junction whose queue must never
reach the railway crossing upstream). A lock freezes a plan; bounds let the
optimizer keep adapting inside a box the engineer draws. Bounds only ever
*tighten* the design limits (``IntersectionSpec.max_cycle_s``, minimum
splits from minimum green, clearances and pedestrian timing), so no bound
can make a plan unsafe; contradictory bounds are refused with a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from traffic.errors import PlanError
from traffic.intersection import IntersectionSpec

__all__ = ["Bounds"]


@dataclass(frozen=True)
class Bounds:
    """Limits for one intersection (seconds; None = no engineer limit)."""

    min_cycle_s: float | None = None
    max_cycle_s: float | None = None
    max_green_cap_s: float | None = None            # no actuated green longer than this
    min_split_s: Mapping[int, float] = field(default_factory=dict)  # phase -> at least this split

    def check(self, spec: IntersectionSpec) -> Bounds:
        """Return self if the bounds fit ``spec``; raise PlanError naming the contradiction."""
        for name in ("min_cycle_s", "max_cycle_s", "max_green_cap_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise PlanError(f"{spec.controller_id}: bound {name} must be a positive number, got {value!r}")
        if self.min_cycle_s is not None and self.max_cycle_s is not None and self.min_cycle_s > self.max_cycle_s:
            raise PlanError(f"{spec.controller_id}: min cycle {self.min_cycle_s} s above max cycle "
                            f"{self.max_cycle_s} s")
        if (self.min_cycle_s is not None and self.max_cycle_s is not None
                and math.ceil(self.min_cycle_s * 10 - 1e-6) > math.floor(self.max_cycle_s * 10 + 1e-6)):
            raise PlanError(f"{spec.controller_id}: no cycle on the plans' 0.1 s resolution between "
                            f"{self.min_cycle_s} and {self.max_cycle_s} s")
        phases = {p.phase: p for p in spec.phases}
        for phase, value in self.min_split_s.items():
            if phase not in phases:
                raise PlanError(f"{spec.controller_id}: bound for unknown phase {phase}")
            if not math.isfinite(value) or value < 0:
                raise PlanError(f"{spec.controller_id}: min split of phase {phase} must be >= 0, got {value!r}")
        needed = sum(max(p.min_split_s, self.min_split_s.get(p.phase, 0.0)) for p in spec.phases)
        ceiling = min(spec.max_cycle_s, self.max_cycle_s or spec.max_cycle_s)
        if needed > ceiling + 1e-9:
            raise PlanError(f"{spec.controller_id}: bounds need a {needed:.1f} s cycle, at most {ceiling} s allowed")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"min_cycle_s": self.min_cycle_s, "max_cycle_s": self.max_cycle_s,
                "max_green_cap_s": self.max_green_cap_s,
                "min_split_s": {str(k): v for k, v in sorted(self.min_split_s.items())}}
