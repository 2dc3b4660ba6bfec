"""Replay a recorded period in SUMO: the demand that was counted, the plans that were in force.

``traffic replay --from T1 --to T2`` answers "what happened, and what would
another plan have done, on that day's traffic?":

* **demand**: the detector counts stored for ``[T1, T2)`` turned into SUMO
  routes by :func:`simulation.calibrate.demand_from_counts` (routeSampler
  over the scenario's own routes), with its GEH score;
* **recorded plans**: for each controller, the plans that were ``active``
  (``plan_events``) during the period, switched at the recorded times
  through a SUMO WAUT (a timed program switch; SUMO switches at once,
  where the field runs a bounded transition, so the minutes right after a
  switch are approximate); a controller with no recorded plan keeps the
  network's own program;
* **alternatives**: ``network`` (the scenario's own programs, always run as
  the reference) and, with ``plans="candidate"``, what the optimizer
  proposes from the same counts, starting from the plans in force at
  ``T1``. The optimizer is the centre's; it comes in through the
  :data:`CandidatePlanner` port (the composition root passes
  ``controller.candidates.propose_from_counts``), since this package does
  not import the centre.

Simulated time ``scenario.begin`` corresponds to ``T1``. Every variant runs
on the same demand and seeds (common random numbers).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from simulation.calibrate import Calibration, demand_from_counts, read_binned_rates, read_rates
from simulation.controls import summarize
from simulation.kpi import Kpis
from simulation.runner import RunJob, plans_by_tls, run_many

if TYPE_CHECKING:
    from simulation.executor import SimulationExecutor
from simulation.scenario import Scenario, load_scenario
from simulation.tls_program import tllogic_element
from traffic.config import Settings, load_settings
from traffic.db import connect
from traffic.errors import PlanError, SimulationError, StorageError
from traffic.intersection import Corridor
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

#: The centre's optimizer as a port: the plans it proposes for ``corridor`` from the counts stored for
#: ``[start, end)`` (read through ``conn``), starting from the ``incumbents`` in force at ``start``.
CandidatePlanner = Callable[[psycopg.Connection, Corridor, Mapping[str, TimingPlan], datetime, datetime, Settings],
                            dict[str, TimingPlan]]

_ACTIVE_SQL = """
SELECT e.controller_id, e.at, e.plan_id, p.body
  FROM plan_events AS e
  JOIN plans AS p ON p.plan_id = e.plan_id
 WHERE e.state = 'active'
   AND e.controller_id = ANY(%(controllers)s)
   AND e.at < %(end)s
 ORDER BY e.controller_id, e.at, e.id
