"""Cut a city into control regions, each with a SUMO sub-model whose check runs alone.

``traffic site partition`` (:func:`add_commands`) splits a site's network:

1. **Signals graph** (:func:`signal_graph`): one node per traffic light (a
   joined cluster is one node), an edge between two lights joined by a road
   whose interior junctions are unsignalised, weighted by the number of such
   roads.
2. **Regions** (:func:`partition_signals`): every declared corridor or
   coordinated group (the site's own list) is one region, kept whole because
   its offsets are planned together; the other signals are split into
   ``ceil(n / max_signals)`` balanced parts by recursive bisection: a
   coordinate split along the longer side of the part gives the sizes, then
   Kernighan-Lin (networkx) swaps signals between the halves to cut fewer
   roads. Every signal lands in exactly one region.
3. **Sub-models** (:func:`cut_region`): each region keeps every road touching
   its junctions (unsignalised junctions go to the region of the nearest
   light), so the roads between two regions appear in both: as an exit of
   one and an entry of the other. ``netconvert --keep-edges.explicit`` cuts
   the network; ``cutRoutes.py`` cuts the city's routes to the region, with
   the times vehicles crossed into it when the routes carry exit times (a
   ``--vehroute-output.exit-times`` run of the whole model, or of the real
   city: what its boundary detectors count), else extrapolated from free speed.
4. **Boundary flows** (:func:`boundary_flows`): vehicles entering each entry
   road in the region's model against the whole model's count on the same
   road (total and GEH per road), so the cut's error is measured, not assumed.

What the cut cannot carry: a queue that in the whole city spills back from a
neighbouring region into this one (the region's exits are free sinks) and
the neighbours' signal timing upstream (arrivals keep the times they had in
the run the routes came from). ``bench/city.py`` measures how much that changes the
gate's verdict on a 625-signal city.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulation.binaries import sumo_binary, sumo_home, sumo_tool
from traffic.errors import ScenarioError, SimulationError

log = logging.getLogger(__name__)

#: a road chain longer than this between two lights does not join them (m)
MAX_CHAIN_M = 2000.0
DEFAULT_MAX_SIGNALS = 16


# ---------------------------------------------------------------------------
# the signals graph


@dataclass(frozen=True)
class SignalNet:
    """What the partition needs from a network: lights, junction ownership, roads."""

    graph: Any                               # networkx.Graph over tls ids (attr pos, weight)
    node_tls: Mapping[str, str]              # junction id -> tls id (signalised junctions only)
    edges: Mapping[str, tuple[str, str]]     # road id -> (from junction, to junction), internal edges excluded
    node_pos: Mapping[str, tuple[float, float]]


def _nx() -> Any:
    try:
        import networkx
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SimulationError("partitioning needs networkx: pip install 'networkx>=3'") from exc
    return networkx


def signal_graph(net_file: Path) -> SignalNet:
    """Read ``net_file`` into the signals graph (see module docstring)."""
    nx = _nx()
    node_tls: dict[str, str] = {}
    node_pos: dict[str, tuple[float, float]] = {}
    edges: dict[str, tuple[str, str]] = {}
    lengths: dict[str, float] = {}
    tls_ids: list[str] = []
    for _ev, el in ET.iterparse(net_file, events=("end",)):
        if el.tag == "junction" and el.get("type") != "internal":
            jid = el.get("id", "")
            node_pos[jid] = (float(el.get("x", "0")), float(el.get("y", "0")))
            el.clear()
        elif el.tag == "edge" and el.get("function") != "internal":
            eid = el.get("id", "")
            edges[eid] = (el.get("from", ""), el.get("to", ""))
            lane = el.find("lane")
            lengths[eid] = float(lane.get("length", "0")) if lane is not None else 0.0
            el.clear()
        elif el.tag == "connection" and el.get("tl"):
            via_from = el.get("from", "")
            tl = el.get("tl", "")
            if via_from in edges:
                node_tls.setdefault(edges[via_from][1], tl)
        elif el.tag == "tlLogic":
            if el.get("id") not in tls_ids:
                tls_ids.append(el.get("id", ""))
            el.clear()
    # junctions of a joined cluster: the tl attribute on connections names the cluster; every junction
    # whose incoming roads carry its signal belongs to it (done above)
    graph = nx.Graph()
    for tls in tls_ids:
        members = [n for n, t in node_tls.items() if t == tls]
        xs = [node_pos[n][0] for n in members if n in node_pos] or [0.0]
        ys = [node_pos[n][1] for n in members if n in node_pos] or [0.0]
        graph.add_node(tls, pos=(sum(xs) / len(xs), sum(ys) / len(ys)))
    out_edges: dict[str, list[str]] = defaultdict(list)
    for eid, (a, _b) in edges.items():
        out_edges[a].append(eid)
    for eid, (a, b) in edges.items():
        start = node_tls.get(a)
        if start is None:
            continue
        # walk forward through unsignalised junctions until a light (bounded)
        stack = [(b, lengths[eid])]
        seen: set[str] = set()
        while stack:
            node, dist = stack.pop()
            owner = node_tls.get(node)
            if owner is not None:
                if owner != start:
                    w = graph.get_edge_data(start, owner, {}).get("weight", 0)
                    graph.add_edge(start, owner, weight=w + 1)
                continue
            if node in seen or dist > MAX_CHAIN_M:
                continue
            seen.add(node)
            for nxt in out_edges.get(node, ()):
                stack.append((edges[nxt][1], dist + lengths[nxt]))
    return SignalNet(graph=graph, node_tls=node_tls, edges=edges, node_pos=node_pos)


# ---------------------------------------------------------------------------
# regions


@dataclass(frozen=True)
class Region:
    region_id: str
    signals: tuple[str, ...]
    kind: str  # "corridor" (declared, kept whole) or "graph"
    name: str = ""


@dataclass(frozen=True)
class Partition:
    regions: tuple[Region, ...]
    cut_roads: int          # signal-graph roads between two regions
    total_roads: int

    def region_of(self) -> dict[str, str]:
        return {s: r.region_id for r in self.regions for s in r.signals}

    def to_dict(self) -> dict[str, Any]:
        return {"regions": [asdict(r) for r in self.regions], "cut_roads": self.cut_roads,
                "total_roads": self.total_roads}


def _bisect(nx: Any, graph: Any, nodes: list[str], k: int, seed: int) -> list[list[str]]:
    if k <= 1 or len(nodes) <= 1:
        return [sorted(nodes)]
    k1 = k // 2
    size1 = max(1, min(len(nodes) - 1, round(len(nodes) * k1 / k)))
    pos = {n: graph.nodes[n]["pos"] for n in nodes}
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    axis = 0 if (max(xs) - min(xs)) >= (max(ys) - min(ys)) else 1
    ordered = sorted(nodes, key=lambda n: (pos[n][axis], pos[n][1 - axis], n))
    a, b = set(ordered[:size1]), set(ordered[size1:])
    sub = graph.subgraph(nodes)
    if sub.number_of_edges():
        a, b = (set(x) for x in nx.community.kernighan_lin_bisection(sub, partition=(a, b), max_iter=20,
                                                                        weight="weight", seed=seed))
        a, b = _rebalance(sub, a, b, size1)
    return _bisect(nx, graph, list(a), k1, seed) + _bisect(nx, graph, list(b), k - k1, seed)


def _rebalance(graph: Any, a: set[str], b: set[str], size_a: int) -> tuple[set[str], set[str]]:
    """Move lights across until ``a`` has ``size_a`` (networkx's KL may drift): most-linked-across first."""
    def pull(src: set[str], dst: set[str]) -> None:
        best = max(sorted(src), key=lambda n: sum(graph[n][m].get("weight", 1) for m in graph[n] if m in dst)
                   - sum(graph[n][m].get("weight", 1) for m in graph[n] if m in src))
        src.discard(best)
        dst.add(best)
    while len(a) > size_a:
        pull(a, b)
    while len(a) < size_a:
        pull(b, a)
    return a, b


def partition_signals(net: SignalNet, *, max_signals: int = DEFAULT_MAX_SIGNALS,
                      corridors: Mapping[str, Sequence[str]] | None = None, seed: int = 0) -> Partition:
    """Regions of at most about ``max_signals`` lights; each declared corridor whole (see module docstring)."""
    nx = _nx()
    if max_signals < 1:
        raise SimulationError("max_signals must be at least 1")
    graph = net.graph
    known = set(graph.nodes)
    regions: list[Region] = []
    taken: dict[str, str] = {}
    for name, members in (corridors or {}).items():
        unknown = [m for m in members if m not in known]
        if unknown:
            raise ScenarioError(f"corridor {name!r}: unknown signals {unknown[:5]} (known: traffic lights of the net)")
        again = [m for m in members if m in taken]
        if again:
            raise ScenarioError(f"corridor {name!r}: {again[0]} is already in corridor {taken[again[0]]!r}")
        for m in members:
            taken[m] = name
        regions.append(Region(f"r{len(regions):03d}", tuple(members), "corridor", name))
    rest = [n for n in graph.nodes if n not in taken]
    if rest:
        k = math.ceil(len(rest) / max_signals)
        for part in _bisect(nx, graph, rest, k, seed):
            if part:
                regions.append(Region(f"r{len(regions):03d}", tuple(part), "graph"))
    region_of = {s: r.region_id for r in regions for s in r.signals}
    cut = sum(1 for a, b in graph.edges if region_of[a] != region_of[b])
    return Partition(tuple(regions), cut_roads=cut, total_roads=graph.number_of_edges())


def assign_junctions(net: SignalNet, partition: Partition) -> dict[str, str]:
    """Junction -> region: a light's junctions to its region, the others to the nearest light's (by road)."""
    nx = _nx()
    region_of = partition.region_of()
    g = nx.Graph()
    for a, b in net.edges.values():
        pa, pb = net.node_pos.get(a, (0, 0)), net.node_pos.get(b, (0, 0))
        g.add_edge(a, b, length=math.dist(pa, pb))
    out = {node: region_of[tls] for node, tls in net.node_tls.items()}
    sources = [n for n in out if n in g]
    if sources:
        _dist, paths = nx.multi_source_dijkstra(g, sources, weight="length")
        for node, path in paths.items():
            out.setdefault(node, out[path[0]])
    return out


def region_edges(net: SignalNet, junction_region: Mapping[str, str], region_id: str) -> tuple[list[str], list[str],
                                                                                                   list[str]]:
    """(kept roads, entry roads, exit roads) of a region: every road touching one of its junctions."""
    kept, entries, exits = [], [], []
    for eid, (a, b) in net.edges.items():
        ra, rb = junction_region.get(a), junction_region.get(b)
        if ra == region_id or rb == region_id:
            kept.append(eid)
            if rb == region_id and ra != region_id:
                entries.append(eid)
            elif ra == region_id and rb != region_id:
                exits.append(eid)
    return sorted(kept), sorted(entries), sorted(exits)


# ---------------------------------------------------------------------------
# sub-models


@dataclass(frozen=True)
class RegionModel:
    region: Region
    folder: Path
    sumocfg: Path
    net_file: Path
    route_file: Path
    edges: tuple[str, ...]
    entries: tuple[str, ...]   # roads into the region from outside (or from the network's fringe)
    exits: tuple[str, ...]
    vehicles: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"region": asdict(self.region), "folder": str(self.folder), "sumocfg": self.sumocfg.name,
                "edges": len(self.edges), "entries": list(self.entries), "exits": list(self.exits),
                "vehicles": self.vehicles}


