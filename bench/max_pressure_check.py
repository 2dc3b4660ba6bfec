"""Max-pressure variants side by side: mean delay per scenario and seed (the measurements behind the defaults).

``python bench/max_pressure_check.py --scenarios /work/shared/scenarios/cologne1,/tmp/corpus/grid-joined-moderate
[--seeds 1,2,3] [--variants default,no-guard,link-guard,resco]``

Each run is one libsumo process at a time (one core). Measured 2026-12-06 (seeds 1-3 on the shared scenarios,
mean delay s; the earlier controller in brackets): cologne1 44.4 (59.9), cologne3 29.5 (41.8), ingolstadt1 20.0
(20.7), grid4x4 68.0 (96.4). Why the earlier controller collapsed, as diagnosed with these runs:

* on networks with many phases and long change intervals (a joined cluster mapped to 16 single-approach phases
  with 15 s of yellow + all-red) its phase-level starvation rule (any vehicle on a phase's lanes, 180 s without
  green) fired on 248 of 281 decisions: a round robin of 10 s greens behind 15 s changes (grid-joined 657.6 s);
* it measured whole lanes as sets, so short stop-line lanes (OSM splits streets at every node) capped queues,
  and a jam beyond a short outgoing lane was invisible: on cologne3 seed 3 the first version of the new rule
  without the downstream walk gridlocked the cluster's box (759 s, 995 undeparted); following the outgoing
  lane downstream through unsignalised junctions removes it (29.5 s mean);
* a link-based guard (every link shown its best green within 120 s) serves protected lefts the pressure never
  picks, but costs cologne1 73.7 s and cologne3 39.9 s; the vehicle-based guard (a vehicle halted 120 s at a
  stop line) is what the module keeps (cologne1 44.4, no guard 44.5; random-clusters 246.9 vs 259.4 without).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from statistics import mean

from simulation.inloop import run_in_loop
from simulation.max_pressure import MaxPressureController, MaxPressureSettings
from simulation.scenario import load_scenario

VARIANTS: dict[str, MaxPressureSettings] = {
    "default": MaxPressureSettings(),
    "no-guard": MaxPressureSettings(max_red_s=None),
    "link-guard": MaxPressureSettings(starvation_basis="link"),
    "max-green-90": MaxPressureSettings(max_green_s=90.0),
    "no-walk": MaxPressureSettings(walk_upstream=False),
    "resco": MaxPressureSettings.resco(),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", required=True, help="comma-separated .sumocfg files or folders")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variants", default="default,no-guard")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/max-pressure-check"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    print("| scenario | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for path in args.scenarios.split(","):
        scenario = load_scenario(Path(path), detectors_dir=args.workdir / Path(path).stem / "det")
        cells = []
        for name in variants:
            settings = VARIANTS[name]
            runs = [run_in_loop(scenario, seed=s, workdir=args.workdir / Path(path).stem / f"{name}-{s}",
                                make_controllers=lambda _api, st=settings, sc=scenario: [
                                    MaxPressureController(x, st) for x in sc.corridor.intersections])
                    for s in seeds]
            undeparted = sum(k.undeparted for k in runs)
            cells.append(f"{mean(k.mean_delay_s for k in runs):.1f}"
                         + (f" ({undeparted} undep.)" if undeparted else ""))
        print(f"| {Path(path).stem} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
