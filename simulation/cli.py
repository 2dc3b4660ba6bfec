"""``traffic sim run`` and ``traffic replay``: the simulation layer's console commands.

Registered into the ``traffic`` parser by :func:`add_commands`, so the
façade (``traffic/cli.py``) needs one line and stays ignorant of SUMO.
Handlers raise :class:`~traffic.errors.TrafficError` subclasses; the façade
turns them into a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from traffic.errors import SimulationError

log = logging.getLogger(__name__)

_TABLE_FIELDS = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "vehicles", "completed", "undeparted",
                 "teleports", "wall_s")


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` or ``"1-5"`` (or a mix) as a list of distinct seeds."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError as exc:
        raise SimulationError(f"seeds must be integers like 1,2,3 or 1-5, got {text!r}") from exc
    if not seeds:
        raise SimulationError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise SimulationError(f"seeds repeat: {text!r}")
    return seeds


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


def _cmd_sim_run(args: argparse.Namespace) -> int:
    from simulation.controls import report, run_seeds
    from simulation.scenario import load_scenario

    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traffic-sim-"))
    scenario = load_scenario(args.scenario, detectors_dir=workdir / "detectors", pedestrians=args.pedestrians)
    begin = scenario.begin if args.begin is None else args.begin
    end = scenario.end if args.end is None else args.end
    results = run_seeds(args.control, scenario, seeds, workdir=workdir, begin=begin, end=end,
                        processes=args.processes, backend=args.backend)
    doc = report(args.control, scenario, seeds, results, begin=begin, end=end)
    doc["workdir"] = str(workdir)
    _write_json(args.json, doc)
    sys.stdout.write(f"{scenario.sumocfg.name}: {args.control}, seeds {','.join(map(str, seeds))}, "
                     f"window {begin}-{end} s\n")
    sys.stdout.write(kpi_table({args.control: doc["summary"]}, len(seeds)) + "\n")
    return 0


def _timestamp(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _cmd_replay(args: argparse.Namespace) -> int:
    from simulation.replay import replay
    from traffic.config import load_settings

    settings = load_settings(args.config)
    dsn = args.dsn or settings.database.dsn
    if not dsn:
        raise SimulationError("replay needs a database: --dsn or TRAFFIC_DATABASE_DSN")
    seeds = parse_seeds(args.seeds)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traffic-replay-"))
    result = replay(dsn, start=args.start, end=args.end, scenario_path=args.scenario, plans=args.plans,
                    seeds=seeds, workdir=workdir, settings=settings, processes=args.processes,
                    bin_s=args.bin)
    _write_json(args.json, result.to_dict())
    sys.stdout.write(result.table() + "\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sim run`` and ``replay`` on the ``traffic`` parser's subcommands."""
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
    rep.set_defaults(func=_cmd_replay)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m simulation.cli sim run ...``) until the façade registers the commands."""
    from traffic.errors import TrafficError

    parser = argparse.ArgumentParser(prog="traffic")
    parser.add_argument("-c", "--config", type=Path, default=None)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return int(args.func(args))
    except TrafficError as exc:
        sys.stderr.write(f"traffic: error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
