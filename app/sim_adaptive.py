"""The project's central loop on any SUMO scenario, in one process (benchmarks, ``--control adaptive``).

Why here, in the composition root: it wires three domain packages that must
not know each other: the field (:class:`field_firmware_stubs.emulator.FieldEmulator`
in a :class:`field_firmware_stubs.world_sumo.SumoWorld`), the centre
(:class:`controller.service.CentralService`, the production loop itself)
and the simulation (scenario, KPIs). The centre runs through its ports with
the in-process adapters of :mod:`controller.inprocess`: the bus carries the
emulators' real payloads (counts, results, active plans, status) as bytes,
the plan record is the in-memory one with the same state machine as the
PostgreSQL store. Production runs the same ``CentralService`` over MQTT and
PostgreSQL (``app.closed_loop``, ``traffic serve``).

No SUMO validation gate by default (a simulation inside the simulation);
pass ``gate`` to run with one. The world is paused while the centre decides,
so the centre does not wait for ``applied``: the next epoch's
reconciliation records it, as production does when the wait times out.

The loop decides once at ``begin`` (no counts yet: the optimizer's floor
values, so the field runs actuated from the first second) and then every
``control.epoch_s`` on the counts of the last epoch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.inprocess import InProcessBus, InProcessCounts, InProcessSender, MemoryLedger
from controller.safety import check_plan
from controller.service import CentralService, Gate
from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.world_sumo import SumoWorld
from simulation.controls import controllable, install_safety_check, register_control, run_own_programs
from simulation.kpi import Kpis, read_teleports, read_tripinfo
from simulation.network import stopline_path
from simulation.runner import merge_options
from simulation.scenario import BASE_OPTIONS, Scenario
from traffic.config import Settings, load_settings
from traffic.errors import ScenarioError, TrafficError, UnsafePlanError
from traffic.intersection import Corridor, SignalFinding

log = logging.getLogger(__name__)

__all__ = ["CLOCK_ORIGIN", "SimClock", "run_adaptive", "run_adaptive_control", "with_detector_links"]

#: wall-clock time of simulation second 0 (any fixed instant: nothing leaves the process)
CLOCK_ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


class SimClock:
    """Simulated time as wall-clock time (``CLOCK_ORIGIN`` + seconds): the field's and the centre's clock."""

    def __init__(self, origin: datetime = CLOCK_ORIGIN) -> None:
        self.origin = origin
        self.sim_s = 0.0

    def at(self, sim_s: float) -> datetime:
        return self.origin + timedelta(seconds=round(sim_s, 1))

    def __call__(self) -> datetime:
        return self.at(self.sim_s)


def _stopline_lane(net: Any, lane_id: str, stoplines: set[str]) -> str:
    """The stop-line lane a detector's lane leads to (itself when it is one, or when no unambiguous path)."""
    if lane_id in stoplines:
        return lane_id
    path = stopline_path(net, lane_id, stoplines)
    return path[-1].getID() if path else lane_id


def with_detector_links(corridor: Corridor, net_file: Path) -> Corridor:
    """``corridor`` with every detector's ``links`` (the signal groups its lane feeds) read from the network.

    The field uses them to let a detector call the phase that actually
    serves its lane (a left-turn lane calls the protected-left phase). A loop
    placed upstream of a short stop-line lane (``simulation.network``) takes
    the links of the stop-line lane its lane leads to.
    """
    import sumolib  # SUMO's own reader; imported here so the controller package does not need SUMO

    try:
        net = sumolib.net.readNet(str(net_file), withPrograms=False, withConnections=True)
    except Exception as exc:  # noqa: BLE001 - sumolib raises bare exceptions on bad files
        raise ScenarioError(f"cannot read {net_file}: {exc}") from exc
    out = []
    for spec in corridor.intersections:
        lane_links: dict[str, set[int]] = defaultdict(set)
        try:
            tls = net.getTLS(spec.tls_id)
        except KeyError as exc:
            raise ScenarioError(f"{net_file} has no traffic light {spec.tls_id}") from exc
        for in_lane, _out_lane, index in tls.getConnections():
            lane_links[in_lane.getID()].add(int(index))
        stoplines = set(lane_links)
        detectors = tuple(replace(d, links=tuple(sorted(lane_links.get(_stopline_lane(net, d.lane_id, stoplines), ()))))
                          for d in spec.detectors)
        out.append(replace(spec, detectors=detectors))
    return replace(corridor, intersections=tuple(out))


