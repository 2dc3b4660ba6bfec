"""Every dashboard panel's SQL, in one place.

Why one module: the dashboards and the tests must run *the same* text, and a
reviewer should find every query a Grafana user can trigger on one page.
The SQL uses Grafana's PostgreSQL macros ``$__timeFilter(col)``,
``$__timeFrom()`` and ``$__timeTo()`` and the multi-value template variable
``$controller`` (always quoted by Grafana because it is multi-select with
"All"), so it must be read with ``controller_id IN ($controller)``.
:func:`dashboards.macros.expand` renders the same text outside Grafana.

The queries only touch tables from ``traffic/migrations/001_core.sql`` and
run unchanged on plain PostgreSQL and TimescaleDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from traffic.config import OptimizerSettings

#: Width of the buckets in the counts panel. Fixed (not a template variable)
#: so that the query never needs unquoted, user-controlled text.
COUNT_BUCKET = "5 minutes"

#: pcu of a motorcycle in the corridor's pcu/h (traffic.config OptimizerSettings.pcu_motorcycle default;
#: a number in the SQL, not a template variable, so no user text reaches it).
PCU_MOTORCYCLE = OptimizerSettings().pcu_motorcycle

_QUERIES: dict[str, str] = {
    # Template variable $controller: every known controller.
    "controller_variable": """
SELECT controller_id AS __text, controller_id AS __value
FROM controllers
ORDER BY controller_id
""",
    # Time series: vehicles per detector per 5-minute bucket.
    "detector_counts": f"""
SELECT
  date_bin('{COUNT_BUCKET}'::interval, interval_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS "time",
  controller_id || '/' || detector_id AS metric,
  SUM(vehicle_count)::bigint AS vehicles
FROM detector_counts
WHERE $__timeFilter(interval_start)
  AND controller_id IN ($controller)
GROUP BY 1, 2
ORDER BY 1, 2
""",
    # Table: every plan lifecycle step with the plan's version and cycle.
    "plan_changes": """
SELECT
  e.at AS "time",
  e.controller_id AS controller,
  e.state,
  e.actor,
  p.version,
  (p.body ->> 'patternCycleTime')::double precision AS cycle_s,
  p.reason
FROM plan_events AS e
LEFT JOIN plans AS p ON p.plan_id = e.plan_id
WHERE $__timeFilter(e.at)
  AND e.controller_id IN ($controller)
ORDER BY e.at DESC, e.id DESC
LIMIT 500
""",
    # Table: what each controller last told us.
    "controller_status": """
SELECT
  controller_id AS controller,
  state,
  mode,
  active_plan_id AS plan_id,
  active_version AS plan_version,
  last_seen,
  EXTRACT(EPOCH FROM ($__timeTo() - last_seen))::double precision AS seen_s_before_end
FROM controllers
WHERE controller_id IN ($controller)
ORDER BY controller_id
""",
    # Stat: controllers online now, out of those selected.
    "controllers_online": """
SELECT
  COUNT(*) FILTER (WHERE state = 'online')::bigint AS online,
  COUNT(*)::bigint AS total
FROM controllers
WHERE controller_id IN ($controller)
""",
    # Stat: messages that failed decoding/validation in the hour before the range end.
    "dead_letters_last_hour": """
SELECT COUNT(*)::bigint AS dead_letters
FROM dead_letters
WHERE received_at > $__timeTo() - interval '1 hour'
  AND received_at <= $__timeTo()
""",
    # ---- ATSPM (per intersection): tables of migration 400_atspm.sql, filled by sensors.atspm ----
    # Template variable $device: one controller (the intersection dashboard is per intersection).
    "atspm_device_variable": """
SELECT DISTINCT device_id AS __text, device_id AS __value
FROM atspm_phase_15min
ORDER BY 1
""",
    # PCD: each arrival's second in its cycle (cycle = begin green to next begin green of the phase),
    # with the cycle's yellow and red as lines. Time series: x = cycle start.
    "atspm_pcd_arrivals": """
SELECT
  c.green_start AS "time",
  'phase ' || c.phase || ' arrival' AS metric,
  EXTRACT(EPOCH FROM (e.ts - c.green_start))::double precision AS seconds_in_cycle
FROM atspm_cycles AS c
JOIN atspm_detectors AS d
  ON d.device_id = c.device_id AND d.phase = c.phase AND d.function = 'advance'
JOIN controller_events AS e
  ON e.device_id = c.device_id AND e.event_code = 82 AND e.event_param = d.channel
 AND e.ts >= c.green_start AND e.ts < c.next_green
WHERE c.device_id IN ($device)
  AND $__timeFilter(c.green_start)
ORDER BY 1, 2
""",
    "atspm_pcd_lines": """
SELECT
  green_start AS "time",
  'phase ' || phase || ' begin yellow' AS metric,
  EXTRACT(EPOCH FROM (yellow_start - green_start))::double precision AS seconds_in_cycle
FROM atspm_cycles
WHERE device_id IN ($device) AND $__timeFilter(green_start) AND yellow_start IS NOT NULL
UNION ALL
SELECT
  green_start,
  'phase ' || phase || ' cycle end',
  EXTRACT(EPOCH FROM (next_green - green_start))::double precision
FROM atspm_cycles
WHERE device_id IN ($device) AND $__timeFilter(green_start)
ORDER BY 1, 2
""",
    # Split monitor: split per cycle and phase, and terminations per bin.
    "atspm_split_monitor": """
SELECT
  green_start AS "time",
  'phase ' || phase AS metric,
  EXTRACT(EPOCH FROM (coalesce(red_clear_end, next_green) - green_start))::double precision AS split_s
FROM atspm_cycles
WHERE device_id IN ($device) AND $__timeFilter(green_start)
ORDER BY 1, 2
""",
    "atspm_terminations": """
SELECT
  phase,
  SUM(gap_outs)::bigint AS gap_outs,
  SUM(max_outs)::bigint AS max_outs,
  SUM(force_offs)::bigint AS force_offs,
  SUM(services)::bigint AS services,
  (SUM(avg_split_s * services) / NULLIF(SUM(services), 0))::double precision AS mean_split_s
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin)
GROUP BY phase
ORDER BY phase
""",
    "atspm_split_failures": """
