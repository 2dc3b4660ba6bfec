"""The project's own central loop on any SUMO scenario, in one process (benchmarks).

Why in-process: the benchmark runs every scenario on several seeds in
parallel processes; a private broker and database per run would cost more
than the simulation and add nothing to what is being measured (the control
decisions). So the *transport* is replaced by :class:`InProcessBus`, which
hands the field emulators' MQTT payloads (counts, plan results) straight to
the central side and the central side's plan commands straight to the
emulators' plan handler, as bytes, in the same wire format. Everything that
decides is the production code unchanged:

* field: :class:`field_firmware_stubs.emulator.FieldEmulator` (independent
  plan check, signal program run actuated, conflict monitor, fallback) in a
  :class:`field_firmware_stubs.world_sumo.SumoWorld`;
* centre: :func:`controller.demand.estimate` (pcu, smoothing, substitution of
  failed detectors), :func:`controller.optimizer.optimize_corridor`,
  :func:`controller.safety.check_plan`, and the heartbeat re-send of the
  active plan when nothing new is sent.

What is left out is the SUMO validation gate (a simulation inside the
simulation) and the database bookkeeping; ``app.closed_loop.run_loop``
runs the full stack over real MQTT and PostgreSQL.

The loop decides once at ``begin`` (no counts yet: a bootstrap plan from the
optimizer's floor values, so the field runs actuated from the first second)
and then every ``control.epoch_s`` on the counts of the last epoch.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from controller.bounds import Bounds
from controller.demand import DetectorTotals, PhaseDemand, estimate
from controller.optimizer import optimize_corridor
from controller.safety import check_plan
from simulation.controls import controllable, install_safety_check, register_control
from simulation.kpi import Kpis
from simulation.scenario import Scenario
from traffic import messages, topics
from traffic.config import Settings, load_settings
from traffic.errors import MessageError, ScenarioError, TrafficError, UnsafePlanError
from traffic.intersection import Corridor, SignalFinding
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

__all__ = ["InProcessBus", "SimCentral", "run_adaptive", "with_detector_links"]

#: wall-clock time of simulation second 0 (any fixed instant: nothing leaves the process)
CLOCK_ORIGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)


class _Port:
    """The endpoint one emulator publishes through."""

    connected = True

    def __init__(self, bus: "InProcessBus") -> None:
        self._bus = bus

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: object = None) -> bool:
        self._bus.deliver(topic, payload)
        return True


class InProcessBus:
    """Stands in for the broker between emulators and the central loop (same payloads, no sockets).

    Emulators register through the same interface as
    :class:`field_firmware_stubs.link.FieldGateway`. Counts are decoded with
    the ingest's strict decoder and summed per detector and interval; plan
    results are kept per plan id.
    """

    def __init__(self, site: str) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[bytes, str | None, bytes | None], None]] = {}
        # (controller, interval start) -> detector -> (vehicles, motorcycles or None, interval_s)
        self.counts: dict[tuple[str, datetime], dict[str, tuple[int, int | None, int]]] = {}
        self.results: dict[str, list[messages.PlanResult]] = defaultdict(list)
        self.bad_messages = 0

    # ---- the gateway interface the emulator uses -------------------------------------
    def register(self, controller_id: str, on_plan: Callable[[bytes, str | None, bytes | None], None],
                 on_connect: Callable[[], None], on_disconnect: Callable[[], None]) -> _Port:
        with self._lock:
            self._handlers[controller_id] = on_plan
        on_connect()
        return _Port(self)

    def unregister(self, controller_id: str) -> None:
        with self._lock:
            self._handlers.pop(controller_id, None)

    # ---- field -> centre ---------------------------------------------------------------
    def deliver(self, topic: str, payload: bytes) -> None:
        """Route one published message (counts and plan results are kept; the rest is not needed here)."""
        try:
            leaf = topics.parse(topic).leaf
            if leaf == topics.COUNTS:
                report = messages.decode_counts(payload)
                with self._lock:
                    self.counts[(report.controller_id, report.interval_start)] = {
                        r.detector_id: (r.count, r.motorcycle_count, report.interval_s) for r in report.records}
            elif leaf == topics.PLAN_RESULT:
                result = messages.decode_result(payload)
                with self._lock:
                    self.results[result.plan_id].append(result)
        except MessageError as exc:  # a bad payload is counted, never raised into the emulator's tick
            log.warning("in-process bus: bad message on %s: %s", topic, exc)
            self.bad_messages += 1

    def totals(self, controller_id: str, start: datetime, end: datetime) -> dict[str, DetectorTotals]:
        """Per-detector totals over intervals starting in ``[start, end)`` (what the SQL in demand does)."""
        acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
        with self._lock:
            items = [(k, v) for k, v in self.counts.items() if k[0] == controller_id and start <= k[1] < end]
        for _key, records in items:
            for det, (count, moto, interval_s) in records.items():
                a = acc[det]
                a[0] += interval_s
                if moto is None:
                    a[3] += count
                else:
                    a[1] += count
                    a[2] += moto
        return {d: DetectorTotals(*a) for d, a in acc.items()}

    # ---- centre -> field ---------------------------------------------------------------
    def send_plan(self, plan: TimingPlan) -> messages.PlanResult | None:
        """Hand ``plan`` to its controller's plan handler; return the first answer (None: nobody there)."""
        with self._lock:
            handler = self._handlers.get(plan.controller_id)
        if handler is None:
            return None
        response = topics.topic(self.site, plan.controller_id, topics.PLAN_RESULT)
        handler(plan.to_json(), response, plan.plan_id.encode())
        with self._lock:
            answers = list(self.results.get(plan.plan_id, ()))
        return answers[0] if answers else None


