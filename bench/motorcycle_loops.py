"""What a loop really sees of motorcycle traffic, and which pcu estimate survives it (issue #14 c).

``python bench/motorcycle_loops.py [--demand 1.0] [--seed 1] [--end 3600] [--workdir DIR] [--json OUT]``

SUMO's E1 loops report every vehicle, also two motorcycles riding side by
side over the same lane. A real inductive loop does not: vehicles whose
presence over the loop overlaps in time make one pulse, so it under-counts
filtering motorcycles, and one that does not classify cannot say which
pulses were motorcycles. This bench runs the project's sublane corridor
(``simulation.corridor``, 85 % motorcycles, ``--lateral-resolution 0.8``)
under its own fixed-time plans and rebuilds, from every vehicle's exact
entry and exit time over each loop (``inductionloop.getVehicleData``), what a
presence loop reports: merged pulses and occupied seconds. It then compares,
per loop and hour, the true pcu with

* ``classified``: exact classes (what a classifying loop or the simulation's
  ideal loop gives; the demand model's input today);
* ``pulses x mix``: merged pulses x the configured mix's pcu per vehicle
  (a non-classifying loop read naively);
* ``seen from occupancy x mix``: what ``controller.demand`` uses for a
  non-classifying loop that reports occupancy (vehicles seen from occupied
  seconds, calibrated on the loop's lightly occupied 60 s intervals, never
  below the pulses, at most ``occupancy_uplift_max`` times them).

Prints mean absolute and mean signed error per estimate against the true pcu
(bus 2.5; the demand model's mix counts a bus as a car).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

PCU = {"moto": 0.3, "car": 1.0, "bus": 2.5}
INTERVAL_S = 60.0


def _merge(intervals: list[tuple[float, float]]) -> tuple[int, float]:
    """Pulses and occupied seconds of a presence loop from the vehicles' (entry, exit) times."""
    pulses, occupied = 0, 0.0
    end = -1.0
    start = None
    for a, b in sorted(intervals):
        if start is None or a > end:
            if start is not None:
                occupied += end - start
            pulses += 1
            start, end = a, b
        else:
            end = max(end, b)
    if start is not None:
        occupied += end - start
    return pulses, occupied


def measure(demand: float, seed: int, end: int, workdir: Path) -> dict:
    import libsumo as traci  # noqa: N813 - same API

    from simulation.corridor import generate_corridor
    from simulation.runner import merge_options
    from simulation.scenario import BASE_OPTIONS

    scenario = generate_corridor(workdir / "corridor", demand_scale=demand)
    options = merge_options(scenario.sumo_options, BASE_OPTIONS, ("--no-warnings", "true"))
    traci.start(["sumo", "-c", str(scenario.sumocfg), "--seed", str(seed), "--end", str(end), *options])
    loops = list(traci.inductionloop.getIDList())
    entered: dict[tuple[str, str], float] = {}
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    truth: dict[str, float] = defaultdict(float)
    vehicles: dict[str, int] = defaultdict(int)
    motos: dict[str, int] = defaultdict(int)
    try:
        while traci.simulation.getTime() < end:
            traci.simulationStep()
            for loop in loops:
                for veh, _length, t_in, t_out, vtype in traci.inductionloop.getVehicleData(loop):
                    key = (loop, veh)
                    if key not in entered and t_in >= 0:
                        entered[key] = t_in
                        truth[loop] += PCU.get(vtype, 1.0)
                        vehicles[loop] += 1
                        motos[loop] += int(vtype == "moto")
                    if t_out >= 0 and key in entered:
                        intervals[loop].append((entered[key], t_out))
                        entered[key] = -1.0  # done; keep the key so it is not counted again
    finally:
        traci.close()
    from controller.demand import LIGHT_OCCUPANCY_PCT, DetectorTotals, seen_vehicles
    from traffic.config import OptimizerSettings

    opt = OptimizerSettings()
    share = opt.motorcycle_share_default
    per_vehicle = share * opt.pcu_motorcycle + (1 - share) * opt.pcu_car
    rows = []
    for loop in loops:
        if truth[loop] < 20:  # too little traffic to judge an estimate
            continue
        done = [iv for iv in intervals[loop] if iv[0] >= 0]
        pulses, occupied = _merge(done)
        bins: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for iv in done:  # the loop's 60 s count intervals
            bins[int(iv[0] // INTERVAL_S)].append(iv)
        light_occ = light_veh = 0.0
        for ivs in bins.values():
            n, occ = _merge(ivs)
            if 100.0 * occ / INTERVAL_S < LIGHT_OCCUPANCY_PCT:
                light_occ += occ
                light_veh += n
        seen = seen_vehicles(DetectorTotals(float(end), unclassified_vehicles=pulses, unclassified_occupied_s=occupied,
                                            light_occupied_s=light_occ, light_vehicles=light_veh),
                             opt.occupancy_uplift_max)
        rows.append({"loop": loop, "vehicles": vehicles[loop], "motorcycles": motos[loop], "pcu": truth[loop],
                     "pulses": pulses, "occupied_s": round(occupied, 1), "seen": round(seen, 1)})
    out = {"demand": demand, "seed": seed, "end": end, "loops": rows, "estimates": {}}
    def score(name: str, est) -> None:
        errs = [(est(r) - r["pcu"]) / r["pcu"] for r in rows]
        out["estimates"][name] = {"mean_abs_error_pct": round(100 * statistics.mean(abs(e) for e in errs), 1),
                                  "mean_error_pct": round(100 * statistics.mean(errs), 1),
                                  "worst_error_pct": round(100 * max(errs, key=abs), 1)}

    score("classified", lambda r: r["motorcycles"] * PCU["moto"] + (r["vehicles"] - r["motorcycles"]) * PCU["car"])
    score("pulses x mix", lambda r: r["pulses"] * per_vehicle)
    score("seen from occupancy x mix (controller.demand)", lambda r: r["seen"] * per_vehicle)
    out["undercount_pct"] = round(100 * (1 - sum(r["pulses"] for r in rows) / sum(r["vehicles"] for r in rows)), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demand", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end", type=int, default=3600)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out = measure(args.demand, args.seed, args.end, args.workdir or Path(tempfile.mkdtemp(prefix="traffic-moto-")))
    sys.stdout.write(f"sublane corridor x{args.demand}, seed {args.seed}, {len(out['loops'])} loops: pulses "
                     f"under-count vehicles by {out['undercount_pct']} %\n\n"
                     "| estimate | mean abs error | mean error | worst |\n|---|---|---|---|\n")
    for name, e in out["estimates"].items():
        sys.stdout.write(f"| {name} | {e['mean_abs_error_pct']} % | {e['mean_error_pct']:+} % | "
                         f"{e['worst_error_pct']:+} % |\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
