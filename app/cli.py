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

Every failure is one line on stderr and an exit code a script can act on
(operators run this from cron and shell scripts, where a traceback is noise
and a wrong code is a silent failure): 0 success, 1 findings (an unsafe
plan), 2 bad usage or bad input, 3 a service that cannot be reached (broker,
database), 70 an internal error (a bug: ``--debug`` or ``TRAFFIC_DEBUG=1``
shows the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from traffic.config import load_settings
from traffic.errors import (
    InputError,
    PlanError,
    ServiceError,
    StorageError,
    TrafficError,
    TransportError,
    UnsafePlanError,
)
from traffic.logging_setup import configure

log = logging.getLogger("app.cli")

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE
EXIT_INTERRUPTED = 130
DISTRIBUTION = "open-traffic-signal"
#: an error line longer than this is cut (a fuzzed 1 MB controller id must not flood the terminal)
MAX_ERROR_CHARS = 800
#: user files read whole: a plan or spec is a few kB; refuse what would only exhaust memory
MAX_INPUT_BYTES = 16 * 1024 * 1024


def _cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

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
    applied = db.migrate(dsn, timescaledb=args.timescaledb)
    log.info("applied %s", applied)
    sys.stdout.write(("applied: " + ", ".join(applied) if applied else "schema up to date") + "\n")
    return 0


def _preflight_services(mqtt_url: str, dsn: str) -> None:
    """Reach the database and the broker once before a long-running service starts.

    The ingest worker reports its own start-up failures as a log record and
    exit 2; checking first lets the façade say "service unavailable" with
    exit code 3, which is what a supervisor or script needs to tell a down
    database from a typo.
    """
    import socket
    from dataclasses import replace as dc_replace

    from traffic import db
    from traffic.config import MqttSettings

    if dsn:
        db.connect(dsn).close()
    if mqtt_url:
        broker = dc_replace(MqttSettings(), url=mqtt_url)
        try:
            socket.create_connection((broker.host, broker.port), timeout=5.0).close()
        except OSError as exc:
            raise TransportError(f"cannot reach MQTT broker {broker.host}:{broker.port}: "
                                 f"{exc.strerror or exc}") from exc


def _cmd_ingest(args: argparse.Namespace) -> int:
    """One ingest worker (``sensors.worker``): stable client id = its persistent MQTT session."""
    import socket

    from sensors import worker

    settings = load_settings(args.config)
    _preflight_services(args.mqtt_url or settings.mqtt.url, args.dsn or settings.database.dsn)
    argv = ["--client-id", args.client_id or f"ingest-{socket.gethostname().lower()}"]
    if args.config:
        argv += ["--config", str(args.config)]
    for flag, value in (("--site", args.site), ("--spool-dir", args.spool_dir), ("--mqtt-url", args.mqtt_url),
                        ("--dsn", args.dsn)):
        if value:
            argv += [flag, value]
    # SIGTERM hands the worker's share of the shared subscription back (sensors.worker); --keep-share keeps
    # it for a lone worker being restarted; --retire drains the session and ends it for good
    if args.keep_share:
        argv.append("--keep-share")
    if args.retire:
        argv += ["--retire", "--retire-timeout-s", str(args.retire_timeout_s)]
    return worker.main(argv)


def _cmd_report(args: argparse.Namespace) -> int:
    """``traffic report``: the HTML report with ATSPM figures (app.report)."""
    from app.report_data import before_after_from_summary, corridor_from_db

    dsn = _dsn(args)
    corridor = None
    if args.corridor:  # the time-space diagram of the stored plans that ran at the window's end
        corridor, note = corridor_from_db(dsn, args.start, args.end, controllers=args.controller or None)
        if corridor is None:
            sys.stderr.write(f"no time-space diagram: {note}\n")
    before_after = None
    if getattr(args, "before_after", None) is not None:
        before_after = before_after_from_summary(load_user_json(args.before_after, "before/after JSON"))
    path = args.report_handler(args, dsn, corridor=corridor, before_after=before_after)
    sys.stdout.write(f"report written to {path}\n")
    return 0


def read_user_file(path: Path, what: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a file the user named, or an InputError saying which file and why (never a traceback)."""
    try:
        if path.is_dir():
            raise InputError(f"{what} {path} is a folder, not a file")
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{what} {path} is {size} bytes; more than {limit} is not a {what}")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_user_json(path: Path, what: str) -> Any:
    """Parse a user's JSON file; malformed, empty, non-UTF-8 or absurdly nested input is an InputError."""
    raw = read_user_file(path, what)
    if not raw.strip():
        raise InputError(f"{what} {path} is empty (expected JSON)")
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise InputError(f"{what} {path} is nested too deeply to be a {what}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except ValueError as exc:  # json.JSONDecodeError, and ints beyond the digit limit
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from exc


def _cmd_plan_check(args: argparse.Namespace) -> int:
    from controller.safety import check_plan
    from traffic.intersection import IntersectionSpec
    from traffic.plan import TimingPlan

    spec_data = load_user_json(args.spec, "spec")
    plan_data = load_user_json(args.plan, "plan")
    try:
        spec = IntersectionSpec.from_dict(spec_data)
    except TrafficError as exc:
        raise InputError(f"spec {args.spec}: {exc}") from exc
    except (AttributeError, RecursionError) as exc:  # from_dict assumes an object: a list or number is not a spec
        raise InputError(f"spec {args.spec}: not an intersection spec ({type(exc).__name__}: {exc})") from exc
    try:
        plan = TimingPlan.from_dict(plan_data)
    except PlanError as exc:
        raise InputError(f"plan {args.plan}: {exc}") from exc
    try:
        violations = check_plan(plan, spec)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ArithmeticError) as exc:
        # from_dict checks the spec's shape, not every value's type: a spec saying
        # "phases": [{"phase": "one", ...}] only fails when the rules compare numbers
        raise InputError(f"spec {args.spec}: a value has the wrong type or range "
                         f"({type(exc).__name__}: {exc})") from exc
    for v in violations:
        sys.stdout.write(f"{v.rule}\tphase {v.phase}\t{v.detail}\n")
    if not violations:
        sys.stdout.write(f"plan {plan.plan_id} v{plan.version} is safe for {spec.controller_id}\n")
    return EXIT_FINDINGS if violations else EXIT_OK


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

    from app.review import history_table

    Console().print(history_table(_dsn(args), args.controller, limit=args.limit))
    return 0


def _cmd_plans_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from app.review import plan_detail

    console = Console()
    for table in plan_detail(_dsn(args), args.plan_id):
        console.print(table)
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    from app.review import check_controller
    from controller import locks

    with db_connect(_dsn(args)) as conn:
        check_controller(conn, args.controller, registered_only=True)  # a typo must not lock nothing quietly
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


def int_between(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi], refused in one usage line otherwise.

    Bounds the sizes a user asks for (signals, minutes, rows) before they
    become a netconvert run of 10,000 junctions or a LIMIT the database refuses.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not between {lo} and {hi}")
        return value
    parse.__name__ = "integer"
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the full usage is one ``--help`` away).

    Subcommand parsers inherit the class, so ``traffic sim run --control fuzzy``
    is one line too.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    """The installed distribution's version (what ``pip`` installed), not a constant that can drift."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="traffic", description="Open smart-traffic signal control.",
                     epilog="exit codes: 0 ok, 1 findings (unsafe plan), 2 bad usage or input, "
                            "3 service unreachable, 70 internal error, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"traffic ({DISTRIBUTION}) {_version()}")
    parser.add_argument("-c", "--config", type=Path, default=None, help="TOML configuration file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="let unexpected errors raise with their traceback (also TRAFFIC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the closed loop on an embedded default and print before/after")
    demo.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    demo.add_argument("--seed", type=int_between(0, 2**31 - 1), default=42)
    demo.add_argument("--minutes", type=int_between(1, 24 * 60), default=60, help="simulated minutes (default 60)")
    demo.add_argument("--intersections", type=int_between(1, 50), default=4, help="signals on the corridor (3-5)")
    demo.set_defaults(func=_cmd_demo)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--dsn", default=None)
    migrate.add_argument("--timescaledb", action="store_true",
                         help="create the timescaledb extension (refused when the server lacks it) and convert "
                              "the storage to hypertables, compression and the continuous aggregate")
    migrate.set_defaults(func=_cmd_migrate)

    ingest = sub.add_parser("ingest", help="run one MQTT to PostgreSQL ingest worker (scale out: several, "
                                           "each with its own --client-id and --spool-dir)")
    ingest.add_argument("--client-id", default="", help="stable per worker (default ingest-<hostname>)")
    ingest.add_argument("--site", default="")
    ingest.add_argument("--spool-dir", default="")
    ingest.add_argument("--mqtt-url", default="")
    ingest.add_argument("--dsn", default="")
    ingest.add_argument("--keep-share", action="store_true",
                        help="on stop keep this worker's share of the shared subscription (a lone worker "
                             "being restarted); the default hands it back to the other workers")
    ingest.add_argument("--retire", action="store_true",
                        help="leave for good: drain what this client id's session holds, end the session, exit "
                             "(also recovers the share of a worker that crashed and will not return)")
    ingest.add_argument("--retire-timeout-s", type=float, default=60.0)
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
    hist.add_argument("--limit", type=int_between(1, 10_000), default=20)
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
    corridor.add_argument("--intersections", type=int_between(1, 50), default=4)
    corridor.add_argument("--minutes", type=int_between(1, 24 * 60), default=60)
    corridor.set_defaults(func=_cmd_corridor)

    dashboards = sub.add_parser("dashboards", help="Grafana dashboards as code")
    dash_sub = dashboards.add_subparsers(dest="dash_command", required=True)
    build = dash_sub.add_parser("build", help="write dashboard JSON and provisioning YAML")
    build.add_argument("--out", type=Path, required=True)
    build.set_defaults(func=_cmd_dashboards)
    from dashboards.push import add_commands as _push
    _push(dash_sub)  # `traffic dashboards push --url URL`
    from app.report import add_commands as _report
    _report(sub)  # `traffic report`
    sub.choices["report"].set_defaults(func=_cmd_report)
    from simulation.site_check import add_commands as _site_check
    _site_check(sub)  # `traffic site check`
    from simulation.partition import add_commands as _partition
    _partition(sub)  # `traffic site partition`
    from app.service_cli import add_commands as _services
    _services(sub)  # `traffic site init`, `serve`, `field run|twin`, `up`, `status`, `bounds`, `plan push` (issue 13 B)
    from traffic.security.cli import add_commands as _sec
    _sec(sub)  # `traffic pki ...`
    import app.sim_adaptive  # noqa: F401 - registers the adaptive control and the centre's safety check
    from simulation.cli import add_commands as _sim
    _sim(sub, planner=_replay_planner)  # `traffic sim run`, `traffic replay`
    return parser


def _replay_planner(conn: Any, corridor: Any, incumbents: Any, start: Any, end: Any, settings: Any) -> Any:
    """The centre's optimizer for ``traffic replay --plans candidate`` (imported only when it runs)."""
    from controller.candidates import propose_from_counts

    return propose_from_counts(conn, corridor, incumbents, start, end, settings)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first (bounded: chains can loop)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 20:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def _is_unreachable(exc: BaseException) -> bool:
    """True when the failure is a broker or database that cannot be reached (or started)."""
    if isinstance(exc, (TransportError, ServiceError)):
        return True
    psycopg = sys.modules.get("psycopg")
    for link in _causes(exc):
        if psycopg is not None and isinstance(link, psycopg.OperationalError):
            return True
        if isinstance(link, (ConnectionError, TimeoutError)):
            return True
        if isinstance(link, OSError) and link.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                                        errno.ETIMEDOUT, errno.ECONNRESET):
            return True
        if type(link).__name__ == "gaierror":  # socket.gaierror: the host name does not resolve
            return True
    return isinstance(exc, StorageError) and str(exc).startswith("cannot connect")


