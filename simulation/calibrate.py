"""Demand from stored detector counts with SUMO's ``routeSampler.py``, and its GEH score.

The gate's fast path (:func:`simulation.demand.scale_routes`) rescales the
scenario's flows at the entries only, keeping the modelled turning split.
Replaying a recorded period needs more: the interior detectors say how
traffic actually turned. ``routeSampler.py`` picks routes from a candidate
set (every route the scenario's demand uses) so that the number of vehicles
passing each counted edge matches the counts; the candidate set keeps the
result plausible (no route the scenario never uses).

Counting locations are edges: the detectors on the lanes of one approach
edge add up to that edge's count (an edge is used only when every one of its
detector lanes has data, so a dead loop cannot make an approach look empty).
Rates are per hour over the seconds actually covered by data, so a gap in
the records is not read as zero traffic.

The calibration score is the GEH statistic per counting location on hourly
flows, ``GEH = sqrt(2 (m - c)^2 / (m + c))`` with ``m`` the modelled and
``c`` the counted veh/h; GEH < 5 is the usual acceptance threshold (for
85 % of locations).
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from simulation.binaries import sumo_tool
from simulation.scenario import Scenario
from traffic.errors import ScenarioError, SimulationError, StorageError
from traffic.intersection import Corridor

log = logging.getLogger(__name__)

GEH_OK = 5.0
MIX_TYPE_ID = "traffic_counts_mix"

_COUNTS_SQL = """
SELECT controller_id, detector_id,
       sum(vehicle_count)::double precision AS vehicles,
       sum(interval_s)::double precision    AS covered_s
  FROM detector_counts
 WHERE interval_start >= %(start)s
   AND interval_start < %(end)s
   AND controller_id = ANY(%(controllers)s)
 GROUP BY controller_id, detector_id
