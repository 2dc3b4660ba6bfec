"""The control registry: run any scenario under any control, on one or several seeds.

Every control has the same signature, ``(scenario, seed, begin, end,
workdir) -> Kpis``, so the CLI, the benchmark and the tests treat them
alike:

* ``static``: the network's own programs as fixed time (the ``sumo`` binary;
  an actuated program runs at its phases' durations,
  :func:`~simulation.actuated.fixed_time_additional`);
* ``actuated``: SUMO's actuated control on the same phases
  (:mod:`simulation.actuated`, the ``sumo`` binary);
* ``actuated-safe``: the same SUMO actuated logic held to the project's
  safety rules: the mapped phases with ITE yellow and red clearance and the
  pedestrian walk + clearance as minimum green (:func:`run_actuated_safe`);
* ``max-pressure``: :mod:`simulation.max_pressure` in the loop (libsumo or TraCI);
* ``adaptive``: the project's own central loop; the composition root
  registers it (``app.sim_adaptive`` calls :func:`register_control`), since
  this package must not import the centre or the field;
* ``max-pressure-resco``: max-pressure with the RESCO reference's 3 s yellow
  and no all-red, only to compare with published numbers (not field-safe).

Seeds run in separate processes (:func:`run_seeds`): SUMO is single
threaded and libsumo allows one simulation per process.

Two ports keep this package below the centre: the safety check that decides
which signals a control may drive (:data:`SafetyCheck`, installed by the
composition root with :func:`install_safety_check`, handed to every worker
process by :func:`run_seeds`), and the control registry itself
(:func:`register_control`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulation.actuated import actuated_additional, fixed_time_additional
from simulation.backend import BACKENDS, ENV_BACKEND
from simulation.inloop import run_in_loop
from simulation.kpi import Kpis
from simulation.max_pressure import MaxPressureController, MaxPressureSettings
from simulation.runner import run
from simulation.scenario import Scenario
from simulation.tls_program import write_plans_additional
from traffic.errors import SimulationError, TrafficError
from traffic.intersection import FindingLevel, IntersectionSpec, SignalFinding
from traffic.plan import PlanMode, TimingPlan, Violation

log = logging.getLogger(__name__)

ControlFn = Callable[[Scenario, int, int, int, Path], Kpis]

#: The centre's safety rules as a port: every rule ``plan`` breaks at ``spec`` (empty: safe).
SafetyCheck = Callable[[TimingPlan, IntersectionSpec], Sequence[Violation]]

_safety_check: SafetyCheck | None = None


def install_safety_check(check: SafetyCheck | None) -> None:
    """Use ``check`` (the centre's ``check_plan``) wherever a control decides what it may drive.

    Why a port: this package runs SUMO and must not import the centre, yet
    a control must never drive a signal whose own phases the centre would
    refuse. The composition root (``app``) installs the check; ``None``
    removes it (tests).
    """
    global _safety_check
    _safety_check = check


def installed_safety_check() -> SafetyCheck | None:
    """The check :func:`install_safety_check` installed, if any (handed on to worker processes)."""
    return _safety_check

#: KPIs summarised over seeds (the JSON of ``traffic sim run``).
SUMMARY_FIELDS = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "mean_stops", "vehicles", "completed",
                  "undeparted", "teleports", "throughput_veh_h", "wall_s")


def controllable(scenario: Scenario, check: SafetyCheck | None = None) -> Scenario:
    """``scenario`` with the signals the centre's safety check refuses left on their own program.

    The mapping (:func:`simulation.network.corridor_from_net`) already leaves
    out what it cannot map; this is the second line: every mapped signal's
    time-of-day plan and its actuated-safe plan must pass ``check`` (default:
    the installed :data:`SafetyCheck`, the centre's ``check_plan``), or that
    signal keeps the network's program and the finding names the rule. A
    control never crashes a run on one signal it cannot drive. Without a
    check there is no way to tell, so that is an error, not a pass.
    """
    check_plan = check or _safety_check
    if check_plan is None:
        raise SimulationError("no safety check installed: the composition root (app) provides the centre's "
                              "check_plan through simulation.controls.install_safety_check")

    kept: list[IntersectionSpec] = []
    refused: list[SignalFinding] = []
    safe_plans = safe_actuated_plans(scenario)
    for spec in scenario.corridor.intersections:
        violations = [*check_plan(spec.default_plan(), spec), *check_plan(safe_plans[spec.tls_id], spec)]
        if violations:
            first = violations[0]
            refused.append(SignalFinding(spec.tls_id, FindingLevel.UNCONTROLLED, first.rule,
                                         f"its own phases break {first.rule}: {first.detail}",
                                         "check the approved program's stages against the conflict model "
                                         "(traffic site check)"))
            log.warning("TLS %s stays on its own program: %s: %s", spec.tls_id, first.rule, first.detail)
        else:
            kept.append(spec)
    if not refused:
        return scenario
    if not kept:
        log.warning("no signal of this scenario passes the safety rules: every signal keeps its own program")
    corridor = replace(scenario.corridor, intersections=tuple(kept), findings=(*scenario.corridor.findings, *refused))
    return replace(scenario, corridor=corridor)


def run_static(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """The network's own programs, as fixed time: a self-timed (actuated) program runs at its phases' durations."""
    workdir = Path(workdir)
    fixed = fixed_time_additional(scenario.net_file, workdir / "fixed-time.add.xml")
    return run(scenario, seed=seed, begin=begin, end=end, workdir=workdir,
               extra_additional=() if fixed is None else (fixed,))


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

    Its yellow and red clearance keep their fractional lengths: SUMO shows
    a 3.3 s yellow at its 1 s step for 3 s two times in three and 4 s the
    third, the policy on average, as it shows the emulators' intervals
    (timed in tenths, sampled each second). Rounding this baseline's
    intervals up alone (tried in session 14) charged it a second on changes
    where ``adaptive`` is shown the policy's mean (spider 50.8 -> 58.3);
    see docs/performance.md, "Measured and dropped".
    """
    plans: dict[str, TimingPlan] = {}
    for spec in scenario.corridor.intersections:
        plan = spec.default_plan()
        phases = tuple(replace(p, phaseMaximum1=max(SAFE_ACTUATED_MAX_GREEN_S, p.phaseMinimumGreen,
                                                      p.phaseWalk + p.phasePedestrianClear),
                               phasePassage=SAFE_ACTUATED_GAP_S) for p in plan.phases)
        plans[spec.tls_id] = replace(plan, phases=phases, mode=PlanMode.FREE)
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
    scenario = controllable(scenario)
    if not scenario.corridor.intersections:
        return run_own_programs(scenario, seed, begin, end, workdir)
    programs = write_plans_additional(safe_actuated_plans(scenario), workdir / "actuated-safe.add.xml",
                                      program_id="traffic-actuated-safe")
    return run(scenario, seed=seed, begin=begin, end=end, workdir=workdir, extra_additional=(programs,))


def run_own_programs(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """A control with no signal it may drive: every signal keeps its own program (the run still ends with KPIs)."""
    log.warning("%s: no signal the project may control; every signal runs its own program",
                scenario.sumocfg.name)
    return run(scenario, seed=seed, begin=begin, end=end, workdir=Path(workdir))


def run_max_pressure(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Max-pressure with safeguards on every mapped signal (backend from ``TRAFFIC_SUMO_BACKEND``)."""
    scenario = controllable(scenario)
    specs = scenario.corridor.intersections
    if not specs:
        return run_own_programs(scenario, seed, begin, end, workdir)
    return run_in_loop(scenario, seed=seed, begin=begin, end=end, workdir=workdir,
                       make_controllers=lambda _api: [MaxPressureController(s) for s in specs])


def run_max_pressure_resco(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Max-pressure as the RESCO reference ran it (3 s yellow, no all-red): for comparison only."""
    scenario = controllable(scenario)
    specs = scenario.corridor.intersections
    if not specs:
        return run_own_programs(scenario, seed, begin, end, workdir)
    settings = MaxPressureSettings.resco()
    return run_in_loop(scenario, seed=seed, begin=begin, end=end, workdir=workdir,
                       make_controllers=lambda _api: [MaxPressureController(s, settings) for s in specs])


#: Controls that run the ``sumo`` binary (no controller in the loop).
BATCH_CONTROLS = {"static", "actuated", "actuated-safe"}

CONTROLS: dict[str, ControlFn] = {
    "static": run_static,
    "actuated": run_actuated,
    "actuated-safe": run_actuated_safe,
    "max-pressure": run_max_pressure,
    "max-pressure-resco": run_max_pressure_resco,
}


def register_control(name: str, fn: ControlFn, *, batch: bool = False) -> None:
    """Make ``fn`` available as control ``name`` (the composition root registers ``adaptive`` here).

    ``fn`` must be a module-level function of an importable module: worker
    processes are spawned and receive it by reference, so importing that
    module in the worker must be enough to run it. ``batch``: it only runs
    the ``sumo`` binary (threads suffice, no libsumo in the process).
    """
    if not name or not callable(fn):
        raise SimulationError(f"a control needs a name and a function, got {name!r}, {fn!r}")
    CONTROLS[name] = fn
    if batch:
        BATCH_CONTROLS.add(name)
    else:
        BATCH_CONTROLS.discard(name)


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
         backend: str, check: SafetyCheck | None = None) -> Kpis:
    """Run one seed (in a worker process or thread); failures come back as picklable TrafficErrors.

    ``check`` is the parent's installed safety check: a spawned worker starts
    with an empty port, so the parent hands it over (by reference).
    """
    if backend != "auto":
        os.environ[ENV_BACKEND] = backend  # this worker process only
    if check is not None:
        install_safety_check(check)
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
        # libsumo state must never be forked or shared, nor reused: a second run in a worker that has
        # already run one is not reproducible (cologne1 seed 3 under `adaptive` alternated between
        # 23.6 and 24.8 s run after run in one process), so every seed gets a fresh process
        ctx = multiprocessing.get_context("spawn")
        executor, job_backend = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                                    max_tasks_per_child=1), backend
    with executor:
        # the function itself travels to the worker (by reference), so a control registered at run
        # time in an importable module works in a spawned process too
        futures = {executor.submit(_one, fn, scenario, s, begin, end, d, job_backend, _safety_check): s
                   for s, d in zip(seeds, dirs, strict=False)}
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
        "runs": [{"seed": s, **k.to_dict()} for s, k in zip(seeds, results, strict=False)],
        "summary": summary,
        "controlled": [s.tls_id for s in scenario.corridor.intersections],
        "findings": [f.to_dict() for f in scenario.corridor.findings if f.level != FindingLevel.INFO],
    }
    for field_name, stats in summary.items():  # top-level keys: the means (== the values for one seed)
        doc[field_name] = stats["mean"]
    return doc
