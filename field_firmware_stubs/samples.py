"""Ready-made intersections for tests, demos and load runs.

Hand-built :class:`IntersectionSpec` objects (no SUMO network needed) so the
emulators can run before, or without, ``simulation.network``.
"""

from __future__ import annotations

from traffic.intersection import DetectorSpec, IntersectionSpec, PhaseSpec

__all__ = ["four_leg", "two_phase"]

# Signal groups of a four-leg junction: per leg (N, E, S, W) one through/right group and one left group.
_NS = (0, 1, 4, 5)
_EW = (2, 3, 6, 7)


def four_leg(controller_id: str = "c1", *, site: str = "hanoi", ped_crossing_m: float = 12.0,
             max_cycle_s: float = 180.0) -> IntersectionSpec:
    """Four legs, four phases (NS through + permissive left, NS protected left, EW likewise).

    Groups 0/4 (N/S through) and 1/5 (N/S left) run together, as do 2/6 and
    3/7; everything north-south conflicts with everything east-west, and a
    left turn is a foe of the opposing through (so it may only be ``g`` with it).
    """
    conflicts = frozenset((min(i, j), max(i, j)) for i in _NS for j in _EW)
    foes = frozenset({(1, 4), (0, 5), (3, 6), (2, 7)})
    phases = (
        PhaseSpec(1, "GgrrGgrr", approach_speed_mps=13.9, clearance_width_m=18.0, ped_crossing_m=ped_crossing_m,
                  min_green_s=7.0, lanes=2),
        PhaseSpec(2, "rGrrrGrr", approach_speed_mps=11.1, clearance_width_m=14.0, min_green_s=5.0),
        PhaseSpec(3, "rrGgrrGg", approach_speed_mps=11.1, clearance_width_m=16.0, ped_crossing_m=ped_crossing_m,
                  min_green_s=7.0, lanes=2),
        PhaseSpec(4, "rrrGrrrG", approach_speed_mps=11.1, clearance_width_m=14.0, min_green_s=5.0),
    )
    detectors = (
        DetectorSpec("d1", "n_in_0", 1), DetectorSpec("d2", "n_in_1", 2),
        DetectorSpec("d3", "e_in_0", 3), DetectorSpec("d4", "e_in_1", 4),
        DetectorSpec("d5", "s_in_0", 1), DetectorSpec("d6", "w_in_0", 3),
    )
    return IntersectionSpec(controller_id=controller_id, tls_id=controller_id, link_count=8, phases=phases,
                            detectors=detectors, foes=foes, conflicts=conflicts, site=site, max_cycle_s=max_cycle_s)


def two_phase(controller_id: str = "c1", *, site: str = "hanoi") -> IntersectionSpec:
    """The simplest signal: two phases over four groups, a pedestrian crossing with phase 1."""
    conflicts = frozenset({(0, 2), (0, 3), (1, 2), (1, 3)})
    phases = (
        PhaseSpec(1, "GGrr", approach_speed_mps=13.9, ped_crossing_m=10.0),
        PhaseSpec(2, "rrGG", approach_speed_mps=11.1),
    )
    detectors = (DetectorSpec("d1", "a_0", 1), DetectorSpec("d2", "b_0", 2))
    return IntersectionSpec(controller_id=controller_id, tls_id=controller_id, link_count=4, phases=phases,
                            detectors=detectors, conflicts=conflicts, site=site)
