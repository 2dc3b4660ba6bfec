"""What the optimizer would have proposed for a recorded period (the replay's ``candidate`` variant).

Why here: ``simulation.replay`` compares recorded plans with the optimizer's
on the same counts, but the simulation layer must not import the centre. It
takes a :data:`simulation.replay.CandidatePlanner` port; this is the centre's
implementation, handed over by the composition root (``app.cli``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import psycopg

from controller.demand import phase_demand
from controller.optimizer import optimize_corridor
from traffic.config import Settings
from traffic.intersection import Corridor
from traffic.plan import TimingPlan


def propose_from_counts(conn: psycopg.Connection, corridor: Corridor, incumbents: Mapping[str, TimingPlan],
                        start: datetime, end: datetime, settings: Settings) -> dict[str, TimingPlan]:
    """The optimizer's plans from the counts stored for ``[start, end)``, starting from ``incumbents``."""
    demands = {s.controller_id: phase_demand(conn, s, start=start, end=end, settings=settings)
               for s in corridor.intersections}
    versions = {c: p.version + 1 for c, p in incumbents.items()}
    proposals = optimize_corridor(corridor, demands, dict(incumbents), settings.optimizer, versions)
    return {c: p.plan for c, p in proposals.items()}
