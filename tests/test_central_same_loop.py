"""One central loop: the benchmarks' adapters and production's give the same plans from the same counts.

Production wiring: counts in PostgreSQL (``detector_counts``), the plan
record in PostgreSQL (``plans``/``plan_events``), plans over the real
Mosquitto to a field that answers. Benchmark wiring: the same counts as
wire messages on the in-process bus, the in-memory plan record, a field
answering in-process. Both run ``CentralService.run_epoch`` over three
epochs (new demand, heavier demand, the same demand again); every plan,
what went on the wire,
outcome and recorded life must match, except what is meant to differ
(plan ids, creation and expiry times).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_controller_dispatch import FakeField  # answers accepted, then applied + retained plan/active

from controller import plan_store as store
from controller.dispatch import Dispatcher
from controller.examples import uniform_corridor
from controller.inprocess import InProcessBus, InProcessCounts, InProcessSender, MemoryLedger
from controller.service import CentralService, EpochReport
from traffic import db, messages, topics
from traffic.config import ControlSettings, MqttSettings, OptimizerSettings, Settings
from traffic.plan import TimingPlan

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CORRIDOR = uniform_corridor(3, spacing_m=350.0, speed_mps=12.5)
SETTINGS = Settings(control=ControlSettings(ack_timeout_s=3.0, plan_expiry_s=120),
                    optimizer=OptimizerSettings(plan_mode="actuated"))
EPOCH_S = 600
# (epoch end, demand scale): new demand, heavier demand, the same heavier demand again
EPOCHS = ((NOW, 1), (NOW + timedelta(minutes=10), 2), (NOW + timedelta(minutes=20), 2))


def _reports(end: datetime, scale: int) -> list[messages.CountReport]:
    """One epoch's counts: 10 one-minute reports per controller, uneven across approaches and controllers."""
    out = []
    for k, spec in enumerate(CORRIDOR.intersections):
        for minute in range(10):
            start = end - timedelta(minutes=10 - minute)
            records = tuple(messages.CountRecord(d.detector_id, count=scale * (6 + 5 * k + (9 if i == 0 else 2 * i)),
                                                 occupancy_pct=12.0,
                                                 motorcycle_count=scale * (4 + 3 * k) if i else None)
                            for i, d in enumerate(spec.detectors))
            out.append(messages.CountReport(spec.controller_id, minute, start, 60, records))
    return out


def _store_counts(dsn: str, reports: list[messages.CountReport]) -> None:
    rows = [(r.controller_id, c.detector_id, r.interval_start, r.interval_s, c.count, c.occupancy_pct,
             c.motorcycle_count) for r in reports for c in r.records]
    with db.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                        " vehicle_count, occupancy_pct, motorcycle_count) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)


class InProcessField:
    """The in-process twin of FakeField: accepted, applied and plan/active, as wire payloads on the bus."""

    def __init__(self, bus: InProcessBus, controller_id: str) -> None:
        self.bus, self.cid, self.received = bus, controller_id, []
        bus.register(controller_id, self.on_plan, lambda: None, lambda: None)

    def on_plan(self, payload: bytes, response: str | None, correlation: bytes | None) -> None:
        plan = TimingPlan.from_json(payload)
        self.received.append(plan)
        assert response is not None and correlation == plan.plan_id.encode()
        for status in (messages.ACCEPTED, messages.APPLIED):
            self.bus.deliver(response, messages.PlanResult(self.cid, plan.plan_id, status).to_json())
        self.bus.deliver(topics.topic(self.bus.site, self.cid, topics.PLAN_ACTIVE), plan.to_json())


def _timing(plan: TimingPlan) -> dict[str, Any]:
    """A plan without what differs by design between two runs (ids, creation and expiry times)."""
    return {k: v for k, v in plan.to_dict().items()
            if k not in ("plan_id", "created_at", "expires_at", "signature")}


def _summary(report: EpochReport) -> dict[str, Any]:
    return {"outcome": dict(report.outcome), "plans": {c: _timing(p) for c, p in report.plans.items()},
            "counts": (report.proposed, report.checked, report.dispatched, report.acknowledged, report.applied,
                       report.rejected, report.failed, report.heartbeats, report.unchanged, report.bootstrapped),
            "errors": report.errors}


def _lives(history: list[Any]) -> list[tuple[int, str, list[str]]]:
    return [(r.version, r.state, [e.state for e in r.events]) for r in history]


def test_the_same_counts_give_the_same_plans_through_both_sets_of_adapters(pg_dsn, mqtt_url) -> None:
    site = f"t{uuid.uuid4().hex[:10]}"
    # production: PostgreSQL + MQTT, a field answering over the real broker
    fields = [FakeField(mqtt_url, site, s.controller_id, "accept") for s in CORRIDOR.intersections]
    dispatcher = Dispatcher(MqttSettings(url=mqtt_url), site, client_id=f"central-{uuid.uuid4().hex[:8]}").connect()
    # benchmark: in-process bus and memory, a field answering on the bus
    bus = InProcessBus(site)
    twins = [InProcessField(bus, s.controller_id) for s in CORRIDOR.intersections]
    ledger = MemoryLedger()
    try:
        production = CentralService.on_postgres(SETTINGS, CORRIDOR, dsn=pg_dsn, gate=None, dispatcher=dispatcher)
        bench = CentralService(SETTINGS, CORRIDOR, counts=InProcessCounts(bus), sender=InProcessSender(bus),
                               ledger=ledger, gate=None)
        for end, scale in EPOCHS:
            reports = _reports(end, scale)
            _store_counts(pg_dsn, reports)
            for report in reports:
                bus.deliver(topics.topic(site, report.controller_id, topics.COUNTS), report.to_json())
            ours, theirs = production.run_epoch(end, EPOCH_S), bench.run_epoch(end, EPOCH_S)
            assert ours.errors == [] and _summary(ours) == _summary(theirs)
        # what went on the wire to each field is the same too (and the loop really decided: a plan per epoch)
        for field, twin in zip(fields, twins, strict=False):
            assert [_timing(p) for p, _ in field.received] == [_timing(p) for p in twin.received]
            assert [p.version for p in twin.received] == [2, 3, 4]  # after the bootstrap plan (version 1)
        with db.connect(pg_dsn, autocommit=True) as conn:
            for spec in CORRIDOR.intersections:
                cid = spec.controller_id
                stored, remembered = store.history(conn, cid), ledger.history(cid)
                assert _lives(stored) == _lives(remembered)
                assert [_timing(r.plan) for r in stored] == [_timing(r.plan) for r in remembered]
                assert stored[0].state == "active" and stored[0].plan.version == 4
    finally:
        dispatcher.close()
        for f in fields:
            f.close()
