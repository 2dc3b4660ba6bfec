"""The report's corridor data from the database: the time-space diagram of the plans that ran.

``traffic report --corridor`` (and the demo) draw the time-space diagram from
what is stored, not from a hand-made example:

* **which plan ran**: the last ``COORD_PATTERN_CHANGE`` (Indiana 131, parameter
  = plan version) each controller logged at or before the end of the window,
  looked up in ``plans`` by (controller, version); the event carries the
  controller's own clock, so this also holds for a simulated run whose clock
  is not the wall clock. A version the centre never stored (the cabinet's own
  time-of-day plan) falls back to the plan the store calls ``active``, then
  to the plan in ``controllers.active_plan_id``;
* **where the intersections are**: ``controllers.spec`` (the stored
  ``IntersectionSpec``: ``position`` in network metres, the coordinated
  phase's ``approach_speed_mps``). The links between intersections are not
  stored, so the corridor order is the optimizer's ``bandwidth_chain`` when a
  plan explanation has one, else the order along the line through the two
  farthest-apart intersections; distances are straight lines between
  consecutive positions unless the caller passes the corridor's links
  (``traffic.intersection.Corridor.links``: distance and free speed);
* **the bands**: ``bandwidth_s`` / ``bandwidth_inbound_s`` from the plan
  explanation stored with the ``proposed`` event, when the optimizer set the
  offsets by bandwidth; otherwise the band the offsets actually give is
  measured (``controller.bandwidth.measured_bands``) and the caption says so.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from app.report import Corridor, CorridorLink
from traffic import db
from traffic.errors import ConfigError
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

COORD_PATTERN_CHANGE = 131   # Indiana: coordination pattern change (parameter: plan version)
DEFAULT_SPEED_MPS = 13.9     # 50 km/h when no spec says otherwise


def _plan_in_force(conn: Any, controller_id: str, end: datetime) -> tuple[TimingPlan | None, str, dict]:
    """The plan ``controller_id`` ran at ``end`` (body, where it came from, its explanation)."""
    row = conn.execute(
        "SELECT event_param FROM controller_events WHERE device_id = %s AND event_code = %s AND ts <= %s"
        " ORDER BY ts DESC LIMIT 1", (controller_id, COORD_PATTERN_CHANGE, end)).fetchone()
    found = None
    source = ""
    if row is not None:
        found = conn.execute("SELECT plan_id, body FROM plans WHERE controller_id = %s AND (version & 65535) = %s"
                             " ORDER BY version DESC LIMIT 1", (controller_id, int(row[0]))).fetchone()
        source = f"logged pattern {int(row[0])}"
    if found is None:
        found = conn.execute("SELECT plan_id, body FROM plans WHERE controller_id = %s AND state = 'active'"
                             " ORDER BY version DESC LIMIT 1", (controller_id,)).fetchone()
        source = "store: active"
    if found is None:
        found = conn.execute("SELECT p.plan_id, p.body FROM controllers c JOIN plans p ON p.plan_id = c.active_plan_id"
                             " WHERE c.controller_id = %s", (controller_id,)).fetchone()
        source = "controllers.active_plan_id"
    if found is None:
        return None, "", {}
    plan = TimingPlan.from_dict(found[1])
    ex = conn.execute("SELECT detail->'explanation' FROM plan_events WHERE plan_id = %s AND state = 'proposed'"
                      " ORDER BY id LIMIT 1", (found[0],)).fetchone()
    return plan, source, (ex[0] if ex and isinstance(ex[0], dict) else {})


def _order(ids: Sequence[str], positions: Mapping[str, tuple[float, float]],
           explanations: Mapping[str, Mapping[str, Any]],
           links: Sequence[tuple[str, str, float, float]]) -> list[str]:
    for ex in explanations.values():
        chain = ex.get("bandwidth_chain") or []
        if len(chain) > 1 and set(chain) >= set(ids):
            return [c for c in chain if c in ids]
    if links:  # walk the outbound links from the intersection nobody links into
        nxt = {u: d for u, d, _, _ in links if u in ids and d in ids}
        heads = [c for c in ids if c not in set(nxt.values())] or list(ids)
        order, cur = [], heads[0]
        while cur is not None and cur not in order:
            order.append(cur)
            cur = nxt.get(cur)
        if set(order) == set(ids):
            return order
    if len(ids) < 2:
        return list(ids)
    pts = {c: positions[c] for c in ids}
    a, b = max(((p, q) for p in ids for q in ids), key=lambda pq: math.dist(pts[pq[0]], pts[pq[1]]))
    (ax, ay), (bx, by) = pts[a], pts[b]
    if (bx, by) < (ax, ay):
        (ax, ay), (bx, by) = (bx, by), (ax, ay)
    return sorted(ids, key=lambda c: (pts[c][0] - ax) * (bx - ax) + (pts[c][1] - ay) * (by - ay))


def corridor_from_db(dsn: str, start: datetime, end: datetime, *, controllers: Sequence[str] | None = None,
                     links: Sequence[tuple[str, str, float, float]] = ()) -> tuple[Corridor | None, str]:
    """The time-space corridor of the plans in force at ``end`` and a note for the caption.

    ``None`` (with the reason) when fewer than one controller has a stored
    spec and plan. When the plans do not share one cycle (the corridor has
    not converged yet), each signal is drawn on its own cycle and there is no
    band (the note names the cycles).
    """
    del start  # the window's plans are those in force at its end (the steady state the report shows)
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT controller_id, spec FROM controllers WHERE spec IS NOT NULL"
                            + (" AND controller_id = ANY(%s)" if controllers else "") + " ORDER BY controller_id",
                            ((list(controllers),) if controllers else ())).fetchall()
        specs = {cid: spec for cid, spec in rows}
        plans: dict[str, TimingPlan] = {}
        sources: dict[str, str] = {}
        explanations: dict[str, dict] = {}
        for cid in specs:
            plan, source, ex = _plan_in_force(conn, cid, end)
            if plan is not None:
                plans[cid], sources[cid], explanations[cid] = plan, source, ex
    if not plans:
        return None, "no stored plan for any controller with a stored spec"
    notes = []
    cycles = Counter(round(p.patternCycleTime, 1) for p in plans.values())
    cycle = cycles.most_common(1)[0][0]
    common = len(cycles) == 1
    if not common:
        notes.append("no common cycle yet (" + ", ".join(f"{c} {p.patternCycleTime:.0f} s" for c, p in plans.items())
                     + "): each signal on its own cycle, no band")
    ids = list(plans)
    positions = {c: tuple(float(v) for v in (specs[c].get("position") or (0.0, 0.0)))[:2] for c in ids}
    order = _order(ids, positions, explanations, links)
    by_link = {(u, d): (dist, speed) for u, d, dist, speed in links}
    pos, speeds, travel = [0.0], [], []
    for up, down in zip(order, order[1:], strict=False):
        dist, speed = by_link.get((up, down), (math.dist(positions[up], positions[down]), 0.0))
        if speed <= 0:
            speed = _coord_speed(specs[down], plans[down])
        pos.append(pos[-1] + dist)
        speeds.append(speed)
        travel.append(dist / speed)
    speed = (pos[-1] / sum(travel)) if travel and sum(travel) > 0 else _coord_speed(specs[order[0]], plans[order[0]])
    greens = [plans[c].phase(plans[c].splitCoordPhase).green for c in order]
    offsets = [plans[c].patternOffsetTime for c in order]
    corridor_links = tuple(
        CorridorLink(c, round(p, 1), off, 0.0, g, cycle_s=None if common else plans[c].patternCycleTime)
        for c, p, off, g in zip(order, pos, offsets, greens, strict=True))
    bands = [(ex.get("bandwidth_s"), ex.get("bandwidth_inbound_s")) for c, ex in explanations.items() if c in ids]
    out_bw = next((b for b, _ in bands if b is not None), None)
    in_bw = next((b for _, b in bands if b is not None), None)
    if not common:
        out_bw = in_bw = None
    elif out_bw is not None and all(explanations[c].get("offset_method") == "bandwidth" for c in ids):
        notes.append("bands from the optimizer's plan explanation (controller/bandwidth.py)")
    else:
        from controller.bandwidth import measured_bands

        out_bw, in_bw = measured_bands(cycle, offsets, greens, travel, travel) if len(order) > 1 else (greens[0], None)
        notes.append("bands measured on the offsets in force (no bandwidth explanation for every plan)")
    notes.append("plans: " + ", ".join(f"{c} v{plans[c].version} ({sources[c]})" for c in order))
    return Corridor(cycle_s=float(cycle), speed_mps=float(speed), links=corridor_links,
                    bandwidth_s=float(out_bw) if out_bw is not None else None,
                    bandwidth_inbound_s=float(in_bw) if in_bw is not None else None,
                    note="; ".join(notes)), "; ".join(notes)


def _coord_speed(spec: Mapping[str, Any], plan: TimingPlan) -> float:
    for phase in spec.get("phases", ()):
        if phase.get("phase") == plan.splitCoordPhase and phase.get("approach_speed_mps"):
            return float(phase["approach_speed_mps"])
    return DEFAULT_SPEED_MPS


def before_after_from_summary(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per-intersection delay by run from a demo / closed-loop JSON summary, or a plain mapping.

    Accepts ``{"baseline": {"intersection_delay_s": {...}}, "adaptive": {...}}``
    (``traffic demo --json``) or ``{controller: {run: delay}}``.
    """
    if not isinstance(summary, Mapping):
        raise ConfigError("before/after JSON must be an object: a demo summary or {controller: {run: delay}}")
    runs = {k: v for k, v in summary.items() if isinstance(v, Mapping) and "intersection_delay_s" in v}
    if runs:
        names = {"baseline": "fixed-time", "adaptive": "closed loop"}
        out: dict[str, dict[str, float]] = {}
        for run, body in runs.items():
            for cid, delay in (body.get("intersection_delay_s") or {}).items():
                out.setdefault(cid, {})[names.get(run, run)] = float(delay)
        return out
    return {str(c): {str(r): float(v) for r, v in per.items()} for c, per in summary.items()
            if isinstance(per, Mapping)}
