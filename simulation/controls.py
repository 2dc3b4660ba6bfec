"""The control registry: run any scenario under any control, on one or several seeds.

Every control has the same signature, ``(scenario, seed, begin, end,
workdir) -> Kpis``, so the CLI, the benchmark and the tests treat them
alike:

* ``static``: the network's own fixed-time programs (the ``sumo`` binary);
* ``actuated``: SUMO's actuated control on the same phases
  (:mod:`simulation.actuated`, the ``sumo`` binary);
* ``actuated-safe``: the same SUMO actuated logic held to the project's
  safety rules: the mapped phases with ITE yellow and red clearance and the
  pedestrian walk + clearance as minimum green (:func:`run_actuated_safe`);
* ``max-pressure``: :mod:`simulation.max_pressure` in the loop (libsumo or TraCI);
* ``adaptive``: the project's own central loop, provided by
  ``app.sim_adaptive.run_adaptive`` (imported only when asked for);
* ``max-pressure-resco``: max-pressure with the RESCO reference's 3 s yellow
  and no all-red, only to compare with published numbers (not field-safe).

Seeds run in separate processes (:func:`run_seeds`): SUMO is single
threaded and libsumo allows one simulation per process.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from simulation.actuated import actuated_additional
from simulation.backend import BACKENDS, ENV_BACKEND
from simulation.inloop import run_in_loop
from simulation.kpi import Kpis
from simulation.max_pressure import MaxPressureController, MaxPressureSettings
from simulation.runner import run
from simulation.scenario import Scenario
from simulation.tls_program import write_plans_additional
from traffic.errors import SimulationError, TrafficError
from traffic.intersection import IntersectionSpec, SignalFinding
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

ControlFn = Callable[[Scenario, int, int, int, Path], Kpis]

#: KPIs summarised over seeds (the JSON of ``traffic sim run``).
SUMMARY_FIELDS = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "mean_stops", "vehicles", "completed",
                  "undeparted", "teleports", "throughput_veh_h", "wall_s")


def controllable(scenario: Scenario) -> Scenario:
    """``scenario`` with the signals the centre's safety check refuses left on their own program.

    The mapping (:func:`simulation.network.corridor_from_net`) already leaves
    out what it cannot map; this is the second line: every mapped signal's
    time-of-day plan and its actuated-safe plan must pass
    :func:`controller.safety.check_plan`, or that signal keeps the
    network's program and the finding names the rule. A control never
    crashes a run on one signal it cannot drive.
    """
    from controller.safety import check_plan  # the centre's rules; imported here to keep SUMO-only runs light

    kept: list[IntersectionSpec] = []
    refused: list[SignalFinding] = []
    safe_plans = safe_actuated_plans(scenario)
    for spec in scenario.corridor.intersections:
        violations = [*check_plan(spec.default_plan(), spec), *check_plan(safe_plans[spec.tls_id], spec)]
        if violations:
            first = violations[0]
            refused.append(SignalFinding(spec.tls_id, "uncontrolled", first.rule,
                                         f"its own phases break {first.rule}: {first.detail}",
                                         "check the approved program's stages against the conflict model "
                                         "(traffic site check)"))
            log.warning("TLS %s stays on its own program: %s: %s", spec.tls_id, first.rule, first.detail)
        else:
            kept.append(spec)
    if not refused:
        return scenario
    if not kept:
        raise SimulationError("no signal of this scenario passes the safety rules: "
                              + "; ".join(f"{f.tls_id}: {f.message}" for f in refused)[:600])
    corridor = replace(scenario.corridor, intersections=tuple(kept), findings=(*scenario.corridor.findings, *refused))
    return replace(scenario, corridor=corridor)


def run_static(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """The network's own fixed-time programs."""
    return run(scenario, seed=seed, begin=begin, end=end, workdir=workdir)


