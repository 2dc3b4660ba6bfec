"""Headless batch runs of the ``sumo`` binary, one process per run.

The binary is the fastest way to run a whole scenario without control in
the loop (no TraCI round trips) and gives process isolation for free: a
crashing run cannot take the caller down, and parallel runs use the cores
(SUMO itself is single-threaded). Plans are injected as an additional file
of ``tlLogic`` programs (:mod:`simulation.tls_program`).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from simulation.binaries import sumo_binary
from simulation.kpi import Kpis, read_teleports, read_tripinfo
from simulation.scenario import BASE_OPTIONS, Scenario
from simulation.tls_program import write_plans_additional
from traffic.errors import SimulationError
from traffic.plan import TimingPlan

if TYPE_CHECKING:
    from simulation.executor import SimulationExecutor

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class RunJob:
    """Arguments of one :func:`run` call, for :func:`run_many`."""

    scenario: Scenario
    seed: int
    plans: Mapping[str, TimingPlan] | None = None
    begin: int | None = None
    end: int | None = None
    route_files: tuple[Path, ...] | None = None
    workdir: Path | None = None
    extra_options: tuple[str, ...] = ()
    extra_additional: tuple[Path, ...] = ()


def plans_by_tls(scenario: Scenario, plans: Iterable[TimingPlan]) -> dict[str, TimingPlan]:
    """Key plans (which name their ``controller_id``) by SUMO tls id, as :func:`run` wants them."""
    specs = scenario.corridor.by_id()
    out: dict[str, TimingPlan] = {}
    for plan in plans:
        spec = specs.get(plan.controller_id)
        if spec is None:
            raise SimulationError(f"plan {plan.plan_id} is for unknown controller {plan.controller_id!r}")
        if spec.tls_id in out:
            raise SimulationError(f"two plans for controller {plan.controller_id!r}")
        out[spec.tls_id] = plan
    return out


def _check_plans(scenario: Scenario, plans: Mapping[str, TimingPlan]) -> None:
    by_tls = {s.tls_id: s for s in scenario.corridor.intersections}
    unknown = sorted(set(plans) - set(by_tls))
    if unknown:
        raise SimulationError(f"plans for unknown TLS {unknown} (known: {sorted(by_tls)})")
    for tls_id, plan in plans.items():
        spec = by_tls[tls_id]
        for phase in plan.phases:
            if len(phase.greens) != spec.link_count:
                raise SimulationError(f"plan {plan.plan_id} phase {phase.phase}: {len(phase.greens)} signal groups, "
                                      f"TLS {tls_id} has {spec.link_count}")


@lru_cache(maxsize=256)
def _loops_only_cached(path: str, mtime_ns: int) -> bool:
    try:
        for _event, el in ET.iterparse(path, events=("end",)):
            if el.tag in ("inductionLoop", "e1Detector"):
                if el.get("file", "NUL") != "NUL":
                    return False
            elif el.tag != "additional":
                return False
            el.clear()
    except (ET.ParseError, OSError):
        return False  # let SUMO report it
    return True


def loops_only(path: Path) -> bool:
    """True for an additional file holding only induction loops that write nowhere (``file="NUL"``).

    Such loops (the ones :func:`simulation.network.write_detectors_additional`
    places for the field world) change nothing in a batch run but cost SUMO
    time every step, so batch runs leave them out; the gate's overhead over
    bare ``sumo`` depends on it.
    """
    try:
        return _loops_only_cached(str(path), Path(path).stat().st_mtime_ns)
    except OSError:
        return False


def merge_options(*option_lists: Sequence[str]) -> list[str]:
    """Concatenate SUMO option lists, a later value replacing an earlier one of the same name.

    SUMO refuses an option given twice, but a run legitimately layers the
    scenario's options, the batch defaults and the caller's extras. A token
    starting with ``--`` is a name; a following token that does not is its value.
    """
    merged: dict[str, list[str]] = {}
    for options in option_lists:
        tokens = list(options)
        i = 0
        while i < len(tokens):
            name = tokens[i]
            if not name.startswith("-"):
                raise SimulationError(f"expected a SUMO option name, got {name!r} in {tokens}")
            value: list[str] = []
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = [tokens[i + 1]]
                i += 1
            merged.pop(name.lstrip("-"), None)
            merged[name.lstrip("-")] = [name, *value]
            i += 1
    return [token for pair in merged.values() for token in pair]


def build_command(scenario: Scenario, *, seed: int, begin: int, end: int, tripinfo: Path, statistics: Path,
                  additional_files: Sequence[Path], route_files: Sequence[Path],
                  extra_options: Sequence[str] = ()) -> list[str]:
    """The ``sumo`` command line of one run (pure; exposed for logging and tests)."""
    cmd = [sumo_binary("sumo"), "-c", str(scenario.sumocfg),
           "--begin", str(begin), "--end", str(end), "--seed", str(seed),
           "--tripinfo-output", str(tripinfo),
           "--tripinfo-output.write-undeparted", "true",
           "--tripinfo-output.write-unfinished", "true",
           "--statistic-output", str(statistics),
           "--no-step-log", "true", "--duration-log.disable", "true", "--no-warnings", "true"]
    cmd += ["--route-files", ",".join(str(p) for p in route_files)]
    if additional_files:
        cmd += ["--additional-files", ",".join(str(p) for p in additional_files)]
    fixed = set(merge_options(cmd[3:]))  # names the runner itself owns
    extras = merge_options(scenario.sumo_options, BASE_OPTIONS, extra_options)
    for token in extras:
        if token.startswith("--") and token in fixed:
            raise SimulationError(f"option {token} is set by the runner and cannot be overridden")
    return cmd + extras


def run(scenario: Scenario, *, seed: int, plans: Mapping[str, TimingPlan] | None = None,
        begin: int | None = None, end: int | None = None, route_files: Sequence[Path] | None = None,
        workdir: Path | None = None, extra_options: Sequence[str] = (),
        extra_additional: Sequence[Path] = ()) -> Kpis:
    """Run ``scenario`` once and return its KPIs (``wall_s`` = SUMO's wall time).

    ``plans`` (keyed by SUMO tls id) replace the network's programs for this
    run only; ``route_files`` replace the scenario's demand; ``extra_additional``
    files are loaded after the scenario's own (for example actuated programs). Outputs go to
    ``workdir`` (kept) or to a temporary folder (removed).
    """
    begin = scenario.begin if begin is None else int(begin)
    end = scenario.end if end is None else int(end)
    if end <= begin:
        raise SimulationError(f"end ({end}) must be after begin ({begin})")
    routes = tuple(Path(p).resolve() for p in (scenario.route_files if route_files is None else route_files))
    for p in routes:
        if not p.exists():
            raise SimulationError(f"route file {p} does not exist")
    _check_plans(scenario, plans or {})
    own_dir = workdir is None
    out_dir = Path(tempfile.mkdtemp(prefix="traffic-sumo-")) if own_dir else Path(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        tag = f"{seed}-{uuid.uuid4().hex[:8]}"
        additional = [p for p in scenario.additional_files if not loops_only(p)]
        additional += [Path(p).resolve() for p in extra_additional]
        if plans:
            additional.append(write_plans_additional(plans, out_dir / f"plans-{tag}.add.xml").resolve())
        tripinfo = (out_dir / f"tripinfo-{tag}.xml").resolve()
        statistics = (out_dir / f"statistics-{tag}.xml").resolve()
        cmd = build_command(scenario, seed=seed, begin=begin, end=end, tripinfo=tripinfo, statistics=statistics,
                            additional_files=additional, route_files=routes, extra_options=extra_options)
        log.debug("running %s", " ".join(cmd))
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT_S,
                                  cwd=scenario.sumocfg.parent)
        except subprocess.TimeoutExpired as exc:
            raise SimulationError(f"sumo run of {scenario.sumocfg.name} timed out after {DEFAULT_TIMEOUT_S} s") from exc
        except OSError as exc:
            raise SimulationError(f"cannot start sumo: {exc}") from exc
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
            raise SimulationError(f"sumo failed on {scenario.sumocfg.name} (exit {proc.returncode}):\n{tail}")
        if not tripinfo.exists():
            raise SimulationError(f"sumo wrote no tripinfo for {scenario.sumocfg.name}")
        kpis = read_tripinfo(tripinfo, end_s=end, begin_s=begin)
        return replace(kpis, teleports=read_teleports(statistics), wall_s=round(wall, 3))
    finally:
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


def _run_job(job: RunJob) -> Kpis:
    return run(job.scenario, seed=job.seed, plans=job.plans, begin=job.begin, end=job.end,
               route_files=job.route_files, workdir=job.workdir, extra_options=job.extra_options,
               extra_additional=job.extra_additional)


def run_many(jobs: Sequence[RunJob], *, processes: int = 2, executor: SimulationExecutor | None = None) -> list[Kpis]:
    """Run ``jobs`` with at most ``processes`` SUMO processes at a time; results in job order.

    Threads only wait on the child processes, so the parallelism is real.
    The first failure is raised (as :class:`SimulationError`) after the
    running jobs finish; no half-finished result list is returned. With an
    ``executor`` (``simulation.executor``: local processes or a Dask cluster)
    the jobs run there instead, as tasks reading their files from shared storage.
    """
    if executor is not None:
        from simulation.executor import run_jobs
        return run_jobs(executor, jobs) if jobs else []
    if processes < 1:
        raise SimulationError("processes must be at least 1")
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(processes, len(jobs))) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        return [f.result() for f in futures]
