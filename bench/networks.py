"""Generalisation check: every control on networks nobody tuned anything for.

``python bench/networks.py [--networks grid,spider,random,peds]
[--controls static,actuated,actuated-safe,max-pressure,adaptive] [--seeds 1,2,3] [--processes 2]
[--workdir DIR] [--json OUT]`` (defaults shown)

Issue #4 asks that the adaptive control generalise ("other real networks
will be used to check it"). The five benchmark scenarios are what the
controller was developed on, so this bench builds networks of other shapes
with SUMO's own ``netgenerate`` and ``randomTrips.py`` (fixed seeds, so
every run sees the same files) and runs the controls of ``bench/control.py``
on them, with the same goals table:

* ``grid``: 3 x 3 grid, two lanes, dedicated left-turn lanes (netconvert's
  protected-left programs);
* ``spider``: five-arm spider web: five-leg junctions, uneven angles;
* ``random``: a random planar network where every junction is signalised
  (irregular geometry, short links, three- and five-leg junctions);
* ``peds``: 3 x 3 grid with sidewalks, signalised crossings and walking
  people (pedestrian timing from the modelled crossings; vehicles yield to
  people on them).

Demand: random trips between fringe edges over the corridor's
motorcycle-heavy vehicle mix, at a rate that loads the network's fixed-time
plans without gridlocking them. Nothing here is read by the controllers:
they get the network and its loops like any other scenario.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from simulation.binaries import sumo_binary, sumo_tool
from simulation.corridor import add_vehicle_mix
from simulation.scenario import Scenario, load_scenario, write_sumocfg

try:  # run as `python -m bench.networks` or as `python bench/networks.py`
    from bench.control import control_table, field_safe_table, goal_table, goals14_from_rows, markdown, policy_line
except ImportError:  # pragma: no cover - script mode
    from control import control_table, field_safe_table, goal_table, goals14_from_rows, markdown, policy_line

log = logging.getLogger("bench.networks")

DURATION_S = 3600
#: name -> (netgenerate options, seconds between trip insertions, pedestrians walk)
NETWORKS: dict[str, tuple[tuple[str, ...], float, bool]] = {
    "grid": (("--grid", "--grid.number", "3", "--grid.length", "250", "--grid.attach-length", "200",
              "--default.lanenumber", "2", "--turn-lanes", "1", "--turn-lanes.length", "60",
              "--default-junction-type", "traffic_light", "--tls.left-green.time", "8"), 1.0, False),
    "spider": (("--spider", "--spider.arm-number", "5", "--spider.circle-number", "3",
                "--spider.space-radius", "180", "--spider.omit-center", "true",
                "--default-junction-type", "traffic_light"), 1.2, False),
    "random": (("--rand", "--rand.iterations", "60", "--rand.min-distance", "180", "--rand.max-distance", "400",
                "--rand.min-angle", "60", "--default-junction-type", "traffic_light"), 1.2, False),
    "peds": (("--grid", "--grid.number", "3", "--grid.length", "250", "--grid.attach-length", "200",
              "--default.lanenumber", "2", "--default-junction-type", "traffic_light",
              "--sidewalks.guess", "true", "--crossings.guess", "true"), 1.2, True),
}


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{Path(cmd[0]).name} failed: {done.stderr.strip()[-800:]}")


def _types_file(path: Path) -> Path:
    root = ET.Element("additional")
    add_vehicle_mix(root)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def generate(name: str, out_dir: Path, seed: int = 7) -> Path:
    """Network, demand and config of network ``name`` in ``out_dir``; returns the ``.sumocfg``."""
    options, period_s, walkers = NETWORKS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    net = out_dir / f"{name}.net.xml"
    _run([sumo_binary("netgenerate"), *options, "--seed", str(seed), "--tls.default-type", "static",
          "--no-turnarounds", "true", "--default.speed", "13.89", "--output-file", str(net),
          "--no-warnings", "true"])
    types = _types_file(out_dir / "types.add.xml")
    trips = out_dir / f"{name}.trips.xml"
    python = sys.executable
    _run([python, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o", str(trips), "--seed", str(seed),
          "--begin", "0", "--end", str(DURATION_S - 300), "--period", str(period_s), "--fringe-factor", "10",
          "--min-distance", "400", "--prefix", "v", "--trip-attributes",
          'type="mix" departLane="best" departSpeed="max"', "--additional-file", str(types),
          "--validate", "-r", str(out_dir / f"{name}.rou.xml")])
    route_files = [trips.name]
    if walkers:
        persons = out_dir / f"{name}.persons.xml"
        _run([python, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o", str(persons), "--seed", str(seed + 1),
              "--begin", "0", "--end", str(DURATION_S - 600), "--period", "6", "--pedestrians",
              "--min-distance", "200", "--prefix", "p", "-r", str(out_dir / f"{name}.persons.rou.xml")])
        route_files.append(persons.name)
    return write_sumocfg(out_dir / f"{name}.sumocfg", net=net, routes=[out_dir / r for r in route_files],
                         additionals=[types], end_s=DURATION_S,
                         processing={"time-to-teleport": "-1", "ignore-junction-blocker": "20"})


def scenarios(names: list[str], workdir: Path) -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for name in names:
        cfg = generate(name, workdir / name)
        out[name] = load_scenario(cfg, detectors_dir=workdir / f"det-{name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma list of {', '.join(NETWORKS)}")
    parser.add_argument("--controls",
                        default="static,actuated,actuated-safe,max-pressure,max-pressure-resco,adaptive")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traffic-bench-networks-"))
    names = [n for n in args.networks.split(",") if n]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown} (known: {', '.join(NETWORKS)})")
    rows = control_table(scenarios(names, workdir), [c for c in args.controls.split(",") if c],
                         [int(s) for s in args.seeds.split(",") if s], args.processes, workdir)
    sys.stdout.write(f"{policy_line()}\n\n" + markdown(rows, []) + "\n")
    for table in (goal_table(rows), field_safe_table(rows), goals14_from_rows(rows)):
        if table:
            sys.stdout.write("\n" + table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"controls": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
