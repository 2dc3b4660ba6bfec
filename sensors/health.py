"""Detector health from the stored counts: ok, stuck on, stuck off, chattering, missing.

A broken loop feeds the optimizer garbage: a stuck-on loop looks like a
saturated approach, a stuck-off one like an empty one. The demand estimator
and the dashboards use this to ignore or flag such detectors.

The classification is pure (:func:`classify_controller` over
:class:`Sample` series) and unit/property tested; :func:`assess` only loads
the window from the database and :func:`store_health` writes the result.

Per interval a detector reading gets a label; a fault becomes the state only
after it persists for a number of consecutive intervals (one odd minute is
traffic, five are a fault), and any other reading ends it. ``since`` is the
start of the interval where the current state began, as far as the window
shows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from sensors._conn import ConnOrDsn, connection
from traffic.errors import StorageError

log = logging.getLogger(__name__)

OK = "ok"
STUCK_ON = "stuck_on"
STUCK_OFF = "stuck_off"
CHATTERING = "chattering"
MISSING = "missing"
STATES = (OK, STUCK_ON, STUCK_OFF, CHATTERING, MISSING)


@dataclass(frozen=True)
class Sample:
    """One stored interval of one detector."""

    interval_start: datetime
    interval_s: int
    count: int
    occupancy_pct: float

    @property
    def interval_end(self) -> datetime:
        return self.interval_start + timedelta(seconds=self.interval_s)


@dataclass(frozen=True)
class HealthRules:
    """Thresholds. Defaults suit 60 s intervals on urban loops with many motorcycles."""

    stuck_on_occupancy_pct: float = 95.0   # "always occupied"
    stuck_on_intervals: int = 3
    stuck_off_intervals: int = 5           # zero counts while peers count, this many intervals running
    stuck_off_max_occupancy_pct: float = 0.5
    peer_min_count: int = 3                # a peer "is counting" with at least this many vehicles
    chatter_max_rate_veh_h: float = 7200.0  # 2 actuations a second: no lane carries that, even motorcycles
    chatter_min_on_time_s: float = 0.1     # mean on-time per actuation below this is a bouncing relay
    chatter_min_count: int = 10            # the on-time test needs enough actuations to mean anything
    chatter_intervals: int = 2
    missing_intervals: int = 3             # no report for this many interval lengths

    def required(self, label: str) -> int:
        return {STUCK_ON: self.stuck_on_intervals, STUCK_OFF: self.stuck_off_intervals,
                CHATTERING: self.chatter_intervals}[label]


@dataclass(frozen=True)
class DetectorHealth:
    """Verdict for one detector."""

    controller_id: str
    detector_id: str
    state: str
    since: datetime | None
    detail: str = ""


# ---------------------------------------------------------------------------
# pure classification

def interval_label(sample: Sample, peer_counts: Iterable[int], rules: HealthRules = HealthRules()) -> str:
    """Label one reading: which fault it looks like on its own (or OK)."""
    count, occ, secs = sample.count, sample.occupancy_pct, max(1, sample.interval_s)
    if count > 0:
        rate = count * 3600.0 / secs
        mean_on_s = occ / 100.0 * secs / count
        if rate > rules.chatter_max_rate_veh_h or (
                count >= rules.chatter_min_count and mean_on_s < rules.chatter_min_on_time_s):
            return CHATTERING
    if occ >= rules.stuck_on_occupancy_pct:
        return STUCK_ON
    if count == 0 and occ <= rules.stuck_off_max_occupancy_pct and any(
            c >= rules.peer_min_count for c in peer_counts):
        return STUCK_OFF
    return OK


def classify_detector(
    controller_id: str,
    detector_id: str,
    samples: Sequence[Sample],
    now: datetime,
    *,
    peer_counts: Mapping[datetime, Sequence[int]] | None = None,
    rules: HealthRules = HealthRules(),
    window_start: datetime | None = None,
) -> DetectorHealth:
    """Health of one detector from its readings (any order) and its peers' counts per interval start."""
    series = sorted((s for s in samples if s.interval_start <= now), key=lambda s: s.interval_start)
    if not series:
        return DetectorHealth(controller_id, detector_id, MISSING, window_start, "no report in the window")
    last = series[-1]
    silent_s = (now - last.interval_end).total_seconds()
    if silent_s >= rules.missing_intervals * max(1, last.interval_s):
        return DetectorHealth(controller_id, detector_id, MISSING, last.interval_end,
                              f"no report for {silent_s:.0f} s")

    peers = peer_counts or {}
    state, since = OK, series[0].interval_start
    run_label, run_start, run_len = OK, series[0].interval_start, 0
    for s in series:
        label = interval_label(s, peers.get(s.interval_start, ()), rules)
        if label == run_label:
            run_len += 1
        else:
            run_label, run_start, run_len = label, s.interval_start, 1
        if label == OK or run_len < rules.required(label):
            if state != OK:
                state, since = OK, s.interval_start
        elif state != label:
            state, since = label, run_start
    return DetectorHealth(controller_id, detector_id, state, since, _detail(state, run_len, rules))