"""

#: One controller's plans in force: (seconds after the period's start, plan); the first entry is at 0
#: when a plan was already active at the start.
Schedule = list[tuple[float, TimingPlan]]


def recorded_schedules(conn: psycopg.Connection, corridor: Corridor, start: datetime,
                       end: datetime) -> dict[str, Schedule]:
    """Controller id -> plans in force during ``[start, end)``, from the ``active`` plan events."""
    if end <= start:
        raise SimulationError(f"empty replay window {start} .. {end}")
    specs = corridor.by_id()
    try:
        rows = conn.execute(_ACTIVE_SQL, {"controllers": list(specs), "end": end}).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read plan history: {exc}") from exc
    out: dict[str, Schedule] = {}
    for controller_id, at, plan_id, body in rows:
        try:
            plan = TimingPlan.from_dict(body)
        except PlanError as exc:
            raise SimulationError(f"stored plan {plan_id} of {controller_id} is unreadable: {exc}") from exc
        spec = specs[controller_id]
        if any(len(p.greens) != spec.link_count for p in plan.phases):
            raise SimulationError(f"stored plan {plan_id} does not fit {controller_id} of this scenario "
                                  f"({spec.link_count} signal groups): wrong --scenario?")
        offset = max(0.0, (at - start).total_seconds())
        schedule = out.setdefault(controller_id, [])
        if offset == 0.0 and schedule and schedule[-1][0] == 0.0:
            schedule[-1] = (0.0, plan)  # a later activation before the start replaces the earlier one
        else:
            schedule.append((offset, plan))
    return out


def write_schedule_additional(scenario: Scenario, schedules: Mapping[str, Schedule], path: Path, *,
                              begin: int) -> Path:
    """tlLogic programs for every recorded plan plus a WAUT per signal switching them at the recorded times."""
    specs = scenario.corridor.by_id()
    own = _network_program_ids(scenario.net_file)
    root = ET.Element("additional")
    for controller_id in sorted(schedules):
        tls = specs[controller_id].tls_id
        for k, (_offset, plan) in enumerate(schedules[controller_id]):
            root.append(tllogic_element(plan, tls, f"rec{k}"))
    for controller_id in sorted(schedules):
        tls = specs[controller_id].tls_id
        schedule = schedules[controller_id]
        start_prog = "rec0" if schedule[0][0] == 0.0 else own.get(tls, "0")
        waut = ET.SubElement(root, "WAUT", id=f"waut_{tls}", refTime="0", startProg=start_prog)
        for k, (offset, _plan) in enumerate(schedule):
            if offset > 0:
                ET.SubElement(waut, "wautSwitch", time=f"{begin + offset:.0f}", to=f"rec{k}")
        ET.SubElement(root, "wautJunction", wautID=f"waut_{tls}", junctionID=tls)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def _network_program_ids(net_file: Path) -> dict[str, str]:
    ids: dict[str, str] = {}
    for _ev, el in ET.iterparse(net_file, events=("end",)):
        if el.tag == "tlLogic" and el.get("type", "static") == "static":
            tls, pid = el.get("id", ""), el.get("programID", "0")
            if tls not in ids or pid < ids[tls]:
                ids[tls] = pid
        if el.tag in ("edge", "tlLogic", "junction"):
            el.clear()
    return ids


def candidate_plans(conn: psycopg.Connection, scenario: Scenario, schedules: Mapping[str, Schedule],
                    start: datetime, end: datetime, settings: Settings,
                    planner: CandidatePlanner) -> dict[str, TimingPlan]:
    """What ``planner`` proposes from the period's counts, starting from the plans in force at ``start``."""
    corridor = scenario.corridor
    incumbents: dict[str, TimingPlan] = {}
    for spec in corridor.intersections:
        schedule = schedules.get(spec.controller_id, [])
        at_start = [plan for offset, plan in schedule if offset == 0.0]
        incumbents[spec.controller_id] = at_start[-1] if at_start else spec.default_plan()
    return planner(conn, corridor, incumbents, start, end, settings)


@dataclass(frozen=True)
class ReplayResult:
    """KPIs of each variant on the replayed demand, with the calibration behind it."""

    start: datetime
    end: datetime
    scenario: str
    begin: int
    end_s: int
    seeds: tuple[int, ...]
    calibration: Calibration
    variants: dict[str, list[Kpis]]
    plans: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # variant -> controller -> plan ids

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: summarize(runs) for name, runs in self.variants.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "scenario": self.scenario,
                "begin": self.begin, "end": self.end_s, "seeds": list(self.seeds),
                "calibration": self.calibration.to_dict(), "plans": self.plans,
                "variants": {name: {"summary": summarize(runs),
                                    "runs": [{"seed": s, **k.to_dict()}
                                             for s, k in zip(self.seeds, runs, strict=False)]}
                             for name, runs in self.variants.items()}}

    def table(self) -> str:
        from simulation.cli import kpi_table

        head = (f"replay {self.start.isoformat()} .. {self.end.isoformat()} on {Path(self.scenario).name} "
                f"(sim {self.begin}-{self.end_s} s), seeds {','.join(map(str, self.seeds))}\n"
                f"demand from counts: {len(self.calibration.stations)} counting locations, "
                f"{100 * self.calibration.share_geh_ok:.0f} % with GEH < 5 (max {self.calibration.max_geh:.1f})\n")
        return head + kpi_table(self.summary(), len(self.seeds))


