"""The conflict monitor plus the one check it lacked: red clearance between conflicting movements.

:class:`~field_firmware_stubs.conflict_monitor.ConflictMonitor` catches two
conflicting groups active together, green to red without yellow, and a short
yellow. What it let through: a movement ending its yellow and a conflicting
movement turning green at once (or after less than the all-red interval).
Both are never *active together*, so no conflict shows in any single state,
but the vehicle that entered on the last moment of yellow is still in the
junction when the crossing traffic starts: that is what the ITE red
clearance ``(W + L)/v`` is for, and what a cabinet's MMU watches as
"minimum yellow plus red clearance".

:class:`ClearanceMonitor` adds that check on the states the emulator drives:
once a group's yellow ends, no group in conflict with it may turn green
before the shortest red clearance the intersection's design gives that group
(``PhaseSpec.red_clear_s``, the ITE value the plan checks enforce), less the
sampling step (a state sampled every ``dt`` can only be timed to within
``dt``). A violation latches flash like every other monitor fault.
"""

from __future__ import annotations

from field_firmware_stubs.conflict_monitor import ConflictMonitor
from traffic.clearance import TOLERANCE_S
from traffic.intersection import IntersectionSpec

__all__ = ["ClearanceMonitor"]

_GREEN = frozenset("Gg")


class ClearanceMonitor(ConflictMonitor):
    """Conflict monitor that also enforces the red clearance between conflicting groups."""

    def __init__(self, spec: IntersectionSpec) -> None:
        super().__init__(spec)
        n = spec.link_count
        reds: list[list[float]] = [[] for _ in range(n)]
        for phase in spec.phases:
            for i, c in enumerate(phase.greens[:n]):
                if c in _GREEN:
                    reds[i].append(phase.red_clear_s)
        self._min_red = [min(r) if r else 0.0 for r in reds]
        self._conflicting: list[tuple[int, ...]] = [
            tuple(sorted({b if a == i else a for a, b in spec.conflicts if i in (a, b)})) for i in range(n)]
        self._red_since: list[float | None] = [None] * n

    def reset(self) -> None:
        super().reset()
        self._red_since = [None] * self._n

    def _transition_fault(self, now: float, state: str) -> str:
        prev, prev_time = self._prev, self._prev_time
        fault = super()._transition_fault(now, state)
        if fault or prev is None:
            return fault
        dt = max(0.0, now - (prev_time if prev_time is not None else now))
        for i, (before, after) in enumerate(zip(prev, state, strict=False)):
            if before == "y" and after == "r":
                self._red_since[i] = now
            elif after != "r":
                self._red_since[i] = None
        for j, (before, after) in enumerate(zip(prev, state, strict=False)):
            if after not in _GREEN or before in _GREEN:
                continue
            for i in self._conflicting[j]:
                since = self._red_since[i]
                if since is None:
                    continue
                shown = now - since
                if shown < self._min_red[i] - dt - TOLERANCE_S:
                    return (f"group {j} turned green {shown:.1f} s after conflicting group {i} ended its yellow; "
                            f"red clearance is {self._min_red[i]:.1f} s ({prev!r} -> {state!r})")
        return ""
