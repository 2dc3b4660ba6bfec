"""Demand from detector counts: scale a scenario's flows to measured entry volumes.

The gate must judge a candidate plan on *today's* demand, not on the demand
the scenario was built with. The simple, robust approach used here: sum the
counts of the entry detectors (loops on lanes that start at the network
boundary) per entry edge, then rescale every flow that enters at that edge
so the edge carries the measured volume. The scenario's turning/destination
split and vehicle mix are kept, because each flow keeps its route and type.

Turning ratios calibrated from interior detectors too (SUMO's
``routeSampler.py``, with a GEH score) live in :mod:`simulation.calibrate`;
that is slower and used by replay, while the gate keeps this fast path.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from simulation.scenario import Scenario
from traffic.errors import SimulationError
from traffic.intersection import Corridor

log = logging.getLogger(__name__)

_EXP = re.compile(r"^\s*exp\(\s*([0-9.eE+-]+)\s*\)\s*$")


def entry_flows_from_counts(counts: Mapping[str, float], corridor: Corridor) -> dict[str, float]:
    """Entry edge -> veh/h from per-detector volumes (veh/h).

    Keys of ``counts`` are ``<controller_id>.<detector_id>`` (the SUMO loop
    id), or a bare ``detector_id`` when it is unique across the corridor.
    Counts of non-entry detectors are ignored (they measure turning traffic
    already counted upstream); an unknown key or a negative/non-finite value
    is an error, because silently dropping a count would bias the demand.
    """
    by_full: dict[str, tuple[str, bool]] = {}
    by_short: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for spec in corridor.intersections:
        for det in spec.detectors:
            value = (det.edge_id, det.entry)
            by_full[f"{spec.controller_id}.{det.detector_id}"] = value
            by_short[det.detector_id].append(value)
    flows: dict[str, float] = defaultdict(float)
    for key, volume in counts.items():
        if isinstance(volume, bool) or not isinstance(volume, (int, float)) or not math.isfinite(volume) or volume < 0:
            raise SimulationError(f"count for {key!r} must be a non-negative number of veh/h, got {volume!r}")
        if key in by_full:
            edge, entry = by_full[key]
        elif len(by_short.get(key, ())) == 1:
            edge, entry = by_short[key][0]
        elif key in by_short:
            raise SimulationError(f"detector id {key!r} is ambiguous; use <controller_id>.{key}")
        else:
            raise SimulationError(f"unknown detector {key!r}")
        if entry:
            flows[edge] += float(volume)
    return dict(flows)


def _rate_per_s(flow: ET.Element, begin: float, end: float) -> float:
    if flow.get("vehsPerHour") is not None:
        return float(flow.get("vehsPerHour", "0")) / 3600.0
    if flow.get("perHour") is not None:
        return float(flow.get("perHour", "0")) / 3600.0
    if flow.get("probability") is not None:
        return float(flow.get("probability", "0"))
    period = flow.get("period")
    if period is not None:
        m = _EXP.match(period)
        if m:
            return float(m.group(1))
        value = float(period)
        return 1.0 / value if value > 0 else 0.0
    if flow.get("number") is not None and end > begin:
        return float(flow.get("number", "0")) / (end - begin)
    raise SimulationError(f"flow {flow.get('id')} has no rate (vehsPerHour, period, probability or number)")


def _set_rate(flow: ET.Element, rate: float) -> None:
    """Write ``rate`` (veh/s) back in the flow's own style, keeping Poisson flows Poisson."""
    probability = flow.get("probability")
    poisson = _EXP.match(flow.get("period") or "") is not None
    for attr in ("vehsPerHour", "perHour", "probability", "period", "number"):
        flow.attrib.pop(attr, None)
    if probability is not None and rate <= 1.0:
        flow.set("probability", f"{rate:.6f}")
    elif poisson:
        flow.set("period", f"exp({rate:.6f})")
    else:
        flow.set("vehsPerHour", f"{rate * 3600.0:.3f}")


def _first_edge(flow: ET.Element, routes: Mapping[str, str]) -> str | None:
    if flow.get("from"):
        return flow.get("from")
    route = flow.find("route")
    edges = route.get("edges") if route is not None else routes.get(flow.get("route", ""))
    return edges.split()[0] if edges else None


