"""Conflict (malfunction) monitor: the last line of defence at the signal heads.

A real cabinet's MMU watches the *outputs*, not the controller's intentions,
and forces flash when something that must never happen is shown. This one
does the same for every state the emulator drives: it does not trust the
program engine or the plan check, so a bug in either cannot put two
conflicting movements on green.

Faults (latched until :meth:`ConflictMonitor.reset`):

* conflicting signal groups both active (green or yellow), or foes both ``G``;
* a group going from green straight to red (no yellow change interval);
* a yellow shorter than the intersection's minimum for that group, allowing
  for the sampling step (a state sampled every ``dt`` can only be timed to
  within ``dt``);
* a malformed state (wrong length, unknown letters).
"""

from __future__ import annotations

import logging

from traffic.clearance import MIN_YELLOW_S, TOLERANCE_S
from traffic.intersection import IntersectionSpec

__all__ = ["ConflictMonitor", "FLASH_CHAR"]

log = logging.getLogger(__name__)

FLASH_CHAR = "r"      # all-red flash; SUMO has no flashing red, and 'r' never lets conflicting traffic go
_ACTIVE = frozenset("Ggy")
_GREEN = frozenset("Gg")
_VALID = frozenset("Ggyr")


class ConflictMonitor:
    """Watches driven states of one intersection and latches flash on a fault."""

    def __init__(self, spec: IntersectionSpec) -> None:
        self.spec = spec
        self._n = spec.link_count
        self._conflicts = tuple(sorted(spec.conflicts))
        self._foes = tuple(sorted(spec.exclusive_foes))  # resolved foes may both be G (docs/foes.md)
        # shortest design yellow among the phases that release each group (policy floor if none)
        per_group: list[list[float]] = [[] for _ in range(self._n)]
        for phase in spec.phases:
            for i, c in enumerate(phase.greens[: self._n]):
                if c in _GREEN:
                    per_group[i].append(phase.yellow_s)
        self._min_yellow = [min(v) if v else MIN_YELLOW_S for v in per_group]
        self.flash_state = FLASH_CHAR * self._n
        self.tripped = False
        self.reason = ""
        self.tripped_at: float | None = None
        self._prev: str | None = None
        self._prev_time: float | None = None
        self._yellow_since: list[float | None] = [None] * self._n
        self._safe_states: set[str] = set()

    def observe(self, now: float, state: str) -> str:
        """Check ``state`` (to be driven at ``now``) and return what may actually be driven.

        Returns ``state`` when it is safe, the all-red flash state once tripped.
        """
        if self.tripped:
            return self.flash_state
        if state == self._prev:  # nothing changed: every check below already passed for this state
            self._prev_time = now
            return state
        fault = self._fault(now, state)
        if fault:
            self.tripped, self.reason, self.tripped_at = True, fault, now
            log.error("conflict monitor tripped at %.1f s on %s: %s", now, self.spec.controller_id, fault)
            return self.flash_state
        self._prev, self._prev_time = state, now
        return state

    def reset(self) -> None:
        """Clear the latch (a technician's action after the cause is fixed)."""
        self.tripped, self.reason, self.tripped_at = False, "", None
        self._prev = self._prev_time = None
        self._yellow_since = [None] * self._n

    # ------------------------------------------------------------------
    def _fault(self, now: float, state: str) -> str:
        if state not in self._safe_states:
            fault = self._static_fault(state)
            if fault:
                return fault
            self._safe_states.add(state)
        return self._transition_fault(now, state)

    def _static_fault(self, state: str) -> str:
        """Faults visible in one state alone (cached per state: a cycle shows a handful of states)."""
        if len(state) != self._n:
            return f"state {state!r} has {len(state)} signal groups, expected {self._n}"
        if set(state) - _VALID:
            return f"state {state!r} holds letters other than G, g, y, r"
        for i, j in self._conflicts:
            if state[i] in _ACTIVE and state[j] in _ACTIVE:
                return f"conflicting groups {i} and {j} both active in {state!r}"
        for i, j in self._foes:
            if state[i] == "G" and state[j] == "G":
                return f"foe groups {i} and {j} both protected green in {state!r}"
        return ""

    def _transition_fault(self, now: float, state: str) -> str:
        """Faults in the change from the previous state: green to red without yellow, short yellow."""
        prev = self._prev
        if prev is None:
            for i, c in enumerate(state):
                self._yellow_since[i] = now if c == "y" else None
            return ""
        dt = max(0.0, now - (self._prev_time if self._prev_time is not None else now))
        for i, (before, after) in enumerate(zip(prev, state, strict=False)):
            if before in _GREEN and after == "r":
                return f"group {i} went from green to red without yellow ({prev!r} -> {state!r})"
            if after == "y" and before != "y":
                self._yellow_since[i] = now
            elif before == "y" and after != "y":
                since = self._yellow_since[i]
                self._yellow_since[i] = None
                if since is not None and after == "r":
                    shown = now - since
                    if shown < self._min_yellow[i] - dt - TOLERANCE_S:
                        return (f"group {i} showed yellow for {shown:.1f} s, minimum {self._min_yellow[i]:.1f} s "
                                f"({prev!r} -> {state!r})")
        return ""
