"""Benchmarks of the two-way bandwidth offsets (:mod:`controller.bandwidth`).

    .venv/bin/python -m bench.bandwidth solve [--instances 20]
    .venv/bin/python -m bench.bandwidth city
    .venv/bin/python -m bench.bandwidth sumo [--seeds 1,2,3] [--processes 2] [--duration S] [NAME ...]

``solve``: MILP time for chains of 2, 5, 10, 20 and 40 signals (random
cycle 60-150 s, coordinated greens 30-70 % of it, links 150-600 m at
8-16 m/s, inbound travel within 5 % of outbound; seed 1), and the bands
found next to the one-way green wave's on the same greens (s, mean over the
instances). ``city``: one ``optimize_corridor`` over 1,000 intersections
in coordinated mode (``plan_mode="actuated"``), unlinked (the
``bench.optimizer timing`` city) and as 50 two-way chains of 20, with each
offset method (free mode has no offsets and never reaches this code).
``sumo``: the adaptive loop (:func:`app.sim_adaptive.run_adaptive`)
in coordinated-actuated mode with green-wave and with bandwidth offsets on
the same seeds, on the networks whose signals form a chain (``cologne3``;
``corridor`` = the project's generated 4-signal arterial).

Measured here (shared 2-core machine under load from other jobs, SUMO 1.28,
scipy 1.17 / HiGHS; seed 1, 20 instances per row). ``solve``, greens 30-70 %
of the cycle (``--greens 0.45,0.7`` in brackets):

| signals | solve median (s) | solve max (s) | bandwidth b / b̄ (s) | green wave b / b̄ (s) | one direction kept |
|---|---|---|---|---|---|
| 2 | 0.020 (0.021) | 0.023 (0.023) | 36.5 / 34.3 (43.6 / 43.6) | 45.9 / 22.6 (56.2 / 29.1) | 1 (0) |
| 5 | 0.019 (0.023) | 0.044 (0.091) | 29.6 / 18.9 (39.6 / 26.6) | 38.6 / 1.6 (52.5 / 6.3) | 6 (5) |
| 10 | 0.061 (0.087) | 0.165 (0.195) | 33.7 / 1.8 (45.2 / 4.1) | 34.9 / 0.0 (48.5 / 0.0) | 18 (16) |
| 20 | 0.206 (0.237) | 0.417 (0.440) | 31.6 / 0.0 (46.0 / 0.0) | 31.6 / 0.0 (46.0 / 0.0) | 20 (20) |
| 40 | 0.549 (1.128) | 2.009 (2.013) | 31.6 / 0.0 (46.6 / 0.0) | 31.6 / 0.0 (46.6 / 0.0) | 20 (20) |

"one direction kept": instances where no pair of bands threads every signal
(or two bands score less than one full band, b + k·b̄ with a missing band
counted 0), so the heavier direction's band alone is kept, which is the
green wave. With random spacing a band through both directions of 10 or
more signals rarely exists: long arterials need splitting into
subsystems (not done here). The 2.0 s maxima are the time limit (the
two-way MILP gave up; the one-way answer was used).

``city`` (one call, best of 3): free mode 0.73 s for 1,000 intersections
(unchanged: no offsets, the bandwidth code is never reached; ``bench.optimizer
timing`` ran 0.76-0.84 s against 0.99-1.10 s for the code before this module,
interleaved under the same load). Coordinated mode, unlinked: green wave
1.02 s, bandwidth 0.75 s (single intersections need no solver; the difference
is load noise). Coordinated, 50 two-way chains of 20: green wave 0.83 s,
bandwidth 4.21 s, i.e. about 70 ms of MILP per 20-signal chain per epoch.

``sumo`` (adaptive loop, coordinated-actuated, seeds 1-5, full scenario),
mean delay s / mean stops, green wave -> bandwidth: ``corridor`` (4 signals,
429 m apart, symmetric arterial demand) 32.5 / 1.21 -> 32.4 / 1.20 per seed
32.4, 32.9, 31.8, 33.0, 32.6 -> 32.9, 32.0, 31.9, 32.7, 32.6: neutral. With
equal greens in both directions the two-way total b + b̄ equals the green
wave's (Little 1966); the MILP only shares it (26-30 s each way instead of
~37 s / ~19 s). ``cologne3`` 60.3 / 1.48 both: identical plans, because the
coordinated phase (phase 1 of the mapped design) has 14-26 s of green and
no two-way band exists, so the one-way band (= the green wave) is kept.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


def solve(sizes: tuple[int, ...] = (2, 5, 10, 20, 40), instances: int = 20, seed: int = 1,
          greens: tuple[float, float] = (0.3, 0.7)) -> list[dict[str, Any]]:
    """Solve time and bands for random chains (see module docstring)."""
    import numpy as np

    from controller.bandwidth import measured_bands, solve_chain

    rng = random.Random(seed)
    rows = []
    for n in sizes:
        times, b, bb, gw_b, gw_bb, one_way = [], [], [], [], [], 0
        for _ in range(instances):
            cycle = float(round(rng.uniform(60, 150)))
            green = [round(rng.uniform(*greens) * cycle, 1) for _ in range(n)]
            travel = [round(rng.uniform(150, 600) / rng.uniform(8, 16), 1) for _ in range(n - 1)]
            back = [round(t * rng.uniform(0.95, 1.05), 1) for t in travel]
            started = time.perf_counter()
            r = solve_chain(cycle, green, travel, back)
            times.append(time.perf_counter() - started)
            b.append(r.bandwidth_s)
            bb.append(r.bandwidth_inbound_s or 0.0)
            one_way += "band only" in r.status
            wave = np.mod(np.concatenate([[0.0], np.cumsum(travel)]), cycle)
            w_b, w_bb = measured_bands(cycle, [round(float(x), 1) % cycle for x in wave], green, travel, back)
            gw_b.append(w_b)
            gw_bb.append(w_bb or 0.0)
        rows.append({"signals": n, "median_s": statistics.median(times), "max_s": max(times),
                     "b": statistics.mean(b), "bb": statistics.mean(bb), "gw_b": statistics.mean(gw_b),
                     "gw_bb": statistics.mean(gw_bb), "one_way": one_way, "instances": instances})
    return rows


def city(n: int = 1000, chain: int = 20, repeats: int = 3) -> list[dict[str, Any]]:
    """Seconds for one coordinated ``optimize_corridor`` over ``n`` intersections, per layout and method."""
    from controller.examples import random_city
    from controller.optimizer import optimize_corridor
    from traffic.config import OptimizerSettings
    from traffic.intersection import Corridor

    specs, demands, incumbents, versions = random_city(n)
    rng = random.Random(8)  # the links' spacing and speed
    links = []
    for k in range(n):
        if (k + 1) % chain:
            d, v = round(rng.uniform(150, 600), 1), round(rng.uniform(8, 16), 2)
            links += [(f"c{k}", f"c{k + 1}", d, v), (f"c{k + 1}", f"c{k}", d, v)]
    layouts = {"unlinked": Corridor("city", specs), f"{n // chain} chains of {chain}": Corridor("city", specs,
                                                                                               tuple(links))}
    rows = []
    for layout, corridor in layouts.items():
        for mode, method in (("free", "bandwidth"), ("actuated", "green-wave"), ("actuated", "bandwidth")):
            settings = OptimizerSettings(plan_mode=mode, offset_method=method)
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                optimize_corridor(corridor, demands, incumbents, settings, versions)
                best = min(best, time.perf_counter() - started)
            rows.append({"layout": layout, "mode": mode, "offsets": "-" if mode == "free" else method,
                         "seconds": best})
    return rows


def _sumo_one(job: tuple[str, str, int, int | None]) -> dict[str, Any]:
    name, method, seed, duration = job
    from app.sim_adaptive import run_adaptive
    from simulation.scenario import load_scenario
    from traffic.config import load_settings

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-bw-{name}-{method}-"))
    if name == "corridor":
        from simulation.corridor import generate_corridor

        scenario = generate_corridor(workdir / "net")
    else:
        scenario = load_scenario(SCENARIOS / name, detectors_dir=workdir / "det")
    base = load_settings()
    settings = replace(base, optimizer=replace(base.optimizer, plan_mode="actuated", offset_method=method))
    report: dict[str, Any] = {}
    started = time.perf_counter()
    stop = None if duration is None else scenario.begin + duration
    kpis = run_adaptive(scenario, seed=seed, end=stop, workdir=workdir / "run", settings=settings, report=report)
    return {"scenario": name, "offsets": method, "seed": seed, **kpis.to_dict(),
            "wall": round(time.perf_counter() - started, 1), "optimizer_s": report.get("optimizer_s")}


def sumo(names: list[str], seeds: list[int], processes: int, duration: int | None) -> list[dict[str, Any]]:
    jobs = [(n, m, s, duration) for n in names for m in ("green-wave", "bandwidth") for s in seeds]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_sumo_one, jobs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve")
    s.add_argument("--instances", type=int, default=20)
    s.add_argument("--greens", default="0.3,0.7", help="coordinated green as a share of the cycle: min,max")
    sub.add_parser("city")
    m = sub.add_parser("sumo")
    m.add_argument("names", nargs="*", default=["cologne3", "corridor"])
    m.add_argument("--seeds", default="1,2,3")
    m.add_argument("--processes", type=int, default=2)
    m.add_argument("--duration", type=int, default=None, help="seconds from the scenario's begin (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = sys.stdout
    if args.command == "solve":
        out.write("| signals | solve median (s) | solve max (s) | bandwidth b / b̄ (s) | green wave b / b̄ (s) "
                  "| one direction kept |\n|---|---|---|---|---|---|\n")
        lo, hi = (float(x) for x in args.greens.split(","))
        for r in solve(instances=args.instances, greens=(lo, hi)):
            out.write(f"| {r['signals']} | {r['median_s']:.3f} | {r['max_s']:.3f} | {r['b']:.1f} / {r['bb']:.1f} "
                      f"| {r['gw_b']:.1f} / {r['gw_bb']:.1f} | {r['one_way']}/{r['instances']} |\n")
    elif args.command == "city":
        out.write("| layout | plan mode | offsets | optimize_corridor (s) |\n|---|---|---|---|\n")
        for r in city():
            out.write(f"| {r['layout']} | {r['mode']} | {r['offsets']} | {r['seconds']:.3f} |\n")
    else:
        rows = sumo(args.names, [int(x) for x in args.seeds.split(",") if x.strip()], args.processes,
                    args.duration)
        out.write("| scenario | offsets | seed | mean delay (s) | mean stops | mean trip time (s) | wall (s) |\n"
                  "|---|---|---|---|---|---|---|\n")
        for r in rows:
            out.write(f"| {r['scenario']} | {r['offsets']} | {r['seed']} | {r['mean_delay_s']:.1f} "
                      f"| {r['mean_stops']:.2f} | {r['mean_trip_time_s']:.1f} | {r['wall']} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
