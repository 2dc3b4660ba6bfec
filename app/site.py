"""A site is a folder: what one city (or one pilot corridor) runs on.

::

    DIR/traffic.toml          settings (commented; TRAFFIC_* variables still override)
    DIR/mapping.json          controller <-> SUMO signal mapping, spec and schedule files, corridor links
    DIR/model/*.sumocfg       the site's SUMO model: net, demand (routes or flows), detector loops
    DIR/specs/<id>.json       each controller's intersection spec (phases, clearances, detectors, conflicts)
    DIR/schedules/<id>.json   each controller's day plan (several time-of-day plans; field fallback)
    DIR/.state/               run-time state (logs, run files, field replay memory, spool); not versioned

``traffic site init --from-net NET --out DIR`` builds one from a SUMO network
(``--routes`` for demand, else ``randomTrips``); ``traffic site init
--example --out DIR`` writes the Hanoi-like example corridor; ``traffic site
check DIR`` validates a folder (exit 0 ok, 1 warnings, 2 unusable).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from datetime import time as dtime
from pathlib import Path
from typing import Any

from field_firmware_stubs.schedule import DaySchedule, Period
from traffic.config import Settings, load_settings
from traffic.errors import ConfigError, ScenarioError, TrafficError
from traffic.intersection import Corridor, IntersectionSpec

SITE_TOML = "traffic.toml"
MAPPING = "mapping.json"
MAPPING_SCHEMA = "site-mapping/1"
MODEL_DIR = "model"

#: the day plan every generated schedule has: (start, name, cycle as a factor of the base cycle)
DAY_PLAN = ((dtime(0, 0), "night", 0.0), (dtime(6, 0), "am-peak", 1.5), (dtime(9, 0), "midday", 1.0),
            (dtime(16, 0), "pm-peak", 1.6), (dtime(19, 0), "evening", 1.2), (dtime(22, 0), "late", 0.0))

TOML_TEMPLATE = """\
# traffic.toml of site {site!r}: every setting, its default and allowed values are in traffic/config.py.
# Environment variables TRAFFIC_<SECTION>_<KEY> override this file (TRAFFIC_MQTT_URL, TRAFFIC_DATABASE_DSN, ...).

# run-time state (logs, run files, field replay memory, ingest spool), relative to this folder
state_dir = ".state"

[site]
site = "{site}"                    # the MQTT <site> topic level
timezone = "{timezone}"   # the day plans' local time

[mqtt]
# empty: 'traffic up' starts a private broker; production: mqtts://broker.example:8883 with
# ca_file/cert_file/key_file from 'traffic pki init' (each service its own certificate)
url = ""
qos = 1

[database]
# empty: 'traffic up' starts a private PostgreSQL cluster in state_dir
dsn = ""

[control]
epoch_s = 300            # the centre re-plans every 5 minutes (wall clock)
count_interval_s = 60    # the field reports counts every minute
plan_expiry_s = 120      # a plan command dies if not delivered within 2 minutes
ack_timeout_s = 10.0
gate_seeds = [1, 2]      # SUMO seeds per candidate in the validation gate
gate_horizon_s = 900     # simulated seconds per gate run
gate_margin = 0.02       # a candidate must not be more than 2 % worse than the incumbent

[field]
central_silence_timeout_s = 900.0   # no word from the centre for 15 min: back to the day plan
transition_max_step_s = 10.0

[optimizer]
plan_mode = "free"       # free (fully actuated), actuated (coordinated) or pretimed
max_cycle_s = 150.0

