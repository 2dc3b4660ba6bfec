"""SUMO side of the system: scenarios, network-to-controller mapping, batch runs, KPIs, the gate.

Public façade; the modules underneath are split by responsibility:

* :mod:`simulation.corridor` - generate the Hanoi-like test corridor
* :mod:`simulation.scenario` - :class:`Scenario`, :func:`load_scenario` for any ``.sumocfg``
* :mod:`simulation.network` - TLS -> :class:`~traffic.intersection.IntersectionSpec`, detector files
* :mod:`simulation.tls_program` - timing plans as SUMO ``tlLogic`` programs
* :mod:`simulation.runner` - headless ``sumo`` runs (one process each), in parallel
* :mod:`simulation.kpi` - KPIs from tripinfo (undeparted vehicles charged)
* :mod:`simulation.demand` - demand from entry counts (the gate's fast path)
* :mod:`simulation.calibrate` - demand from all counts with routeSampler, GEH per counting location
* :mod:`simulation.gate` - candidate vs incumbent validation verdict
* :mod:`simulation.controls` - control registry (static, actuated, max-pressure, adaptive), seeds in parallel
* :mod:`simulation.max_pressure` - max-pressure baseline with safeguards
* :mod:`simulation.actuated` - SUMO actuated programs on the network's phases
* :mod:`simulation.inloop` / :mod:`simulation.backend` - controlled runs over libsumo or TraCI
* :mod:`simulation.replay` - replay a recorded period (counts + plans in force) and compare plans
* :mod:`simulation.cli` - ``traffic sim run`` and ``traffic replay``
"""

from simulation.calibrate import Calibration, demand_from_counts, geh
from simulation.controls import CONTROLS, run_seeds, summarize
from simulation.corridor import generate_corridor
from simulation.demand import entry_flows_from_counts, scale_routes
from simulation.gate import Verdict, validate
from simulation.kpi import Kpis, read_tripinfo
from simulation.network import corridor_from_net, loop_id, write_detectors_additional
from simulation.runner import RunJob, plans_by_tls, run, run_many
from simulation.scenario import Scenario, load_scenario
from simulation.tls_program import plan_to_tllogic_xml, write_plans_additional

__all__ = [
    "CONTROLS", "Calibration", "demand_from_counts", "geh", "run_seeds", "summarize",
    "Kpis", "RunJob", "Scenario", "Verdict", "corridor_from_net", "entry_flows_from_counts", "generate_corridor",
    "load_scenario", "loop_id", "plan_to_tllogic_xml", "plans_by_tls", "read_tripinfo", "run", "run_many",
    "scale_routes", "validate", "write_detectors_additional", "write_plans_additional",
]