def run_actuated(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """SUMO's actuated control on the network's own phases."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    programs = actuated_additional(scenario.net_file, workdir / "actuated.add.xml")
    return run(scenario, seed=seed, begin=begin, end=end, workdir=workdir, extra_additional=(programs,))


#: SUMO actuated defaults the ``actuated-safe`` baseline keeps (netconvert's maxDur and max-gap)
SAFE_ACTUATED_MAX_GREEN_S = 50.0
SAFE_ACTUATED_GAP_S = 3.0


def safe_actuated_plans(scenario: Scenario) -> dict[str, TimingPlan]:
    """Per TLS id: the mapped phases as an actuated plan with the project's intervals and SUMO's limits.

    What a field controller that is only *actuated* (no central optimizer)
    would run: the intersection's own design (ITE yellow and red clearance,
    pedestrian walk + clearance inside the green, minimum greens) with
    SUMO's default actuated limits (maximum green 50 s, gap 3 s).
    """
    plans: dict[str, TimingPlan] = {}
    for spec in scenario.corridor.intersections:
        plan = spec.default_plan()
        phases = tuple(replace(p, phaseMaximum1=max(SAFE_ACTUATED_MAX_GREEN_S, p.phaseMinimumGreen,
                                                      p.phaseWalk + p.phasePedestrianClear),
                               phasePassage=SAFE_ACTUATED_GAP_S) for p in plan.phases)
        plans[spec.tls_id] = replace(plan, phases=phases, mode="free")
    return plans


def run_actuated_safe(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """SUMO's actuated control on the mapped phases with ITE clearance and pedestrian minimums.

    The ``actuated`` baseline runs the network's own change intervals
    (often 3 s yellow and no all-red) and times no pedestrians; this one
    pays the same intervals as every control the project would send to the
    field, so it separates the price of the safety rules from the quality
    of the decisions.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    programs = write_plans_additional(safe_actuated_plans(controllable(scenario)), workdir / "actuated-safe.add.xml",
                                      program_id="traffic-actuated-safe")
    return run(scenario, seed=seed, begin=begin, end=end, workdir=workdir, extra_additional=(programs,))