def _tool_env() -> dict[str, str]:
    return {**os.environ, "SUMO_HOME": str(sumo_home())}


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SimulationError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def cut_region(net_file: Path, route_files: Sequence[Path], region: Region, edges: Sequence[str],
               entries: Sequence[str], exits: Sequence[str], out_dir: Path, *, begin: int, end: int,
               use_exit_times: bool = True, unset_tls: Sequence[str] = ()) -> RegionModel:
    """Write ``region``'s network, routes and ``.sumocfg`` to ``out_dir`` (see module docstring)."""
    from simulation.citygen import write_sumocfg

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = out_dir / "edges.txt"
    keep.write_text("\n".join(edges) + "\n")
    net = out_dir / f"{region.region_id}.net.xml"
    cmd = [sumo_binary("netconvert"), "-s", str(net_file), "--keep-edges.input-file", str(keep),
           "--no-warnings", "true", "-o", str(net)]
    if unset_tls:  # junctions of the neighbours' lights at the far end of a boundary road: not this region's
        cmd += ["--tls.unset", ",".join(sorted(unset_tls))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    _check(proc, f"netconvert cut of region {region.region_id}")
    routes = out_dir / f"{region.region_id}.rou.xml"
    cmd = [sys.executable, str(sumo_tool("route/cutRoutes.py")), str(net), *map(str, route_files),
           "--routes-output", str(routes), "--orig-net", str(net_file), "-d", "keep"]
    if not use_exit_times:
        cmd.append("--discard-exit-times")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=_tool_env())
    _check(proc, f"cutRoutes.py for region {region.region_id}")
    vehicles = _clip_departures(routes, begin, end)
    cfg = write_sumocfg(out_dir / f"{region.region_id}.sumocfg", net.name, routes.name, begin, end)
    whole, cut = _programs(net_file, set(region.signals)), _programs(net, set(region.signals))
    lost = sorted(set(region.signals) - set(cut))
    if lost:
        raise SimulationError(f"region {region.region_id}: the cut network lost the signals {lost[:5]}")
    changed = sorted(t for t in region.signals if cut[t] != whole[t])
    if changed:  # plans address signal groups by index: a rebuilt program would misapply every plan
        raise SimulationError(f"region {region.region_id}: netconvert changed the programs of {changed[:5]}")
    return RegionModel(region, out_dir, cfg, net, routes, tuple(edges), tuple(entries), tuple(exits), vehicles)


