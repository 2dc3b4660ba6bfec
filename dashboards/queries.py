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

from types import MappingProxyType
from typing import Mapping

#: Width of the buckets in the counts panel. Fixed (not a template variable)
#: so that the query never needs unquoted, user-controlled text.
COUNT_BUCKET = "5 minutes"

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
}

#: name -> SQL, read-only.
QUERIES: Mapping[str, str] = MappingProxyType({name: text.strip() for name, text in _QUERIES.items()})
