"""Benchmarks of the adaptive optimizer: optimizer time at city scale, and delay on real scenarios.

    .venv/bin/python -m bench.optimizer timing [--intersections 1000]
    .venv/bin/python -m bench.optimizer scenarios [--seed 42] [--processes 2] [NAME ...]

``timing`` re-optimises N generated intersections (4 phases, random demand)
on one core and prints the time per pass and per intersection, safety check
included. ``scenarios`` runs every scenario folder under
``../shared/scenarios`` (or the names given; ``corridor`` is the project's
own motorcycle-heavy corridor) with the city's fixed-time plans ("static",
:func:`simulation.runner.run`) and with the adaptive loop
(:func:`controller.sim_control.run_adaptive`) on the same seed, and prints
the mean delay side by side with the max-pressure reference numbers
measured for the scenarios' README (seed 42).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"
#: the scenarios README's seed-42 references (static, actuated, max-pressure), mean delay in s
REFERENCE = {
    "cologne1": (41.9, 77.7, 23.4),
    "cologne3": (35.7, 36.4, 22.1),
    "ingolstadt1": (29.9, 19.9, 15.2),
    "grid4x4": (91.3, 69.1, 50.2),
}


def timing(n: int, repeats: int = 3) -> dict[str, float]:
    """Seconds to re-optimise ``n`` intersections (best of ``repeats``), safety check included."""
    from controller.demand import PhaseDemand
    from controller.examples import uniform_corridor
    from controller.optimizer import optimize
    from traffic.config import OptimizerSettings

    settings = OptimizerSettings()
    spec = uniform_corridor(1).intersections[0]
    rng = random.Random(7)
    phases = tuple(p.phase for p in spec.phases)
    demands = []
    for _ in range(n):
        flows = tuple(rng.uniform(50, 700) for _ in phases)
        demands.append(PhaseDemand(spec.controller_id, None, None, phases, flows, flows))
    incumbent = spec.default_plan(90)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for demand in demands:
            optimize(spec, demand, incumbent, settings, version=2)
        best = min(best, time.perf_counter() - started)
    return {"intersections": n, "seconds": round(best, 4), "ms_per_intersection": round(1000 * best / n, 4)}


def _one(job: tuple[str, str, int, int | None]) -> dict[str, Any]:
    name, control, seed, end = job
    from controller.sim_control import run_adaptive
    from simulation.runner import run
    from simulation.scenario import load_scenario

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{control}-"))
    if name == "corridor":
        from simulation.corridor import generate_corridor

        scenario = generate_corridor(workdir / "net")
    else:
        scenario = load_scenario(SCENARIOS / name, detectors_dir=workdir / "det")
    stop = None if end is None else scenario.begin + end
    started = time.perf_counter()
    report: dict[str, Any] = {}
    if control == "static":
        kpis = run(scenario, seed=seed, end=stop)
    else:
        kpis = run_adaptive(scenario, seed=seed, end=stop, workdir=workdir / "run", report=report)
    return {"scenario": name, "control": control, "seed": seed, **kpis.to_dict(),
            "wall": round(time.perf_counter() - started, 1), "optimizer_s": report.get("optimizer_s"),
            "fallbacks": report.get("fallbacks")}


def scenarios(names: list[str], seed: int, processes: int, controls: list[str],
              duration: int | None) -> list[dict[str, Any]]:
    jobs = [(n, c, seed, duration) for n in names for c in controls]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_one, jobs))


def _table(rows: list[dict[str, Any]]) -> str:
    by = {(r["scenario"], r["control"]): r for r in rows}
    names = sorted({r["scenario"] for r in rows}, key=lambda n: list(REFERENCE).index(n) if n in REFERENCE else 99)
    lines = ["| scenario | static | adaptive | vs static | max-pressure (ref) | undeparted s/a | wall a (s) |",
             "|---|---|---|---|---|---|---|"]
    for n in names:
        s, a = by.get((n, "static")), by.get((n, "adaptive"))
        ref = REFERENCE.get(n, (None, None, None))[2]
        sd = s["mean_delay_s"] if s else None
        ad = a["mean_delay_s"] if a else None
        gain = f"{100 * (sd - ad) / sd:+.0f} %" if sd and ad is not None else "-"
        lines.append(f"| {n} | {sd if sd is not None else '-'} | {ad if ad is not None else '-'} | {gain} | "
                     f"{ref if ref is not None else '-'} | {s['undeparted'] if s else '-'}/"
                     f"{a['undeparted'] if a else '-'} | {a['wall'] if a else '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--intersections", type=int, default=1000)
    s = sub.add_parser("scenarios")
    s.add_argument("names", nargs="*")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--processes", type=int, default=2)
    s.add_argument("--controls", default="static,adaptive")
    s.add_argument("--duration", type=int, default=None, help="seconds from the scenario's begin (default: all)")
    s.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "timing":
        for n in (1, 100, args.intersections):
            r = timing(n)
            sys.stdout.write(f"{r['intersections']:>6} intersections: {r['seconds']:.4f} s "
                             f"({r['ms_per_intersection']:.3f} ms each, one core)\n")
        return 0
    names = args.names or sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())
    rows = scenarios(names, args.seed, args.processes, args.controls.split(","), args.duration)
    sys.stdout.write(_table(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
