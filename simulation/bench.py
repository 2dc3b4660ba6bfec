"""Wall-time benchmarks of the simulation layer: ``python -m simulation.bench [out_dir]``.

Measures corridor generation, a one-hour corridor run of the ``sumo`` binary
at several sublane resolutions, and one validation-gate call (2 seeds, 900 s
horizon, candidate and incumbent in parallel) against bare ``sumo`` on the
same window. Prints one JSON object; numbers depend on machine load, so run
it on a quiet machine and repeat.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulation.binaries import sumo_binary
from simulation.corridor import generate_corridor
from simulation.gate import validate
from simulation.runner import run

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their numbers as JSON."""
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="traffic-bench-"))
    results: dict[str, object] = {}
    started = time.perf_counter()
    scenario = generate_corridor(out_dir / "corridor")
    results["corridor_generation_s"] = round(time.perf_counter() - started, 2)
    hour: dict[str, object] = {}
    for label, options in (("no_sublane", ("--lateral-resolution", "-1")), ("lat_1.6", ("--lateral-resolution", "1.6")),
                           ("lat_0.8", ("--lateral-resolution", "0.8"))):
        kpis = run(scenario, seed=1, extra_options=options)
        hour[label] = {"wall_s": kpis.wall_s, "vehicles": kpis.vehicles, "mean_delay_s": kpis.mean_delay_s,
                       "undeparted": kpis.undeparted}
    results["corridor_hour"] = hour
    specs = scenario.corridor.intersections
    incumbent = {s.tls_id: s.default_plan(90.0) for s in specs}
    candidate = {s.tls_id: s.plan_from_splits([40.0, 32.0], offset_s=k * 450 / 13.89) for k, s in enumerate(specs)}
    verdict = validate(scenario, candidate=candidate, incumbent=incumbent, begin=0, end=900)
    results["gate_900s_2seeds"] = {"wall_s": verdict.wall_s, "accepted": verdict.accepted,
                                   "candidate_delay_s": verdict.candidate["mean_delay_s"],
                                   "incumbent_delay_s": verdict.incumbent["mean_delay_s"]}
    started = time.perf_counter()
    subprocess.run([sumo_binary("sumo"), "-c", str(scenario.sumocfg), "--end", "900", "--seed", "1",
                    "--no-warnings", "true"], check=True, capture_output=True)
    results["bare_sumo_900s_s"] = round(time.perf_counter() - started, 2)
    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