def run_max_pressure(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Max-pressure with safeguards on every mapped signal (backend from ``TRAFFIC_SUMO_BACKEND``)."""
    scenario = controllable(scenario)
    specs = scenario.corridor.intersections
    return run_in_loop(scenario, seed=seed, begin=begin, end=end, workdir=workdir,
                       make_controllers=lambda _api: [MaxPressureController(s) for s in specs])


def run_max_pressure_resco(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Max-pressure as the RESCO reference ran it (3 s yellow, no all-red): for comparison only."""
    scenario = controllable(scenario)
    specs = scenario.corridor.intersections
    settings = MaxPressureSettings.resco()
    return run_in_loop(scenario, seed=seed, begin=begin, end=end, workdir=workdir,
                       make_controllers=lambda _api: [MaxPressureController(s, settings) for s in specs])


def run_adaptive(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """The project's central loop (``app.sim_adaptive.run_adaptive``), imported on demand."""
    try:
        from app.sim_adaptive import run_adaptive as adaptive
    except ImportError as exc:
        raise SimulationError(f"adaptive control not available: {exc}") from exc
    return adaptive(controllable(scenario), seed=seed, begin=begin, end=end, workdir=Path(workdir))


#: Controls that run the ``sumo`` binary (no controller in the loop).
BATCH_CONTROLS = frozenset({"static", "actuated", "actuated-safe"})

CONTROLS: dict[str, ControlFn] = {
    "static": run_static,
    "actuated": run_actuated,
    "actuated-safe": run_actuated_safe,
    "max-pressure": run_max_pressure,
    "adaptive": run_adaptive,
    "max-pressure-resco": run_max_pressure_resco,
}


def control(name: str) -> ControlFn:
    """The control called ``name``, or a SimulationError listing the known ones."""
    try:
        return CONTROLS[name]
    except KeyError:
        raise SimulationError(f"unknown control {name!r} (known: {', '.join(CONTROLS)})") from None


def _portable(exc: BaseException) -> TrafficError:
    """``exc`` as an exception that survives pickling back to the parent process.

    Project errors pickle by design (``traffic.errors``); anything else (a
    library's exception may hold a socket, a lock, or need arguments pickle
    does not know) becomes a SimulationError carrying its type and message,
    so the caller reads the reason rather than ``BrokenProcessPool``.
    """
    if isinstance(exc, TrafficError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - a subclass with an unpicklable attribute: keep its words
            pass
    return SimulationError(f"{type(exc).__name__}: {exc}")


def _one(fn: ControlFn, scenario: Scenario, seed: int, begin: int, end: int, workdir: Path,
         backend: str) -> Kpis:
    """Run one seed (in a worker process or thread); failures come back as picklable TrafficErrors."""
    if backend != "auto":
        os.environ[ENV_BACKEND] = backend  # this worker process only
    try:
        return fn(scenario, seed, begin, end, workdir)
    except Exception as exc:  # noqa: BLE001 - mapped into the project tree, original kept as the cause
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from exc


def _in_seed(exc: BaseException, name: str, seed: int, parallel: bool) -> TrafficError:
    """A TrafficError naming the seed and control, with the worker's message (and class when it can)."""
    if isinstance(exc, BrokenExecutor):
        hint = (" (with several seeds at a time the crash may be another seed's: --processes 1 tells which)"
                if parallel else "")
        return SimulationError(f"seed {seed} ({name}): its worker process died abruptly: SUMO/libsumo crashed "
                               f"or the process was killed{hint}")
    text = f"seed {seed} ({name}): {exc}"
    if isinstance(exc, TrafficError):
        # classes built from the message alone keep their class (a ScenarioError stays one)
        simple = all("__init__" not in vars(k) for k in type(exc).__mro__
                     if k is not TrafficError and issubclass(k, TrafficError))
        return type(exc)(text) if simple else SimulationError(text)
    return SimulationError(f"seed {seed} ({name}): {type(exc).__name__}: {exc}")


def run_seeds(name: str, scenario: Scenario, seeds: Sequence[int], *, workdir: Path, begin: int | None = None,
              end: int | None = None, processes: int = 2, backend: str = "auto",
              on_result: Callable[[int, Kpis], None] | None = None) -> list[Kpis]:
    """Run control ``name`` once per seed, ``processes`` at a time, each in its own process.

    Results come back in seed order; ``on_result(seed, kpis)`` is called in
    the caller's thread as each seed finishes (progress for the CLI). The
    first failure (in seed order) is raised after the others finish, as a
    TrafficError naming the seed and carrying the worker's message; a worker
    that dies outright (SUMO segfault) is reported as such, never as a bare
    ``BrokenProcessPool``. Outputs of each run stay in ``workdir/<control>-seed<N>``.
    """
    fn = control(name)
    if backend not in BACKENDS:
        raise SimulationError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not seeds:
        raise SimulationError("at least one seed is needed")
    if len(set(seeds)) != len(seeds):
        raise SimulationError(f"seeds repeat: {list(seeds)}")
    if processes < 1:
        raise SimulationError("processes must be at least 1")
    begin = scenario.begin if begin is None else int(begin)
    end = scenario.end if end is None else int(end)
    if end <= begin:
        raise SimulationError(f"end ({end}) must be after begin ({begin})")
    dirs = [Path(workdir) / f"{name}-seed{s}" for s in seeds]
    workers = min(processes, len(seeds))
    executor: Executor
    if name in BATCH_CONTROLS:
        # these already run ``sumo`` as a child process: threads waiting on them are enough
        executor, job_backend = ThreadPoolExecutor(max_workers=workers), "auto"
    else:
        ctx = multiprocessing.get_context("spawn")  # libsumo state must never be forked or shared
        executor, job_backend = ProcessPoolExecutor(max_workers=workers, mp_context=ctx), backend
    with executor:
        # the function itself travels to the worker (by reference), so a control registered at run
        # time in an importable module works in a spawned process too
        futures = {executor.submit(_one, fn, scenario, s, begin, end, d, job_backend): s
                   for s, d in zip(seeds, dirs)}
        for future in as_completed(futures):
            if on_result is not None and future.exception() is None:
                on_result(futures[future], future.result())
    results: list[Kpis] = []
    for future, seed in futures.items():
        exc = future.exception()
        if exc is not None:
            raise _in_seed(exc, name, seed, workers > 1) from exc
        results.append(future.result())
    return results


def summarize(results: Sequence[Kpis]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation, min and max of each KPI over the runs."""
    if not results:
        raise SimulationError("nothing to summarise")
    out: dict[str, dict[str, float]] = {}
    for name in SUMMARY_FIELDS:
        values = [float(getattr(k, name)) for k in results]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[name] = {"mean": round(mean, 3), "std": round(std, 3), "min": round(min(values), 3),
                     "max": round(max(values), 3)}
    return out


def report(name: str, scenario: Scenario, seeds: Sequence[int], results: Sequence[Kpis], *, begin: int,
           end: int) -> dict[str, Any]:
    """The JSON document of a (multi-seed) run: per-seed KPIs, their summary, and the headline means."""
    summary = summarize(results)
    doc: dict[str, Any] = {
        "scenario": str(scenario.sumocfg),
        "control": name,
        "begin": begin,
        "end": end,
        "seeds": list(seeds),
        "runs": [{"seed": s, **k.to_dict()} for s, k in zip(seeds, results)],
        "summary": summary,
    }
    for field_name, stats in summary.items():  # top-level keys: the means (== the values for one seed)
        doc[field_name] = stats["mean"]
    return doc
