"""The robustness corpus: SUMO networks nobody tuned this project for, built reproducibly.

``python bench/corpus.py build --out DIR [--only a,b] [--levels moderate,saturated]``
writes one folder per network and demand level (``DIR/<network>-<level>/``
with a ``.sumocfg``) and ``DIR/corpus.json`` listing them. Nothing here is
committed: the networks come from

* the real networks that ship inside the ``eclipse-sumo`` wheel
  (``$SUMO_HOME/tools/game`` and the RiLSA examples of ``sumolib.scenario``):
  two OpenStreetMap imports (``DRT``: a town centre with joined signal
  clusters; ``A10KW``: a motorway interchange with ramps), Braunschweig and
  Ingolstadt extracts with several junctions under one program, and
  hand-drawn real intersections (RiLSA, the German signal guideline's
  examples);
* the same OSM imports rebuilt by ``netconvert`` the way a city would
  import its own map (``--junctions.join``, ``--tls.join``,
  ``--tls.guess-signals``, ``--ramps.guess``);
* ``netgenerate`` grids, spiders and random networks with joined clusters
  and left-turn pockets, and plain-XML networks for what the generators
  cannot draw: one-way streets, a signalised roundabout and a signalised
  on-ramp merge;
* the four scenarios of ``../shared/scenarios`` when present (with their own
  demand, not rebuilt).

Demand: ``randomTrips.py`` from fringe to fringe at two levels, fixed
seeds: ``moderate`` (about 220 veh/h per entry edge) and ``saturated``
(about 520 veh/h per entry edge, near what the networks' own programs can
carry). The vehicle mix is the project's motorcycle-heavy mix.

``python bench/corpus.py list`` prints what would be built.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from simulation.binaries import sumo_binary, sumo_home, sumo_tool
from simulation.corridor import VEHICLE_MIX, add_vehicle_mix
from simulation.scenario import write_sumocfg

log = logging.getLogger("bench.corpus")

DURATION_S = 1800
#: randomTrips seeds: one per level, fixed so every build is the same
LEVELS: dict[str, tuple[float, int]] = {"moderate": (220.0, 11), "saturated": (520.0, 12)}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


@dataclass(frozen=True)
class Source:
    """How one corpus network is made."""

    name: str
    kind: str  # wheel | rebuilt | netgenerate | plain | shared
    what: str  # one line for the table
    path: str = ""  # wheel-relative path (wheel, rebuilt) or shared scenario name
    options: tuple[str, ...] = ()  # netconvert / netgenerate options
    plain: str = ""  # plain-XML builder name
    extra: dict[str, str] = field(default_factory=dict)


_GAME = "tools/game"
_RILSA = "tools/sumolib/scenario/scenarios"
_JOIN = ("--junctions.join", "true", "--tls.join", "true", "--tls.guess-signals", "true")

SOURCES: tuple[Source, ...] = (
    Source("drt-osm", "wheel", "OSM import, town centre, joined signal clusters", f"{_GAME}/DRT/osm.net.xml"),
    Source("a10kw-osm", "wheel", "OSM import, motorway interchange with ramps", f"{_GAME}/A10KW/osm.net.xml"),
    Source("braunschweig", "wheel", "Braunschweig extract, one program over several junctions",
           f"{_GAME}/bs3d/bs.net.xml"),
    Source("ingolstadt-fkk", "wheel", "Ingolstadt extract, clustered programs",
           f"{_GAME}/fkk_in/ingolstadt.net.xml.gz"),
    Source("braunschweig-fokr", "wheel", "Braunschweig junction, real program",
           f"{_GAME}/fokr_bs_demo/fokr_bs.net.xml.gz"),
    Source("kuehne", "wheel", "12 signals, short links", f"{_GAME}/kuehne/kuehne.net.xml"),
    Source("square", "wheel", "12 signals around a square", f"{_GAME}/square/square.net.xml"),
    Source("grid6", "wheel", "6-signal grid", f"{_GAME}/grid6/grid6.net.xml"),
    Source("game-corridor", "wheel", "3-signal corridor", f"{_GAME}/corridor/corridor.net.xml"),
    Source("cross", "wheel", "single crossing", f"{_GAME}/cross/cross.net.xml"),
    Source("highway-signal", "wheel", "signal on a highway", f"{_GAME}/highway/highway.net.xml"),
    Source("ramp", "wheel", "signalised ramp", f"{_GAME}/ramp/ramp.net.xml"),
    Source("rilsa1", "wheel", "RiLSA example 1 (German guideline)",
           f"{_RILSA}/RealWorld/RiLSA_example1/rilsa1.net.xml"),
    Source("rilsa2", "wheel", "RiLSA example 2, two junctions one program",
           f"{_RILSA}/RealWorld/RiLSA_example2/rilsa2.net.xml"),
    Source("rilsa3", "wheel", "RiLSA example 3", f"{_RILSA}/RealWorld/RiLSA_example3/rilsa3.net.xml"),
    Source("rilsa4", "wheel", "RiLSA example 4", f"{_RILSA}/RealWorld/RiLSA_example4/rilsa4.net.xml"),
    Source("rilsa-both", "wheel", "RiLSA with signalised neighbours", f"{_RILSA}/RiLSA1BothTLS/rilsa1both.net.xml"),
    Source("drt-rebuilt", "rebuilt", "DRT OSM import re-imported: junctions and signals joined, ramps guessed",
           f"{_GAME}/DRT/osm.net.xml", (*_JOIN, "--ramps.guess", "true", "--tls.rebuild", "true")),
    Source("a10kw-rebuilt", "rebuilt", "A10KW re-imported: joined junctions, guessed signals and ramps",
           f"{_GAME}/A10KW/osm.net.xml", (*_JOIN, "--ramps.guess", "true")),
    Source("grid-joined", "netgenerate", "4x4 grid, 40 m blocks in one corner, joined clusters, left pockets",
           options=("--grid", "--grid.x-number", "4", "--grid.y-number", "4", "--grid.x-length", "200",
                    "--grid.y-length", "45", "--grid.attach-length", "150", "--default.lanenumber", "2",
                    "--turn-lanes", "1", "--turn-lanes.length", "30", "--default-junction-type", "traffic_light",
                    "--junctions.join", "true", "--tls.join", "true")),
    Source("spider-joined", "netgenerate", "spider with 4 arms, joined centre",
           options=("--spider", "--spider.arm-number", "4", "--spider.circle-number", "3",
                    "--spider.space-radius", "120", "--spider.attach-length", "150",
                    "--default-junction-type", "traffic_light",
                    "--junctions.join", "true", "--tls.join", "true", "--default.lanenumber", "2")),
    Source("random-clusters", "netgenerate", "random network with short links, joined clusters",
           options=("--rand", "--rand.iterations", "80", "--rand.min-distance", "60", "--rand.max-distance", "300",
                    "--rand.min-angle", "30", "--default-junction-type", "traffic_light", "--junctions.join", "true",
                    "--tls.join", "true", "--rand.random-lanenumber", "true")),
    Source("oneway-grid", "plain", "one-way street grid (alternating directions)", plain="oneway"),
    Source("roundabout", "plain", "signalised roundabout with four approaches", plain="roundabout"),
    Source("merge", "plain", "signalised on-ramp merge and a downstream signal", plain="merge"),
    *(Source(n, "shared", f"shared scenario {n} (own demand)", n) for n in ("cologne1", "cologne3", "ingolstadt1",
                                                                           "grid4x4")),
)


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what}: {Path(cmd[0]).name} failed: {done.stderr.strip()[-800:]}")


# --- plain-XML networks ---------------------------------------------------------------------------------------


def _write(path: Path, root: ET.Element) -> Path:
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def _plain_oneway(nodes: ET.Element, edges: ET.Element) -> None:
    """A 3 x 3 grid of one-way streets, directions alternating, fed from the fringe."""
    n, step = 3, 180.0
    for i in range(-1, n + 1):
        for j in range(-1, n + 1):
            inner = 0 <= i < n and 0 <= j < n
            if not inner and not ((0 <= i < n) ^ (0 <= j < n)):
                continue  # the grid's corners
            ET.SubElement(nodes, "node", id=f"n{i}_{j}", x=f"{i * step}", y=f"{j * step}",
                          type="traffic_light" if inner else "priority")
    for j in range(n):  # horizontal streets: even rows run east, odd rows west
        cols = list(range(-1, n + 1)) if j % 2 == 0 else list(range(n, -2, -1))
        for a, b in zip(cols, cols[1:], strict=False):
            ET.SubElement(edges, "edge", id=f"h{j}_{a}_{b}", attrib={"from": f"n{a}_{j}", "to": f"n{b}_{j}"},
                          numLanes="2", speed="13.89")
    for i in range(n):  # vertical streets: even columns run north, odd columns south
        rows = list(range(-1, n + 1)) if i % 2 == 0 else list(range(n, -2, -1))
        for a, b in zip(rows, rows[1:], strict=False):
            ET.SubElement(edges, "edge", id=f"v{i}_{a}_{b}", attrib={"from": f"n{i}_{a}", "to": f"n{i}_{b}"},
                          numLanes="2", speed="13.89")


def _plain_roundabout(nodes: ET.Element, edges: ET.Element) -> None:
    """A four-arm roundabout whose entries are signalised (ring nodes are traffic lights)."""
    import math

    radius, arm = 30.0, 250.0
    ring = []
    for k in range(4):
        angle = math.pi / 2 * k
        rid = f"r{k}"
        ring.append(rid)
        ET.SubElement(nodes, "node", id=rid, x=f"{radius * math.cos(angle):.2f}", y=f"{radius * math.sin(angle):.2f}",
                      type="traffic_light")
        ET.SubElement(nodes, "node", id=f"o{k}", x=f"{(radius + arm) * math.cos(angle):.2f}",
                      y=f"{(radius + arm) * math.sin(angle):.2f}", type="priority")
        ET.SubElement(edges, "edge", id=f"in{k}", attrib={"from": f"o{k}", "to": rid}, numLanes="2", speed="13.89")
        ET.SubElement(edges, "edge", id=f"out{k}", attrib={"from": rid, "to": f"o{k}"}, numLanes="2", speed="13.89")
    for k in range(4):  # counter-clockwise ring
        ET.SubElement(edges, "edge", id=f"ring{k}", attrib={"from": ring[k], "to": ring[(k + 1) % 4]}, numLanes="2",
                      speed="8.33")


def _plain_merge(nodes: ET.Element, edges: ET.Element) -> None:
    """An arterial with a signalised on-ramp merge (two streams into one road) and a signal downstream."""
    for nid, x, y, kind in (("w", -400, 0, "priority"), ("m", 0, 0, "traffic_light"), ("ramp0", -300, -150, "priority"),
                            ("d", 300, 0, "traffic_light"), ("dn", 300, 250, "priority"), ("ds", 300, -250, "priority"),
                            ("e", 700, 0, "priority")):
        ET.SubElement(nodes, "node", id=nid, x=str(x), y=str(y), type=kind)
    for eid, a, b, lanes in (("main_in", "w", "m", 2), ("ramp", "ramp0", "m", 1), ("link", "m", "d", 2),
                             ("link_back", "d", "m", 2), ("main_back", "m", "w", 2), ("out", "d", "e", 2),
                             ("back_in", "e", "d", 2), ("north_in", "dn", "d", 1), ("north_out", "d", "dn", 1),
                             ("south_in", "ds", "d", 1), ("south_out", "d", "ds", 1)):
        ET.SubElement(edges, "edge", id=eid, attrib={"from": a, "to": b}, numLanes=str(lanes), speed="13.89")


_PLAIN = {"oneway": _plain_oneway, "roundabout": _plain_roundabout, "merge": _plain_merge}


# --- building ---------------------------------------------------------------------------------------------------


def build_net(source: Source, out_dir: Path) -> Path:
    """The network of ``source`` in ``out_dir`` (not for shared scenarios)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    net = out_dir / f"{source.name}.net.xml"
    common = ("--no-warnings", "true", "--output-file", str(net))
    if source.kind == "wheel":
        src = sumo_home() / source.path
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as fin, open(net, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copyfile(src, net)
    elif source.kind == "rebuilt":
        _run([sumo_binary("netconvert"), "--sumo-net-file", str(sumo_home() / source.path), *source.options,
              "--tls.default-type", "static", *common], source.name)
    elif source.kind == "netgenerate":
        _run([sumo_binary("netgenerate"), *source.options, "--seed", "7", "--tls.default-type", "static",
              "--no-turnarounds", "true", "--default.speed", "13.89", *common], source.name)
    elif source.kind == "plain":
        nodes, edges = ET.Element("nodes"), ET.Element("edges")
        _PLAIN[source.plain](nodes, edges)
        nod = _write(out_dir / f"{source.name}.nod.xml", nodes)
        edg = _write(out_dir / f"{source.name}.edg.xml", edges)
        _run([sumo_binary("netconvert"), "--node-files", str(nod), "--edge-files", str(edg),
              "--tls.default-type", "static", "--no-turnarounds", "true", *common], source.name)
    else:
        raise ValueError(f"{source.name}: kind {source.kind} has no network to build")
    return net


def _entry_edges(net: Path) -> int:
    """How many edges vehicles can enter the network on (fringe edges that allow passenger cars)."""
    import sumolib

    n = sumolib.net.readNet(str(net))
    count = 0
    for edge in n.getEdges():
        if edge.getFunction() or not edge.allows("passenger"):
            continue
        incoming = [e for e in edge.getFromNode().getIncoming() if e.getFromNode() is not edge.getToNode()]
        if not incoming:
            count += 1
    return count


def _types_file(path: Path) -> Path:
    root = ET.Element("additional")
    add_vehicle_mix(root)
    return _write(path, root)


def build_demand(name: str, net: Path, out_dir: Path, level: str) -> Path:
    """Random fringe-to-fringe trips at ``level`` and the ``.sumocfg`` that runs them."""
    rate, seed = LEVELS[level]
    entries = _entry_edges(net)
    types = _types_file(out_dir / "types.add.xml")
    trips = out_dir / f"{name}.trips.xml"
    # trips start on the fringe when the network has one; a closed network (no fringe) draws from every edge
    fringe = ("--fringe-factor", "max") if entries else ("--fringe-factor", "1")
    period = 3600.0 / (rate * max(entries, 4))
    _run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o", str(trips), "--seed", str(seed),
          "--begin", "0", "--end", str(DURATION_S - 300), "--period", f"{period:.4f}", *fringe,
          "--min-distance", "150", "--prefix", "v", "--vclass", "passenger", "--trip-attributes",
          'type="mix" departLane="best" departSpeed="max"', "--additional-file", str(types),
          "--validate", "-r", str(out_dir / f"{name}.rou.xml")], f"{name} demand")
    dropped = drop_unroutable_trips(net, trips, types, out_dir)
    if dropped:
        log.info("%s (%s): %d trips dropped that a vehicle class of the mix cannot drive", name, level, dropped)
    # ignore-route-errors stays as a safety net: a trip that still fails to route would otherwise stop the run
    return write_sumocfg(out_dir / f"{name}.sumocfg", net=net, routes=[trips], additionals=[types], end_s=DURATION_S,
                         processing={"time-to-teleport": "-1", "ignore-junction-blocker": "20",
                                     "collision.action": "warn", "ignore-route-errors": "true"})


