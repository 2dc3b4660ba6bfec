"""``traffic serve``: the central system of one site, on the wall clock (or the site clock of an accelerated twin).

Every ``control.epoch_s`` it runs one :meth:`CentralService.run_epoch`:
reconcile late answers -> demand -> optimizer -> safety -> the SUMO gate on
the site's own model (demand rescaled from the entry loops' counts, runs on
``simulation.executor.executor_from_settings(settings.executor)``, one
executor for the service's life) -> dispatch -> heartbeat.

Engineers act on the running centre through the CLI:

* ``traffic lock ID --reason ...`` / ``--unlock``: stored in PostgreSQL, read every epoch;
* ``traffic bounds set ID --min-cycle 60 ...`` and ``traffic plan push PLAN.json --controller ID``:
  a command file in ``<state_dir>/serve/commands/``; the centre applies it
  between epochs (so it never races an epoch over versions) and writes the
  answer next to it; the CLI waits for that answer. Bounds are also kept
  in ``<state_dir>/serve/bounds.json``, so a restarted centre keeps them.

Restarts. SIGTERM/SIGINT: the epoch in progress finishes, late answers are
reconciled, the link closes. After a SIGKILL the new process waits for the
retained ``plan/active`` and ``status`` of every controller, reconciles the
record with what the field says is in force (plans left half-way are closed
as ``failed``; a plan the field applied meanwhile becomes ``active``), and
takes versions from the database (``max + 1``): it never sends a version
twice nor one the field has already passed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.runtime import ServiceEndpoint, SiteClock, read_json, write_json_atomic
from controller.bounds import Bounds
from traffic import db
from traffic.errors import InputError, TrafficError, TransportError, UnsafePlanError
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

COMMANDS = "serve/commands"
BOUNDS_FILE = "serve/bounds.json"


def ensure_dev_keys(settings: Any) -> Any:
    """The centre's plan signer: the configured key, else a development key pair in ``<state_dir>/keys``.

    The public half is written as ``plan-verify.pem`` so field agents of the
    same site (``traffic up``) trust it without configuration.
    """
    from app.closed_loop import plan_signer_for
    from traffic.security import signing

    signer = plan_signer_for(settings)
    verify = Path(settings.state_dir) / "keys" / "plan-verify.pem"
    if not signing.signer_from_settings(settings.security) and not verify.exists():
        signing.write_verify_key(verify, signer.public_key)
    return signer


def site_gate(scenario: Any, settings: Any, dsn: str, executor: Any, workdir: Path):
    """The validation gate on the site's model: candidate vs incumbent, demand from the epoch's entry counts."""
    from app.closed_loop import entry_volumes_veh_h
    from simulation import demand as sim_demand
    from simulation.gate import validate

    control = settings.control

    def gate(candidate: dict[str, TimingPlan], incumbent: dict[str, TimingPlan], context: Any) -> Any:
        specs = context.corridor.by_id()
        begin = scenario.begin
        end = min(scenario.end, begin + control.gate_horizon_s)
        volumes = entry_volumes_veh_h(dsn, context.corridor, context.start, context.now)
        routes = None
        if volumes:
            flows = sim_demand.entry_flows_from_counts(volumes, context.corridor)
            route_file = workdir / f"gate_demand_{context.epoch % 10:01d}.rou.xml"
            routes = (sim_demand.scale_routes(scenario, flows, route_file, begin=begin, end=end),)
        return validate(scenario, candidate={specs[c].tls_id: p for c, p in candidate.items()},
                        incumbent={specs[c].tls_id: p for c, p in incumbent.items()}, seeds=control.gate_seeds,
                        begin=begin, end=end, route_files=routes, margin=control.gate_margin, executor=executor)

    return gate


# --------------------------------------------------------------------------- commands from the CLI
def submit_command(state_dir: Path, command: dict[str, Any], *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Hand a command to the running centre and wait for its answer (TransportError when nobody answers)."""
    folder = Path(state_dir) / COMMANDS
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
    write_json_atomic(folder / f"{name}.cmd.json", command)
    answer = folder / f"{name}.answer.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = read_json(answer)
        if data is not None:
            answer.unlink(missing_ok=True)
            return data
        time.sleep(0.2)
    (folder / f"{name}.cmd.json").unlink(missing_ok=True)
    raise TransportError(f"the centre did not answer within {timeout_s:.0f} s: is 'traffic serve' running "
                         f"for this site (state {state_dir})?")


