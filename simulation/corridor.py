"""A Hanoi-like signalised arterial, generated with SUMO's own tools.

West-east arterial (``W`` .. ``E``) with ``n`` signalised crossings ``J1..Jn``
of north-south side streets. Plain XML nodes and edges are written and
``netconvert`` builds the network and its default static signal programs
(equal-ish greens for arterial and side street: the "legacy" fixed plan a
good adaptive plan should beat, because the arterial carries far more
traffic). Demand is a set of Poisson ``<flow>``\\ s from every entry to every
exit over a motorcycle-heavy vehicle mix, with an hour-long peak shape.
One E1 loop per incoming lane of every signal, ``<controller_id>.dNN``.
"""

from __future__ import annotations

import logging
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from simulation.binaries import sumo_binary
from simulation.network import corridor_from_net, write_detectors_additional
from simulation.scenario import Scenario, site_clearance, write_sumocfg
from traffic.clearance import ClearancePolicy
from traffic.errors import SimulationError
from traffic.topics import check_id

log = logging.getLogger(__name__)

ARTERIAL_SPEED_MPS = 13.89   # 50 km/h
SIDE_SPEED_MPS = 11.11       # 40 km/h
ARTERIAL_LANES = 3
SIDE_LANES = 2
END_LEG_M = 300.0            # arterial beyond the first and last signal

#: (id, vClass, share, attributes). Motorcycles dominate Hanoi traffic.
VEHICLE_MIX: tuple[tuple[str, str, float, dict[str, str]], ...] = (
    ("moto", "motorcycle", 0.85, {"length": "2.0", "minGap": "0.5", "width": "0.8", "maxSpeed": "16.7",
                                  "accel": "3.0", "decel": "5.0", "sigma": "0.5",
                                  "latAlignment": "arbitrary", "minGapLat": "0.3", "guiShape": "motorcycle"}),
    ("car", "passenger", 0.12, {"length": "4.5", "minGap": "2.0", "maxSpeed": "16.7", "sigma": "0.5"}),
    ("bus", "bus", 0.03, {"length": "11.0", "minGap": "2.5", "maxSpeed": "13.9", "sigma": "0.5"}),
)

#: Demand multiplier per 10-minute slice of the hour: a peak in the middle.
PEAK_SHAPE: tuple[float, ...] = (0.7, 0.9, 1.2, 1.3, 1.1, 0.8)

ARTERIAL_ENTRY_VEH_H = 1000.0   # per direction at demand_scale 1
SIDE_ENTRY_VEH_H = 220.0        # per side-street approach