def run_adaptive(scenario: Scenario, *, seed: int, begin: int | None = None, end: int | None = None,
                 workdir: Path | None = None, settings: Settings | None = None,
                 report: dict[str, Any] | None = None, gate: Gate | None = None) -> Kpis:
    """Run ``scenario`` under the central loop; return its KPIs.

    Same measures as :func:`simulation.runner.run` (tripinfo with undeparted
    and unfinished vehicles, teleports from the statistics), so the numbers
    compare with the static and baseline runs. Safe to call from parallel
    processes (each process has its own SUMO, in-process transport, no
    shared state). ``report`` (a dict), when given, receives the epochs'
    reports and the optimizer time.
    """
    settings = settings or load_settings()
    begin = scenario.begin if begin is None else int(begin)
    end = scenario.end if end is None else int(end)
    if end <= begin:
        raise TrafficError(f"end ({end}) must be after begin ({begin})")
    own_dir = workdir is None
    out_dir = Path(tempfile.mkdtemp(prefix="traffic-adaptive-")) if own_dir else Path(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corridor = with_detector_links(scenario.corridor, scenario.net_file)
    site = "sim"
    bus = InProcessBus(site)
    control = settings.control
    clock = SimClock()
    clock.sim_s = float(begin)

    emulators: dict[str, FieldEmulator] = {}
    refused: list[SignalFinding] = []
    for spec in corridor.intersections:
        try:
            emulator = FieldEmulator(replace(spec, site=site), site=site, mqtt=settings.mqtt,
                                     count_interval_s=control.count_interval_s, clock_origin=CLOCK_ORIGIN,
                                     settings=settings.field_, gateway=bus)  # type: ignore[arg-type]
        except UnsafePlanError as exc:
            # the field refuses its own time-of-day plan: that signal stays on the network's program
            refused.append(SignalFinding(spec.tls_id, "uncontrolled", exc.rules[0] if exc.rules else "UNSAFE",
                                         f"the field refuses its time-of-day plan: {exc}"))
            log.warning("TLS %s stays on its own program: %s", spec.tls_id, exc)
            continue
        emulator.start()
        emulators[spec.tls_id] = emulator
    if refused:
        corridor = replace(corridor, intersections=tuple(s for s in corridor.intersections if s.tls_id in emulators),
                           findings=(*corridor.findings, *refused))
    central = CentralService(settings, corridor, counts=InProcessCounts(bus), sender=InProcessSender(bus, clock),
                             ledger=MemoryLedger(clock), gate=gate, apply_timeout_s=0.0)
    epochs: list[dict[str, Any]] = []

    def decide(sim_s: float) -> None:
        clock.sim_s = sim_s
        epoch = central.run_epoch(clock.at(sim_s), control.epoch_s)
        epochs.append(epoch.to_dict())

    tag = f"{seed}-{int(time.time() * 1000) % 10**8}"
    tripinfo = (out_dir / f"adaptive-tripinfo-{tag}.xml").resolve()
    statistics = (out_dir / f"adaptive-statistics-{tag}.xml").resolve()
    options = merge_options(scenario.sumo_options, BASE_OPTIONS, (
        "--tripinfo-output.write-unfinished", "true", "--statistic-output", str(statistics),
        "--no-warnings", "true"))
    if scenario.additional_files:
        options += ["--additional-files", ",".join(str(p) for p in scenario.additional_files)]
    if scenario.route_files:
        options += ["--route-files", ",".join(str(p) for p in scenario.route_files)]
    started = time.perf_counter()
    world = SumoWorld(scenario.sumocfg, emulators=emulators, seed=seed, begin=begin, end=end, options=options,
                      tripinfo=tripinfo, approach_range_m=settings.field_.approach_range_m)
    try:
        decide(float(begin))  # bootstrap: actuated from the start
        t = begin
        while t < end:
            t = min(end, t + control.epoch_s)
            world.run_until(t)
            if t < end:
                decide(float(t))
    finally:
        world.close()
        flashed = [e.controller_id for e in emulators.values() if e.monitor.tripped]
        for emulator in emulators.values():
            emulator.stop()
    wall = time.perf_counter() - started
    kpis = read_tripinfo(tripinfo, end_s=end, begin_s=begin)
    kpis = replace(kpis, teleports=read_teleports(statistics), wall_s=round(wall, 3))
    if report is not None:
        report.update(epochs=epochs, optimizer_s=round(sum(e["optimizer_s"] for e in epochs), 4),
                      fallbacks=sum(e.stats.fallbacks for e in emulators.values()),
                      plans_applied=sum(e.stats.plans_applied for e in emulators.values()),
                      plans_rejected=sum(e.stats.plans_rejected for e in emulators.values()),
                      bad_messages=bus.bad_messages, flashed=flashed,
                      uncontrolled=[f.to_dict() for f in refused])
    if own_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return kpis


def run_adaptive_control(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Control ``adaptive`` of :mod:`simulation.controls`: the central loop on the signals it may drive."""
    scenario = controllable(scenario, check_plan)
    if not scenario.corridor.intersections:
        return run_own_programs(scenario, seed, begin, end, workdir)
    kpis: Kpis = run_adaptive(scenario, seed=seed, begin=begin, end=end, workdir=Path(workdir))
    return kpis


# The composition root fills the simulation layer's ports at import (also in spawned worker
# processes, which import this module to find run_adaptive_control).
install_safety_check(check_plan)
register_control("adaptive", run_adaptive_control)