class CentreService:
    """``traffic serve`` (see the module docstring)."""

    def __init__(self, site: Any, *, clock: SiteClock, endpoint: ServiceEndpoint | None = None,
                 gate: bool = True, client_id: str = "central") -> None:
        from app.field_agent import tls_for
        from controller.dispatch import Dispatcher
        from controller.service import CentralService
        from simulation.executor import executor_from_settings

        self.site = site
        self.settings = settings = tls_for(site.settings, "central")
        self.clock = clock
        self.endpoint = endpoint
        self.dsn = settings.database.dsn
        if not self.dsn or not settings.mqtt.url:
            raise InputError("serve needs a database and a broker: [database] dsn and [mqtt] url in the site's "
                             "traffic.toml, or TRAFFIC_DATABASE_DSN / TRAFFIC_MQTT_URL (or run 'traffic up')")
        db.migrate(self.dsn)
        self.state = Path(settings.state_dir)
        signer = ensure_dev_keys(settings)
        max_expiry = getattr(settings.control, "plan_expiry_max_s", None)
        kwargs = {"max_expiry_s": max_expiry} if max_expiry else {}
        self.dispatcher = Dispatcher(settings.mqtt, site.name, client_id=client_id, plan_signer=signer, **kwargs)
        self.executor = None
        gate_fn = None
        if gate:
            self.executor = executor_from_settings(settings.executor)
            workdir = self.state / "gate"
            workdir.mkdir(parents=True, exist_ok=True)
            gate_fn = site_gate(site.scenario(), settings, self.dsn, self.executor, workdir)
        self.central = CentralService.on_postgres(settings, site.corridor, dsn=self.dsn, dispatcher=self.dispatcher,
                                                  gate=gate_fn)
        self.last_report: dict[str, Any] | None = None
        self.last_epoch_at: datetime | None = None
        self.epoch_errors = 0
        self.gate_verdicts = {"accepted": 0, "rejected": 0}
        self.outcomes: dict[str, int] = {}
        self.heartbeats = 0
        self.db_view: dict[str, Any] = {}
        self._load_bounds()
        self._metrics()

    # ------------------------------------------------------------------ health + metrics
    def _metrics(self) -> None:
        if self.endpoint is None:
            return
        from prometheus_client import Histogram
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.epoch_hist = Histogram("traffic_epoch_duration_seconds", "wall time of one epoch",
                                    buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320), registry=self.endpoint.registry)
        centre = self

        class Collector:
            def collect(self):
                yield CounterMetricFamily("traffic_epochs", "epochs run", value=centre.central.epochs_run)
                yield CounterMetricFamily("traffic_epoch_errors", "epochs that reported errors",
                                          value=centre.epoch_errors)
                yield CounterMetricFamily("traffic_heartbeats", "active plans re-sent as heartbeat",
                                          value=centre.heartbeats)
                gate = CounterMetricFamily("traffic_gate_verdicts", "SUMO gate verdicts", labels=["verdict"])
                for k, v in centre.gate_verdicts.items():
                    gate.add_metric([k], v)
                yield gate
                outcome = CounterMetricFamily("traffic_plan_outcomes", "per-controller outcome of each epoch",
                                              labels=["outcome"])
                for k, v in centre.outcomes.items():
                    outcome.add_metric([k], v)
                yield outcome
                states = GaugeMetricFamily("traffic_plans_by_state", "plans of this site by state", labels=["state"])
                for k, v in centre.db_view.get("plans_by_state", {}).items():
                    states.add_metric([k], v)
                yield states
                modes = GaugeMetricFamily("traffic_controllers_by_mode", "controllers by reported mode",
                                          labels=["mode"])
                for k, v in centre.modes().items():
                    modes.add_metric([k], v)
                yield modes
                dead = GaugeMetricFamily("traffic_dead_letters", "dead letters stored (all time)")
                dead.add_metric([], centre.db_view.get("dead_letters", 0))
                yield dead
                lag = GaugeMetricFamily("traffic_ingest_lag_seconds",
                                        "worst delay from interval end to storage over the last 5 min")
                lag.add_metric([], centre.db_view.get("ingest_lag_s") or 0.0)
                yield lag

        self.endpoint.registry.register(Collector())

    def modes(self) -> dict[str, int]:
        from traffic import messages as msg

        out = {msg.MODE_CENTRAL: 0, msg.MODE_TOD: 0, msg.MODE_FLASH: 0, "offline": 0, "unknown": 0}
        for cid in self.site.controller_ids:
            status = self.dispatcher.field_status(cid)
            if status is None:
                out["unknown"] += 1
            elif status.state == msg.OFFLINE:
                out["offline"] += 1
            else:
                out[status.mode] = out.get(status.mode, 0) + 1
        return out

    def _refresh_db_view(self) -> None:
        ids = self.site.controller_ids
        try:
            with db.connect(self.dsn) as conn:
                rows = conn.execute("SELECT state, count(*) FROM plans WHERE controller_id = ANY(%s) GROUP BY state",
                                    (ids,)).fetchall()
                dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
                lag = conn.execute(
                    "SELECT extract(epoch FROM max(received_at - (interval_start + make_interval(secs => interval_s))))"
                    " FROM detector_counts"
                    " WHERE controller_id = ANY(%s) AND received_at > now() - interval '5 minutes'",
                    (ids,)).fetchone()
                active = conn.execute(
                    "SELECT controller_id, version, plan_id, created_by FROM plans WHERE controller_id = ANY(%s)"
                    " AND state = 'active'", (ids,)).fetchall()
            self.db_view = {"plans_by_state": {str(s): int(n) for s, n in rows}, "dead_letters": int(dead[0]),
                            "ingest_lag_s": float(lag[0]) if lag and lag[0] is not None else None,
                            "active": {c: {"version": v, "plan_id": p, "by": b} for c, v, p, b in active}}
        except TrafficError as exc:
            log.warning("cannot read the database for metrics: %s", exc)

    def health(self) -> tuple[bool, dict[str, Any]]:
        epoch_s = self.settings.control.epoch_s
        fresh = self.last_epoch_at is None or (self.clock.now() - self.last_epoch_at).total_seconds() < 3 * epoch_s
        ok = self.dispatcher.connected and fresh
        return ok, {"epochs": self.central.epochs_run, "broker": self.dispatcher.connected,
                    "last_epoch": self.last_epoch_at.isoformat() if self.last_epoch_at else None,
                    "last_report": {k: (self.last_report or {}).get(k) for k in ("epoch", "dispatched", "applied",
                                                                                "rejected", "failed", "errors")},
                    "modes": self.modes(), "plans_in_force": self.db_view.get("active", {})}

    # ------------------------------------------------------------------ bounds and commands
    def _load_bounds(self) -> None:
        data = read_json(self.state / BOUNDS_FILE) or {}
        for cid, b in data.items():
            try:
                self.central.set_bounds(cid, _bounds_from(b), "restart")
            except TrafficError as exc:
                log.error("stored bounds for %s not applied: %s", cid, exc)

    def _save_bounds(self) -> None:
        data = {}
        for cid in self.site.controller_ids:
            b = self.central.bounds(cid)
            if b is not None:
                data[cid] = b.to_dict()
        write_json_atomic(self.state / BOUNDS_FILE, data)

    def poll_commands(self) -> None:
        folder = self.state / COMMANDS
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.cmd.json")):
            command = read_json(path)
            answer_path = path.with_name(path.name.replace(".cmd.json", ".answer.json"))
            path.unlink(missing_ok=True)
            if command is None:
                continue
            try:
                answer = self._apply(command)
            except (TrafficError, ValueError, TypeError, KeyError) as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                          "unsafe": isinstance(exc, UnsafePlanError)}
            write_json_atomic(answer_path, answer)

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        kind = command.get("kind")
        actor = str(command.get("actor", "engineer"))
        if kind == "bounds":
            cid = command["controller"]
            bounds = None if command.get("clear") else _bounds_from(command["bounds"])
            self.central.set_bounds(cid, bounds, actor)
            self._save_bounds()
            return {"ok": True, "controller": cid, "bounds": None if bounds is None else bounds.to_dict()}
        if kind == "plan":
            plan = TimingPlan.from_dict(command["plan"])
            if command.get("controller") and plan.controller_id != command["controller"]:
                plan = TimingPlan.from_dict({**command["plan"], "controller_id": command["controller"]})
            report = self.central.override(plan, actor, str(command.get("reason", "engineer plan")),
                                           lock=bool(command.get("lock", True)))
            sent = report.plans.get(plan.controller_id)
            return {"ok": True, "controller": plan.controller_id, "plan_id": sent.plan_id if sent else None,
                    "version": sent.version if sent else None,
                    "outcome": str(report.outcome.get(plan.controller_id, "")), "locked": list(report.locked)}
        if kind == "status":
            return {"ok": True, **self.health()[1]}
        raise InputError(f"unknown command {kind!r}")

    # ------------------------------------------------------------------ the loop
    def _connect(self, stop: threading.Event, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.dispatcher.connect()
                return
            except TransportError as exc:
                if stop.is_set() or time.monotonic() > deadline:
                    raise
                log.warning("broker not reachable yet (%s); retrying", exc)
                stop.wait(1.0)

    def run(self, stop: threading.Event, *, first_epoch_after_s: float | None = None) -> int:
        control = self.settings.control
        self._connect(stop)
        stop.wait(1.5)  # the retained plan/active and status of every controller arrive right after SUBSCRIBE
        self.central.reconcile()
        self._refresh_db_view()
        if self.endpoint is not None:
            self.endpoint.write_state()
        wait_site = control.epoch_s if first_epoch_after_s is None else first_epoch_after_s
        next_epoch = time.monotonic() + self.clock.wall_seconds(wait_site)
        log.info("serving site %s: %d controllers, epoch %d s (speed %g)", self.site.name,
                 len(self.site.controller_ids), control.epoch_s, self.clock.speed)
        last_state = 0.0
        try:
            while not stop.is_set():
                self.poll_commands()
                if time.monotonic() >= next_epoch:
                    next_epoch = time.monotonic() + self.clock.wall_seconds(control.epoch_s)
                    self.epoch()
                if self.endpoint is not None and time.monotonic() - last_state > 2.0:
                    self.endpoint.write_state()
                    last_state = time.monotonic()
                stop.wait(0.25)
        finally:
            try:
                self.central.reconcile()
            except TrafficError:
                log.exception("final reconciliation failed")
            self.dispatcher.close()
            if self.executor is not None:
                self.executor.close()
        return 0

    def epoch(self) -> dict[str, Any]:
        interval = max(1, self.settings.control.count_interval_s)
        now = self.clock.now()
        now = now - timedelta(seconds=now.timestamp() % interval)
        started = time.monotonic()
        try:
            report = self.central.run_epoch(now, self.settings.control.epoch_s)
        except Exception:  # noqa: BLE001 - one bad epoch must not stop the centre
            log.exception("epoch failed")
            self.epoch_errors += 1
            return {}
        data = report.to_dict()
        if report.errors:
            self.epoch_errors += 1
        if report.verdict is not None:
            self.gate_verdicts["accepted" if report.verdict.get("accepted") else "rejected"] += 1
        for outcome in report.outcome.values():
            self.outcomes[str(outcome)] = self.outcomes.get(str(outcome), 0) + 1
        self.heartbeats += report.heartbeats
        if self.endpoint is not None:
            self.epoch_hist.observe(time.monotonic() - started)
        self.last_report, self.last_epoch_at = data, self.clock.now()
        self._refresh_db_view()
        log.info("epoch %d at %s: proposed %d dispatched %d applied %d rejected %d failed %d heartbeats %d%s",
                 report.epoch, now.isoformat(), report.proposed, report.dispatched, report.applied, report.rejected,
                 report.failed, report.heartbeats, f" errors {report.errors}" if report.errors else "")
        write_json_atomic(self.state / "run" / "serve-last-epoch.json", data)
        return data


def _bounds_from(data: dict[str, Any]) -> Bounds:
    return Bounds(min_cycle_s=data.get("min_cycle_s"), max_cycle_s=data.get("max_cycle_s"),
                  max_green_cap_s=data.get("max_green_cap_s"),
                  min_split_s={int(k): float(v) for k, v in (data.get("min_split_s") or {}).items()})
