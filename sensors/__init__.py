"""Detector data ingest: MQTT in, PostgreSQL out, plus detector health and rollups.

Public façade; the modules behind it:

* :mod:`sensors.router`  - one message to rows or a dead letter (pure, never raises)
* :mod:`sensors.store`   - idempotent COPY-based writes (:class:`CountStore`)
* :mod:`sensors.spool`   - crash-safe local spool for database outages
* :mod:`sensors.ingest`  - the MQTT service (:class:`IngestService`)
* :mod:`sensors.health`  - stuck on / stuck off / chattering / missing detectors
* :mod:`sensors.rollups` - 15-minute counts (``detector_counts_15min``)
* :mod:`sensors.fastpath` - msgspec decode of ``counts/1`` (same verdicts as the reference decoder)
* :mod:`sensors.partitions` - daily partitions (plain PostgreSQL) and retention on both back ends
* :mod:`sensors.worker`  - ``python -m sensors.worker``: one worker process (own session, own spool)
* :mod:`sensors.loadgen` - count reports of thousands of controllers from one process

See ``docs/pipeline.md``.
"""

from sensors.health import (
    DetectorHealth,
    HealthRules,
    assess,
    classify_controller,
    failed_detectors,
    health_of,
    store_health,
)
from sensors.ingest import IngestService, IngestStats
from sensors.partitions import RetentionResult, apply_retention, ensure_partitions
from sensors.records import Batch, CountRow, DeadLetter, EventRow, StatusRow
from sensors.rollups import VIEW_15MIN, CountBucket, counts_15min, rollup
from sensors.router import route
from sensors.store import BatchResult, CountStore

__all__ = [
    "VIEW_15MIN", "Batch", "BatchResult", "CountBucket", "CountRow", "CountStore", "DeadLetter",
    "DetectorHealth", "EventRow", "HealthRules", "IngestService", "IngestStats", "RetentionResult", "StatusRow",
    "apply_retention", "assess", "classify_controller", "counts_15min", "ensure_partitions", "failed_detectors",
    "health_of", "rollup", "route", "store_health",
]