[executor]
kind = "local"           # SUMO gate runs: local processes, or "dask" with address = "tcp://scheduler:8786"
workers = 2
"""


@dataclass(frozen=True)
class ControllerEntry:
    controller_id: str
    tls_id: str
    spec_file: str
    schedule_file: str


@dataclass(frozen=True)
class Site:
    """A loaded site folder (see the module docstring)."""

    root: Path
    settings: Settings
    sumocfg: Path
    corridor: Corridor
    schedules: dict[str, DaySchedule]
    entries: tuple[ControllerEntry, ...]
    sumo_options: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.settings.site.site

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.state_dir)

    @property
    def controller_ids(self) -> list[str]:
        return [s.controller_id for s in self.corridor.intersections]

    def spec(self, controller_id: str) -> IntersectionSpec:
        specs = self.corridor.by_id()
        if controller_id not in specs:
            raise ConfigError(f"controller {controller_id!r} is not in site {self.root} "
                              f"(known: {', '.join(sorted(specs))})")
        return specs[controller_id]

    def scenario(self, detectors_dir: Path | None = None) -> Any:
        """The site's SUMO model as a :class:`simulation.scenario.Scenario` mapped to the site's own specs."""
        from simulation.scenario import load_scenario

        scenario = load_scenario(self.sumocfg, site=self.name, detectors_dir=detectors_dir or self.state_dir / "model",
                                 sumo_options=self.sumo_options, clearance=self.settings.clearance.to_policy())
        return replace(scenario, corridor=self.corridor)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from exc


def load_site(root: Path | str, *, settings: Settings | None = None) -> Site:
    """Read a site folder; a missing or broken part is a ConfigError naming the file."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"site {root} is not a folder")
    if settings is None:
        settings = load_settings(root / SITE_TOML)
    state = Path(settings.state_dir)
    if not state.is_absolute():
        settings = replace(settings, state_dir=str(root / state))
    mapping = _read_json(root / MAPPING, "site mapping")
    if not isinstance(mapping, dict) or mapping.get("schema") != MAPPING_SCHEMA:
        raise ConfigError(f"{root / MAPPING}: not a {MAPPING_SCHEMA} document")
    entries, specs, schedules = [], [], {}
    for item in mapping.get("controllers", []):
        try:
            entry = ControllerEntry(item["controller_id"], item["tls_id"], item["spec"], item["schedule"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{root / MAPPING}: a controller entry lacks {exc}") from exc
        try:
            spec = IntersectionSpec.from_dict(_read_json(root / entry.spec_file, "spec"))
        except ScenarioError as exc:
            raise ConfigError(f"{root / entry.spec_file}: {exc}") from exc
        if spec.controller_id != entry.controller_id or spec.tls_id != entry.tls_id:
            raise ConfigError(f"{root / entry.spec_file}: spec is for {spec.controller_id}/{spec.tls_id}, the "
                              f"mapping says {entry.controller_id}/{entry.tls_id}")
        try:
            schedule = DaySchedule.from_dict(_read_json(root / entry.schedule_file, "schedule"))
        except ConfigError as exc:
            raise ConfigError(f"{root / entry.schedule_file}: {exc}") from exc
        entries.append(entry)
        specs.append(spec)
        schedules[spec.controller_id] = schedule
    if not entries:
        raise ConfigError(f"{root / MAPPING}: no controllers")
    links = tuple((str(a), str(b), float(d), float(v)) for a, b, d, v in mapping.get("links", []))
    corridor = Corridor(mapping.get("name", root.name), tuple(specs), links)
    sumocfg = root / mapping.get("model", "")
    return Site(root, settings, sumocfg, corridor, schedules, tuple(entries),
                tuple(str(o) for o in mapping.get("sumo_options", [])))


# --------------------------------------------------------------------------- day plans
def day_schedule(spec: IntersectionSpec, *, site: str, max_cycle_s: float = 150.0) -> DaySchedule:
    """A day plan of several fixed-time plans for ``spec`` (night short cycle, peaks long), each safe."""
    minimum = sum(p.min_split_s for p in spec.phases)
    base = max(60.0, minimum)
    top = min(spec.max_cycle_s, max_cycle_s)
    periods = []
    for start, name, factor in DAY_PLAN:
        cycle = max(minimum, min(top, round(base * factor) if factor else max(minimum, 40.0)))
        plan = spec.default_plan(cycle_s=round(cycle, 1), created_by="field-tod")
        plan = replace(plan, plan_id=uuid.uuid5(uuid.NAMESPACE_URL, f"tod/{site}/{spec.controller_id}/{name}").hex,
                       reason=f"time-of-day plan {name!r} from {start:%H:%M}")
        periods.append(Period(start, name, plan))
    return DaySchedule(spec.controller_id, tuple(periods))


# --------------------------------------------------------------------------- init
def _write_site_files(out: Path, corridor: Corridor, *, sumocfg: Path, site: str, timezone: str,
                      sumo_options: tuple[str, ...]) -> None:
    (out / "specs").mkdir(parents=True, exist_ok=True)
    (out / "schedules").mkdir(parents=True, exist_ok=True)
    controllers = []
    for spec in corridor.intersections:
        cid = spec.controller_id
        spec_file, schedule_file = f"specs/{cid}.json", f"schedules/{cid}.json"
        (out / spec_file).write_text(spec.to_json() + "\n")
        schedule = day_schedule(spec, site=site)
        problems = schedule.check(spec)
        if problems:  # cannot happen with default plans; never ship an unsafe fallback
            raise TrafficError(f"{cid}: generated day plan is unsafe: {problems[0]}")
        (out / schedule_file).write_text(schedule.to_json() + "\n")
        controllers.append({"controller_id": cid, "tls_id": spec.tls_id, "spec": spec_file,
                            "schedule": schedule_file})
    mapping = {"schema": MAPPING_SCHEMA, "name": corridor.name, "model": str(sumocfg.relative_to(out)),
               "sumo_options": list(sumo_options), "controllers": controllers,
               "links": [list(link) for link in corridor.links]}
    (out / MAPPING).write_text(json.dumps(mapping, indent=1) + "\n")
    toml = out / SITE_TOML
    if not toml.exists():
        toml.write_text(TOML_TEMPLATE.format(site=site, timezone=timezone))
    (out / ".gitignore").write_text(".state/\n")


def init_site(net: Path, out: Path, *, routes: tuple[Path, ...] = (), site: str = "hanoi",
              timezone: str = "Asia/Ho_Chi_Minh", pedestrians: str = "auto", demand_end_s: int = 3600,
              seed: int = 42) -> Path:
    """Build a site folder from a SUMO network (and demand, else ``randomTrips``); return the folder."""
    from simulation.binaries import sumo_tool
    from simulation.citygen import _run, write_sumocfg
    from simulation.network import corridor_from_net, write_detectors_additional
    from traffic.topics import check_id

    check_id(site, "site")
    net = Path(net).resolve()
    if not net.is_file():
        raise ConfigError(f"network {net} does not exist")
    out = Path(out).resolve()
    model = out / MODEL_DIR
    model.mkdir(parents=True, exist_ok=True)
    net_copy = model / net.name
    if net_copy != net:
        shutil.copyfile(net, net_copy)
    route_names = []
    for r in routes:
        r = Path(r).resolve()
        if not r.is_file():
            raise ConfigError(f"demand file {r} does not exist")
        if r.parent != model:
            shutil.copyfile(r, model / r.name)
        route_names.append(r.name)
    if not route_names:
        trips, rou = model / "demand.trips.xml", model / "demand.rou.xml"
        _run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net_copy), "-b", "0", "-e",
              str(demand_end_s), "-p", "2", "--fringe-factor", "5", "--seed", str(seed), "-o", str(trips),
              "-r", str(rou), "--validate", "--remove-loops"], "randomTrips", model)
        for extra in model.glob("demand.rou.alt.xml"):
            extra.unlink()
        route_names.append(rou.name)
    corridor = corridor_from_net(net_copy, site=site, name=out.name, pedestrians=pedestrians)
    if not corridor.intersections:
        raise ScenarioError(f"{net}: no signal the project can control (run 'traffic site check {net}')")
    det = write_detectors_additional(corridor, model / "detectors.add.xml", net_file=net_copy)
    corridor = corridor_from_net(net_copy, site=site, additional_files=(det,), name=out.name,
                                 pedestrians=pedestrians)
    cfg = write_sumocfg(model / "site.sumocfg", net_copy.name, ",".join(route_names), 0, demand_end_s,
                        additional=det.name)
    _write_site_files(out, corridor, sumocfg=cfg, site=site, timezone=timezone, sumo_options=())
    return out