def drop_unroutable_trips(net: Path, trips: Path, types: Path, work: Path) -> int:
    """Drop the trips some vehicle class of the mix cannot drive from origin to destination; returns how many.

    randomTrips validates a trip for passenger cars, and SUMO draws each
    vehicle's type from the mix only when it departs. A motorcycle or a bus
    drawn for a trip its class cannot drive (a car-only link, a turn it may
    not take) is inserted anyway under ``ignore-route-errors`` and stands at
    the end of its first edge for the rest of the run, blocking its lane:
    drt-osm held ten such vehicles, each the head of a queue of 40-80 that
    never moved, whatever the signals did. Each trip is routed once per class
    of the mix with ``duarouter``; a trip any class fails is dropped, so the
    type drawn per seed can always drive it.
    """
    tree = ET.parse(trips)
    root = tree.getroot()
    drivable = {t.get("id") for t in root.iter("trip")}
    for vtype, _vclass, _share, _attrs in VEHICLE_MIX:
        retyped = ET.parse(trips)
        for trip in retyped.getroot().iter("trip"):
            trip.set("type", vtype)
        probe_in = work / f"probe-{vtype}.trips.xml"
        probe_out = work / f"probe-{vtype}.rou.xml"
        retyped.write(probe_in, encoding="UTF-8", xml_declaration=True)
        _run([sumo_binary("duarouter"), "-n", str(net), "-r", str(probe_in), "--additional-files", str(types),
              "-o", str(probe_out), "--ignore-errors", "true", "--no-step-log", "true", "--no-warnings", "true"],
             f"{trips.name} routes for {vtype}")
        drivable &= {v.get("id") for v in ET.parse(probe_out).getroot().iter("vehicle")}
        for leftover in (probe_in, probe_out, probe_out.with_suffix(".alt.xml")):
            leftover.unlink(missing_ok=True)
    dropped = [t for t in root.findall("trip") if t.get("id") not in drivable]
    for trip in dropped:
        root.remove(trip)
    if dropped:
        tree.write(trips, encoding="UTF-8", xml_declaration=True)
    return len(dropped)