def replay(dsn: str, *, start: datetime, end: datetime, scenario_path: Path | None = None,
           plans: str = "recorded", seeds: Sequence[int] = (1, 2), workdir: Path,
           settings: Settings | None = None, processes: int = 2, scenario: Scenario | None = None,
           bin_s: int = 900, planner: CandidatePlanner | None = None,
           executor: SimulationExecutor | None = None) -> ReplayResult:
    """Replay ``[start, end)`` (see module docstring) and return every variant's KPIs.

    ``scenario`` (already loaded) wins over ``scenario_path``; with neither,
    the generated demo corridor is used. The demand follows the counts in
    bins of about ``bin_s`` seconds (one bin when the period is shorter).
    ``plans="candidate"`` needs ``planner`` (the centre's optimizer).
    ``executor`` (``simulation.executor``, e.g. a Dask cluster) runs the
    variants' simulations; without one they run in local processes.
    """
    if plans not in ("recorded", "candidate"):
        raise SimulationError(f"plans must be 'recorded' or 'candidate', got {plans!r}")
    if plans == "candidate" and planner is None:
        raise SimulationError("plans='candidate' needs the optimizer: no CandidatePlanner was given")
    if end <= start:
        raise SimulationError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if not seeds:
        raise SimulationError("at least one seed is needed")
    settings = settings or load_settings()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if scenario is None:
        if scenario_path is not None:
            scenario = load_scenario(scenario_path, detectors_dir=workdir / "detectors")
        else:
            from simulation.corridor import generate_corridor
            scenario = generate_corridor(workdir / "corridor")
    begin = scenario.begin
    end_s = begin + int((end - start).total_seconds())
    with connect(dsn) as conn:
        rates = read_rates(conn, scenario.corridor, start, end)
        binned = read_binned_rates(conn, scenario.corridor, start, end, bin_s)
        schedules = recorded_schedules(conn, scenario.corridor, start, end)
        candidate = (candidate_plans(conn, scenario, schedules, start, end, settings, planner)
                     if planner is not None and plans == "candidate" else {})
    calibration = demand_from_counts(scenario, rates, workdir / "demand", begin=begin, end=end_s,
                                     binned_rates=binned if len(binned) > 1 else ())
    routes = (calibration.route_file,)
    variants: dict[str, tuple[dict, tuple[Path, ...]]] = {"network": ({}, ())}
    plan_ids: dict[str, dict[str, list[str]]] = {}
    if schedules:
        add = write_schedule_additional(scenario, schedules, workdir / "recorded.add.xml", begin=begin)
        variants["recorded"] = ({}, (add,))
        plan_ids["recorded"] = {c: [p.plan_id for _o, p in s] for c, s in schedules.items()}
    if candidate:
        variants["candidate"] = (plans_by_tls(scenario, candidate.values()), ())
        plan_ids["candidate"] = {c: [p.plan_id] for c, p in candidate.items()}
    jobs = [RunJob(scenario, seed=s, plans=p or None, begin=begin, end=end_s, route_files=routes,
                   extra_additional=extra, workdir=workdir / f"{name}-seed{s}")
            for name, (p, extra) in variants.items() for s in seeds]
    results = run_many(jobs, processes=processes, executor=executor)
    by_variant: dict[str, list[Kpis]] = {}
    for job_index, name in enumerate(n for n in variants for _s in seeds):
        by_variant.setdefault(name, []).append(results[job_index])
    return ReplayResult(start=start, end=end, scenario=str(scenario.sumocfg), begin=begin, end_s=end_s,
                        seeds=tuple(seeds), calibration=calibration, variants=by_variant, plans=plan_ids)
