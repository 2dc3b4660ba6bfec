"""ATSPM measures from the Indiana hi-res event log (``controller_events``).

* :mod:`sensors.atspm.measures` - the measures, pure (golden-tested, and checked
  against ODOT's ``atspm`` package on its shipped sample)
* :mod:`sensors.atspm.store` - incremental 15-minute aggregation into the
  ``atspm_*`` tables (migration ``400_atspm.sql``) that the dashboards read

Field controllers and the SUMO twin log the same codes, so the same code
measures both.
"""

from sensors.atspm.measures import (
    ADVANCE,
    PRESENCE,
    YELLOW_RED,
    Cycle,
    Detector,
    Event,
    Measures,
    Params,
    compute,
    floor_bin,
)
from sensors.atspm.store import AggregationReport, aggregate, measures_between, recompute, sync_detectors_from_specs

__all__ = ["ADVANCE", "PRESENCE", "YELLOW_RED", "AggregationReport", "Cycle", "Detector", "Event", "Measures",
           "Params", "aggregate", "compute", "floor_bin", "measures_between", "recompute",
           "sync_detectors_from_specs"]
