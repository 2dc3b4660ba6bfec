"""Demand per phase from stored detector counts, in passenger-car units.

Why pcu: Hanoi traffic is mostly motorcycles, and a motorcycle takes about a
quarter of a car's share of the stop line; sizing greens on raw vehicle
counts would give the motorcycle-heavy approaches several times the green
they need. Detectors that classify report ``motorcycle_count``; for the others
the configured default motorcycle share is applied.

What a loop can really see of filtering motorcycles: an inductive loop that
does not classify reports pulses, and motorcycles riding side by side over it
(or nose to tail inside one detection zone) make *one* pulse, so its count
under-states a motorcycle stream, and more the more they filter. Occupancy
does not depend on how pulses merge: the seconds the loop is covered grow
with the traffic over it, side by side or not. How many seconds one vehicle
covers depends on the loop (zone length) and the speeds at the site, so the
model calibrates it per loop and window, from the intervals where the loop is
lightly occupied (occupancy below ``LIGHT_OCCUPANCY_PCT``: vehicles rarely
overlap there, pulses are vehicles). In the busier intervals the loop then
saw ``occupied seconds / seconds per vehicle`` vehicles; the estimate takes
the larger of that and its pulses, at most ``occupancy_uplift_max`` times
the pulses (two abreast: 2.0; 1.0 turns it off). A queue standing over the
loop also covers it longer, which reads as more demand, and unserved demand
is what it is; the cap bounds it. Classifying loops keep their classes.
``bench/motorcycle_loops.py`` measures what a presence loop sees on the
sublane corridor (pulses against vehicles, occupancy against pcu).

The per-phase figure is the *critical* flow per lane: every detector watches
one lane, and a phase's green must serve its busiest lane, so the phase takes
the maximum over its detectors. A detector measures every phase that
releases its lane (:meth:`IntersectionSpec.detector_phases`, the same rule
the field's actuation uses).

The one SQL statement lives in :func:`fetch_totals`; everything else is pure
(:func:`estimate`) so it unit-tests without a database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from traffic.config import OptimizerSettings, Settings
from traffic.errors import StorageError, TrafficError
from traffic.intersection import IntersectionSpec

log = logging.getLogger(__name__)

_TOTALS_SQL = """
SELECT detector_id,
       sum(interval_s)::double precision                                   AS covered_s,
       coalesce(sum(vehicle_count) FILTER (WHERE motorcycle_count IS NOT NULL), 0)::double precision
                                                                            AS classified_vehicles,
       coalesce(sum(motorcycle_count), 0)::double precision                 AS motorcycles,
       coalesce(sum(vehicle_count) FILTER (WHERE motorcycle_count IS NULL), 0)::double precision
                                                                            AS unclassified_vehicles,
       coalesce(sum(occupancy_pct * interval_s / 100.0) FILTER (WHERE motorcycle_count IS NULL), 0)::double precision
                                                                            AS unclassified_occupied_s,
       coalesce(sum(occupancy_pct * interval_s / 100.0) FILTER (WHERE motorcycle_count IS NULL
                                                                  AND occupancy_pct < %(light)s), 0)::double precision
                                                                            AS light_occupied_s,
       coalesce(sum(vehicle_count) FILTER (WHERE motorcycle_count IS NULL
                                           AND occupancy_pct < %(light)s), 0)::double precision
                                                                            AS light_vehicles
  FROM detector_counts
 WHERE controller_id = %(controller_id)s
   AND interval_start >= %(start)s
   AND interval_start < %(end)s
 GROUP BY detector_id
