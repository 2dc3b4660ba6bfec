"""The closed loop on real parts, as one run: SUMO world → field emulators → MQTT
→ ingest → PostgreSQL → central service (demand → optimiser → safety → SUMO
gate → dispatch) → MQTT → field emulators → SUMO.

Everything here is production code wired together; the only harness-specific
piece is the *epoch barrier*: the SUMO world runs much faster than real time,
so at each control epoch the world pauses until the counts it produced are in
the database and the central service has finished its decision. In the field
the same central code runs on the wall clock (``traffic central``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from traffic import db
from traffic.config import Settings
from traffic.errors import StorageError, TrafficError
from traffic.intersection import Corridor
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, dict], None]   # (phase label, fraction done, numbers)


@dataclass
class LoopResult:
    """Outcome of one run: KPIs from SUMO's tripinfo plus what the loop did."""

    label: str
    kpis: dict
    records_stored: int = 0
    plans_proposed: int = 0
    plans_dispatched: int = 0
    plans_acknowledged: int = 0
    plans_applied: int = 0
    plans_rejected_gate: int = 0
    plans_rejected_safety: int = 0
    plans_rejected_field: int = 0
    epochs: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    clock_origin: str = ""
    #: controller -> mean time loss (s/veh) on its approach edges, from SUMO's edge data
    intersection_delay_s: dict[str, float] = field(default_factory=dict)
    window: tuple[str, str] = ("", "")      # simulated [start, end) of the run as ISO times

    def to_dict(self) -> dict:
        return {
            "label": self.label, **self.kpis, "records_stored": self.records_stored,
            "intersection_delay_s": self.intersection_delay_s, "window": list(self.window),
            "plans": {"proposed": self.plans_proposed, "dispatched": self.plans_dispatched,
                      "acknowledged": self.plans_acknowledged, "applied": self.plans_applied,
                      "rejected_by_gate": self.plans_rejected_gate,
                      "rejected_by_safety": self.plans_rejected_safety,
                      "rejected_by_field": self.plans_rejected_field},
            "epochs": self.epochs, "wall_s": round(self.wall_s, 1), "clock_origin": self.clock_origin,
        }