SELECT
  bin AS "time",
  'phase ' || phase AS metric,
  split_failures::bigint AS split_failures
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin) AND sf_cycles > 0
ORDER BY 1, 2
""",
    "atspm_occupancy": """
SELECT
  phase,
  SUM(sf_cycles)::bigint AS cycles,
  SUM(split_failures)::bigint AS split_failures,
  (SUM(green_occupancy * sf_cycles) / NULLIF(SUM(sf_cycles), 0))::double precision AS green_occupancy,
  (SUM(red_occupancy * sf_cycles) / NULLIF(SUM(sf_cycles), 0))::double precision AS red_occupancy
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin)
GROUP BY phase
ORDER BY phase
""",
    "atspm_aog": """
SELECT
  bin AS "time",
  'phase ' || phase AS metric,
  (100.0 * arrivals_on_green / NULLIF(arrivals, 0))::double precision AS pct_aog
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin) AND arrivals > 0
ORDER BY 1, 2
""",
    "atspm_approach_delay": """
SELECT
  bin AS "time",
  'phase ' || phase AS metric,
  (total_delay_s / NULLIF(arrivals, 0))::double precision AS delay_s_per_vehicle
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin) AND arrivals > 0
ORDER BY 1, 2
""",
    "atspm_approach_volume": """
SELECT
  bin AS "time",
  'phase ' || phase AS metric,
  (arrivals * 4)::bigint AS veh_h
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin)
ORDER BY 1, 2
""",
    "atspm_yellow_red": """
SELECT
  phase,
  SUM(yellow_actuations)::bigint AS yellow_actuations,
  SUM(red_actuations)::bigint AS red_actuations
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin)
GROUP BY phase
ORDER BY phase
""",
    "atspm_ped": """
SELECT
  phase,
  SUM(ped_services)::bigint AS ped_services,
  SUM(ped_actuations)::bigint AS ped_actuations,
  (SUM(ped_delay_s * ped_delay_samples) / NULLIF(SUM(ped_delay_samples), 0))::double precision AS ped_delay_s
FROM atspm_phase_15min
WHERE device_id IN ($device) AND $__timeFilter(bin)
GROUP BY phase
HAVING SUM(ped_services) + SUM(ped_actuations) > 0
ORDER BY phase
""",
    # ---- corridor: bounded output whatever the number of detectors ----
    "corridor_flow": f"""
SELECT
  bucket AS "time",
  'veh/h' AS metric,
  (SUM(flow_veh_h))::double precision AS value
FROM detector_counts_15min
WHERE controller_id IN ($controller) AND $__timeFilter(bucket)
GROUP BY 1
UNION ALL
SELECT
  bucket,
  'pcu/h',
  SUM(
    (COALESCE(motorcycle_count, 0) * {PCU_MOTORCYCLE!r}
     + (vehicle_count - COALESCE(motorcycle_count, 0)) * 1.0) * 3600.0 / NULLIF(covered_s, 0)
  )::double precision
