"""Scheduled monitoring inside the ingest worker: detector health and ATSPM aggregation.

Why here: ingest owns ``detector_counts`` and ``controller_events``; running
the checks next to the writer means no extra service to deploy, and the
verdicts land in ``detector_health`` (read by the optimizer's demand
estimate and the dashboards) and the ``atspm_*`` tables.

Several workers share a site: each runs a :class:`Monitor`, but a run takes
a PostgreSQL advisory lock first (``pg_try_advisory_lock``), so one worker
does the work per round and the others skip it. A failing round is logged
and the next one tries again; it never stops ingest.

``clock`` gives "now": the wall clock in production; a simulation harness
that stamps data with simulated time passes its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sensors import health
from sensors.atspm import store as atspm_store
from traffic import db
from traffic.errors import TrafficError

log = logging.getLogger(__name__)

_LOCK_KEY = 0x7AFF2D   # one monitor round at a time across workers


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class MonitorRound:
    """What one round did (for logs and tests)."""

    at: datetime
    ran: bool                      # False: another worker held the lock
    health_verdicts: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)   # controller -> detectors not ok
    atspm_devices: int = 0
    errors: list[str] = field(default_factory=list)


class Monitor:
    """Run detector health every ``health_every_s`` and ATSPM aggregation every ``atspm_every_s`` (0: never)."""

    def __init__(self, dsn: str, *, health_every_s: float = 60.0, atspm_every_s: float = 60.0,
                 health_window: timedelta = timedelta(hours=1), clock: Callable[[], datetime] = wall_clock,
                 rules: health.HealthRules = health.HealthRules()) -> None:
        self._dsn = dsn
        self._health_every = health_every_s
        self._atspm_every = atspm_every_s
        self._window = health_window
        self._clock = clock
        self._rules = rules
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: MonitorRound | None = None

    def run_once(self, *, do_health: bool = True, do_atspm: bool = True) -> MonitorRound:
        """One round now (also what the thread calls); errors are recorded, not raised."""
        now = self._clock()
        with db.connect(self._dsn, autocommit=True) as conn:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
            if not got or not got[0]:
                return MonitorRound(now, ran=False)
            result = MonitorRound(now, ran=True)
            try:
                if do_health:
                    try:
                        verdicts = health.assess(conn, None, now, self._window, self._rules)
                        result.health_verdicts = health.store_health(conn, verdicts, now)
                        for v in verdicts:
                            if v.state != health.OK:
                                result.failed.setdefault(v.controller_id, []).append(v.detector_id)
                        if result.failed:
                            log.warning("detector health: not ok %s", result.failed)
                    except TrafficError as exc:
                        log.exception("detector health round failed")
                        result.errors.append(f"health: {exc}")
                if do_atspm:
                    try:
                        report = atspm_store.aggregate(conn, now=now)
                        result.atspm_devices = len(report.ranges)
                    except TrafficError as exc:
                        log.exception("ATSPM aggregation round failed")
                        result.errors.append(f"atspm: {exc}")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        self.last = result
        return result

    # ---- background thread -------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or (self._health_every <= 0 and self._atspm_every <= 0):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sensors-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        import time

        next_health = next_atspm = time.monotonic()
        while not self._stop.is_set():
            t = time.monotonic()
            do_health = self._health_every > 0 and t >= next_health
            do_atspm = self._atspm_every > 0 and t >= next_atspm
            if do_health or do_atspm:
                try:
                    self.run_once(do_health=do_health, do_atspm=do_atspm)
                except Exception:  # noqa: BLE001 - the database away must not end the thread
                    log.exception("monitor round failed")
                if do_health:
                    next_health = t + self._health_every
                if do_atspm:
                    next_atspm = t + self._atspm_every
            waits = [x for x, on in ((next_health, self._health_every > 0), (next_atspm, self._atspm_every > 0)) if on]
            self._stop.wait(max(0.05, min(waits) - time.monotonic()))