"""


@dataclass(frozen=True)
class DetectorTotals:
    """What one detector counted over the window (seconds of data actually present)."""

    covered_s: float
    classified_vehicles: float = 0.0   # vehicles in intervals that carried a motorcycle count
    motorcycles: float = 0.0           # of those, motorcycles
    unclassified_vehicles: float = 0.0  # vehicles in intervals without a class split
    unclassified_occupied_s: float = 0.0  # seconds the loop was occupied in those intervals (0: not reported)
    light_occupied_s: float = 0.0  # of those, in lightly occupied intervals (< LIGHT_OCCUPANCY_PCT)
    light_vehicles: float = 0.0    # pulses in the lightly occupied intervals


#: below this occupancy (%) vehicles rarely overlap over a loop: its pulses are vehicles (calibration)
LIGHT_OCCUPANCY_PCT = 15.0
#: fewest pulses in lightly occupied intervals for a loop's seconds-per-vehicle to be trusted
MIN_CALIBRATION_VEHICLES = 30.0


def seen_vehicles(totals: DetectorTotals, uplift_max: float) -> float:
    """Vehicles a non-classifying loop saw in its unclassified intervals: pulses, or more from occupancy.

    Pure rule (module docstring): the loop's own seconds per vehicle from its
    lightly occupied intervals; occupied seconds over that is what it saw,
    never below its pulses and at most ``uplift_max`` times them.
    """
    pulses = totals.unclassified_vehicles
    if (uplift_max <= 1.0 or totals.light_vehicles < MIN_CALIBRATION_VEHICLES or totals.light_occupied_s <= 0
            or totals.unclassified_occupied_s <= 0):
        return pulses
    per_vehicle = totals.light_occupied_s / totals.light_vehicles
    if not per_vehicle > 0:
        return pulses
    return min(max(pulses, totals.unclassified_occupied_s / per_vehicle), uplift_max * pulses)


@dataclass(frozen=True)
class PhaseDemand:
    """Critical flow per lane for every phase of one controller (pcu/h/lane)."""

    controller_id: str
    start: datetime | None
    end: datetime | None
    phases: tuple[int, ...]
    flow_pcu_h_lane: tuple[float, ...]          # smoothed: what the optimizer uses
    raw_flow_pcu_h_lane: tuple[float, ...]      # this window only, before smoothing
    detector_flow_pcu_h: Mapping[str, float] = field(default_factory=dict)  # after substitution
    missing: tuple[str, ...] = ()               # detectors with no data in the window
    substituted: Mapping[str, str] = field(default_factory=dict)  # detector -> "phase-mean" / "previous" / "zero"
    phases_without_data: tuple[int, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)  # detector -> health state; its counts were not used

    def flow(self, phase: int) -> float:
        return self.flow_pcu_h_lane[self.phases.index(phase)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for plan explanations and the event log)."""
        return {
            "controller_id": self.controller_id,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "phases": list(self.phases),
            "flow_pcu_h_lane": [round(x, 1) for x in self.flow_pcu_h_lane],
            "raw_flow_pcu_h_lane": [round(x, 1) for x in self.raw_flow_pcu_h_lane],
            "missing": list(self.missing),
            "substituted": dict(self.substituted),
            "phases_without_data": list(self.phases_without_data),
            "failed": dict(self.failed),
        }


def detector_pcu_per_h(totals: DetectorTotals, settings: OptimizerSettings) -> float:
    """One detector's flow in pcu/h from its totals (classified where possible)."""
    if totals.covered_s <= 0:
        raise ValueError("no data")
    share = settings.motorcycle_share_default
    # pulses under-count motorcycles riding side by side; occupancy does not (module docstring)
    unclassified = seen_vehicles(totals, settings.occupancy_uplift_max)
    unclassified_pcu = unclassified * (share * settings.pcu_motorcycle + (1 - share) * settings.pcu_car)
    cars = totals.classified_vehicles - totals.motorcycles
    classified_pcu = totals.motorcycles * settings.pcu_motorcycle + cars * settings.pcu_car
    return (classified_pcu + unclassified_pcu) * 3600.0 / totals.covered_s