FROM detector_counts_15min
WHERE controller_id IN ($controller) AND $__timeFilter(bucket)
GROUP BY 1
ORDER BY 1, 2
""",
    "corridor_motorcycle_share": """
SELECT
  bucket AS "time",
  controller_id AS metric,
  (100.0 * SUM(motorcycle_count) / NULLIF(SUM(vehicle_count) FILTER (WHERE motorcycle_count IS NOT NULL), 0))
    ::double precision AS motorcycle_pct
FROM detector_counts_15min
WHERE controller_id IN ($controller) AND $__timeFilter(bucket)
GROUP BY 1, 2
ORDER BY 1, 2
""",
    "corridor_plan_annotations": """
SELECT
  e.at AS "time",
  e.controller_id || ': plan v' || COALESCE(p.version::text, '?') || ' ' || e.state AS text,
  e.controller_id AS tags
FROM plan_events AS e
LEFT JOIN plans AS p ON p.plan_id = e.plan_id
WHERE $__timeFilter(e.at)
  AND e.controller_id IN ($controller)
  AND e.state IN ('active', 'rejected', 'superseded')
ORDER BY e.at
""",
    # Top-N worst approaches by delay per vehicle (fixed N: no unquoted user text in the SQL).
    "corridor_worst_approaches": """
SELECT
  device_id AS controller,
  phase,
  SUM(arrivals)::bigint AS arrivals,
  (SUM(total_delay_s) / NULLIF(SUM(arrivals), 0))::double precision AS delay_s_per_vehicle,
  (100.0 * SUM(arrivals_on_green) / NULLIF(SUM(arrivals), 0))::double precision AS pct_aog,
  SUM(split_failures)::bigint AS split_failures
FROM atspm_phase_15min
WHERE device_id IN ($controller) AND $__timeFilter(bin)
GROUP BY device_id, phase
HAVING SUM(arrivals) > 0
ORDER BY delay_s_per_vehicle DESC NULLS LAST, controller, phase
LIMIT 10
""",
    # ---- operations ----
    "ops_controllers_by_mode": """
SELECT COALESCE(mode, 'unknown') AS mode, state, COUNT(*)::bigint AS controllers
FROM controllers
GROUP BY 1, 2
ORDER BY 1, 2
""",
    "ops_dead_letters": """
SELECT
  date_bin('15 minutes'::interval, received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS "time",
  split_part(reason, ':', 1) AS metric,
  COUNT(*)::bigint AS dead_letters
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 1, 2
""",
    # Ingest lag: seconds between an interval's end and its arrival in the database.
    "ops_ingest_lag": """
SELECT
  date_bin('5 minutes'::interval, received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS "time",
  'p95 lag' AS metric,
  percentile_cont(0.95) WITHIN GROUP (
    ORDER BY EXTRACT(EPOCH FROM (received_at - interval_start))::double precision - interval_s)
    AS lag_s
FROM detector_counts
WHERE $__timeFilter(received_at)
GROUP BY 1
ORDER BY 1
""",
    "ops_detector_health": """
SELECT controller_id AS controller, detector_id AS detector, state, since, updated_at, detail
FROM detector_health
WHERE state <> 'ok'
ORDER BY controller_id, detector_id
""",
    "ops_gate_verdicts": """
SELECT
  e.at AS "time",
  e.controller_id AS controller,
  p.version,
  e.state,
  e.detail ->> 'stage' AS stage,
  e.detail ->> 'reason' AS reason
FROM plan_events AS e
LEFT JOIN plans AS p ON p.plan_id = e.plan_id
WHERE $__timeFilter(e.at)
  AND (e.state = 'simulated' OR (e.state = 'rejected' AND e.detail ->> 'stage' = 'gate'))
ORDER BY e.at DESC, e.id DESC
LIMIT 200
""",
    "ops_communications": """
SELECT
  device_id AS controller,
  COUNT(*) FILTER (WHERE NOT has_data)::bigint AS bins_without_data,
  MAX(max_gap_s)::double precision AS longest_silence_s,
  SUM(events)::bigint AS events
FROM atspm_device_15min
WHERE $__timeFilter(bin)
GROUP BY device_id
ORDER BY bins_without_data DESC, controller
""",
}

#: Queries of each dashboard (the corridor overview keeps the older panels).
ATSPM_QUERIES = tuple(n for n in _QUERIES if n.startswith("atspm_"))
CORRIDOR_QUERIES = tuple(n for n in _QUERIES if n.startswith("corridor_"))
OPS_QUERIES = tuple(n for n in _QUERIES if n.startswith("ops_"))

#: name -> SQL, read-only.
QUERIES: Mapping[str, str] = MappingProxyType({name: text.strip() for name, text in _QUERIES.items()})