def _programs(net: Path, wanted: set[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """tls id -> its programs' phase states (to prove the cut kept every signal group's index)."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for _ev, el in ET.iterparse(net, events=("end",)):
        if el.tag == "tlLogic" and el.get("id") in wanted:
            tls = el.get("id", "")
            out[tls] = out.get(tls, ()) + tuple((el.get("programID", ""), p.get("state", "")) for p in el.iter("phase"))
            el.clear()
    return out


def _clip_departures(routes: Path, begin: int, end: int) -> int:
    """Drop cut vehicles that would enter after the window; count the rest (cutRoutes sorts by depart)."""
    tree = ET.parse(routes)
    root = tree.getroot()
    kept = 0
    for el in list(root):
        if el.tag in ("vehicle", "trip"):
            depart = float(el.get("depart", "0"))
            if depart >= end:
                root.remove(el)
            else:
                kept += 1
    tree.write(routes, encoding="UTF-8", xml_declaration=True)
    return kept


def city_routes_with_exit_times(scenario: Any, out_dir: Path, *, seed: int, begin: int, end: int,
                                plans: Mapping[str, Any] | None = None) -> tuple[Path, Any]:
    """Run the whole model once and keep its routes with the times each vehicle left each road.

    Cut with :func:`cut_region`, these give each region the arrivals the
    whole city delivered at its boundary (what boundary detectors count).
    """
    from simulation.runner import run

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    vehroutes = out_dir / "city.vehroutes.xml"
    kpis = run(scenario, seed=seed, plans=plans, begin=begin, end=end, workdir=out_dir,
               extra_options=("--vehroute-output", str(vehroutes), "--vehroute-output.exit-times", "true",
                              "--vehroute-output.write-unfinished", "true"))
    return _reached_only(vehroutes), kpis


def _reached_only(vehroutes: Path) -> Path:
    """Each route cut to the roads its vehicle reached in the run (unreached roads have exit time -1).

    ``cutRoutes.py`` extrapolates a free-flow time for a road the vehicle
    never reached; that would send a vehicle stuck upstream in the whole
    city into the region on time. Vehicles that never departed are dropped.
    """
    tree = ET.parse(vehroutes)
    root = tree.getroot()
    for veh in list(root):
        if veh.tag != "vehicle":
            continue
        route = veh.find("route")
        if route is None or route.get("exitTimes") is None or float(veh.get("depart", "-1")) < 0:
            root.remove(veh)
            continue
        edges = route.get("edges", "").split()
        times = route.get("exitTimes", "").split()
        reached = 1 + sum(1 for t in times[:-1] if float(t) >= 0)  # exit of road i = entry of road i + 1
        route.set("edges", " ".join(edges[:reached]))
        route.set("exitTimes", " ".join(times[:reached]))
    out = vehroutes.with_name(vehroutes.stem + ".reached.xml")
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return out


@dataclass(frozen=True)
class PartitionedSite:
    partition: Partition
    models: tuple[RegionModel, ...]
    junction_region: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.partition.to_dict(), "models": [m.to_dict() for m in self.models]}


def partition_site(net_file: Path, route_files: Sequence[Path], out_dir: Path, *, begin: int, end: int,
                   max_signals: int = DEFAULT_MAX_SIGNALS, corridors: Mapping[str, Sequence[str]] | None = None,
                   regions: Iterable[str] | None = None, use_exit_times: bool = True,
                   processes: int = 2) -> PartitionedSite:
    """Partition ``net_file`` and cut every region (or only ``regions``) into ``out_dir/<region>/``."""
    from concurrent.futures import ThreadPoolExecutor

    net = signal_graph(Path(net_file))
    part = partition_signals(net, max_signals=max_signals, corridors=corridors)
    owner = assign_junctions(net, part)
    wanted = set(regions) if regions is not None else None
    chosen = [r for r in part.regions if wanted is None or r.region_id in wanted]

    def one(region: Region) -> RegionModel:
        kept, entries, exits = region_edges(net, owner, region.region_id)
        ends = {n for e in kept for n in net.edges[e]}
        own = set(region.signals)
        neighbours = {n for n in ends if n in net.node_tls and net.node_tls[n] not in own}  # junction ids
        return cut_region(Path(net_file), route_files, region, kept, entries, exits, Path(out_dir) / region.region_id,
                          begin=begin, end=end, use_exit_times=use_exit_times, unset_tls=sorted(neighbours))

    with ThreadPoolExecutor(max_workers=max(1, processes)) as pool:  # the tools run as child processes
        models = tuple(pool.map(one, chosen))
    site = PartitionedSite(part, models, owner)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "partition.json").write_text(json.dumps(site.to_dict(), indent=1))
    return site


# ---------------------------------------------------------------------------
# boundary flows


@dataclass(frozen=True)
class BoundaryFlows:
    """Vehicles entering a region's entry roads: its sub-model against the whole model."""

    region_id: str
    whole: dict[str, float]
    region: dict[str, float]
    window_s: float

    @property
    def total_error(self) -> float:
        """(region - whole) / whole over all entry roads."""
        w = sum(self.whole.values())
        return (sum(self.region.values()) - w) / w if w > 0 else 0.0

    def geh(self) -> dict[str, float]:
        """GEH per entry road on hourly flows."""
        scale = 3600.0 / self.window_s
        out = {}
        for e in self.whole:
            m, c = self.region.get(e, 0.0) * scale, self.whole[e] * scale
            out[e] = math.sqrt(2 * (m - c) ** 2 / (m + c)) if m + c > 0 else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        g = self.geh()
        return {"region": self.region_id, "whole_veh": sum(self.whole.values()),
                "region_veh": sum(self.region.values()), "total_error": round(self.total_error, 4),
                "geh_max": round(max(g.values(), default=0.0), 2),
                "share_geh_below_5": round(sum(v < 5 for v in g.values()) / len(g), 3) if g else 1.0}


def _arrivals(data: Mapping[str, float]) -> float:
    """Vehicles that got onto a road: from upstream (``entered``) or inserted on it (``departed``)."""
    return float(data.get("entered", 0.0)) + float(data.get("departed", 0.0))


def boundary_flows(model: RegionModel, whole_edges: Mapping[str, Mapping[str, float]],
                   region_edges_data: Mapping[str, Mapping[str, float]], window_s: float) -> BoundaryFlows:
    """Compare arrivals (entered + departed) on ``model``'s entry roads.

    The edge data of the two runs, as :class:`SimResult.edges`.
    """
    whole = {e: _arrivals(whole_edges.get(e, {})) for e in model.entries}
    region = {e: _arrivals(region_edges_data.get(e, {})) for e in model.entries}
    return BoundaryFlows(model.region.region_id, whole, region, window_s)


# ---------------------------------------------------------------------------
# command line: traffic site partition


def _read_corridors(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read corridors file {path}: {exc}") from exc
    groups = data.get("corridors", data) if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise ScenarioError(f"{path}: expected {{\"corridors\": {{\"name\": [\"tls id\", ...]}}}}")
    return {str(k): [str(x) for x in v] for k, v in groups.items()}


def _cmd_partition(args: argparse.Namespace) -> int:
    from simulation.scenario import find_sumocfg

    cfg = find_sumocfg(args.scenario)
    root = ET.parse(cfg).getroot()
    base = cfg.parent
    net = base / root.find("input/net-file").get("value")  # type: ignore[union-attr]
    routes_el = root.find("input/route-files")
    routes = [base / p.strip() for p in (routes_el.get("value", "") if routes_el is not None else "").split(",")
              if p.strip()]
    if args.routes:
        routes = [Path(p) for p in args.routes.split(",")]
    begin_el, end_el = root.find("time/begin"), root.find("time/end")
    begin = int(float(begin_el.get("value", "0"))) if begin_el is not None else 0
    end = int(float(end_el.get("value", "3600"))) if end_el is not None else 3600
    site = partition_site(net, routes, args.out, begin=begin, end=end, max_signals=args.max_signals,
                          corridors=_read_corridors(args.corridors), processes=args.processes)
    sys.stdout.write(f"{len(site.partition.regions)} regions of {site.partition.total_roads and ''}"
                     f"{sum(len(r.signals) for r in site.partition.regions)} signals; "
                     f"{site.partition.cut_roads} of {site.partition.total_roads} signal-to-signal roads cut\n")
    for m in site.models:
        sys.stdout.write(f"  {m.region.region_id} {m.region.kind:8} {len(m.region.signals):3d} signals "
                         f"{len(m.entries):3d} entries {m.vehicles:6d} vehicles  {m.sumocfg}\n")
    sys.stdout.write(f"partition written to {Path(args.out) / 'partition.json'}\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``site partition`` on the ``traffic`` parser's subcommands (adds ``site`` if absent)."""
    site = subparsers.choices.get("site") if hasattr(subparsers, "choices") else None
    if site is None:
        site = subparsers.add_parser("site", help="site tools")
        site_sub = site.add_subparsers(dest="site_command", required=True)
    else:  # another module registered `site` already: add to its subcommands
        site_sub = next(a for a in site._actions if isinstance(a, argparse._SubParsersAction))
    p = site_sub.add_parser("partition", help="split the site's network into control regions with SUMO sub-models")
    p.add_argument("--scenario", type=Path, required=True, help=".sumocfg or a folder holding one")
    p.add_argument("--out", type=Path, required=True, help="folder for partition.json and one sub-model per region")
    p.add_argument("--max-signals", type=int, default=DEFAULT_MAX_SIGNALS, help="signals per graph region")
    p.add_argument("--corridors", type=Path, default=None,
                   help='JSON {"corridors": {"name": ["tls id", ...]}}: each kept whole as one region')
    p.add_argument("--routes", default=None, help="route files to cut (default: the scenario's; a "
                   "--vehroute-output.exit-times file gives the boundary arrival times)")
    p.add_argument("--processes", type=int, default=2)
    p.set_defaults(func=_cmd_partition)
