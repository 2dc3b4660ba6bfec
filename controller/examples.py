"""Small hand-made intersections and corridors for tests, demos and benchmarks.

Real specs come from SUMO networks (``simulation.network``); these exist so the
controller can be exercised without a network file, with geometry a reader can
check by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traffic.intersection import Corridor, DetectorSpec, IntersectionSpec, PhaseSpec
from traffic.plan import TimingPlan

if TYPE_CHECKING:
    from controller.demand import PhaseDemand

# Signal groups of the four-leg example, in order:
# 0 N through, 1 N left, 2 S through, 3 S left, 4 E through, 5 E left, 6 W through, 7 W left
NS = (0, 1, 2, 3)
EW = (4, 5, 6, 7)


def four_leg(controller_id: str = "c1", *, speed_mps: float = 13.9, ped_crossing_m: float = 14.0,
             lanes: tuple[int, int] = (2, 2), site: str = "hanoi", max_cycle_s: float = 180.0) -> IntersectionSpec:
    """Two-phase four-leg intersection: phase 1 north-south, phase 2 east-west.

    Lefts run permissive (``g``) against the opposing through; phase 1 carries a
    pedestrian crossing of ``ped_crossing_m`` (0 for none). Every north-south
    group conflicts with every east-west group; a left and the opposing through
    are foes (they may share a phase only if one of them yields).
    """
    conflicts = frozenset((i, j) for i in NS for j in EW)
    foes = conflicts | {(0, 3), (1, 2), (4, 7), (5, 6)}
    phases = (
        PhaseSpec(1, "GgGgrrrr", speed_mps, ped_crossing_m=ped_crossing_m, min_green_s=7.0, lanes=lanes[0]),
        PhaseSpec(2, "rrrrGgGg", speed_mps, min_green_s=5.0, lanes=lanes[1]),
    )
    detectors = (
        DetectorSpec("d1", f"{controller_id}_n_0", 1, entry=True),
        DetectorSpec("d2", f"{controller_id}_n_1", 1, entry=True),
        DetectorSpec("d3", f"{controller_id}_s_0", 1),
        DetectorSpec("d4", f"{controller_id}_e_0", 2),
        DetectorSpec("d5", f"{controller_id}_w_0", 2),
    )
    return IntersectionSpec(controller_id=controller_id, tls_id=controller_id, link_count=8, phases=phases,
                            detectors=detectors, foes=frozenset(foes), conflicts=conflicts, site=site,
                            max_cycle_s=max_cycle_s)


def three_phase(controller_id: str = "c3", *, speed_mps: float = 16.7) -> IntersectionSpec:
    """Three phases: main through, main protected left, side street (with a 20 m crossing)."""
    # 0 main through EB, 1 main through WB, 2 main left EB, 3 main left WB, 4 side NB, 5 side SB
    conflicts = frozenset({(0, 3), (1, 2), (0, 4), (0, 5), (1, 4), (1, 5), (2, 4), (2, 5), (3, 4), (3, 5)})
    phases = (
        PhaseSpec(1, "GGrrrr", speed_mps, clearance_width_m=20.0, min_green_s=10.0, lanes=2),
        PhaseSpec(2, "rrGGrr", speed_mps, clearance_width_m=20.0, min_green_s=5.0),
        PhaseSpec(3, "rrrrGG", 11.1, ped_crossing_m=20.0, min_green_s=7.0),
    )
    detectors = (
        DetectorSpec("d1", f"{controller_id}_eb", 1), DetectorSpec("d2", f"{controller_id}_wb", 1),
        DetectorSpec("d3", f"{controller_id}_lt", 2), DetectorSpec("d4", f"{controller_id}_nb", 3),
    )
    return IntersectionSpec(controller_id=controller_id, tls_id=controller_id, link_count=6, phases=phases,
                            detectors=detectors, foes=conflicts, conflicts=conflicts)


def uniform_corridor(n: int = 4, *, spacing_m: float = 300.0, speed_mps: float = 12.5,
                     name: str = "main", site: str = "hanoi") -> Corridor:
    """``n`` identical four-leg intersections in a row, ``spacing_m`` apart, linked west to east."""
    specs = tuple(four_leg(f"c{k}", site=site) for k in range(n))
    links = tuple((f"c{k}", f"c{k + 1}", spacing_m, speed_mps) for k in range(n - 1))
    return Corridor(name=name, intersections=specs, links=links)


def random_city(n: int, *, seed: int = 7) -> tuple[tuple[IntersectionSpec, ...], dict[str, PhaseDemand],
                                                   dict[str, TimingPlan], dict[str, int]]:
    """``n`` four-leg intersections with random demand (50-700 pcu/h/lane), for optimizer benchmarks.

    Returns (specs, demands, incumbents on a 90 s default plan, next versions),
    the inputs :func:`controller.optimizer.optimize_corridor` takes; the same
    ``seed`` gives the same city, so two benchmarks measure the same work.
    """
    import random

    from controller.demand import PhaseDemand  # local: keeps this module free of the optimizer's imports

    specs = tuple(four_leg(f"c{k}") for k in range(n))
    rng = random.Random(seed)
    demands: dict[str, PhaseDemand] = {}
    incumbents: dict[str, TimingPlan] = {}
    for spec in specs:
        phases = tuple(p.phase for p in spec.phases)
        flows = tuple(rng.uniform(50, 700) for _ in phases)
        demands[spec.controller_id] = PhaseDemand(spec.controller_id, None, None, phases, flows, flows)
        incumbents[spec.controller_id] = spec.default_plan(90)
    return specs, demands, incumbents, {c: 2 for c in demands}