def estimate(spec: IntersectionSpec, totals: Mapping[str, DetectorTotals], settings: OptimizerSettings, *,
             previous: PhaseDemand | None = None, start: datetime | None = None,
             end: datetime | None = None, failed: Mapping[str, str] | None = None) -> PhaseDemand:
    """Turn per-detector totals into smoothed per-phase critical flows (pure).

    A detector without data is substituted by the mean of the same phase's
    detectors that have data, else by its own previous estimate, else it is
    left out (and the phase flagged if nothing at all is left). Then the phase
    flow is exponentially smoothed against the previous estimate with
    ``settings.smoothing_alpha`` so one odd window cannot swing the plan.
    A detector in ``failed`` (detector id -> health state, from
    ``detector_health``) is treated as having no data: a stuck-on loop would
    read as a saturated approach, a stuck-off one as an empty one.
    """
    failed = {d: s for d, s in (failed or {}).items() if any(x.detector_id == d for x in spec.detectors)}
    measured: dict[str, float] = {}
    for det in spec.detectors:
        if det.detector_id in failed:
            continue
        t = totals.get(det.detector_id)
        if t is not None and t.covered_s > 0:
            measured[det.detector_id] = detector_pcu_per_h(t, settings)
    missing = tuple(d.detector_id for d in spec.detectors if d.detector_id not in measured)
    flows: dict[str, float] = dict(measured)
    substituted: dict[str, str] = {}
    prev_det = previous.detector_flow_pcu_h if previous is not None else {}
    serves = {d.detector_id: spec.detector_phases(d) for d in spec.detectors}
    for det in spec.detectors:
        if det.detector_id in measured:
            continue
        peers = [measured[d.detector_id] for d in spec.detectors
                 if set(serves[d.detector_id]) & set(serves[det.detector_id]) and d.detector_id in measured]
        if peers:
            flows[det.detector_id] = sum(peers) / len(peers)
            substituted[det.detector_id] = "phase-mean"
        elif det.detector_id in prev_det:
            flows[det.detector_id] = prev_det[det.detector_id]
            substituted[det.detector_id] = "previous"
    if failed:
        log.warning("%s: counts of failed detectors not used: %s", spec.controller_id,
                    ", ".join(f"{d} ({s})" for d, s in sorted(failed.items())))
    if missing:
        log.warning("%s: no counts from detectors %s (%s)", spec.controller_id, ", ".join(missing),
                    ", ".join(f"{k}: {v}" for k, v in substituted.items()) or "no substitute")

    phases = tuple(p.phase for p in spec.phases)
    raw: list[float] = []
    smoothed: list[float] = []
    without: list[int] = []
    alpha = settings.smoothing_alpha
    for number in phases:
        values = [flows[d.detector_id] for d in spec.detectors
                  if number in serves[d.detector_id] and d.detector_id in flows]
        prev_value = _previous_flow(previous, number)
        if values:
            value = max(values)
            raw.append(value)
            smoothed.append(value if prev_value is None else alpha * value + (1 - alpha) * prev_value)
        else:
            without.append(number)
            value = prev_value if prev_value is not None else 0.0
            raw.append(value)
            smoothed.append(value)
    return PhaseDemand(spec.controller_id, start, end, phases, tuple(smoothed), tuple(raw),
                       flows, missing, substituted, tuple(without), dict(sorted(failed.items())))


def _previous_flow(previous: PhaseDemand | None, phase: int) -> float | None:
    if previous is None or phase not in previous.phases:
        return None
    return previous.flow(phase)


def fetch_totals(conn: psycopg.Connection, controller_id: str, start: datetime,
                 end: datetime) -> dict[str, DetectorTotals]:
    """Per-detector totals of ``detector_counts`` for intervals starting in ``[start, end)``."""
    try:
        rows = conn.execute(_TOTALS_SQL, {"controller_id": controller_id, "start": start, "end": end,
                                          "light": LIGHT_OCCUPANCY_PCT}).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read counts of {controller_id}: {exc}") from exc
    return {r[0]: DetectorTotals(*(float(x) for x in r[1:])) for r in rows}


def phase_demand(conn: psycopg.Connection, spec: IntersectionSpec, *, start: datetime, end: datetime,
                 settings: Settings | OptimizerSettings, previous: PhaseDemand | None = None) -> PhaseDemand:
    """Demand per phase for ``spec`` over ``[start, end)`` from the database.

    ``settings`` may be the whole :class:`Settings` or just its ``optimizer`` section.
    """
    if end <= start:
        raise TrafficError(f"empty demand window {start} .. {end}")
    optimizer = settings.optimizer if isinstance(settings, Settings) else settings
    totals = fetch_totals(conn, spec.controller_id, start, end)
    failed = fetch_failed(conn, spec.controller_id, end)
    return estimate(spec, totals, optimizer, previous=previous, start=start, end=end, failed=failed)


# A verdict older than this (by its updated_at, against the window end) is not trusted either way:
# with the health monitor stopped, yesterday's "stuck on" must not keep a repaired loop out for good.
HEALTH_MAX_AGE = "1 hour"

_FAILED_SQL = """
SELECT detector_id, state
  FROM detector_health
 WHERE controller_id = %(controller_id)s
   AND state <> 'ok'
   AND updated_at > %(end)s - %(max_age)s::interval
   AND updated_at <= %(end)s + %(max_age)s::interval
"""


def fetch_failed(conn: psycopg.Connection, controller_id: str, end: datetime) -> dict[str, str]:
    """Detectors of ``controller_id`` whose recent health verdict (``detector_health``, written by the
    ingest worker's monitor, ``sensors.monitor``) is not ok: detector id -> state."""
    try:
        rows = conn.execute(_FAILED_SQL, {"controller_id": controller_id, "end": end,
                                          "max_age": HEALTH_MAX_AGE}).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read detector health of {controller_id}: {exc}") from exc
    return {r[0]: r[1] for r in rows}