def build(out: Path, only: list[str] | None = None, levels: list[str] | None = None) -> list[dict[str, str]]:
    """Build the corpus into ``out``; returns (and writes to ``corpus.json``) its entries."""
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, str]] = []
    for source in SOURCES:
        if only and source.name not in only:
            continue
        if source.kind == "shared":
            cfg_dir = SHARED / source.path
            if not cfg_dir.is_dir():
                log.warning("skipping %s: %s not found", source.name, cfg_dir)
                continue
            configs = sorted(cfg_dir.glob("*.sumocfg"))
            if configs:
                entries.append({"name": source.name, "level": "own", "kind": source.kind, "what": source.what,
                                "sumocfg": str(configs[0])})
            continue
        net_dir = out / source.name
        net = build_net(source, net_dir)
        for level in levels or list(LEVELS):
            level_dir = out / f"{source.name}-{level}"
            level_dir.mkdir(parents=True, exist_ok=True)
            local_net = level_dir / net.name
            shutil.copyfile(net, local_net)
            cfg = build_demand(source.name, local_net, level_dir, level)
            entries.append({"name": source.name, "level": level, "kind": source.kind, "what": source.what,
                            "sumocfg": str(cfg)})
            log.info("built %s (%s)", source.name, level)
    (out / "corpus.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the corpus into --out")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--only", default="", help="comma list of network names")
    b.add_argument("--levels", default=",".join(LEVELS))
    sub.add_parser("list", help="list the networks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "list":
        for s in SOURCES:
            sys.stdout.write(f"{s.name:20} {s.kind:12} {s.what}\n")
        return 0
    entries = build(args.out, [n for n in args.only.split(",") if n] or None,
                    [lv for lv in args.levels.split(",") if lv])
    sys.stdout.write(f"{len(entries)} scenarios in {args.out} (corpus.json)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
