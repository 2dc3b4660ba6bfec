"""Benchmark: one whole-city epoch on a 625-signal city, by stage, against regions and workers.

    .venv/bin/python -m bench.city [--n 25] [--window 600] [--max-signals 16] [--measure-regions 6]
                                   [--seeds 3] [--json out.json]

What it does (defaults: a 25 x 25 ``netgenerate`` grid, every junction a
traffic light, 2 lanes per direction, ``randomTrips`` demand of 36,000
veh/h city-wide over a ``--window`` s run):

1. builds the city and maps its 625 signals (``simulation.network``);
2. runs the whole model once under its own programs with exit times
   (the "real city" whose boundary detectors count), and partitions it into
   regions of at most ``--max-signals`` signals (``simulation.partition``);
3. runs one epoch's stages over all 625 signals: **demand** (the per-phase
   estimate from each signal's detector totals, ``controller.demand.estimate``,
   totals taken from that run), **optimize** (``optimize_corridor``), **safety**
   (``check_plan`` on every candidate), **dispatch** (serialise and sign every
   plan; the MQTT publish and acknowledgement are measured by
   ``bench/pipeline.py``), and the **gate**: every region, candidate and
   incumbent, ``--seeds`` seeds. The gate is measured on ``--measure-regions``
   regions (cut with ``cutRoutes.py``) on three executors: local processes
   (2), a Dask ``LocalCluster`` of 1 worker, and of 2; the whole city's gate
   on W workers is projected from the measured per-task costs (longest task
   first onto the least-loaded worker), for W = 1, 2, 8, 32, 128;
4. measures the **partition error**: the same candidate and incumbent on the
   whole model and on the measured regions' sub-models; per region, the
   relative change of time loss on the region's roads in each, and whether
   the gate's verdict (accept when the change is at most the margin) agrees.

The gate's horizon in production is ``control.gate_horizon_s`` (900 s);
per-task costs are scaled linearly from ``--window`` to it for the budget
table (stated in the output).
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

WORKERS_PROJECTED = (1, 2, 8, 32, 128)
BUDGETS_S = {"10 min epoch": 600.0, "one cycle (2 min)": 120.0}


def makespan(costs: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule of ``costs`` on ``workers``: the time the last one ends."""
    loads = [0.0] * workers
    heapq.heapify(loads)
    for c in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + c)
    return max(loads) if costs else 0.0


def _edge_counts(vehroutes: Path) -> dict[str, int]:
    """Vehicles that entered each road in the run (from the exit-time routes)."""
    counts: dict[str, int] = defaultdict(int)
    for _ev, el in ET.iterparse(vehroutes, events=("end",)):
        if el.tag == "route" and el.get("exitTimes"):
            for e in el.get("edges", "").split():
                counts[e] += 1
        if el.tag == "vehicle":
            el.clear()
    return counts


def _stages(scenario: Any, counts: dict[str, int], window: int) -> tuple[dict[str, float], dict[str, Any]]:
    """demand, optimize, safety, dispatch over every signal; returns stage seconds and the candidates (by tls)."""
    from controller.demand import DetectorTotals, estimate
    from controller.optimizer import optimize_corridor
    from controller.safety import check_plan
    from traffic.config import OptimizerSettings

    settings = OptimizerSettings()
    corridor = scenario.corridor
    lanes: dict[str, int] = defaultdict(int)
    for spec in corridor.intersections:
        for det in spec.detectors:
            lanes[det.edge_id or det.lane_id.rsplit("_", 1)[0]] += 1
    t0 = time.perf_counter()
    demands = {}
    for spec in corridor.intersections:
        totals = {}
        for det in spec.detectors:
            edge = det.edge_id or det.lane_id.rsplit("_", 1)[0]
            totals[det.detector_id] = DetectorTotals(covered_s=float(window),
                                                     unclassified_vehicles=counts.get(edge, 0) / max(1, lanes[edge]))
        demands[spec.controller_id] = estimate(spec, totals, settings)
    t1 = time.perf_counter()
    incumbents = {s.controller_id: s.default_plan() for s in corridor.intersections}
    versions = {c: p.version + 1 for c, p in incumbents.items()}
    proposals = optimize_corridor(corridor, demands, incumbents, settings, versions)
    t2 = time.perf_counter()
    specs = corridor.by_id()
    unsafe = sum(1 for c, p in proposals.items() if check_plan(p.plan, specs[c]))
    t3 = time.perf_counter()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from traffic.security.signing import PlanSigner
    signer = PlanSigner(Ed25519PrivateKey.generate())
    wire = [signer.sign(p.plan).to_json() for p in proposals.values()]
    t4 = time.perf_counter()
    stage = {"demand": t1 - t0, "optimize": t2 - t1, "safety": t3 - t2, "dispatch": t4 - t3}
    candidates = {specs[c].tls_id: p.plan for c, p in proposals.items()}
    incumbent_by_tls = {specs[c].tls_id: p for c, p in incumbents.items()}
    return stage, {"candidate": candidates, "incumbent": incumbent_by_tls, "unsafe": unsafe,
                   "bytes": sum(map(len, wire))}


