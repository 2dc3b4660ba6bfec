"""Test-only controls that fail (or report where they ran) inside a seed's worker process.

Module-level functions in an importable module: ``run_seeds`` sends the
control function to a spawned worker by reference, so the worker imports
this module and runs the failure for real on the other side of the
process boundary.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from traffic.errors import ScenarioError, UnsafePlanError
from traffic.plan import Violation


class _Unpicklable(Exception):
    """A library-style exception that cannot be rebuilt by pickle (its ``__init__`` needs two arguments)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{text} (code {code})")
        self.code = code


def raise_value_error(scenario, seed: int, begin: int, end: int, workdir: Path):
    """A plain Python error from deep inside a control."""
    raise ValueError(f"detector loop d7 has no lane (seed {seed})")


def raise_unpicklable(scenario, seed: int, begin: int, end: int, workdir: Path):
    """An exception that, unwrapped, would turn into BrokenProcessPool in the parent."""
    raise _Unpicklable(42, "libsumo said no")


def raise_unsafe(scenario, seed: int, begin: int, end: int, workdir: Path):
    """A project error whose constructor takes violations, not a message."""
    raise UnsafePlanError([Violation("YELLOW", "3.0 s < ITE 3.6 s", 2)])


def raise_scenario_error(scenario, seed: int, begin: int, end: int, workdir: Path):
    """A project error built from its message alone: the caller sees the same class."""
    raise ScenarioError("net has no traffic lights")


def fail_only_seed_2(scenario, seed: int, begin: int, end: int, workdir: Path):
    """Seed 2 fails, the others succeed (the failure waits for them, and names seed 2)."""
    if seed == 2:
        raise RuntimeError("queue estimator diverged")
    from simulation.kpi import Kpis

    return Kpis(mean_delay_s=float(seed), mean_trip_time_s=2.0 * seed, mean_waiting_s=1.0, mean_stops=1.0,
                vehicles=10, completed=10, undeparted=0)


def report_pid(scenario, seed: int, begin: int, end: int, workdir: Path):
    """Succeeds; its mean delay is the id of the process that ran it (which process ran each seed)."""
    from simulation.kpi import Kpis

    return Kpis(mean_delay_s=float(os.getpid()), mean_trip_time_s=1.0, mean_waiting_s=1.0, mean_stops=1.0,
                vehicles=1, completed=1, undeparted=0)


def segfault(scenario, seed: int, begin: int, end: int, workdir: Path):
    """The worker dies the way a libsumo crash kills it."""
    os.kill(os.getpid(), signal.SIGSEGV)


def reads_its_detectors(scenario, seed: int, begin: int, end: int, workdir: Path):
    """Succeeds only if the scenario's detector file is still there while the seed runs.

    ``traffic sim run`` keeps the detectors in its temporary folder; removing
    that folder before the seeds finish would break SUMO mid-run.
    """
    from simulation.kpi import Kpis
    from traffic.errors import SimulationError

    missing = [str(f) for f in scenario.additional_files if not Path(f).exists()]
    if missing:
        raise SimulationError(f"detector files gone during the run: {missing}")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "tripinfo.xml").write_text("<tripinfos/>\n")
    return Kpis(mean_delay_s=10.0 + seed, mean_trip_time_s=60.0, mean_waiting_s=5.0, mean_stops=1.0,
                vehicles=100, completed=95, undeparted=0, wall_s=0.5)