def _detail(state: str, run_len: int, rules: HealthRules) -> str:
    if state == STUCK_ON:
        return f"occupancy >= {rules.stuck_on_occupancy_pct:g} pct for {run_len} intervals"
    if state == STUCK_OFF:
        return f"zero counts for {run_len} intervals while peers counted >= {rules.peer_min_count}"
    if state == CHATTERING:
        return f"implausible counts for occupancy for {run_len} intervals"
    return ""


def classify_controller(
    controller_id: str,
    samples: Mapping[str, Sequence[Sample]],
    now: datetime,
    *,
    groups: Mapping[str, Hashable] | None = None,
    expected: Iterable[str] = (),
    rules: HealthRules = HealthRules(),
    window_start: datetime | None = None,
) -> list[DetectorHealth]:
    """Health of every detector of one controller, sorted by detector id.

    ``groups`` maps a detector to its peer group (its phase, from the
    intersection spec); detectors without a group are peers of every other
    ungrouped detector of the controller. ``expected`` lists detectors that
    should report (from the spec), so a dead one with no rows is still found.
    """
    groups = groups or {}
    detectors = sorted(set(samples) | set(expected))
    members: dict[Hashable, list[str]] = defaultdict(list)
    for det in detectors:
        members[groups.get(det)].append(det)
    counts_at: dict[str, dict[datetime, int]] = {
        det: {s.interval_start: s.count for s in samples.get(det, ())} for det in detectors
    }
    result = []
    for det in detectors:
        peers: dict[datetime, list[int]] = defaultdict(list)
        for other in members[groups.get(det)]:
            if other != det:
                for start, count in counts_at[other].items():
                    peers[start].append(count)
        result.append(classify_detector(controller_id, det, samples.get(det, ()), now, peer_counts=peers,
                                        rules=rules, window_start=window_start))
    return result


# ---------------------------------------------------------------------------
# database