def _one_line(text: str) -> str:
    """A message as one bounded line: a library's multi-line error must not look like several errors."""
    line = "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 3] + "..."


def explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line to print for a failed command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "traffic: interrupted"
    if _is_unreachable(exc):
        return EXIT_UNAVAILABLE, f"traffic: error: service unavailable: {_one_line(str(exc))}"
    if isinstance(exc, UnsafePlanError):
        return EXIT_FINDINGS, f"traffic: error: {_one_line(str(exc))}"
    if isinstance(exc, TrafficError):
        return EXIT_USAGE, f"traffic: error: {_one_line(str(exc))}"
    if isinstance(exc, OSError):  # a file the user named: missing, unreadable, a folder, disk full
        where = f" {exc.filename}" if exc.filename else ""
        return EXIT_USAGE, f"traffic: error:{where} {_one_line(exc.strerror or str(exc))}"
    if isinstance(exc, RecursionError):
        return EXIT_USAGE, "traffic: error: input nested too deeply"
    if isinstance(exc, MemoryError):
        return EXIT_USAGE, "traffic: error: out of memory (input or request too large)"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, f"traffic: error: bad input: {_one_line(str(exc))}"
    return EXIT_INTERNAL, (f"traffic: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                           f"(run with --debug for the traceback)")


def _debug_requested(args: argparse.Namespace | None) -> bool:
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get("TRAFFIC_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (argparse itself exits 2 on bad usage, 0 on --help/--version)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        sys.stderr.write("traffic: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line and an exit code
        if _debug_requested(args):
            raise
        code, line = explain(exc)
        log.debug("failed", exc_info=True)
        sys.stderr.write(line + "\n")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