def _start_time(el: ET.Element) -> float:
    try:
        return float(el.get("begin", el.get("depart", "0")))
    except ValueError:
        return 0.0  # triggered departures sort first; SUMO decides their time


def scale_routes(scenario: Scenario, edge_flows_veh_h: Mapping[str, float], out_path: Path, *,
                 begin: int, end: int) -> Path:
    """Write a route file whose flows in ``[begin, end)`` carry the measured entry volumes.

    Each flow of the scenario overlapping the window is clipped to it; flows
    entering at an edge in ``edge_flows_veh_h`` are scaled by
    measured / modelled volume of that edge (averaged over the window).
    Entry edges with measured volume but no modelled flow cannot be
    distributed without a destination split and raise an error. Vehicle
    types, distributions and named routes are copied; single vehicles and
    trips are kept unscaled.
    """
    if end <= begin:
        raise SimulationError(f"end ({end}) must be after begin ({begin})")
    out = ET.Element("routes")
    flows: list[tuple[ET.Element, str | None, float, float, float]] = []
    named_routes: dict[str, str] = {}
    singles: list[ET.Element] = []
    for route_file in scenario.route_files:
        try:
            root = ET.parse(route_file).getroot()
        except (ET.ParseError, OSError) as exc:
            raise SimulationError(f"cannot read route file {route_file}: {exc}") from exc
        for el in root:
            if el.tag in ("vType", "vTypeDistribution", "route", "routeDistribution"):
                if el.tag == "route" and el.get("id"):
                    named_routes[el.get("id", "")] = el.get("edges", "")
                out.append(el)
            elif el.tag == "flow":
                try:
                    f_begin = float(el.get("begin", "0"))
                    f_end = float(el.get("end", str(end)))
                    rate = _rate_per_s(el, f_begin, f_end)
                except ValueError as exc:
                    raise SimulationError(f"{route_file}: flow {el.get('id')} has a bad time or rate: {exc}") from exc
                lo, hi = max(f_begin, begin), min(f_end, end)
                if hi > lo:
                    flows.append((el, None, rate, lo, hi))
            elif el.tag in ("vehicle", "trip"):
                try:
                    depart = float(el.get("depart", "0"))
                except ValueError:  # "triggered", "containerTriggered", "begin": keep as is
                    singles.append(el)
                    continue
                if begin <= depart < end:
                    singles.append(el)
    flows = [(el, _first_edge(el, named_routes), rate, lo, hi) for el, _, rate, lo, hi in flows]
    modelled: dict[str, float] = defaultdict(float)  # vehicles in the window per entry edge
    for _el, edge, rate, lo, hi in flows:
        if edge is not None:
            modelled[edge] += rate * (hi - lo)
    window_h = (end - begin) / 3600.0
    factors: dict[str, float] = {}
    for edge, measured in edge_flows_veh_h.items():
        model_veh_h = modelled.get(edge, 0.0) / window_h
        if model_veh_h <= 0:
            if measured > 0:
                raise SimulationError(f"edge {edge} has measured flow {measured} veh/h but no modelled flow to scale")
            continue
        factors[edge] = measured / model_veh_h
    for el, edge, rate, lo, hi in flows:
        new_rate = rate * factors.get(edge or "", 1.0)
        if new_rate <= 0:
            continue
        _set_rate(el, new_rate)
        el.set("begin", f"{lo:.0f}" if lo == int(lo) else f"{lo}")
        el.set("end", f"{hi:.0f}" if hi == int(hi) else f"{hi}")
        out.append(el)
    for el in sorted(singles, key=lambda e: float(e.get("depart", "0"))):
        out.append(el)
    # SUMO wants departures sorted: flows by begin
    children = list(out)
    head = [c for c in children if c.tag not in ("flow", "vehicle", "trip")]
    tail = sorted((c for c in children if c.tag in ("flow", "vehicle", "trip")), key=_start_time)
    out[:] = head + tail
    ET.indent(out)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(out).write(out_path, encoding="UTF-8", xml_declaration=True)
    log.info("scaled %d flows on %d entry edges into %s", len(flows), len(factors), out_path)
    return out_path
