"""``traffic sim run`` and ``traffic replay``: the simulation layer's console commands.

Registered into the ``traffic`` parser by :func:`add_commands`, so the
façade (``app/cli.py``) needs one line and stays ignorant of SUMO.
Handlers raise :class:`~traffic.errors.TrafficError` subclasses; the façade
turns them into a one-line error and exit code 2. Requests that would only
exhaust the machine (a billion seeds, a century of replay) are refused up
front with the bound in the message.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traffic.errors import SimulationError
from traffic.intersection import FindingLevel

if TYPE_CHECKING:
    from simulation.replay import CandidatePlanner

log = logging.getLogger(__name__)

#: most seeds one command runs (each is a full SUMO run; more is a typo, and 1-99999999999 ran out of memory)
MAX_SEEDS = 1000
#: SUMO's --seed is a C int
MAX_SEED = 2**31 - 1
#: longest replay window: replay reads the counts bin by bin (one query per bin)
MAX_REPLAY_WINDOW = timedelta(days=31)
#: replay bins: not under the 60 s count interval, not over a day
MIN_BIN_S, MAX_BIN_S = 60, 86_400

_TABLE_FIELDS = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "vehicles", "completed", "undeparted",
                 "teleports", "wall_s")


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` or ``"1-5"`` (or a mix) as a list of distinct seeds, at most :data:`MAX_SEEDS`.

    A range's length is checked before it is expanded: ``1-99999999999``
    used to build a list of 10^11 ints and die with MemoryError.
    """
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "-" in part[1:]:
                dash = part.index("-", 1)  # a leading "-" is a sign, not a range
                lo, hi = int(part[:dash]), int(part[dash + 1:])
                if hi < lo:
                    raise SimulationError(f"seed range {part!r} runs backwards")
                if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
                    raise SimulationError(f"seeds {part!r}: at most {MAX_SEEDS} seeds per run, "
                                          f"this asks for {hi - lo + 1 + len(seeds)}")
                seeds += list(range(lo, hi + 1))
            else:
                seeds.append(int(part))
                if len(seeds) > MAX_SEEDS:
                    raise SimulationError(f"at most {MAX_SEEDS} seeds per run")
    except ValueError as exc:
        raise SimulationError(f"seeds must be integers like 1,2,3 or 1-5, got {text!r}") from exc
    if not seeds:
        raise SimulationError("no seeds given")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise SimulationError(f"seed {bad[0]} is out of range: SUMO seeds are 0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise SimulationError(f"seeds repeat: {text!r}")
    return seeds


def check_workdir(path: Path) -> Path:
    """``path`` as a usable output folder (created if missing), or a SimulationError saying why not.

    Checked before SUMO starts, so ``--workdir`` naming a file is one line,
    not a FileExistsError traceback from deep inside a worker.
    """
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                what = "--workdir" if place == path else f"--workdir {path}: its parent"
                raise SimulationError(f"{what} {place} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"--workdir {path}: cannot create it: {exc.strerror or exc}") from exc
    return path


@contextmanager
def work_folder(given: Path | None, prefix: str) -> Iterator[tuple[Path, bool]]:
    """The folder a run writes into, and whether it is kept.

    A folder the user gave is kept (they asked for the outputs); otherwise a
    temporary one is removed when the block ends, success or failure. The
    block must cover the whole run and report: the scenario's detector file
    lives there and SUMO reads it while the seeds run.
    """
    if given is not None:
        yield check_workdir(given), True
        return
    temp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield temp, False
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _fmt(stats: dict[str, float], n: int) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}" if n > 1 else f"{stats['mean']:.1f}"


def kpi_table(columns: dict[str, dict[str, dict[str, float]]], n_seeds: int) -> str:
    """A plain-text table: one row per KPI, one column per label (values mean ± std when several seeds)."""
    labels = list(columns)
    width = max([14, *(len(x) + 2 for x in labels)])
    lines = ["kpi".ljust(18) + "".join(label.rjust(width) for label in labels)]
    for name in _TABLE_FIELDS:
        lines.append(name.ljust(18) + "".join(_fmt(columns[label][name], n_seeds).rjust(width) for label in labels))
    return "\n".join(lines)


def _write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    except OSError as exc:
        raise SimulationError(f"cannot write {path}: {exc}") from exc


def _progress(control: str, total: int):
    """A per-seed progress line on stderr (stdout stays the table, for pipes)."""
    done = [0]

    def report_seed(seed: int, kpis: Any) -> None:
        done[0] += 1
        sys.stderr.write(f"[{done[0]}/{total}] seed {seed} {control}: mean delay {kpis.mean_delay_s:.1f} s, "
                         f"wall {kpis.wall_s:.1f} s\n")
        sys.stderr.flush()
    return report_seed


def _cmd_sim_run(args: argparse.Namespace) -> int:
    from simulation import scenario as scenario_module
    from simulation.controls import report, run_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else parse_seeds(str(args.seed))
    if args.processes < 1:
        raise SimulationError(f"--processes must be at least 1, got {args.processes}")
    with work_folder(args.workdir, "traffic-sim-") as (workdir, kept):
        scenario = scenario_module.load_scenario(args.scenario, detectors_dir=workdir / "detectors",
                                                 pedestrians=args.pedestrians)
        if args.control not in ("static", "actuated"):  # those run the network's own programs everywhere
            from simulation.controls import controllable

            scenario = controllable(scenario)
        begin = scenario.begin if args.begin is None else args.begin
        end = scenario.end if args.end is None else args.end
        from traffic.config import load_settings

        with _configured_executor(load_settings(args.config)) as executor:
            if executor is None:  # local processes, the embedded default
                results = run_seeds(args.control, scenario, seeds, workdir=workdir, begin=begin, end=end,
                                    processes=args.processes, backend=args.backend,
                                    on_result=_progress(args.control, len(seeds)))
            else:  # the configured cluster: tasks as data, the scenario read from shared storage
                from simulation.executor import seed_tasks

                tasks = seed_tasks(args.control, scenario, seeds, begin=begin, end=end,
                                   pedestrians=args.pedestrians, backend=args.backend)
                results = [r.to_kpis() for r in executor.run(tasks)]
        doc = report(args.control, scenario, seeds, results, begin=begin, end=end)
        if kept:
            doc["workdir"] = str(workdir)
        _write_json(args.json, doc)
    sys.stdout.write(f"{scenario.sumocfg.name}: {args.control}, seeds {','.join(map(str, seeds))}, "
                     f"window {begin}-{end} s\n")
    sys.stdout.write(kpi_table({args.control: doc["summary"]}, len(seeds)) + "\n")
    left = [f for f in scenario.corridor.findings if f.level == FindingLevel.UNCONTROLLED]
    if left and args.control not in ("static", "actuated"):
        sys.stdout.write(f"{len(scenario.corridor.intersections)} signals controlled; {len(left)} left on their own "
                         "program (traffic site check explains):\n")
        for f in left:
            sys.stdout.write(f"  {f.tls_id}: {f.rule}: {f.message}\n")
    if args.json is not None:
        sys.stdout.write(f"KPIs written to {args.json}\n")
    sys.stdout.write(f"SUMO outputs kept in {workdir}\n" if kept
                     else "SUMO outputs removed (keep them with --workdir DIR)\n")
    return 0


@contextmanager
def _configured_executor(settings: Any) -> Iterator[Any]:
    """The ``[executor]`` of the configuration for ``sim run --seeds`` and ``replay``; None for local processes.

    ``kind = "local"`` (the default) keeps today's process pool in
    ``run_seeds`` / ``run_many``; ``kind = "dask"`` sends the runs to the
    cluster at ``address`` (``simulation.executor``), closed when done.
    """
    if settings.executor.kind == "local":
        yield None
        return
    from simulation.executor import executor_from_settings

    executor = executor_from_settings(settings.executor)
    try:
        yield executor
    finally:
        executor.close()


def _timestamp(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def check_window(start: datetime, end: datetime) -> None:
    """Refuse a replay window that is empty or longer than :data:`MAX_REPLAY_WINDOW`.

    Replay reads the stored counts one bin at a time: 1900-2100 in 900 s bins
    is about 7 million queries, which looked like a hang.
    """
    if end <= start:
        raise SimulationError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if end - start > MAX_REPLAY_WINDOW:
        raise SimulationError(f"replay window {start.isoformat()} to {end.isoformat()} is {(end - start).days} days; "
                              f"at most {MAX_REPLAY_WINDOW.days} days per replay (split it into several runs)")


def _cmd_replay(args: argparse.Namespace) -> int:
    from simulation.replay import replay
    from traffic.config import load_settings

    check_window(args.start, args.end)
    if not MIN_BIN_S <= args.bin <= MAX_BIN_S:
        raise SimulationError(f"--bin: {args.bin} s is not between {MIN_BIN_S} and {MAX_BIN_S} s")
    if args.processes < 1:
        raise SimulationError(f"--processes must be at least 1, got {args.processes}")
    seeds = parse_seeds(args.seeds)
    settings = load_settings(args.config)
    dsn = args.dsn or settings.database.dsn
    if not dsn:
        raise SimulationError("replay needs a database: --dsn or TRAFFIC_DATABASE_DSN")
    with work_folder(args.workdir, "traffic-replay-") as (workdir, kept), _configured_executor(settings) as executor:
        result = replay(dsn, start=args.start, end=args.end, scenario_path=args.scenario, plans=args.plans,
                        seeds=seeds, workdir=workdir, settings=settings, processes=args.processes,
                        bin_s=args.bin, planner=getattr(args, "planner", None), executor=executor)
        _write_json(args.json, result.to_dict())
    sys.stdout.write(result.table() + "\n")
    if args.json is not None:
        sys.stdout.write(f"results written to {args.json}\n")
    if kept:
        sys.stdout.write(f"SUMO outputs kept in {workdir}\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction, *, planner: CandidatePlanner | None = None) -> None:
    """Register ``sim run`` and ``replay`` on the ``traffic`` parser's subcommands.

    ``planner`` is the centre's optimizer for ``replay --plans candidate``
    (a port: this package does not import the centre); without it that
    option is refused with a clear message.
    """
    from simulation.backend import BACKENDS
    from simulation.controls import CONTROLS

    sim = subparsers.add_parser("sim", help="run SUMO scenarios under a control")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    run = sim_sub.add_parser("run", help="run a SUMO scenario headless and report KPIs")
    run.add_argument("--scenario", type=Path, required=True, help=".sumocfg or a folder holding one")
    run.add_argument("--control", choices=list(CONTROLS), default="static")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=42)
    seeds.add_argument("--seeds", default=None, help="several seeds in parallel, e.g. 1,2,3 or 1-5")
    run.add_argument("--begin", type=int, default=None, help="default: the .sumocfg's begin")
    run.add_argument("--end", type=int, default=None, help="default: the .sumocfg's end")
    run.add_argument("--json", type=Path, default=None, help="write the KPIs (and per-seed runs) as JSON")
    run.add_argument("--processes", type=int, default=2, help="seeds run at the same time")
    run.add_argument("--backend", choices=list(BACKENDS), default="auto", help="in-loop controls: libsumo or traci")
    run.add_argument("--pedestrians", choices=("auto", "assume", "none"), default="auto",
                     help="pedestrian timing: crossings the network models (auto), also estimated crosswalks "
                          "where people cross unmodelled (assume: e.g. the generated Hanoi corridor), or none")
    run.add_argument("--workdir", type=Path, default=None, help="keep SUMO outputs here")
    run.set_defaults(func=_cmd_sim_run)

    rep = subparsers.add_parser("replay", help="reproduce a recorded period in SUMO and compare plans")
    rep.add_argument("--from", dest="start", type=_timestamp, required=True, help="ISO-8601 start (UTC if no zone)")
    rep.add_argument("--to", dest="end", type=_timestamp, required=True, help="ISO-8601 end, exclusive")
    rep.add_argument("--plans", choices=("recorded", "candidate"), default="recorded")
    rep.add_argument("--scenario", type=Path, default=None, help="default: the generated demo corridor")
    rep.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: configuration)")
    rep.add_argument("--seeds", default="1,2")
    rep.add_argument("--bin", type=int, default=900, help="demand follows the counts in bins of this many seconds")
    rep.add_argument("--processes", type=int, default=2)
    rep.add_argument("--json", type=Path, default=None)
    rep.add_argument("--workdir", type=Path, default=None)
    rep.set_defaults(func=_cmd_replay, planner=planner)