"""


def geh(modelled_veh_h: float, counted_veh_h: float) -> float:
    """GEH statistic of two hourly flows (0 when both are 0)."""
    for v in (modelled_veh_h, counted_veh_h):
        if not math.isfinite(v) or v < 0:
            raise SimulationError(f"GEH needs non-negative hourly flows, got {modelled_veh_h}, {counted_veh_h}")
    total = modelled_veh_h + counted_veh_h
    return 0.0 if total == 0 else math.sqrt(2.0 * (modelled_veh_h - counted_veh_h) ** 2 / total)


@dataclass(frozen=True)
class StationFit:
    """One counting location: an approach edge and the detectors on its lanes."""

    edge_id: str
    detectors: tuple[str, ...]   # "<controller_id>.<detector_id>"
    counted_veh_h: float
    modelled_veh_h: float

    @property
    def geh(self) -> float:
        return geh(self.modelled_veh_h, self.counted_veh_h)

    def to_dict(self) -> dict[str, Any]:
        return {"edge": self.edge_id, "detectors": list(self.detectors), "counted_veh_h": round(self.counted_veh_h, 1),
                "modelled_veh_h": round(self.modelled_veh_h, 1), "geh": round(self.geh, 2)}


@dataclass(frozen=True)
class Calibration:
    """Demand built from counts (``route_file``) and how well it reproduces them."""

    route_file: Path
    stations: tuple[StationFit, ...]
    begin: int
    end: int

    @property
    def share_geh_ok(self) -> float:
        """Share of counting locations with GEH < 5 (1.0 when there are none)."""
        if not self.stations:
            return 1.0
        return sum(1 for s in self.stations if s.geh < GEH_OK) / len(self.stations)

    @property
    def max_geh(self) -> float:
        return max((s.geh for s in self.stations), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"route_file": str(self.route_file), "begin": self.begin, "end": self.end,
                "share_geh_ok": round(self.share_geh_ok, 3), "max_geh": round(self.max_geh, 2),
                "stations": [s.to_dict() for s in self.stations]}


# ---- counts -> edge flows (pure) --------------------------------------------------------------

def station_flows(corridor: Corridor, rates_veh_h: Mapping[str, float]) -> dict[str, tuple[float, tuple[str, ...]]]:
    """Edge -> (counted veh/h, its detectors) from per-detector rates keyed ``<controller>.<detector>``.

    Loops on one lane are averaged (they count the same vehicles); lanes of
    an edge add up. An edge with any detector lane lacking a rate is left
    out (unconstrained), never counted as empty. Unknown keys are an error.
    """
    lanes_of: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    known: set[str] = set()
    for spec in corridor.intersections:
        for det in spec.detectors:
            key = f"{spec.controller_id}.{det.detector_id}"
            known.add(key)
            if det.edge_id:
                lanes_of[det.edge_id][det.lane_id].append(key)
    unknown = sorted(set(rates_veh_h) - known)
    if unknown:
        raise SimulationError(f"counts for unknown detectors: {', '.join(unknown[:5])}")
    out: dict[str, tuple[float, tuple[str, ...]]] = {}
    for edge, lanes in sorted(lanes_of.items()):
        total = 0.0
        complete = True
        keys: list[str] = []
        for _lane, dets in sorted(lanes.items()):
            values = [rates_veh_h[k] for k in dets if k in rates_veh_h]
            if not values:
                complete = False
                break
            total += sum(values) / len(values)
            keys += [k for k in dets if k in rates_veh_h]
        if complete:
            out[edge] = (total, tuple(sorted(keys)))
    return out


def read_rates(conn: psycopg.Connection, corridor: Corridor, start: datetime, end: datetime) -> dict[str, float]:
    """Per-detector veh/h over ``[start, end)`` from ``detector_counts`` (rate over the covered seconds)."""
    if end <= start:
        raise SimulationError(f"empty count window {start} .. {end}")
    controllers = [s.controller_id for s in corridor.intersections]
    try:
        rows = conn.execute(_COUNTS_SQL, {"start": start, "end": end, "controllers": controllers}).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read detector counts: {exc}") from exc
    known = {f"{s.controller_id}.{d.detector_id}" for s in corridor.intersections for d in s.detectors}
    rates: dict[str, float] = {}
    for controller_id, detector_id, vehicles, covered_s in rows:
        key = f"{controller_id}.{detector_id}"
        if key not in known:
            log.warning("counts for %s match no detector of the scenario; ignored", key)
            continue
        if covered_s and covered_s > 0:
            rates[key] = float(vehicles) * 3600.0 / float(covered_s)
    return rates


def read_binned_rates(conn: psycopg.Connection, corridor: Corridor, start: datetime, end: datetime,
                      bin_s: int) -> list[dict[str, float]]:
    """Per-detector veh/h in equal bins of about ``bin_s`` splitting ``[start, end)``.

    The bins are those :func:`write_edgedata` uses.
    """
    if bin_s <= 0:
        raise SimulationError(f"bin_s must be positive, got {bin_s}")
    total = (end - start).total_seconds()
    if total <= 0:
        raise SimulationError(f"empty count window {start} .. {end}")
    n = max(1, round(total / bin_s))
    width = timedelta(seconds=total / n)
    return [read_rates(conn, corridor, start + k * width, start + (k + 1) * width) for k in range(n)]


# ---- candidate routes ------------------------------------------------------------------------

def candidate_routes(scenario: Scenario, out_path: Path) -> tuple[Path, dict[str, float]]:
    """Write every distinct route of the scenario's demand; return it and the vehicle-type shares.

    Routes are taken from ``<route>`` elements (named or inside vehicles and
    flows); trips and flows given as ``from``/``to`` are routed on the
    network's shortest path. Type shares weigh each vehicle/flow by its
    count in the scenario, so the built demand keeps the scenario's mix.
    """
    import sumolib

    routes: dict[tuple[str, ...], None] = {}
    types: dict[str, float] = defaultdict(float)
    named: dict[str, tuple[str, ...]] = {}
    net = None
    for route_file in scenario.route_files:
        try:
            for _ev, el in ET.iterparse(route_file, events=("end",)):
                if el.tag == "route" and el.get("id") and el.get("edges"):
                    named[el.get("id", "")] = tuple(el.get("edges", "").split())
                if el.tag not in ("vehicle", "flow", "trip"):
                    continue
                edges: tuple[str, ...] = ()
                inner = el.find("route")
                if inner is not None and inner.get("edges"):
                    edges = tuple(inner.get("edges", "").split())
                elif el.get("route") in named:
                    edges = named[el.get("route", "")]
                elif el.get("from") and el.get("to"):
                    if net is None:
                        net = sumolib.net.readNet(str(scenario.net_file))
                    try:
                        path, _cost = net.getShortestPath(net.getEdge(el.get("from")), net.getEdge(el.get("to")))
                    except KeyError as exc:
                        raise ScenarioError(f"{route_file}: {el.tag} {el.get('id')} uses unknown edge {exc}") from exc
                    edges = tuple(e.getID() for e in path) if path else ()
                if edges:
                    routes[edges] = None
                    types[el.get("type", "")] += flow_vehicles(el)
                el.clear()
        except ET.ParseError as exc:
            raise ScenarioError(f"cannot read route file {route_file}: {exc}") from exc
    if not routes:
        raise ScenarioError(f"{scenario.sumocfg.name}: no usable routes in the demand to sample from")
    root = ET.Element("routes")
    for i, edges in enumerate(routes):
        ET.SubElement(root, "route", id=f"cand{i}", edges=" ".join(edges))
    ET.indent(root)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out_path, encoding="UTF-8", xml_declaration=True)
    total = sum(types.values())
    return out_path, {t: w / total for t, w in types.items()} if total > 0 else {}


def flow_vehicles(el: ET.Element) -> float:
    """Vehicles a ``<flow>`` emits over its own begin..end (1 for a vehicle or trip; 1 when unreadable)."""
    if el.tag != "flow":
        return 1.0
    try:
        begin, end = float(el.get("begin", "0")), float(el.get("end", "3600"))
        if el.get("number"):
            return float(el.get("number", "0"))
        for attr in ("vehsPerHour", "perHour"):
            if el.get(attr):
                return float(el.get(attr, "0")) * (end - begin) / 3600.0
        if el.get("probability"):
            return float(el.get("probability", "0")) * (end - begin)
        period = el.get("period", "")
        if period.startswith("exp("):
            return float(period[4:-1]) * (end - begin)
        if period:
            return (end - begin) / float(period)
    except ValueError:
        pass
    return 1.0


def _type_elements(scenario: Scenario) -> list[ET.Element]:
    out: list[ET.Element] = []
    for route_file in scenario.route_files:
        try:
            root = ET.parse(route_file).getroot()
        except (ET.ParseError, OSError) as exc:
            raise ScenarioError(f"cannot read route file {route_file}: {exc}") from exc
        out += [el for el in root if el.tag in ("vType", "vTypeDistribution")]
    return out


# ---- routeSampler ----------------------------------------------------------------------------

def write_edgedata(flows_veh_h: Mapping[str, float] | Sequence[Mapping[str, float]], path: Path, *, begin: int,
                   end: int) -> Path:
    """The edgeData counts file routeSampler reads: vehicles entering each edge per interval.

    One mapping: one interval ``[begin, end)``. A sequence of mappings: that
    many equal intervals splitting ``[begin, end)`` (the time profile of the
    counts), each with the edges known in it.
    """
    bins = [flows_veh_h] if isinstance(flows_veh_h, Mapping) else list(flows_veh_h)
    if not bins:
        raise SimulationError("no counts to write")
    root = ET.Element("data")
    width = (end - begin) / len(bins)
    for k, flows in enumerate(bins):
        lo, hi = begin + k * width, begin + (k + 1) * width
        interval = ET.SubElement(root, "interval", id=f"counts{k}", begin=f"{lo:g}", end=f"{hi:g}")
        for edge in sorted(flows):
            ET.SubElement(interval, "edge", id=edge, entered=str(int(round(flows[edge] * width / 3600.0))))
    ET.indent(root)
    path = Path(path)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def modelled_edge_flows(route_file: Path, *, begin: int, end: int) -> dict[str, float]:
    """Edge -> veh/h of the vehicles and flows in ``route_file`` (each vehicle counted once per edge)."""
    counts: dict[str, float] = defaultdict(float)
    named: dict[str, list[str]] = {}
    try:
        for _ev, el in ET.iterparse(route_file, events=("end",)):
            if el.tag == "route" and el.get("id"):
                named[el.get("id", "")] = el.get("edges", "").split()
            if el.tag not in ("vehicle", "flow"):
                continue
            inner = el.find("route")
            edges = inner.get("edges", "").split() if inner is not None else named.get(el.get("route", ""), [])
            n = flow_vehicles(el)
            for e in dict.fromkeys(edges):
                counts[e] += n
            el.clear()
    except (ET.ParseError, OSError) as exc:
        raise SimulationError(f"cannot read sampled routes {route_file}: {exc}") from exc
    hours = (end - begin) / 3600.0
    return {e: c / hours for e, c in counts.items()}


def demand_from_counts(scenario: Scenario, rates_veh_h: Mapping[str, float], out_dir: Path, *, begin: int,
                       end: int, seed: int = 42, binned_rates: Sequence[Mapping[str, float]] = ()) -> Calibration:
    """Build a route file for ``[begin, end)`` matching per-detector rates; score it with GEH.

    ``rates_veh_h`` are keyed ``<controller_id>.<detector_id>`` (see
    :func:`read_rates`) and cover the whole window; the GEH score is on
    them. ``binned_rates`` (see :func:`read_binned_rates`), when given,
    split the window into equal intervals so the demand follows the counts'
    time profile (a peak stays a peak). Raises SimulationError when no
    counting location has data (there would be nothing to calibrate on).
    """
    if end <= begin:
        raise SimulationError(f"end ({end}) must be after begin ({begin})")
    stations = station_flows(scenario.corridor, rates_veh_h)
    if not stations:
        raise SimulationError("no counting location has data for the window: cannot build demand from counts")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidates, shares = candidate_routes(scenario, out_dir / "candidates.rou.xml")
    if binned_rates:
        per_bin = [{e: v for e, (v, _k) in station_flows(scenario.corridor, b).items()} for b in binned_rates]
        counts = write_edgedata(per_bin, out_dir / "counts.edgedata.xml", begin=begin, end=end)
    else:
        counts = write_edgedata({e: v for e, (v, _k) in stations.items()}, out_dir / "counts.edgedata.xml",
                                begin=begin, end=end)
    sampled = out_dir / "sampled.rou.xml"
    attrs = 'departLane="best" departSpeed="max"'
    known_types = [t for t in shares if t]
    if len(known_types) == 1 and shares[known_types[0]] > 0.999:
        attrs += f' type="{known_types[0]}"'
    elif known_types and "" not in shares:
        attrs += f' type="{MIX_TYPE_ID}"'
    cmd = [sys.executable, str(sumo_tool("routeSampler.py")), "-r", str(candidates), "-d", str(counts),
           "--edgedata-attribute", "entered", "-o", str(sampled), "-b", str(begin), "-e", str(end),
           "--seed", str(seed), "--optimize", "full", "--write-flows", "poisson", "-a", attrs,
           "--prefix", "cnt"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimulationError(f"routeSampler could not run: {exc}") from exc
    if proc.returncode != 0 or not sampled.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise SimulationError(f"routeSampler failed (exit {proc.returncode}):\n{tail}")
    _add_types(sampled, _type_elements(scenario), shares if f'type="{MIX_TYPE_ID}"' in attrs else {})
    modelled = modelled_edge_flows(sampled, begin=begin, end=end)
    fits = tuple(StationFit(edge, keys, counted, modelled.get(edge, 0.0))
                 for edge, (counted, keys) in sorted(stations.items()))
    calibration = Calibration(route_file=sampled.resolve(), stations=fits, begin=begin, end=end)
    log.info("demand from counts: %d locations, %.0f %% with GEH < 5, max GEH %.1f", len(fits),
             100 * calibration.share_geh_ok, calibration.max_geh)
    return calibration


def _add_types(route_file: Path, type_elements: Iterable[ET.Element], shares: Mapping[str, float]) -> None:
    """Put the scenario's vehicle types (and the mix distribution) in front of the sampled routes."""
    tree = ET.parse(route_file)
    root = tree.getroot()
    head = list(type_elements)
    if shares:
        head.append(ET.Element("vTypeDistribution", id=MIX_TYPE_ID, vTypes=" ".join(shares),
                               probabilities=" ".join(f"{v:.6f}" for v in shares.values())))
    for i, el in enumerate(head):
        root.insert(i, el)
    ET.indent(root)
    tree.write(route_file, encoding="UTF-8", xml_declaration=True)