def assess(
    conn_or_dsn: ConnOrDsn,
    controller_id: str | None,
    now: datetime,
    window: timedelta = timedelta(hours=1),
    rules: HealthRules = HealthRules(),
) -> list[DetectorHealth]:
    """Classify detectors of one controller (or all) from ``detector_counts`` in ``[now - window, now]``.

    Peer groups and the list of expected detectors come from
    ``controllers.spec`` (the intersection spec) when it is recorded.
    """
    if now.tzinfo is None:
        raise StorageError("assess: now must be timezone-aware")
    start = now - window
    where = sql.SQL("interval_start >= %s AND interval_start <= %s")
    params: list[Any] = [start, now]
    spec_where = sql.SQL("spec IS NOT NULL")
    spec_params: list[Any] = []
    if controller_id is not None:
        where += sql.SQL(" AND controller_id = %s")
        params.append(controller_id)
        spec_where += sql.SQL(" AND controller_id = %s")
        spec_params.append(controller_id)
    with connection(conn_or_dsn, "detector health query") as conn:
        rows = conn.execute(
            sql.SQL("SELECT controller_id, detector_id, interval_start, interval_s, vehicle_count, occupancy_pct"
                    " FROM detector_counts WHERE {} ORDER BY controller_id, detector_id, interval_start").format(where),
            params,
        ).fetchall()
        specs = conn.execute(sql.SQL("SELECT controller_id, spec FROM controllers WHERE {}").format(spec_where),
                             spec_params).fetchall()

    by_controller: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for cid, det, t0, secs, count, occ in rows:
        by_controller[cid][det].append(Sample(t0, secs, count, float(occ)))
    layout = {cid: _spec_detectors(spec) for cid, spec in specs}
    result: list[DetectorHealth] = []
    for cid in sorted(set(by_controller) | set(layout)):
        groups = layout.get(cid, {})
        result.extend(classify_controller(cid, by_controller.get(cid, {}), now, groups=groups,
                                          expected=groups.keys(), rules=rules, window_start=start))
    return result


def _spec_detectors(spec: Any) -> dict[str, Hashable]:
    """detector_id -> phase from a stored IntersectionSpec (tolerant of partial specs)."""
    out: dict[str, Hashable] = {}
    if isinstance(spec, dict):
        for d in spec.get("detectors") or ():
            if isinstance(d, dict) and isinstance(d.get("detector_id"), str):
                out[d["detector_id"]] = d.get("phase")
    return out


def store_health(conn_or_dsn: ConnOrDsn, items: Iterable[DetectorHealth], now: datetime | None = None) -> int:
    """Upsert verdicts into ``detector_health``; return how many rows were written.

    While the state stays the same the earlier ``since`` is kept, because the
    classifier only sees its window and would otherwise move a long fault's
    start forward on every run.
    """
    items = list(items)
    if not items:
        return 0
    at = now or datetime.now(UTC)
    with connection(conn_or_dsn, "store detector health") as conn:
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO detector_health (controller_id, detector_id, state, since, updated_at, detail)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (controller_id, detector_id) DO UPDATE SET
                    since = CASE WHEN detector_health.state = EXCLUDED.state
                                 THEN LEAST(detector_health.since, EXCLUDED.since) ELSE EXCLUDED.since END,
                    state = EXCLUDED.state,
                    updated_at = EXCLUDED.updated_at,
                    detail = EXCLUDED.detail
                """,
                [(h.controller_id, h.detector_id, h.state, h.since, at, h.detail) for h in items],
            )
    return len(items)


def failed_detectors(conn_or_dsn: ConnOrDsn, controller_id: str) -> set[str]:
    """Detector ids of ``controller_id`` whose stored health is not ``ok``.

    For the optimizer and demand estimator: counts from these detectors are
    not to be trusted (substitute a peer, history or the design volume).
    Reads ``detector_health`` as :func:`store_health` last wrote it, so it
    is as fresh as the last health run; a detector never assessed is not in
    the set.
    """
    with connection(conn_or_dsn, "failed detectors query") as conn:
        rows = conn.execute(
            "SELECT detector_id FROM detector_health WHERE controller_id = %s AND state <> %s",
            (controller_id, OK),
        ).fetchall()
    return {r[0] for r in rows}


def health_of(conn_or_dsn: ConnOrDsn, controller_id: str | None = None) -> list[DetectorHealth]:
    """Stored health (every state, with since-when), of one controller or all, for dashboards and the CLI."""
    query = sql.SQL("SELECT controller_id, detector_id, state, since, detail FROM detector_health")
    params: list[Any] = []
    if controller_id is not None:
        query += sql.SQL(" WHERE controller_id = %s")
        params.append(controller_id)
    query += sql.SQL(" ORDER BY controller_id, detector_id")
    with connection(conn_or_dsn, "detector health read") as conn:
        return [DetectorHealth(c, d, s, since, detail) for c, d, s, since, detail in conn.execute(query, params)]
