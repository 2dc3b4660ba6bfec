"""Runs with a controller in the loop (libsumo or TraCI), scored like batch runs.

A control strategy that decides while the simulation runs (max-pressure,
the project's adaptive loop) cannot use the ``sumo`` binary alone. This
module starts SUMO with *exactly* the command line of a batch run
(:func:`simulation.runner.build_command`: same window, seed, teleport and
output options), lets the strategy drive the signals, and reads the KPIs from
the same tripinfo/statistics outputs, so an in-loop run and a batch run of
the same scenario are directly comparable.

The loop is event driven: each controller says when it next needs to act and
the simulation jumps straight there (``simulationStep(t)``), so a controller
deciding every 10 s costs one call per 10 s, not one per step.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from simulation.backend import api_name, sumo_api
from simulation.kpi import Kpis, read_teleports, read_tripinfo
from simulation.runner import build_command
from simulation.scenario import Scenario
from traffic.errors import SimulationError

log = logging.getLogger(__name__)


class LoopController(Protocol):
    """A strategy acting on the running simulation through the backend API."""

    def start(self, api, now: float) -> float:
        """Take control at ``now``; return the simulation time it next wants to act."""

    def update(self, api, now: float) -> float:
        """Act at ``now`` (at or after the requested time); return the next time it wants to act."""


#: Builds the controllers once SUMO has loaded the scenario (they may query the network through ``api``).
ControllerFactory = Callable[[object], Sequence[LoopController]]


def run_in_loop(scenario: Scenario, *, seed: int, make_controllers: ControllerFactory, begin: int | None = None,
                end: int | None = None, workdir: Path | None = None, backend: str = "auto",
                route_files: Sequence[Path] | None = None, extra_options: Sequence[str] = ()) -> Kpis:
    """Run ``scenario`` with the controllers from ``make_controllers`` acting; return its KPIs.

    ``wall_s`` is the wall time from start to close (SUMO plus the
    controllers), the honest cost of the strategy. One run per process with
    libsumo: parallel seeds need separate processes (see :mod:`simulation.controls`).
    """
    begin = scenario.begin if begin is None else int(begin)
    end = scenario.end if end is None else int(end)
    if end <= begin:
        raise SimulationError(f"end ({end}) must be after begin ({begin})")
    routes = tuple(Path(p).resolve() for p in (scenario.route_files if route_files is None else route_files))
    api = sumo_api(backend)
    own_dir = workdir is None
    out_dir = Path(tempfile.mkdtemp(prefix="traffic-loop-")) if own_dir else Path(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{seed}-{uuid.uuid4().hex[:8]}"
    tripinfo = (out_dir / f"tripinfo-{tag}.xml").resolve()
    statistics = (out_dir / f"statistics-{tag}.xml").resolve()
    cmd = build_command(scenario, seed=seed, begin=begin, end=end, tripinfo=tripinfo, statistics=statistics,
                        additional_files=scenario.additional_files, route_files=routes, extra_options=extra_options)
    started = time.perf_counter()
    try:
        try:
            api.start(cmd)  # every path in cmd is absolute; the config resolves its own relative to itself
        except Exception as exc:  # libsumo/traci raise their own exception types (or bare ones)
            raise SimulationError(f"cannot start SUMO ({api_name(api)}) on {scenario.sumocfg.name}: {exc}") from exc
        try:
            _drive(api, make_controllers, float(begin), float(end))
        finally:
            try:
                api.close()
            except Exception:  # closing must not hide the original error
                log.debug("closing SUMO failed", exc_info=True)
        wall = time.perf_counter() - started
        if not tripinfo.exists():
            raise SimulationError(f"SUMO wrote no tripinfo for {scenario.sumocfg.name}")
        kpis = read_tripinfo(tripinfo, end_s=end, begin_s=begin)
        return replace(kpis, teleports=read_teleports(statistics), wall_s=round(wall, 3))
    finally:
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


def _drive(api, make_controllers: ControllerFactory, begin: float, end: float) -> None:
    try:
        now = float(api.simulation.getTime())
        step = float(api.simulation.getDeltaT())
        controllers = list(make_controllers(api))
        due = [c.start(api, now) for c in controllers]
        while now < end:
            target = min([end, *due])
            if target > now + 1e-9:
                # land on the step grid at or after the requested time, so a due time such as
                # 25218.96 s is reached (SUMO would stop at the step before it)
                target = min(end, now + math.ceil((target - now) / step - 1e-9) * step)
                api.simulationStep(target)
                reached = float(api.simulation.getTime())
                if reached <= now:
                    raise SimulationError(f"SUMO does not advance past {now} s")
                now = reached
            for i, c in enumerate(controllers):
                if due[i] <= now + 1e-9:
                    due[i] = max(c.update(api, now), now + step)
    except SimulationError:
        raise
    except Exception as exc:  # TraCIException, FatalTraCIError, libsumo errors
        raise SimulationError(f"SUMO failed during the controlled run: {exc}") from exc