def count_rows_between(dsn: str, controller_ids: list[str], start: datetime, end: datetime) -> int:
    """Detector-count rows stored for these controllers with interval start in [start, end)."""
    with db.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM detector_counts WHERE controller_id = ANY(%s)"
            " AND interval_start >= %s AND interval_start < %s",
            (controller_ids, start, end),
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for_intervals(dsn: str, controller_ids: list[str], upto: datetime, *, timeout_s: float = 15.0) -> bool:
    """Wait until every controller has a count interval starting just before ``upto``.

    This is the epoch barrier: the central service must decide on the counts
    the world has produced so far, not on a half-ingested window.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with db.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(DISTINCT controller_id) FROM detector_counts"
                    " WHERE controller_id = ANY(%s) AND interval_start + make_interval(secs => interval_s) >= %s",
                    (controller_ids, upto),
                ).fetchone()
            if row and row[0] >= len(controller_ids):
                return True
        except StorageError:
            log.warning("database not reachable while waiting for counts; retrying")
        time.sleep(0.05)
    return False


def entry_volumes_veh_h(dsn: str, corridor: Corridor, start: datetime, end: datetime) -> dict[str, float]:
    """Measured volume (veh/h) per entry loop ``<controller>.<detector>`` over [start, end)."""
    entries = {(spec.controller_id, det.detector_id) for spec in corridor.intersections
               for det in spec.detectors if det.entry}
    if not entries:
        return {}
    hours = max(1e-9, (end - start).total_seconds() / 3600.0)
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT controller_id, detector_id, sum(vehicle_count) FROM detector_counts"
            " WHERE controller_id = ANY(%s) AND interval_start >= %s AND interval_start < %s"
            " GROUP BY controller_id, detector_id",
            ([c for c, _ in entries], start, end),
        ).fetchall()
    return {f"{c}.{d}": float(total) / hours for c, d, total in rows if (c, d) in entries}


def approach_edges(world, emulators: dict) -> dict[str, set[str]]:
    """Controller -> the edges whose lanes its signal controls (internal lanes left out), from SUMO."""
    out: dict[str, set[str]] = {}
    for tls, emulator in emulators.items():
        edges = set()
        for links in world.api.trafficlight.getControlledLinks(tls):
            for link in links:
                lane = link[0]
                if lane and not lane.startswith(":"):
                    edges.add(lane.rsplit("_", 1)[0])
        out[emulator.controller_id] = edges
    return out


def intersection_delays(edgedata: Path, approaches: dict[str, set[str]]) -> dict[str, float]:
    """Mean time loss per vehicle (s) on each controller's approaches, from ``--edgedata-output``.

    SUMO's ``timeLoss`` of an edge is the time its vehicles lost against
    free flow on it; summed over the approach edges of a signal and divided by
    the vehicles that left them, it is the delay that signal (and its queue)
    cost a vehicle. Every interval of the file is summed.
    """
    import xml.etree.ElementTree as ET

    if not edgedata.exists():
        return {}
    loss: dict[str, float] = {}
    left: dict[str, float] = {}
    for _, elem in ET.iterparse(edgedata):
        if elem.tag == "edge":
            eid = elem.get("id", "")
            loss[eid] = loss.get(eid, 0.0) + float(elem.get("timeLoss", 0.0) or 0.0)
            left[eid] = left.get(eid, 0.0) + float(elem.get("left", 0.0) or 0.0)
            elem.clear()
    out = {}
    for cid, edges in approaches.items():
        vehicles = sum(left.get(e, 0.0) for e in edges)
        if vehicles > 0:
            out[cid] = round(sum(loss.get(e, 0.0) for e in edges) / vehicles, 2)
    return out


def make_gate(scenario, settings: Settings, dsn: str, clock_origin: datetime, workdir: Path):
    """The validation gate as the central service calls it: SUMO, candidate vs incumbent, same demand.

    Demand comes from the counts the entry loops reported over the epoch's
    window (``simulation.demand``): the scenario's flows are rescaled so each
    entry edge carries its measured volume, and both plan sets run on that
    demand with the same seeds in parallel processes.
    """
    from simulation import demand as sim_demand
    from simulation.gate import validate

    control = settings.control

    def gate(candidate: dict[str, TimingPlan], incumbent: dict[str, TimingPlan], context) -> object:
        specs = context.corridor.by_id()
        begin = int((context.start - clock_origin).total_seconds())
        begin = max(scenario.begin, begin)
        end = min(scenario.end, begin + control.gate_horizon_s)
        if end - begin < 120:
            begin, end = max(scenario.begin, end - control.gate_horizon_s), end
        volumes = entry_volumes_veh_h(dsn, context.corridor, context.start, context.now)
        routes = None
        if volumes:
            flows = sim_demand.entry_flows_from_counts(volumes, context.corridor)
            route_file = workdir / f"gate_demand_{context.epoch:03d}.rou.xml"
            routes = (sim_demand.scale_routes(scenario, flows, route_file, begin=begin, end=end),)
        return validate(
            scenario,
            candidate={specs[c].tls_id: p for c, p in candidate.items()},
            incumbent={specs[c].tls_id: p for c, p in incumbent.items()},
            seeds=control.gate_seeds, begin=begin, end=end, route_files=routes, margin=control.gate_margin,
            processes=max(1, min(2, len(control.gate_seeds) * 2)),
        )

    return gate


def plan_signer_for(settings: Settings):
    """The centre's plan-signing key: the configured one, else a key kept in the state folder.

    The closed loop always runs with signed plans, so the emulators refuse
    anything the centre did not sign (see docs/security.md).
    """
    from traffic.security import signing

    signer = signing.signer_from_settings(settings.security)
    if signer is not None:
        return signer
    key_path = Path(settings.state_dir) / "keys" / "plan-signing.key"
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        signing.write_signing_key(key_path, signing.generate_signing_key())
    return signing.PlanSigner.from_file(key_path)


def run_loop(settings: Settings, scenario, *, dsn: str, adaptive: bool, seed: int, clock_origin: datetime,
             workdir: Path, label: str, progress: ProgressFn | None = None,
             end: int | None = None,
             observer: Callable[[Any, dict, LoopResult], None] | None = None,
             ped_calls_per_hour: float = 0.0) -> LoopResult:
    """Run the scenario once with field emulators over MQTT and ingest into PostgreSQL.

    ``adaptive=False`` is the baseline: the emulators run their local
    time-of-day plans and no central service is involved; everything else
    (world, detectors, MQTT, ingest, storage) is the same code path.
    ``observer(world, emulators, result)`` is called after every epoch with
    the world paused (tests use it to look inside SUMO).

    Monitoring runs as in production, inside ingest (``sensors.monitor``),
    but on the *simulated* clock (``clock_origin`` + world time; on the wall
    clock every detector of a run stamped yesterday would look missing), one
    round at every epoch pause once the epoch's counts are stored, before the
    central service reads the verdicts (a wall-clock schedule would judge
    detectors at moments the world has not reached, or before any count). At
    the end the run's ATSPM bins are recomputed over its whole window (its
    last bins are settled: no more events will come) and one last health
    round runs at the simulated end. ``ped_calls_per_hour`` presses every
    crosswalk's push button at random (see ``SumoWorld``). The mean delay per
    intersection comes from SUMO's edge data on each signal's approaches.
    """
    from controller import plan_store
    from controller.dispatch import Dispatcher
    from controller.service import CentralService
    from field_firmware_stubs.emulator import FieldEmulator
    from field_firmware_stubs.world_sumo import SumoWorld
    from sensors.atspm import store as atspm_store
    from sensors.ingest import IngestService
    from sensors.monitor import Monitor
    from simulation.kpi import read_tripinfo

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    site = settings.site.site
    corridor: Corridor = scenario.corridor
    controller_ids = [s.controller_id for s in corridor.intersections]
    control = settings.control
    end_s = scenario.end if end is None else min(scenario.end, end)
    begin_s = scenario.begin
    result = LoopResult(label=label, kpis={}, clock_origin=clock_origin.isoformat())
    run_start, run_end = clock_origin + timedelta(seconds=begin_s), clock_origin + timedelta(seconds=end_s)
    result.window = (run_start.isoformat(), run_end.isoformat())
    sim_now = [run_start]   # the world's time as the monitor sees it (updated at every pause)

    def wall_now() -> datetime:
        # plan expiry guards the *transport* (a stale command must not be applied late): wall time
        return datetime.now(UTC)

    signer = plan_signer_for(settings)
    verifier = signer.verifier()
    # no wall-clock schedule: the harness runs a round at every epoch pause, on simulated time (below)
    monitor = Monitor(dsn, health_every_s=0.0, atspm_every_s=0.0, clock=lambda: sim_now[0])
    ingest = IngestService(settings, dsn=dsn, site=site, client_id=f"ingest-{site}-{label}-{clock_origin:%Y%m%d%H%M}",
                           monitor=monitor)
    emulators: dict[str, FieldEmulator] = {}
    dispatcher = None
    world = None
    tripinfo = workdir / f"{label}.tripinfo.xml"
    edgedata = workdir / f"{label}.edgedata.xml"
    try:
        with db.connect(dsn, autocommit=True) as conn:  # the site's inventory: specs known before any plan
            for spec in corridor.intersections:
                plan_store.register_controller(conn, spec)
        ingest.start()
        for spec in corridor.intersections:
            emulators[spec.tls_id] = FieldEmulator(
                spec, site=site, mqtt=settings.mqtt, count_interval_s=control.count_interval_s,
                clock_origin=clock_origin, settings=settings.field_, expiry_clock=wall_now,
                plan_verifier=verifier)
        for emulator in emulators.values():
            emulator.start()
        central = None
        if adaptive:
            dispatcher = Dispatcher(settings.mqtt, site, client_id=f"central-{site}-{label}-{clock_origin:%H%M%S}",
                                    plan_signer=signer, max_expiry_s=settings.control.plan_expiry_max_s)
            dispatcher.connect()
            gate = make_gate(scenario, settings, dsn, clock_origin, workdir)
            central = CentralService.on_postgres(settings, corridor, dsn=dsn, gate=gate, dispatcher=dispatcher,
                                     apply_timeout_s=0.0)
        world = SumoWorld(scenario.sumocfg, emulators=emulators, seed=seed, begin=begin_s, end=end_s,
                          options=(*scenario.sumo_options, "--no-warnings", "true",
                                   "--error-log", str(workdir / f"{label}.sumo.log"),
                                   "--edgedata-output", str(edgedata)),
                          tripinfo=tripinfo, ped_calls_per_hour=ped_calls_per_hour)
        approaches = approach_edges(world, emulators)
        t = begin_s
        while t < end_s:
            t_next = min(end_s, t + control.epoch_s)
            world.run_until(t_next)
            t = t_next
            epoch_end = clock_origin + timedelta(seconds=t)
            sim_now[0] = epoch_end
            # the barrier: counts of this epoch durable before anyone decides on them
            if not wait_for_intervals(dsn, controller_ids, epoch_end - timedelta(seconds=control.count_interval_s)):
                log.warning("counts up to %s not all stored within the barrier timeout", epoch_end)
            monitor.run_once()  # detector health (read by the optimizer's demand next) and ATSPM bins
            info: dict = {"t": t}
            if central is not None and t < end_s:
                report = central.run_epoch(epoch_end, control.epoch_s)
                result.plans_proposed += report.proposed
                result.plans_dispatched += report.dispatched
                result.plans_acknowledged += report.acknowledged
                result.plans_rejected_gate += sum(1 for o in report.outcome.values() if o == "rejected") \
                    if report.verdict and not report.verdict.get("accepted", True) else 0
                epoch = report.to_dict()
                epoch["sim_time_s"] = t
                result.epochs.append(epoch)
                info.update(dispatched=result.plans_dispatched, acknowledged=result.plans_acknowledged,
                            verdict=(report.verdict or {}).get("reason", ""))
            if observer is not None:
                observer(world, emulators, result)
            if progress is not None:
                progress(label, (t - begin_s) / max(1, end_s - begin_s), info)
        if central is not None:
            # answers to the last epoch's plans (applied at a cycle boundary after it) into the store
            central.reconcile()
        world.close()
        world = None
        ingest.drain(15)  # the last reports may still be on their way from the broker
        monitor.stop()
        for cid in controller_ids:  # the run is over: its last bins are final
            atspm_store.recompute(dsn, cid, run_start, run_end)
        monitor.run_once(do_atspm=False)
        result.kpis = read_tripinfo(tripinfo, end_s=end_s).to_dict()
        result.intersection_delay_s = intersection_delays(edgedata, approaches)
        result.records_stored = count_rows_between(dsn, controller_ids, clock_origin + timedelta(seconds=begin_s),
                                                   clock_origin + timedelta(seconds=end_s))
        for emulator in emulators.values():
            result.plans_applied += emulator.stats.plans_applied
            result.plans_rejected_field += emulator.stats.plans_rejected
        if central is not None:
            # one last reconciliation so the store records what the field applied after the last epoch
            result.plans_rejected_safety = _count_plan_events(dsn, controller_ids, clock_origin, "rejected", "safety")
    finally:
        if world is not None:
            world.close()
        for emulator in emulators.values():
            try:
                emulator.stop()
            except TrafficError:
                log.exception("stopping emulator %s", emulator.controller_id)
        if dispatcher is not None:
            dispatcher.close()
        ingest.stop(end_session=True)
    result.wall_s = time.monotonic() - started
    return result


def _count_plan_events(dsn: str, controller_ids: list[str], since: datetime, state: str, stage: str) -> int:
    with db.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM plan_events WHERE controller_id = ANY(%s) AND state = %s"
            " AND detail->>'stage' = %s AND at >= now() - interval '1 day'",
            (controller_ids, state, stage),
        ).fetchone()
    return int(row[0]) if row else 0