@dataclass
class SimCentral:
    """The central decision of one epoch, on the bus instead of MQTT + PostgreSQL (see module docstring)."""

    corridor: Corridor
    settings: Settings
    bus: InProcessBus
    clock: Callable[[float], datetime]
    active: dict[str, TimingPlan] = field(default_factory=dict)
    previous: dict[str, PhaseDemand] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    bounds: dict[str, Bounds] = field(default_factory=dict)  # engineers' limits per controller
    log: list[dict[str, Any]] = field(default_factory=list)
    optimizer_s: float = 0.0

    def epoch(self, now_s: float, window_s: float, incumbents: Mapping[str, TimingPlan]) -> dict[str, Any]:
        """Estimate, optimise, check and send; re-send the active plan where nothing new goes out."""
        specs = self.corridor.by_id()
        end = self.clock(now_s)
        start = end - timedelta(seconds=window_s)
        demands = {cid: estimate(spec, self.bus.totals(cid, start, end), self.settings.optimizer,
                                 previous=self.previous.get(cid), start=start, end=end)
                   for cid, spec in specs.items()}
        self.previous.update(demands)
        current = {cid: self.active.get(cid, incumbents[cid]) for cid in specs}
        versions = {cid: self.versions.get(cid, current[cid].version) + 1 for cid in specs}
        started = time.perf_counter()
        proposals = optimize_corridor(self.corridor, demands, current, self.settings.optimizer, versions,
                                      bounds=self.bounds)
        self.optimizer_s += time.perf_counter() - started
        expires = (self.clock(now_s) + timedelta(seconds=self.settings.control.plan_expiry_s)).isoformat()
        record: dict[str, Any] = {"t": now_s, "sent": {}, "heartbeat": [], "refused": {}}
        for cid, proposal in proposals.items():
            plan = replace(proposal.plan, expires_at=expires)
            violations = check_plan(plan, specs[cid])
            if violations:  # cannot happen (optimize checks too); never send it
                record["refused"][cid] = [v.rule for v in violations]
                continue
            if cid in self.active and _same_timing(plan, self.active[cid]):
                self._heartbeat(cid, expires, record)
                continue
            answer = self.bus.send_plan(plan)
            if answer is not None and answer.status in (messages.ACCEPTED, messages.APPLIED):
                self.active[cid] = plan
                self.versions[cid] = plan.version
                record["sent"][cid] = {"version": plan.version, "cycle_s": plan.patternCycleTime,
                                       "mode": plan.mode, "why": proposal.explanation.get("method")}
            else:
                record["refused"][cid] = None if answer is None else answer.rule
                self._heartbeat(cid, expires, record)
        self.log.append(record)
        return record

    def _heartbeat(self, cid: str, expires: str, record: dict[str, Any]) -> None:
        plan = self.active.get(cid)
        if plan is None:
            return
        answer = self.bus.send_plan(replace(plan, expires_at=expires))
        if answer is not None and answer.status != messages.REJECTED:
            record["heartbeat"].append(cid)