#: Options every run of the corridor uses (also written into the .sumocfg).
#: Sublane resolution 0.8 m (DESIGN.md): motorcycles filter side by side.
#: Measured on the 4-signal hour (shared 2-core machine): no sublane 8 s,
#: 1.6 m 21-23 s, 0.8 m 24 s; the coarser grid saves too little to give up
#: realism, see the simulation report.
LATERAL_RESOLUTION_M = 0.8
CORRIDOR_OPTIONS: tuple[str, ...] = (
    "--lateral-resolution", str(LATERAL_RESOLUTION_M),
    "--ignore-junction-blocker", "20",
    "--collision.action", "warn",
    "--time-to-teleport", "-1",
)


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimulationError(f"{what} could not run: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SimulationError(f"{what} failed (exit {proc.returncode}): {tail}")


def _indent_write(root: ET.Element, path: Path) -> Path:
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def _write_plain(out_dir: Path, n: int, spacing: float, side: float) -> tuple[Path, Path]:
    nodes = ET.Element("nodes")
    xs = [i * spacing for i in range(n)]
    ET.SubElement(nodes, "node", id="W", x=f"{-END_LEG_M:.1f}", y="0")
    ET.SubElement(nodes, "node", id="E", x=f"{xs[-1] + END_LEG_M:.1f}", y="0")
    for k, x in enumerate(xs, start=1):
        ET.SubElement(nodes, "node", id=f"J{k}", x=f"{x:.1f}", y="0", type="traffic_light")
        ET.SubElement(nodes, "node", id=f"N{k}", x=f"{x:.1f}", y=f"{side:.1f}")
        ET.SubElement(nodes, "node", id=f"S{k}", x=f"{x:.1f}", y=f"{-side:.1f}")
    edges = ET.Element("edges")

    def edge(a: str, b: str, lanes: int, speed: float) -> None:
        ET.SubElement(edges, "edge", id=f"{a}_{b}", attrib={"from": a, "to": b, "numLanes": str(lanes),
                                                              "speed": f"{speed:.2f}"})

    chain = ["W", *[f"J{k}" for k in range(1, n + 1)], "E"]
    for a, b in zip(chain, chain[1:], strict=False):
        edge(a, b, ARTERIAL_LANES, ARTERIAL_SPEED_MPS)
        edge(b, a, ARTERIAL_LANES, ARTERIAL_SPEED_MPS)
    for k in range(1, n + 1):
        for s in (f"N{k}", f"S{k}"):
            edge(s, f"J{k}", SIDE_LANES, SIDE_SPEED_MPS)
            edge(f"J{k}", s, SIDE_LANES, SIDE_SPEED_MPS)
    return (_indent_write(nodes, out_dir / "corridor.nod.xml"), _indent_write(edges, out_dir / "corridor.edg.xml"))


def _od_rates(n: int, demand_scale: float) -> list[tuple[str, str, float]]:
    """(entry edge, exit edge, veh/h at peak-shape 1.0): arterial heavy, side streets light."""
    last = f"J{n}"
    art_entries = {"W_J1": f"{last}_E", f"E_{last}": "J1_W"}
    side_exits = [f"J{k}_{s}{k}" for k in range(1, n + 1) for s in "NS"]
    out: list[tuple[str, str, float]] = []
    for entry, far_exit in art_entries.items():
        weights = {far_exit: 8.0, **{x: 0.5 for x in side_exits}}
        total = sum(weights.values())
        out += [(entry, x, ARTERIAL_ENTRY_VEH_H * w / total) for x, w in weights.items()]
    for k in range(1, n + 1):
        for s, opposite in (("N", "S"), ("S", "N")):
            entry = f"{s}{k}_J{k}"
            weights = {f"J{k}_{opposite}{k}": 3.0, "J1_W": 1.5, f"{last}_E": 1.5}
            for j in range(1, n + 1):
                if j != k:
                    for t in "NS":
                        weights[f"J{j}_{t}{j}"] = 0.1
            total = sum(weights.values())
            out += [(entry, x, SIDE_ENTRY_VEH_H * w / total) for x, w in weights.items()]
    return [(a, b, r * demand_scale) for a, b, r in out if r * demand_scale > 0]


def add_vehicle_mix(parent: ET.Element, dist_id: str = "mix") -> ET.Element:
    """Append the motorcycle-heavy ``vTypeDistribution`` (:data:`VEHICLE_MIX`) to ``parent``; return it."""
    dist = ET.SubElement(parent, "vTypeDistribution", id=dist_id)
    for vid, vclass, share, attrs in VEHICLE_MIX:
        ET.SubElement(dist, "vType", id=vid, vClass=vclass, probability=f"{share}", attrib=attrs)
    return dist


def _write_routes(path: Path, n: int, duration_s: int, demand_scale: float) -> Path:
    root = ET.Element("routes")
    add_vehicle_mix(root)
    slices = len(PEAK_SHAPE)
    slice_s = duration_s / slices
    flows = []
    for i, factor in enumerate(PEAK_SHAPE):
        begin, end = i * slice_s, (i + 1) * slice_s
        for entry, exit_, rate in _od_rates(n, demand_scale):
            flows.append((begin, end, entry, exit_, rate * factor / 3600.0))
    for idx, (begin, end, entry, exit_, per_s) in enumerate(flows):
        ET.SubElement(root, "flow", id=f"f{idx}_{entry}_{exit_}", type="mix", begin=f"{begin:.0f}", end=f"{end:.0f}",
                      period=f"exp({per_s:.6f})", attrib={"from": entry, "to": exit_, "departLane": "best",
                                                          "departSpeed": "max", "departPos": "base"})
    return _indent_write(root, path)


def _write_sumocfg(path: Path, net: Path, routes: Path, additional: Path, duration_s: int) -> Path:
    return write_sumocfg(path, net=net, routes=[routes], additionals=[additional], end_s=duration_s,
                         processing={"lateral-resolution": str(LATERAL_RESOLUTION_M),
                                     "ignore-junction-blocker": "20", "collision.action": "warn",
                                     "time-to-teleport": "-1"})


def generate_corridor(out_dir: Path, *, n_intersections: int = 4, spacing_m: float = 450.0,
                      side_length_m: float = 200.0, duration_s: int = 3600, seed: int = 42,
                      demand_scale: float = 1.0, site: str = "hanoi",
                      clearance: ClearancePolicy | None = None, pedestrians: str = "assume") -> Scenario:
    """Write the corridor's network, demand, loops and config to ``out_dir``; return the scenario.

    ``seed`` only seeds netconvert/the file set; run-time randomness (Poisson
    arrivals, vehicle types, driver imperfection) comes from the run's own
    ``--seed``, so two runs of the same scenario can differ only by seed.
    """
    if n_intersections < 1:
        raise SimulationError("n_intersections must be at least 1")
    if spacing_m < 100 or side_length_m < 60:
        raise SimulationError("spacing_m must be >= 100 and side_length_m >= 60 (room for loops and queues)")
    if duration_s <= 0 or demand_scale < 0:
        raise SimulationError("duration_s must be positive and demand_scale non-negative")
    check_id(site, "site")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nod, edg = _write_plain(out_dir, n_intersections, spacing_m, side_length_m)
    net = out_dir / "corridor.net.xml"
    _run([sumo_binary("netconvert"), "--node-files", str(nod), "--edge-files", str(edg), "--output-file", str(net),
          "--tls.default-type", "static", "--no-turnarounds", "true", "--seed", str(seed),
          "--no-warnings", "true"], "netconvert")
    routes = _write_routes(out_dir / "corridor.rou.xml", n_intersections, duration_s, demand_scale)
    # the corridor's streets have no modelled crosswalks, but people cross them: time the assumed ones
    corridor = corridor_from_net(net, site=site, name=f"corridor{n_intersections}", pedestrians=pedestrians)
    det = write_detectors_additional(corridor, out_dir / "corridor.det.xml", net_file=net)
    corridor = corridor_from_net(net, site=site, additional_files=(det,), name=f"corridor{n_intersections}",
                                 pedestrians=pedestrians).with_clearance(clearance or site_clearance())
    cfg = _write_sumocfg(out_dir / "corridor.sumocfg", net, routes, det, duration_s)
    log.info("corridor with %d signals written to %s", n_intersections, out_dir)
    return Scenario(sumocfg=cfg.resolve(), net_file=net.resolve(), route_files=(routes.resolve(),),
                    additional_files=(det.resolve(),), begin=0, end=duration_s, corridor=corridor,
                    sumo_options=CORRIDOR_OPTIONS)