def init_example_site(out: Path, *, intersections: int = 4, hours: int = 24, site: str = "hanoi",
                      timezone: str = "Asia/Ho_Chi_Minh") -> Path:
    """The Hanoi-like example: a motorcycle-heavy arterial of ``intersections`` signals, ``hours`` of demand."""
    from simulation.corridor import generate_corridor

    out = Path(out).resolve()
    scenario = generate_corridor(out / MODEL_DIR, n_intersections=intersections, duration_s=hours * 3600, site=site)
    _write_site_files(out, scenario.corridor, sumocfg=scenario.sumocfg, site=site, timezone=timezone,
                      sumo_options=tuple(scenario.sumo_options))
    return out


# --------------------------------------------------------------------------- check
@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning" | "info"
    where: str
    message: str


def check_site_folder(root: Path) -> tuple[int, list[Finding], Any]:
    """Validate a site folder: settings, mapping, specs, schedules, the SUMO model and its signals.

    Returns (exit code 0/1/2, findings, the network report of ``simulation.site_check`` or None).
    """
    from simulation.site_check import check_site

    findings: list[Finding] = []
    root = Path(root)
    try:
        site = load_site(root)
    except TrafficError as exc:
        return 2, [Finding("error", str(root), str(exc))], None
    for cid, schedule in site.schedules.items():
        for problem in schedule.check(site.spec(cid)):
            findings.append(Finding("error", f"schedules/{cid}", problem))
        if len(schedule.periods) < 2:
            findings.append(Finding("warning", f"schedules/{cid}", "one plan all day: a day plan should have "
                                                                  "several periods"))
    if not site.sumocfg.is_file():
        findings.append(Finding("error", MAPPING, f"model {site.sumocfg} does not exist"))
        return 2, findings, None
    report = check_site(site.sumocfg)
    if report.corridor is None:
        findings.append(Finding("error", str(site.sumocfg), f"cannot map the model: {report.error}"))
        return 2, findings, report
    mapped = {s.tls_id: s for s in report.corridor.intersections}
    for spec in site.corridor.intersections:
        net_spec = mapped.get(spec.tls_id)
        if net_spec is None:
            findings.append(Finding("error", f"specs/{spec.controller_id}",
                                    f"signal {spec.tls_id} is not a controllable signal of the model"))
            continue
        if net_spec.link_count != spec.link_count:
            findings.append(Finding("error", f"specs/{spec.controller_id}",
                                    f"{spec.tls_id} has {net_spec.link_count} signal groups in the model, the "
                                    f"spec {spec.link_count}"))
        if {p.greens for p in net_spec.phases} != {p.greens for p in spec.phases}:
            findings.append(Finding("warning", f"specs/{spec.controller_id}",
                                    "the spec's phases differ from the model's approved program (intended?)"))
    for f in report.corridor.findings:
        if f.level in ("warning", "uncontrolled"):
            findings.append(Finding("warning", f"model {f.tls_id}", f"{f.rule}: {f.message}"))
    unmapped = sorted(set(mapped) - {s.tls_id for s in site.corridor.intersections})
    if unmapped:
        findings.append(Finding("info", MAPPING, f"signals of the model without a controller: {', '.join(unmapped)}"))
    code = 2 if any(f.level == "error" for f in findings) else 1 if any(f.level == "warning" for f in findings) else 0
    return code, findings, report


def is_site_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MAPPING).is_file()