def _gate_tasks(models: list[Any], plans: dict[str, Any], seeds: list[int], window: int,
                measure: bool = False) -> list[Any]:
    from simulation.executor import ScenarioFiles, SimTask

    tasks = []
    for m in models:
        files = ScenarioFiles.carried(m.folder)
        own = set(m.region.signals)
        for variant in ("candidate", "incumbent"):
            p = {t: plan.to_dict() for t, plan in plans[variant].items() if t in own}
            for s in seeds:
                tasks.append(SimTask(key=f"{m.region.region_id}-{variant}-{s}", scenario=files, seed=s, begin=0,
                                     end=window, plans=p, measure_edges=m.edges if measure else ()))
    return tasks


def run(args: argparse.Namespace) -> dict[str, Any]:
    from simulation.citygen import grid_city
    from simulation.executor import DaskExecutor, LocalProcessExecutor, ScenarioFiles, SimTask
    from simulation.partition import (
        city_routes_with_exit_times,
        partition_signals,
        partition_site,
        signal_graph,
    )
    from simulation.scenario import load_scenario

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-city-"))
    out: dict[str, Any] = {"n": args.n, "window_s": args.window, "horizon_s": args.horizon, "seeds": args.seeds}
    t = time.perf_counter()
    city = grid_city(work / "city", n=args.n, end=args.window, period_s=args.period)
    out["signals"] = city.signals
    out["build_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    scenario = load_scenario(city.sumocfg, detectors_dir=work / "det")
    out["map_s"] = round(time.perf_counter() - t, 1)
    log(f"city: {city.signals} signals ({out['build_s']} s to build, {out['map_s']} s to map)")
    t = time.perf_counter()
    routes, whole_kpis = city_routes_with_exit_times(scenario, work / "whole", seed=1, begin=0, end=args.window)
    out["whole_run_s"] = round(time.perf_counter() - t, 1)
    out["whole_vehicles"] = whole_kpis.vehicles
    log(f"whole city, own programs, {args.window} s: {whole_kpis.vehicles} vehicles, {out['whole_run_s']} s")
    t = time.perf_counter()
    net = signal_graph(city.net_file)
    part = partition_signals(net, max_signals=args.max_signals)
    out["partition_s"] = round(time.perf_counter() - t, 2)
    out["regions"] = len(part.regions)
    out["cut_roads"], out["total_roads"] = part.cut_roads, part.total_roads
    assert sorted(s for r in part.regions for s in r.signals) == sorted(net.graph.nodes)
    # measured subset: regions spread over the city (every k-th)
    step = max(1, len(part.regions) // args.measure_regions)
    chosen = [r.region_id for r in part.regions][::step][:args.measure_regions]
    t = time.perf_counter()
    site = partition_site(city.net_file, [routes], work / "regions", begin=0, end=args.window,
                          max_signals=args.max_signals, regions=chosen)
    out["cut_s_per_region"] = round((time.perf_counter() - t) / len(chosen), 2)
    models = list(site.models)
    log(f"{len(part.regions)} regions ({part.cut_roads} of {part.total_roads} roads cut); "
        f"cut {len(models)} in {out['cut_s_per_region']} s each")

    stages, plans = _stages(scenario, _edge_counts(routes), args.window)
    out["stages_s"] = {k: round(v, 3) for k, v in stages.items()}
    out["unsafe_candidates"] = plans["unsafe"]
    log("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))

    # ---- the gate on the measured regions, three executors
    seeds = list(range(1, args.seeds + 1))
    tasks = _gate_tasks(models, plans, seeds, args.window)
    measured: dict[str, dict[str, Any]] = {}
    costs: list[float] = []
    factories = [("local processes, 2", 2, lambda: LocalProcessExecutor(2)),
                 ("Dask LocalCluster, 1 worker", 1, lambda: DaskExecutor.local_cluster(1)),
                 ("Dask LocalCluster, 2 workers", 2, lambda: DaskExecutor.local_cluster(2))]
    for name, n_workers, make in factories:
        if args.skip_dask and name.startswith("Dask"):
            continue
        ex = make()
        try:
            ex.run(tasks[:1])  # warm: worker start, imports
            t = time.perf_counter()
            results = ex.run(tasks)
            wall = time.perf_counter() - t
        finally:
            ex.close()
        if name.startswith("local"):
            costs = [r.wall_s for r in results]
        measured[name] = {"workers": n_workers,
                          "tasks": len(tasks), "wall_s": round(wall, 2),
                          "per_task_s": round(statistics.mean(r.wall_s for r in results), 3)}
        log(f"gate, {len(models)} regions x {len(seeds)} seeds x 2 plans on {name}: {wall:.1f} s")
    out["gate_measured"] = measured

    # ---- projection: all regions, per-task costs from the measured regions, scaled to the horizon
    scale = args.horizon / args.window
    per_region = defaultdict(float)
    for task, c in zip(tasks, costs, strict=False):
        per_region[task.key.split("-")[0]] += c
    sample = [c * scale for c in costs]
    all_costs = [sample[i % len(sample)] for i in range(len(part.regions) * len(seeds) * 2)]
    fixed = sum(stages.values())
    projection = []
    for w in WORKERS_PROJECTED:
        gate = makespan(all_costs, w)
        projection.append({"workers": w, "gate_s": round(gate, 1), "epoch_s": round(gate + fixed, 1)})
    out["task_cost_s"] = {"mean": round(statistics.mean(sample), 2), "max": round(max(sample), 2),
                          "sum_all_regions": round(sum(all_costs), 1)}
    out["projection"] = projection
    out["smallest_cluster"] = {}
    for label, budget in BUDGETS_S.items():
        fits = [w for w in range(1, len(all_costs) + 1) if makespan(all_costs, w) + fixed <= budget]
        out["smallest_cluster"][label] = fits[0] if fits else None

    # ---- partition error: same plans on the whole city and on the measured regions (seed 1)
    edges = tuple(sorted({e for m in models for e in m.edges}))
    whole_tasks = [SimTask(key=f"whole-{v}", scenario=ScenarioFiles.shared(city.sumocfg), seed=1, begin=0,
                           end=args.window, plans={t: p.to_dict() for t, p in plans[v].items()}, measure_edges=edges)
                   for v in ("candidate", "incumbent")]
    region_tasks = _gate_tasks(models, plans, [1], args.window, measure=True)
    with LocalProcessExecutor(2) as ex:
        t = time.perf_counter()
        results = ex.run(whole_tasks + region_tasks)
        out["whole_gate_pair_s"] = round(max(r.wall_s for r in results[:2]), 1)
    whole = {"candidate": results[0].edges, "incumbent": results[1].edges}
    by_key = {r.key: r for r in results[2:]}
    rows = []
    for m in models:
        def loss(data: dict[str, dict[str, float]], edges=m.edges) -> float:  # bound now, not late
            return sum(data.get(e, {}).get("timeLoss", 0.0) for e in edges)
        w_c, w_i = loss(whole["candidate"]), loss(whole["incumbent"])
        r_c = loss(by_key[f"{m.region.region_id}-candidate-1"].edges)
        r_i = loss(by_key[f"{m.region.region_id}-incumbent-1"].edges)
        d_w, d_r = (w_c - w_i) / w_i, (r_c - r_i) / r_i
        rows.append({"region": m.region.region_id, "signals": len(m.region.signals),
                     "whole_change": round(d_w, 4), "region_change": round(d_r, 4),
                     "error_pp": round(100 * (d_r - d_w), 2),
                     "level_error": round((r_i - w_i) / w_i, 4),
                     "verdict_agrees": (d_w <= args.margin) == (d_r <= args.margin)})
    out["partition_error"] = {"rows": rows, "margin": args.margin,
                              "mean_abs_pp": round(statistics.mean(abs(r["error_pp"]) for r in rows), 2),
                              "max_abs_pp": round(max(abs(r["error_pp"]) for r in rows), 2),
                              "agree": sum(r["verdict_agrees"] for r in rows), "of": len(rows)}
    return out


def render(r: dict[str, Any]) -> str:
    lines = [f"City: {r['signals']} signals ({r['n']} x {r['n']} grid), {r['whole_vehicles']} vehicles in "
             f"{r['window_s']} s; {r['regions']} regions (<= signals each per --max-signals), "
             f"{r['cut_roads']} of {r['total_roads']} signal-to-signal roads cut. Whole-city SUMO run: "
             f"{r['whole_run_s']} s.", "",
             "Stages over all signals (one core): " + ", ".join(f"{k} {v:.2f} s" for k, v in r["stages_s"].items())
             + f"; {r['unsafe_candidates']} unsafe candidates.", "",
             "| gate measured on | tasks | workers | wall s | s per task |", "|---|---|---|---|---|"]
    for name, m in r["gate_measured"].items():
        lines.append(f"| {name} | {m['tasks']} | {m['workers']} | {m['wall_s']} | {m['per_task_s']} |")
    st = r["stages_s"]
    lines += ["", f"Whole-city epoch, {r['regions']} regions x {len(range(r['seeds']))} seeds x 2 plans = "
              f"{r['regions'] * r['seeds'] * 2} simulations, per-task cost scaled to the {r['horizon_s']} s horizon "
              f"(mean {r['task_cost_s']['mean']} s, max {r['task_cost_s']['max']} s):", "",
              "| workers | demand s | optimize s | safety s | gate s | dispatch s | epoch s | |",
              "|---|---|---|---|---|---|---|---|"]
    for p in r["projection"]:
        kind = "measured x projection" if p["workers"] <= 2 else "projected"
        lines.append(f"| {p['workers']} | {st['demand']:.2f} | {st['optimize']:.2f} | {st['safety']:.2f} | "
                     f"{p['gate_s']} | {st['dispatch']:.2f} | {p['epoch_s']} | {kind} |")
    lines.append("")
    for label, w in r["smallest_cluster"].items():
        lines.append(f"Smallest cluster for {label}: {w if w else 'none (the longest task alone exceeds it)'} "
                     f"worker cores (one SUMO run per core).")
    pe = r["partition_error"]
    lines += ["", f"Partition error (seed 1, same candidate/incumbent plans, time loss on each region's roads; "
              f"verdict at margin {pe['margin']}):", "",
              "| region | signals | change, whole model | change, region model | error pp | level error | verdict |",
              "|---|---|---|---|---|---|---|"]
    for row in pe["rows"]:
        lines.append(f"| {row['region']} | {row['signals']} | {100 * row['whole_change']:+.1f} % | "
                     f"{100 * row['region_change']:+.1f} % | {row['error_pp']:+.1f} | "
                     f"{100 * row['level_error']:+.1f} % | "
                     f"{'agrees' if row['verdict_agrees'] else 'DIFFERS'} |")
    lines.append(f"\nMean |error| {pe['mean_abs_pp']} pp, max {pe['max_abs_pp']} pp; verdicts agree in "
                 f"{pe['agree']} of {pe['of']} regions.")
    return "\n".join(lines)


def log(text: str) -> None:
    sys.stderr.write(f"[bench.city] {text}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=25, help="grid side: n x n signals (25: 625)")
    p.add_argument("--window", type=int, default=600, help="simulated seconds per run")
    p.add_argument("--horizon", type=int, default=900, help="the gate's horizon the budget is judged at")
    p.add_argument("--period", type=float, default=0.1, help="randomTrips period (s between new trips)")
    p.add_argument("--max-signals", type=int, default=16)
    p.add_argument("--measure-regions", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--skip-dask", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    sys.stdout.write(render(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
