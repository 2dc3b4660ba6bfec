"""Benchmarks of the adaptive optimizer: optimizer time at city scale, and delay on real scenarios.

    .venv/bin/python -m bench.optimizer timing [--intersections 1000]
    .venv/bin/python -m bench.optimizer scenarios [--seeds 1,2,3] [--processes 2] [--no-pedestrians] [NAME ...]

``timing`` re-optimises N generated intersections (two-phase with
pedestrians, random demand) on one core and prints the time per pass and per
intersection, safety check included, both as one city-wide
``optimize_corridor`` call and as N separate ``optimize`` calls. ``scenarios`` runs every scenario folder under
``../shared/scenarios`` (or the names given; ``corridor`` is the project's
own motorcycle-heavy corridor) with the city's fixed-time plans ("static",
:func:`simulation.runner.run`) and with the adaptive loop
(:func:`app.sim_adaptive.run_adaptive`) on the same seed, and prints
the mean delay side by side with the max-pressure reference numbers
measured for the scenarios' README (seed 42). Pedestrian timing follows
the scenario (``simulation.network``): the shared scenarios model no
crosswalks, so none is timed; the corridor generator assumes crosswalks
(people cross its streets). ``--no-pedestrians`` is a what-if, not a
configuration: it drops every pedestrian crossing (walk + clearance then no
longer set the minimum greens), to show what they cost.

Measured here (seeds 1-3, SUMO 1.28, mean delay s, static / adaptive),
pedestrians timed only where the scenario has them (on demand in free
mode): cologne1 42.9 / 23.6, cologne3 35.8 / 25.0, ingolstadt1 29.3 / 19.5,
grid4x4 91.5 / 44.8, corridor 64.4 / 31.7. ``--what-if-resco-intervals``
(3 s yellow, no all-red): 16.7, 18.0, 14.4, 24.4, corridor 27.3 (18.7 with
``--no-pedestrians`` as well). Timing: 1,000 intersections re-optimised in
0.73-0.87 s on one core (optimize_corridor, safety check included; shared
machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"
try:  # run as `python -m bench.optimizer` or as `python bench/optimizer.py`
    from bench.reference import README_REFERENCE as REFERENCE
except ImportError:  # pragma: no cover - script mode
    from reference import README_REFERENCE as REFERENCE


def timing(n: int, repeats: int = 3) -> dict[str, float]:
    """Seconds to re-optimise ``n`` intersections on one core (best of ``repeats``), safety check included.

    ``city_s``: one :func:`optimize_corridor` call over all ``n`` (the
    production path: one vectorised cycle search for all, then per
    intersection splits, maximum greens, plan build and safety check);
    ``each_s``: ``n`` separate :func:`optimize` calls (each searching alone).
    """
    from controller.examples import random_city
    from controller.optimizer import optimize, optimize_corridor
    from traffic.config import OptimizerSettings
    from traffic.intersection import Corridor

    settings = OptimizerSettings()
    specs, demands, incumbents, versions = random_city(n)
    corridor = Corridor("city", specs)
    city = each = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        optimize_corridor(corridor, demands, incumbents, settings, versions)
        city = min(city, time.perf_counter() - started)
        started = time.perf_counter()
        for spec in specs:
            cid = spec.controller_id
            optimize(spec, demands[cid], incumbents[cid], settings, version=2)
        each = min(each, time.perf_counter() - started)
    return {"intersections": n, "city_s": round(city, 4), "each_s": round(each, 4),
            "ms_per_intersection": round(1000 * city / n, 4)}


def _without_pedestrians(scenario: Any) -> Any:
    """What-if only: the scenario with no pedestrian crossing in any phase (the baselines time none)."""
    from dataclasses import replace

    specs = tuple(replace(s, phases=tuple(replace(p, ped_crossing_m=0.0) for p in s.phases))
                  for s in scenario.corridor.intersections)
    return replace(scenario, corridor=replace(scenario.corridor, intersections=specs))


def _resco_intervals() -> None:
    """What-if only, in this benchmark process: RESCO's change intervals (3 s yellow, no all-red) everywhere.

    Replaces the ITE formulas where both plan checks and the intersection
    model look them up, so the same adaptive code runs with the intervals
    the published max-pressure used. It shows how much of a gap to that
    reference is the price of the safety intervals rather than the
    decisions; it is never a configuration (the project always times ITE
    clearance).
    """
    import controller.safety
    import field_firmware_stubs.plan_check
    import traffic.intersection

    for module in (traffic.intersection, controller.safety, field_firmware_stubs.plan_check):
        module.yellow_change_s = lambda speed_mps, grade=0.0: 3.0  # type: ignore[attr-defined]
        module.red_clearance_s = lambda speed_mps, width_m: 0.0  # type: ignore[attr-defined]


def _one(job: tuple[str, str, int, int | None, bool, bool]) -> dict[str, Any]:
    name, control, seed, end, no_peds, resco = job
    if resco:
        _resco_intervals()
    from app.sim_adaptive import run_adaptive
    from simulation.runner import run
    from simulation.scenario import load_scenario

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{control}-"))
    if name == "corridor":
        from simulation.corridor import generate_corridor

        scenario = generate_corridor(workdir / "net")
    else:
        scenario = load_scenario(SCENARIOS / name, detectors_dir=workdir / "det")
    if no_peds:
        scenario = _without_pedestrians(scenario)
    stop = None if end is None else scenario.begin + end
    started = time.perf_counter()
    report: dict[str, Any] = {}
    if control == "static":
        kpis = run(scenario, seed=seed, end=stop)
    else:
        kpis = run_adaptive(scenario, seed=seed, end=stop, workdir=workdir / "run", report=report)
    return {"scenario": name, "control": control, "seed": seed, **kpis.to_dict(),
            "wall": round(time.perf_counter() - started, 1), "optimizer_s": report.get("optimizer_s"),
            "fallbacks": report.get("fallbacks"), "flashed": report.get("flashed")}


def scenarios(names: list[str], seeds: list[int], processes: int, controls: list[str],
              duration: int | None, no_pedestrians: bool = False, resco: bool = False) -> list[dict[str, Any]]:
    jobs = [(n, c, seed, duration, no_pedestrians, resco) for n in names for c in controls for seed in seeds]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_one, jobs))


def _table(rows: list[dict[str, Any]]) -> str:
    """Mean delay per scenario and control, averaged over the seeds run (per-seed values in brackets)."""
    names = sorted({r["scenario"] for r in rows}, key=lambda n: list(REFERENCE).index(n) if n in REFERENCE else 99)
    seeds = sorted({r["seed"] for r in rows})

    def cell(n: str, c: str) -> tuple[float | None, str, str]:
        got = [r for r in rows if r["scenario"] == n and r["control"] == c]
        if not got:
            return None, "-", "-"
        got.sort(key=lambda r: r["seed"])
        mean = sum(r["mean_delay_s"] for r in got) / len(got)
        per = "/".join(f"{r['mean_delay_s']:.1f}" for r in got)
        undeparted = "/".join(f"{r['undeparted']}" + (f" ({r.get('undeparted_wait_max_s', 0):.0f} s)"
                                                       if r["undeparted"] else "") for r in got)
        return mean, f"{mean:.1f} ({per})" if len(got) > 1 else f"{mean:.1f}", undeparted

    lines = [f"seeds {', '.join(map(str, seeds))}; mean delay per vehicle (s), undeparted vehicles per seed",
             "| scenario | static | adaptive | adaptive vs static | max-pressure (README, seed 42) "
             "| undeparted static | undeparted adaptive |",
             "|---|---|---|---|---|---|---|"]
    for n in names:
        sm, st, su = cell(n, "static")
        am, at, au = cell(n, "adaptive")
        gain = f"{100 * (am - sm) / sm:+.0f} %" if sm and am is not None else "-"
        ref = REFERENCE.get(n, (None, None, None))[2]
        lines.append(f"| {n} | {st} | {at} | {gain} | {ref if ref is not None else '-'} | {su} | {au} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--intersections", type=int, default=1000)
    s = sub.add_parser("scenarios")
    s.add_argument("names", nargs="*")
    s.add_argument("--seeds", default="42", help="comma separated, e.g. 1,2,3")
    s.add_argument("--processes", type=int, default=2)
    s.add_argument("--controls", default="static,adaptive")
    s.add_argument("--duration", type=int, default=None, help="seconds from the scenario's begin (default: all)")
    s.add_argument("--json", type=Path)
    s.add_argument("--no-pedestrians", action="store_true",
                   help="what-if: drop every pedestrian crossing of the mapped design (adaptive only)")
    s.add_argument("--what-if-resco-intervals", action="store_true",
                   help="what-if: 3 s yellow and no all-red instead of ITE (never a configuration)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "timing":
        sys.stdout.write("| intersections | optimize_corridor (s) | ms / intersection | one by one (s) |\n"
                         "|---|---|---|---|\n")
        for n in (1, 100, args.intersections):
            r = timing(n)
            sys.stdout.write(f"| {r['intersections']} | {r['city_s']:.3f} | {r['ms_per_intersection']:.3f} | "
                             f"{r['each_s']:.3f} |\n")
        return 0
    names = args.names or sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())
    names = [n for n in names if (SCENARIOS / n).is_dir() or n == "corridor"]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    rows = scenarios(names, seeds, args.processes, args.controls.split(","), args.duration, args.no_pedestrians,
                     args.what_if_resco_intervals)
    sys.stdout.write(_table(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
