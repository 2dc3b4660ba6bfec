"""The service commands of the ``traffic`` CLI (issue 13 B): sites, the centre, field agents, the stack.

    traffic site init --from-net NET --out DIR | --example --out DIR
    traffic site check DIR            (a site folder; a network or .sumocfg as before)
    traffic serve --site DIR          the centre on the wall clock
    traffic field run --site DIR --controller ID [--world sumo-twin|synthetic]
    traffic field twin --site DIR     the SUMO twin the agents drive
    traffic up --site DIR             everything, supervised, on one machine
    traffic status --site DIR         what 'traffic up' runs, health, plans in force
    traffic bounds set ID --site DIR --min-cycle 60 --max-cycle 120 | bounds clear ID
    traffic plan push PLAN.json --controller ID --site DIR
    traffic lock ID --site DIR --reason ...   (lock also takes --site)
    traffic ingest --site-dir DIR --client-id ingest-1 --metrics-port 0

Service commands take ``--metrics-port`` (0: a free port, written to
``<state_dir>/run/<service>.json``) and ``--log-json``; accelerated runs take
``--speed`` and ``--clock-origin`` (``app.runtime.SiteClock``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from traffic.errors import InputError

log = logging.getLogger("app.service_cli")


def _site(args: argparse.Namespace, *, with_services: bool = False) -> Any:
    from app.site import load_site

    site = load_site(args.site_dir)
    if with_services:
        site = _with_running_services(site)
    return site


def _with_running_services(site: Any) -> Any:
    """The site with the broker/database of a running 'traffic up' filled in when the settings name none."""
    from dataclasses import replace

    from app.runtime import read_json, run_dir

    up = read_json(run_dir(site.state_dir) / "up.json") or {}
    settings = site.settings
    if not settings.mqtt.url and up.get("mqtt_url"):
        settings = replace(settings, mqtt=replace(settings.mqtt, url=up["mqtt_url"]))
    if not settings.database.dsn and up.get("database_dsn"):
        settings = replace(settings, database=replace(settings.database, dsn=up["database_dsn"]))
    return replace(site, settings=settings)


def _logging(args: argparse.Namespace, service: str) -> None:
    from app.runtime import configure_logging

    level = logging.DEBUG if getattr(args, "verbose", 0) >= 2 else logging.INFO
    configure_logging(json_lines=bool(getattr(args, "log_json", False)), service=service, level=level)


def _clock(args: argparse.Namespace) -> Any:
    from app.runtime import SiteClock, parse_origin

    try:
        return SiteClock(args.speed, parse_origin(args.clock_origin))
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _service_args(p: argparse.ArgumentParser, *, clock: bool = True) -> None:
    p.add_argument("--metrics-port", type=int, default=None,
                   help="health and Prometheus metrics on 127.0.0.1:PORT (0: a free port; default: none)")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line on stderr")
    if clock:
        p.add_argument("--speed", type=float, default=1.0, help="site clock speed (1: wall clock; a twin run "
                                                                "accelerated: the same value for every service)")
        p.add_argument("--clock-origin", default=None, help="ISO time the accelerated site clock starts from")


def _endpoint(args: argparse.Namespace, name: str, state_dir: Path) -> Any:
    from app.runtime import ServiceEndpoint

    if args.metrics_port is None:
        return None
    return ServiceEndpoint(name, state_dir=state_dir, port=args.metrics_port)


# --------------------------------------------------------------------------- site
def _cmd_site_init(args: argparse.Namespace) -> int:
    from app.site import init_example_site, init_site

    if args.example:
        out = init_example_site(args.out, intersections=args.intersections, hours=args.hours, site=args.site,
                                timezone=args.timezone)
    elif args.from_net:
        out = init_site(args.from_net, args.out, routes=tuple(args.routes), site=args.site, timezone=args.timezone,
                        pedestrians=args.pedestrians, demand_end_s=args.hours * 3600)
    else:
        raise InputError("site init needs --from-net NET or --example")
    sys.stdout.write(f"site written to {out}\ncheck it: traffic site check {out}\n")
    return 0


def _site_check_wrapper(original: Any):
    def run(args: argparse.Namespace) -> int:
        from app.site import check_site_folder, is_site_folder
        from simulation.site_check import render

        if not is_site_folder(args.path):
            return original(args)
        code, findings, report = check_site_folder(args.path)
        if args.json:
            sys.stdout.write(json.dumps({"site": str(args.path), "exit_code": code,
                                         "findings": [f.__dict__ for f in findings],
                                         "network": report.to_dict() if report is not None else None}, indent=1)
                             + "\n")
            return code
        if report is not None:
            sys.stdout.write(render(report) + "\n\n")
        sys.stdout.write(f"site folder {args.path}\n")
        for f in findings:
            sys.stdout.write(f"  {f.level}: {f.where}: {f.message}\n")
        verdict = {0: "usable", 1: "usable with warnings", 2: "unusable"}[code]
        sys.stdout.write(f"site verdict: {verdict} (exit {code})\n")
        return code
    return run


# --------------------------------------------------------------------------- serve / field / twin
def _cmd_serve(args: argparse.Namespace) -> int:
    from app.runtime import stop_event_on_signals
    from app.serve import CentreService

    _logging(args, "serve")
    site = _site(args)
    endpoint = _endpoint(args, "serve", site.state_dir)
    stop = stop_event_on_signals()
    centre = CentreService(site, clock=_clock(args), endpoint=endpoint, gate=not args.no_gate)
    if endpoint is not None:
        endpoint._health = centre.health
        endpoint.start()
    try:
        return centre.run(stop, first_epoch_after_s=args.first_epoch_after)
    finally:
        if endpoint is not None:
            endpoint.stop()


def _cmd_field_run(args: argparse.Namespace) -> int:
    from app.field_agent import FieldAgent, make_world
    from app.runtime import stop_event_on_signals

    _logging(args, f"field-{args.controller}")
    site = _site(args)
    site.spec(args.controller)  # unknown controller: exit 2 before anything connects
    stop = stop_event_on_signals()
    world = make_world(args.world, site, args.controller, clock=_clock(args), twin=args.twin)
    endpoint = _endpoint(args, f"field-{args.controller}", site.state_dir)
    state_dir = Path(args.state_dir) if args.state_dir else None
    if state_dir is None and site.settings.field_.state_dir:
        fs = Path(site.settings.field_.state_dir)
        state_dir = fs if fs.is_absolute() else site.root / fs
    agent = FieldAgent(site, args.controller, world=world, endpoint=endpoint, state_dir=state_dir)
    if endpoint is not None:
        endpoint._health = agent.health
        endpoint.start()
    try:
        return agent.run(stop)
    finally:
        if endpoint is not None:
            endpoint.stop()


def _cmd_field_twin(args: argparse.Namespace) -> int:
    from app.runtime import stop_event_on_signals
    from app.twin import TwinServer

    _logging(args, "twin")
    site = _site(args)
    host, _, port = args.listen.rpartition(":")
    endpoint = _endpoint(args, "twin", site.state_dir)
    stop = stop_event_on_signals()
    twin = TwinServer(site, clock=_clock(args), host=host or "127.0.0.1", port=int(port or 0), seed=args.seed,
                      endpoint=endpoint, answer_timeout_s=args.answer_timeout)
    if endpoint is not None:
        endpoint._health = twin.health
        endpoint.start()
    try:
        return twin.run(stop)
    finally:
        if endpoint is not None:
            endpoint.stop()


# --------------------------------------------------------------------------- up / status
def _cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from app.runtime import stop_event_on_signals
    from app.supervisor import Supervisor

    _logging(args, "up")
    site = _site(args)
    console = Console()
    stop = stop_event_on_signals()
    sup = Supervisor(site, workers=args.workers, speed=args.speed, log_json=args.log_json,
                     first_epoch_after_s=args.first_epoch_after)
    try:
        sup.start()
    except BaseException:
        sup.stop()
        raise
    console.print(f"[bold]traffic up[/] site {site.name}: broker {sup.handles.mqtt_url}, database "
                  f"{sup.handles.database_dsn}\n  logs in {sup.logs}; Ctrl-C stops everything")
    code = sup.run(stop, status_every_s=args.status_every, console=console)
    console.print("stopped: every process of the site has exited")
    return code


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from app.supervisor import render_status, status_from_files

    site = _site(args)
    name, rows = status_from_files(site.state_dir)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif not rows:
        sys.stdout.write(f"nothing runs for site {site.root} ('traffic up --site {site.root}' starts it)\n")
    else:
        Console().print(render_status(name, rows))
    return 0 if rows and all(r["healthy"] for r in rows) else 1


# --------------------------------------------------------------------------- engineer commands
def _cmd_bounds(args: argparse.Namespace) -> int:
    from app.serve import submit_command

    site = _site(args)
    site.spec(args.controller)
    command: dict[str, Any] = {"kind": "bounds", "controller": args.controller, "actor": args.actor}
    if args.bounds_command == "clear":
        command["clear"] = True
    else:
        splits = {}
        for item in args.min_split:
            phase, _, value = item.partition("=")
            try:
                splits[str(int(phase))] = float(value)
            except ValueError:
                raise InputError(f"--min-split {item!r}: expected PHASE=SECONDS") from None
        command["bounds"] = {"min_cycle_s": args.min_cycle, "max_cycle_s": args.max_cycle,
                             "max_green_cap_s": args.max_green_cap, "min_split_s": splits}
    answer = submit_command(site.state_dir, command, timeout_s=args.timeout)
    if not answer.get("ok"):
        raise InputError(f"the centre refused: {answer.get('error')}")
    sys.stdout.write(f"{args.controller}: bounds {answer.get('bounds')}\n")
    return 0


def _cmd_plan_push(args: argparse.Namespace) -> int:
    from app.cli import load_user_json
    from app.serve import submit_command

    site = _site(args)
    site.spec(args.controller)
    plan = load_user_json(args.plan, "plan")
    answer = submit_command(site.state_dir, {"kind": "plan", "controller": args.controller, "plan": plan,
                                             "actor": args.actor, "reason": args.reason, "lock": not args.no_lock},
                            timeout_s=args.timeout)
    if not answer.get("ok"):
        if answer.get("unsafe"):  # exit 1: a finding, as 'traffic plan check' says of an unsafe plan
            sys.stderr.write(f"traffic: unsafe plan, not sent: {answer.get('error')}\n")
            return 1
        raise InputError(f"the centre refused the plan: {answer.get('error')}")
    sys.stdout.write(f"{args.controller}: plan {answer['plan_id']} v{answer['version']} {answer['outcome']}"
                     f"{' (locked)' if answer.get('locked') else ''}\n")
    return 0 if answer["outcome"] in ("active", "accepted", "dispatched") else 1


def _lock_wrapper(original: Any):
    def run(args: argparse.Namespace) -> int:
        if args.site_dir:
            site = _site(args, with_services=True)
            site.spec(args.controller)
            args.dsn = args.dsn or site.settings.database.dsn
        return original(args)
    return run


def _ingest_wrapper(original: Any):
    """``traffic ingest`` with ``--site-dir`` (the site's settings, spool in its state folder) and metrics."""
    def run(args: argparse.Namespace) -> int:
        if not args.site_dir and args.metrics_port is None:
            return original(args)
        from app.cli import _preflight_services
        from app.runtime import ServiceEndpoint, read_json
        from sensors import worker

        _logging(args, args.client_id or "ingest")
        if args.site_dir:
            site = _site(args)
            settings, state = site.settings, site.state_dir
            args.config = args.config or site.root / "traffic.toml"
            args.site = args.site or site.name
        else:
            from traffic.config import load_settings

            settings = load_settings(args.config)
            state = Path(settings.state_dir)
        client_id = args.client_id or "ingest-1"
        spool = args.spool_dir or str(state / "spool" / client_id)
        stats_file = state / "run" / f"{client_id}.stats.json"
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        _preflight_services(args.mqtt_url or settings.mqtt.url, args.dsn or settings.database.dsn)
        argv = ["--client-id", client_id, "--spool-dir", spool, "--stats-file", str(stats_file),
                "--stats-every", "2", "--log-level", "INFO"]
        if args.config:
            argv += ["--config", str(args.config)]
        for flag, value in (("--site", args.site), ("--mqtt-url", args.mqtt_url), ("--dsn", args.dsn)):
            if value:
                argv += [flag, value]
        if args.keep_share:
            argv.append("--keep-share")
        if args.retire:
            argv += ["--retire", "--retire-timeout-s", str(args.retire_timeout_s)]
        endpoint = None
        if args.metrics_port is not None and not args.retire:
            import time

            from prometheus_client.core import CounterMetricFamily

            def stats() -> dict[str, Any]:
                return read_json(stats_file) or {}

            def health() -> tuple[bool, dict[str, Any]]:
                try:
                    age = time.time() - stats_file.stat().st_mtime
                except OSError:
                    return False, {"stats": {}, "why": "no statistics yet"}
                return age < 10, {"stats": stats(), "stats_age_s": round(age, 1)}

            class Collector:
                def collect(self):
                    for key, value in stats().items():
                        if isinstance(value, (int, float)):
                            yield CounterMetricFamily(f"traffic_ingest_{key}", f"ingest {key} since start",
                                                      value=value)

            endpoint = ServiceEndpoint(client_id, state_dir=state, port=args.metrics_port, health=health)
            endpoint.registry.register(Collector())
            endpoint.start()
        try:
            return worker.main(argv)
        finally:
            if endpoint is not None:
                endpoint.stop()
    return run


# --------------------------------------------------------------------------- registration
def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def add_commands(sub: Any) -> None:
    """Register the service commands on the ``traffic`` parser's subcommands (after site/plan/lock/ingest)."""
    from app.site import DAY_PLAN  # noqa: F401 - fail early if the site module is broken

    # site init, and site check extended to site folders
    site = sub.choices.get("site")
    if site is None:
        site = sub.add_parser("site", help="site folders: build, check")
        site.add_subparsers(dest="site_command", required=True)
    site_sub = _subparsers_of(site)
    init = site_sub.add_parser("init", help="build a site folder from a SUMO network (or the example corridor)")
    init.add_argument("--from-net", type=Path, default=None, help="the site's .net.xml")
    init.add_argument("--routes", type=Path, nargs="*", default=[], help="demand (.rou.xml); default: randomTrips")
    init.add_argument("--example", action="store_true", help="the Hanoi-like example corridor instead")
    init.add_argument("--intersections", type=int, default=4, help="signals of the example corridor")
    init.add_argument("--hours", type=int, default=24, help="hours of demand in the model")
    init.add_argument("--out", type=Path, required=True)
    init.add_argument("--site", default="hanoi", help="the MQTT site level")
    init.add_argument("--timezone", default="Asia/Ho_Chi_Minh")
    init.add_argument("--pedestrians", choices=("auto", "assume", "none"), default="auto")
    init.set_defaults(func=_cmd_site_init)
    check = site_sub.choices.get("check")
    if check is not None:
        check.set_defaults(func=_site_check_wrapper(check.get_default("func")))

    serve = sub.add_parser("serve", help="run the central system of a site on the wall clock")
    serve.add_argument("--site", dest="site_dir", type=Path, required=True)
    serve.add_argument("--no-gate", action="store_true", help="dispatch without the SUMO gate")
    serve.add_argument("--first-epoch-after", type=float, default=None,
                       help="site seconds before the first epoch (default: one epoch)")
    _service_args(serve)
    serve.set_defaults(func=_cmd_serve)

    field = sub.add_parser("field", help="field agents: one cabinet, and the SUMO twin they drive")
    field_sub = field.add_subparsers(dest="field_command", required=True)
    run = field_sub.add_parser("run", help="one controller's agent (MQTT link, plan check, monitors, day plan)")
    run.add_argument("--site", dest="site_dir", type=Path, required=True)
    run.add_argument("--controller", required=True)
    run.add_argument("--world", choices=("sumo-twin", "synthetic"), default="sumo-twin")
    run.add_argument("--twin", default="", help="HOST:PORT of the twin (default: from the site's run folder)")
    run.add_argument("--state-dir", default="", help="replay memory folder (default: [field] state_dir or "
                                                     "<state_dir>/field)")
    _service_args(run)
    run.set_defaults(func=_cmd_field_run)
    twin = field_sub.add_parser("twin", help="the site's SUMO model as the world of its field agents")
    twin.add_argument("--site", dest="site_dir", type=Path, required=True)
    twin.add_argument("--listen", default="127.0.0.1:0")
    twin.add_argument("--seed", type=int, default=42)
    twin.add_argument("--answer-timeout", type=float, default=1.0, help="wall seconds an agent has per step")
    _service_args(twin)
    twin.set_defaults(func=_cmd_field_twin)

    up = sub.add_parser("up", help="the whole stack of a site on this machine, supervised; Ctrl-C stops it")
    up.add_argument("--site", dest="site_dir", type=Path, required=True)
    up.add_argument("--workers", type=int, default=2, help="ingest workers")
    up.add_argument("--speed", type=float, default=1.0, help="SUMO twin speed (and the site clock's)")
    up.add_argument("--status-every", type=float, default=10.0, help="seconds between status tables")
    up.add_argument("--first-epoch-after", type=float, default=None)
    up.add_argument("--log-json", action="store_true")
    up.set_defaults(func=_cmd_up)

    status = sub.add_parser("status", help="what 'traffic up' runs for a site: health, plans in force")
    status.add_argument("--site", dest="site_dir", type=Path, required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    bounds = sub.add_parser("bounds", help="keep the running centre's optimizer inside bounds for a controller")
    bounds_sub = bounds.add_subparsers(dest="bounds_command", required=True)
    for name in ("set", "clear"):
        b = bounds_sub.add_parser(name, help=f"{name} a controller's bounds")
        b.add_argument("controller")
        b.add_argument("--site", dest="site_dir", type=Path, required=True)
        b.add_argument("--actor", default="engineer")
        b.add_argument("--timeout", type=float, default=30.0)
        if name == "set":
            b.add_argument("--min-cycle", type=float, default=None)
            b.add_argument("--max-cycle", type=float, default=None)
            b.add_argument("--max-green-cap", type=float, default=None)
            b.add_argument("--min-split", action="append", default=[], help="PHASE=SECONDS (repeatable)")
        b.set_defaults(func=_cmd_bounds)

    plan = sub.choices.get("plan")
    if plan is not None:
        push = _subparsers_of(plan).add_parser("push", help="send an engineer's plan through the running centre "
                                                            "(safety-checked, recorded, locked unless --no-lock)")
        push.add_argument("plan", type=Path)
        push.add_argument("--controller", required=True)
        push.add_argument("--site", dest="site_dir", type=Path, required=True)
        push.add_argument("--reason", default="engineer plan")
        push.add_argument("--actor", default="engineer")
        push.add_argument("--no-lock", action="store_true")
        push.add_argument("--timeout", type=float, default=60.0)
        push.set_defaults(func=_cmd_plan_push)

    lock = sub.choices.get("lock")
    if lock is not None:
        lock.add_argument("--site", dest="site_dir", type=Path, default=None,
                          help="the site folder (its database, or the one 'traffic up' runs)")
        lock.set_defaults(func=_lock_wrapper(lock.get_default("func")))

    ingest = sub.choices.get("ingest")
    if ingest is not None:
        ingest.add_argument("--site-dir", dest="site_dir", type=Path, default=None,
                            help="a site folder: its settings, spool in its state folder")
        _service_args(ingest, clock=False)
        ingest.set_defaults(func=_ingest_wrapper(ingest.get_default("func")))
