"""The ``traffic`` console script: one subcommand per user task.

    traffic demo        closed loop on an embedded default, before/after table
    traffic migrate     apply database migrations
    traffic ingest      run the MQTT → PostgreSQL ingest service
    traffic plan check  check a plan file against an intersection's safety rules
    traffic plans       review plans: history per controller, one plan's life
    traffic lock        lock / unlock a controller's plan
    traffic corridor    generate the demo corridor scenario (SUMO files)
    traffic dashboards  build Grafana dashboards and provisioning files

Configuration comes from ``traffic.toml`` / ``$TRAFFIC_CONFIG`` and
``TRAFFIC_*`` environment variables (see ``traffic.config``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from traffic.config import load_settings
from traffic.errors import TrafficError
from traffic.logging_setup import configure

log = logging.getLogger("traffic.cli")


def _cmd_demo(args: argparse.Namespace) -> int:
    from traffic.demo import run_demo

    settings = load_settings(args.config)
    summary = run_demo(settings, json_path=args.json, seed=args.seed, minutes=args.minutes,
                       intersections=args.intersections)
    return 0 if summary["adaptive"]["completed"] > 0 else 1


def _cmd_migrate(args: argparse.Namespace) -> int:
    from traffic import db

    settings = load_settings(args.config)
    dsn = args.dsn or settings.database.dsn
    if not dsn:
        raise TrafficError("no database: set TRAFFIC_DATABASE_DSN or pass --dsn")
    applied = db.migrate(dsn)
    log.info("applied %s", applied)
    sys.stdout.write(("applied: " + ", ".join(applied) if applied else "schema up to date") + "\n")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    """One ingest worker (``sensors.worker``): stable client id = its persistent MQTT session."""
    import socket

    from sensors import worker

    argv = ["--client-id", args.client_id or f"ingest-{socket.gethostname().lower()}"]
    if args.config:
        argv += ["--config", str(args.config)]
    for flag, value in (("--site", args.site), ("--spool-dir", args.spool_dir), ("--mqtt-url", args.mqtt_url),
                        ("--dsn", args.dsn)):
        if value:
            argv += [flag, value]
    return worker.main(argv)


def _cmd_plan_check(args: argparse.Namespace) -> int:
    from controller.safety import check_plan
    from traffic.intersection import IntersectionSpec
    from traffic.plan import TimingPlan

    spec = IntersectionSpec.from_dict(json.loads(Path(args.spec).read_text()))
    plan = TimingPlan.from_json(Path(args.plan).read_bytes())
    violations = check_plan(plan, spec)
    for v in violations:
        sys.stdout.write(f"{v.rule}\tphase {v.phase}\t{v.detail}\n")
    if not violations:
        sys.stdout.write(f"plan {plan.plan_id} v{plan.version} is safe for {spec.controller_id}\n")
    return 1 if violations else 0


def _cmd_corridor(args: argparse.Namespace) -> int:
    from simulation.corridor import generate_corridor

    scenario = generate_corridor(args.out, n_intersections=args.intersections, duration_s=args.minutes * 60)
    for spec in scenario.corridor.intersections:
        (Path(args.out) / f"{spec.controller_id}.spec.json").write_text(spec.to_json())
    sys.stdout.write(f"{scenario.sumocfg}\n")
    return 0


def _cmd_dashboards(args: argparse.Namespace) -> int:
    from dashboards.build import build_all

    settings = load_settings(args.config)
    for path in build_all(Path(args.out), settings):
        sys.stdout.write(f"{path}\n")
    return 0


def _dsn(args: argparse.Namespace) -> str:
    settings = load_settings(args.config)
    dsn = getattr(args, "dsn", None) or settings.database.dsn
    if not dsn:
        raise TrafficError("no database: set TRAFFIC_DATABASE_DSN or pass --dsn")
    return dsn


def _cmd_plans_history(args: argparse.Namespace) -> int:
    from rich.console import Console

    from traffic.review import history_table

    Console().print(history_table(_dsn(args), args.controller, limit=args.limit))
    return 0


def _cmd_plans_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from traffic.review import plan_detail

    console = Console()
    for table in plan_detail(_dsn(args), args.plan_id):
        console.print(table)
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    from controller import locks

    with db_connect(_dsn(args)) as conn:
        if args.unlock:
            done = locks.unlock(conn, args.controller, args.actor, args.reason or "")
            sys.stdout.write(f"{args.controller} {'unlocked' if done else 'was not locked'}\n")
        else:
            if not args.reason:
                raise TrafficError("a lock needs --reason (it is shown to everyone who wonders why)")
            locks.lock(conn, args.controller, args.reason, args.actor)
            sys.stdout.write(f"{args.controller} locked by {args.actor}: {args.reason}\n")
        conn.commit()
    return 0


def db_connect(dsn: str):
    from traffic import db

    return db.connect(dsn)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="traffic", description="Open smart-traffic signal control.")
    parser.add_argument("-c", "--config", type=Path, default=None, help="TOML configuration file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the closed loop on an embedded default and print before/after")
    demo.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--minutes", type=int, default=60, help="simulated minutes (default 60)")
    demo.add_argument("--intersections", type=int, default=4, help="signals on the corridor (3-5)")
    demo.set_defaults(func=_cmd_demo)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--dsn", default=None)
    migrate.set_defaults(func=_cmd_migrate)

    ingest = sub.add_parser("ingest", help="run one MQTT to PostgreSQL ingest worker (scale out: several, "
                                           "each with its own --client-id and --spool-dir)")
    ingest.add_argument("--client-id", default="", help="stable per worker (default ingest-<hostname>)")
    ingest.add_argument("--site", default="")
    ingest.add_argument("--spool-dir", default="")
    ingest.add_argument("--mqtt-url", default="")
    ingest.add_argument("--dsn", default="")
    ingest.set_defaults(func=_cmd_ingest)

    plan = sub.add_parser("plan", help="plan tools")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True)
    check = plan_sub.add_parser("check", help="check a plan JSON against an intersection spec JSON")
    check.add_argument("plan", type=Path)
    check.add_argument("--spec", type=Path, required=True)
    check.set_defaults(func=_cmd_plan_check)

    plans = sub.add_parser("plans", help="review plans: history per controller, one plan's life")
    plans_sub = plans.add_subparsers(dest="plans_command", required=True)
    hist = plans_sub.add_parser("history", help="plans of one controller, newest first")
    hist.add_argument("controller")
    hist.add_argument("--limit", type=int, default=20)
    hist.add_argument("--dsn", default=None)
    hist.set_defaults(func=_cmd_plans_history)
    show = plans_sub.add_parser("show", help="one plan: phases (NTCIP fields) and every lifecycle step")
    show.add_argument("plan_id")
    show.add_argument("--dsn", default=None)
    show.set_defaults(func=_cmd_plans_show)

    lock = sub.add_parser("lock", help="lock a controller's plan (never re-optimised) or --unlock it")
    lock.add_argument("controller")
    lock.add_argument("--reason", default="")
    lock.add_argument("--actor", default="engineer")
    lock.add_argument("--unlock", action="store_true")
    lock.add_argument("--dsn", default=None)
    lock.set_defaults(func=_cmd_lock)

    corridor = sub.add_parser("corridor", help="generate the demo corridor (SUMO files + specs)")
    corridor.add_argument("--out", type=Path, required=True)
    corridor.add_argument("--intersections", type=int, default=4)
    corridor.add_argument("--minutes", type=int, default=60)
    corridor.set_defaults(func=_cmd_corridor)

    dashboards = sub.add_parser("dashboards", help="Grafana dashboards as code")
    dash_sub = dashboards.add_subparsers(dest="dash_command", required=True)
    build = dash_sub.add_parser("build", help="write dashboard JSON and provisioning YAML")
    build.add_argument("--out", type=Path, required=True)
    build.set_defaults(func=_cmd_dashboards)
    from traffic.security.cli import add_commands as _sec; _sec(sub)  # noqa: E702 - `traffic pki ...`
    from simulation.cli import add_commands as _sim; _sim(sub)  # noqa: E702 - `traffic sim run`, `traffic replay`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.verbose)
    try:
        return int(args.func(args))
    except TrafficError as exc:
        log.debug("failed", exc_info=True)
        sys.stderr.write(f"traffic: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("traffic: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