def _same_timing(a: TimingPlan, b: TimingPlan) -> bool:
    """Whether two plans time the junction identically (then re-sending the old one is enough)."""
    return (a.mode == b.mode and a.splitCoordPhase == b.splitCoordPhase
            and abs(a.patternOffsetTime - b.patternOffsetTime) < 0.05
            and [(p.splitTime, p.phaseMaximum1, p.phasePassage) for p in a.phases]
            == [(p.splitTime, p.phaseMaximum1, p.phasePassage) for p in b.phases])


def _stopline_lane(net: Any, lane_id: str, stoplines: set[str]) -> str:
    """The stop-line lane a detector's lane leads to (itself when it is one, or when no unambiguous path)."""
    from simulation.network import stopline_path  # SUMO side, imported where SUMO is needed anyway

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


def run_adaptive(scenario: Any, *, seed: int, begin: int | None = None, end: int | None = None,
                 workdir: Path | None = None, settings: Settings | None = None,
                 report: dict[str, Any] | None = None) -> Any:
    """Run ``scenario`` (a :class:`simulation.scenario.Scenario`) under the adaptive loop; return its KPIs.

    Same measures as :func:`simulation.runner.run` (tripinfo with undeparted
    and unfinished vehicles, teleports from the statistics), so the numbers
    compare with the static and baseline runs. Safe to call from parallel
    processes (each process has its own SUMO, in-process transport, no
    shared state). ``report`` (a dict), when given, receives the epochs'
    decisions and the optimizer time.
    """
    from field_firmware_stubs.emulator import FieldEmulator
    from field_firmware_stubs.world_sumo import SumoWorld
    from simulation.kpi import read_teleports, read_tripinfo
    from simulation.runner import merge_options
    from simulation.scenario import BASE_OPTIONS

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

    def clock(sim_s: float) -> datetime:
        return CLOCK_ORIGIN + timedelta(seconds=round(sim_s, 1))

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
    central = SimCentral(corridor, settings, bus, clock)
    incumbents = {e.controller_id: e.tod_plan for e in emulators.values()}
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
                      tripinfo=tripinfo)
    try:
        central.epoch(float(begin), float(control.epoch_s), incumbents)  # bootstrap: actuated from the start
        t = begin
        while t < end:
            t = min(end, t + control.epoch_s)
            world.run_until(t)
            if t < end:
                central.epoch(float(t), float(control.epoch_s), incumbents)
    finally:
        world.close()
        flashed = [e.controller_id for e in emulators.values() if e.monitor.tripped]
        for emulator in emulators.values():
            emulator.stop()
    wall = time.perf_counter() - started
    kpis = read_tripinfo(tripinfo, end_s=end, begin_s=begin)
    kpis = replace(kpis, teleports=read_teleports(statistics), wall_s=round(wall, 3))
    if report is not None:
        report.update(epochs=central.log, optimizer_s=round(central.optimizer_s, 4),
                      fallbacks=sum(e.stats.fallbacks for e in emulators.values()),
                      plans_applied=sum(e.stats.plans_applied for e in emulators.values()),
                      plans_rejected=sum(e.stats.plans_rejected for e in emulators.values()),
                      bad_messages=bus.bad_messages, flashed=flashed,
                      uncontrolled=[f.to_dict() for f in refused])
    if own_dir:
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
    return kpis


def run_adaptive_control(scenario: Scenario, seed: int, begin: int, end: int, workdir: Path) -> Kpis:
    """Control ``adaptive`` of :mod:`simulation.controls`: the central loop on the signals it may drive."""
    kpis: Kpis = run_adaptive(controllable(scenario, check_plan), seed=seed, begin=begin, end=end,
                              workdir=Path(workdir))
    return kpis


# The composition root fills the simulation layer's ports at import (also in spawned worker
# processes, which import this module to find run_adaptive_control).
install_safety_check(check_plan)
register_control("adaptive", run_adaptive_control)
