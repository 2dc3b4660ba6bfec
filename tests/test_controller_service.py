"""The central loop end to end: real database, real broker, fake field, stub gate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from test_controller_dispatch import FakeField  # the tiny fake field responder

from controller import plan_store as store
from controller.dispatch import Dispatcher
from controller.examples import uniform_corridor
from controller.safety import check_plan
from controller.service import CentralService, EpochContext
from traffic import db
from traffic.config import ControlSettings, MqttSettings, OptimizerSettings, Settings
from traffic.errors import PlanError

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CORRIDOR = uniform_corridor(2, spacing_m=400.0, speed_mps=12.5)
# coordinated plans: these tests also check the common cycle and green-wave offsets through the service
SETTINGS = Settings(control=ControlSettings(ack_timeout_s=2.0, plan_expiry_s=60),
                    optimizer=OptimizerSettings(plan_mode="actuated"))


@dataclass
class StubVerdict:
    accepted: bool
    reason: str

    def to_dict(self):
        return {"accepted": self.accepted, "reason": self.reason, "delay_candidate_s": 21.5, "delay_incumbent_s": 25.0,
                "per_seed": [{"mean_delay_s": float("nan")}]}  # a KPI SUMO could not compute


class StubGate:
    def __init__(self, accept: bool = True, explode: bool = False):
        self.accept, self.explode, self.calls = accept, explode, []

    def __call__(self, candidates, incumbents, context: EpochContext):
        self.calls.append((candidates, incumbents, context))
        if self.explode:
            raise RuntimeError("sumo crashed")
        return StubVerdict(self.accept, "better" if self.accept else "worse than incumbent")


def _counts(dsn, end=NOW, scale=1):
    rows = []
    for minute in range(10):
        ts = end - timedelta(minutes=10 - minute)
        for cid, heavy in (("c0", 14 * scale), ("c1", 20 * scale)):
            for det, n in (("d1", heavy), ("d2", heavy // 2), ("d3", heavy // 2), ("d4", 6), ("d5", 5)):
                rows.append((cid, det, ts, 60, n, 10.0, None))
    with db.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                        " vehicle_count, occupancy_pct, motorcycle_count) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)


@pytest.fixture
def rig(pg_dsn, mqtt_url, site, request):
    mode = getattr(request, "param", "accept")
    _counts(pg_dsn)
    fields = [FakeField(mqtt_url, site, cid, mode) for cid in ("c0", "c1")]
    dispatcher = Dispatcher(MqttSettings(url=mqtt_url), site, client_id=f"central-{uuid.uuid4().hex[:8]}").connect()
    yield pg_dsn, dispatcher, fields
    dispatcher.close()
    for f in fields:
        f.close()


SILENT = replace(SETTINGS, control=replace(SETTINGS.control, ack_timeout_s=0.5))  # nobody will answer


def _service(rig, gate, settings=SETTINGS):
    dsn, dispatcher, _ = rig
    return CentralService.on_postgres(settings, CORRIDOR, dsn=dsn, gate=gate, dispatcher=dispatcher)


def test_epoch_happy_path(rig):
    dsn, dispatcher, fields = rig
    gate = StubGate()
    report = _service(rig, gate).run_epoch(NOW, 600)
    assert report.errors == []
    assert (report.proposed, report.checked, report.simulated, report.dispatched, report.acknowledged,
            report.applied, report.rejected, report.failed) == (2, 2, 2, 2, 2, 2, 0, 0)
    assert set(report.bootstrapped) == {"c0", "c1"}
    candidates, incumbents, context = gate.calls[0]
    assert set(candidates) == {"c0", "c1"} and context.demands["c1"].flow(1) > context.demands["c0"].flow(1)
    assert all(incumbents[c].created_by == "bootstrap" for c in incumbents)
    with db.connect(dsn, autocommit=True) as conn:
        for cid, plan in report.plans.items():
            assert store.active_plan(conn, cid) == plan
            assert check_plan(plan, CORRIDOR.by_id()[cid]) == []
            record = store.get_plan(conn, plan.plan_id)
            assert [e.state for e in record.events] == ["proposed", "checked", "simulated", "dispatched",
                                                        "accepted", "active"]
            assert record.verdict["delay_candidate_s"] == 21.5 and record.safety == []
            assert record.verdict["per_seed"] == [{"mean_delay_s": None}]
            assert "explanation" in record.events[0].detail
            assert [e.state for e in store.history(conn, cid)[1].events] == ["proposed", "active", "superseded"]
    # one common cycle, downstream offset = 400 m / 12.5 m/s = 32 s after upstream (mod cycle)
    p0, p1 = report.plans["c0"], report.plans["c1"]
    assert p0.patternCycleTime == p1.patternCycleTime
    assert (p1.patternOffsetTime - p0.patternOffsetTime) % p0.patternCycleTime == pytest.approx(32.0)
    # the field got exactly these plans
    assert [p.plan_id for f in fields for p, _ in f.received] == [p0.plan_id, p1.plan_id]


def test_second_epoch_builds_on_the_active_plan(rig):
    service = _service(rig, None)  # no gate configured: checked plans go straight to dispatch
    first = service.run_epoch(NOW, 600)
    _counts(rig[0], end=NOW + timedelta(minutes=10), scale=2)  # demand doubles: the plans must change
    second = service.run_epoch(NOW + timedelta(minutes=10), 600)
    assert first.simulated == 0 and first.applied == 2
    assert second.bootstrapped == () and second.applied == 2 and second.unchanged == ()
    for cid in ("c0", "c1"):
        assert second.plans[cid].version == first.plans[cid].version + 1
        explanation_incumbent = second.plans[cid]
        assert abs(explanation_incumbent.patternCycleTime - first.plans[cid].patternCycleTime) <= \
            SETTINGS.optimizer.max_cycle_step_s


def test_same_timing_again_is_not_a_new_plan_but_a_heartbeat(rig):
    """Demand unchanged: the optimizer's plan times the junction as the one running; nothing new is recorded."""
    dsn, _, fields = rig
    service = _service(rig, None)
    first = service.run_epoch(NOW, 600)
    _counts(dsn, end=NOW + timedelta(minutes=10))  # the same counts again, one window later
    second = service.run_epoch(NOW + timedelta(minutes=10), 600)
    assert first.applied == 2
    assert set(second.unchanged) == {"c0", "c1"} and second.proposed == 0 and second.dispatched == 0
    assert second.heartbeats == 2 and second.outcome == {"c0": "unchanged", "c1": "unchanged"}
    with db.connect(dsn, autocommit=True) as conn:
        for cid in ("c0", "c1"):
            assert store.active_plan(conn, cid).plan_id == first.plans[cid].plan_id
            assert store.next_version(conn, cid) == first.plans[cid].version + 1
            assert store.get_plan(conn, first.plans[cid].plan_id).events[-1].detail["heartbeat"] is True
    # the field heard the same plan twice: the dispatch, then the heartbeat re-send
    assert [[p.plan_id for p, _ in f.received] for f in fields] == [[first.plans[c].plan_id] * 2 for c in ("c0", "c1")]


def test_gate_rejection_keeps_incumbents(rig):
    dsn, _, fields = rig
    report = _service(rig, StubGate(accept=False)).run_epoch(NOW, 600)
    assert (report.proposed, report.checked, report.simulated, report.dispatched, report.rejected) == (2, 2, 0, 0, 2)
    assert all(not f.received for f in fields)
    with db.connect(dsn, autocommit=True) as conn:
        for cid, plan in report.plans.items():
            assert store.get_plan(conn, plan.plan_id).state == "rejected"
            assert store.active_plan(conn, cid).created_by == "bootstrap"


def test_gate_crash_is_a_failure_not_a_pass(rig):
    _, _, fields = rig
    report = _service(rig, StubGate(explode=True)).run_epoch(NOW, 600)
    assert report.failed == 2 and report.dispatched == 0
    assert any("sumo crashed" in e for e in report.errors)
    assert all(not f.received for f in fields)


@pytest.mark.parametrize("rig", ["reject"], indirect=True)
def test_field_rejection_recorded_with_rule(rig):
    dsn, _, _ = rig
    report = _service(rig, StubGate()).run_epoch(NOW, 600)
    assert report.dispatched == 2 and report.rejected == 2 and report.acknowledged == 0
    with db.connect(dsn, autocommit=True) as conn:
        record = store.get_plan(conn, report.plans["c0"].plan_id)
        assert record.state == "rejected" and record.events[-1].detail["rule"] == "YELLOW"
        assert store.active_plan(conn, "c0").created_by == "bootstrap"


@pytest.mark.parametrize("rig", ["silent"], indirect=True)
def test_silent_field_marks_failed_and_keeps_incumbent(rig):
    dsn, _, _ = rig
    report = _service(rig, StubGate(), SILENT).run_epoch(NOW, 600)
    assert report.dispatched == 2 and report.failed == 2 and report.acknowledged == 0
    assert report.outcome == {"c0": "failed", "c1": "failed"}
    with db.connect(dsn, autocommit=True) as conn:
        assert store.active_plan(conn, "c1").created_by == "bootstrap"


def test_locked_controller_is_not_reoptimised(rig):
    _, _, fields = rig
    service = _service(rig, StubGate())
    service.lock("c1", "road works", "engineer:anh")
    report = service.run_epoch(NOW, 600)
    assert report.locked == ("c1",) and set(report.plans) == {"c0"}
    assert not fields[1].received
    assert service.unlock("c1", "engineer:anh") is True
    _counts(rig[0], end=NOW + timedelta(minutes=10), scale=2)  # new demand: both get a new plan
    assert set(service.run_epoch(NOW + timedelta(minutes=10), 600).plans) == {"c0", "c1"}
    with pytest.raises(PlanError):
        service.lock("zz", "x", "y")


@pytest.mark.parametrize("rig", ["silent"], indirect=True)
def test_late_answer_is_reconciled_next_epoch(rig):
    import time

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from traffic import messages

    dsn, dispatcher, fields = rig
    service = _service(rig, None, SILENT)
    first = service.run_epoch(NOW, 600)
    late = first.plans["c0"]
    assert first.outcome["c0"] == "failed"
    # the field applies it after all (say it came back from a network partition) and says so
    _, props_in = fields[0].received[0]
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = props_in.CorrelationData
    applied = messages.PlanResult("c0", late.plan_id, messages.APPLIED, at=NOW)
    fields[0].client.publish(props_in.ResponseTopic, applied.to_json(), qos=1, properties=props).wait_for_publish(2)
    deadline = time.monotonic() + 5
    while not dispatcher.results(late.plan_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    _counts(dsn, end=NOW + timedelta(minutes=10), scale=2)  # new demand: a new plan goes out (and fails)
    service.run_epoch(NOW + timedelta(minutes=10), 600)
    with db.connect(dsn, autocommit=True) as conn:
        record = store.get_plan(conn, late.plan_id)
        assert [e.state for e in record.events][-2:] == ["failed", "active"]
        assert store.active_plan(conn, "c0").plan_id == late.plan_id
        assert store.active_plan(conn, "c1").created_by == "bootstrap"


def test_engineer_override_is_checked_dispatched_and_locked(rig):
    from traffic.errors import UnsafePlanError

    dsn, _, fields = rig
    service = _service(rig, StubGate())
    spec = CORRIDOR.by_id()["c1"]
    mine = spec.plan_from_splits([50.0, 30.0], created_by="engineer:anh", reason="festival")
    report = service.override(mine, "engineer:anh", "festival")
    assert report.outcome == {"c1": "active"} and report.locked == ("c1",)
    assert [p.plan_id for p, _ in fields[1].received] == [mine.plan_id]
    # an unsafe engineer plan is refused before it reaches the broker, and recorded
    phases = (replace(mine.phases[0], phaseRedClear=0.5), mine.phases[1])
    bad = replace(mine, phases=phases, plan_id=uuid.uuid4().hex)
    with pytest.raises(UnsafePlanError):
        service.override(bad, "engineer:anh", "typo")
    assert len(fields[1].received) == 1
    with db.connect(dsn, autocommit=True) as conn:
        assert store.get_plan(conn, bad.plan_id).state == "rejected"
        assert store.active_plan(conn, "c1").plan_id == mine.plan_id
    # the optimizer now leaves c1 alone
    assert "c1" not in service.run_epoch(NOW, 600).plans


def test_serve_runs_epochs_until_stopped(rig):
    import threading
    import time

    dsn, dispatcher, _ = rig
    fast = replace(SETTINGS, control=replace(SETTINGS.control, epoch_s=1, count_interval_s=1))
    service = CentralService.on_postgres(fast, CORRIDOR, dsn=dsn, gate=None, dispatcher=dispatcher)
    stop = threading.Event()
    worker = threading.Thread(target=service.serve, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 10
    while service.epochs_run < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert service.epochs_run >= 2
    with db.connect(dsn, autocommit=True) as conn:
        assert store.active_plan(conn, "c0").created_by == "optimizer"


def test_incumbent_from_the_fields_plan_active(rig):
    import time

    from traffic import topics

    dsn, dispatcher, fields = rig
    spec = CORRIDOR.by_id()["c0"]
    tod = spec.default_plan(75.0, offset_s=10.0, version=1)  # what the cabinet runs on its own
    fields[0].client.publish(topics.topic(dispatcher.site, "c0", topics.PLAN_ACTIVE), tod.to_json(), qos=1,
                             retain=True).wait_for_publish(2)
    deadline = time.monotonic() + 5
    while dispatcher.field_active("c0") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    gate = StubGate()
    report = _service(rig, gate).run_epoch(NOW, 600)
    _, incumbents, _ = gate.calls[0]
    assert incumbents["c0"].plan_id == tod.plan_id and incumbents["c0"].patternCycleTime == 75.0
    assert incumbents["c1"].created_by == "bootstrap" and incumbents["c1"].plan_id != tod.plan_id
    with db.connect(dsn, autocommit=True) as conn:
        adopted = store.get_plan(conn, tod.plan_id)
        assert adopted.created_by == "bootstrap" and adopted.reason.startswith("plan the field reports")
        assert adopted.state == "superseded"  # the optimizer's plan was applied on top of it
    assert report.applied == 2


@pytest.mark.parametrize("rig", ["slow"], indirect=True)
def test_accepted_plans_become_active_at_reconcile(rig):
    import time

    dsn, dispatcher, _ = rig
    # the closed loop does not wait for "applied" (the world is paused while the centre decides)
    service = CentralService.on_postgres(SETTINGS, CORRIDOR, dsn=dsn, gate=None, dispatcher=dispatcher,
                                         apply_timeout_s=0.0)
    report = service.run_epoch(NOW, 600)
    assert report.acknowledged == 2 and report.applied == 0
    assert set(report.outcome.values()) == {"accepted"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(
            any(r.status == "applied" for r in dispatcher.results(p.plan_id)) for p in report.plans.values()):
        time.sleep(0.05)
    service.reconcile()
    with db.connect(dsn, autocommit=True) as conn:
        for cid, plan in report.plans.items():
            assert store.active_plan(conn, cid).plan_id == plan.plan_id


def test_heartbeat_resends_active_plan_when_nothing_new(rig):
    """Gate rejection or a lock must not leave the field silent (it would fall back to its TOD plan)."""
    dsn, _, fields = rig
    gate = StubGate()
    service = _service(rig, gate)
    first = service.run_epoch(NOW, 600)
    assert first.applied == 2 and first.heartbeats == 0
    service.lock("c1", "festival", "engineer:lan")
    gate.accept = False
    _counts(dsn, end=NOW + timedelta(minutes=10), scale=2)  # new demand: c0 gets a new plan, which the gate refuses
    second = service.run_epoch(NOW + timedelta(minutes=10), 600)
    assert second.locked == ("c1",) and second.rejected == 1 and second.dispatched == 0
    assert second.heartbeats == 2
    for f, cid in zip(fields, ("c0", "c1"), strict=False):
        sent = [p.plan_id for p, _ in f.received]
        assert sent == [first.plans[cid].plan_id, first.plans[cid].plan_id]  # same plan, re-sent
    with db.connect(dsn, autocommit=True) as conn:
        for cid in ("c0", "c1"):
            record = store.get_plan(conn, first.plans[cid].plan_id)
            assert record.state == "active"
            assert record.events[-1].state == "active" and record.events[-1].detail["heartbeat"] is True
            assert record.events[-1].detail["answer"] in ("accepted", "applied")


def test_no_heartbeat_for_a_plan_the_centre_never_sent(rig):
    _, _, fields = rig
    report = _service(rig, StubGate(accept=False)).run_epoch(NOW, 600)
    assert report.heartbeats == 0 and all(not f.received for f in fields)


def test_engineer_bounds_box_in_the_optimizer(rig):
    from controller.bounds import Bounds

    dsn, _, _ = rig
    service = _service(rig, None)
    with pytest.raises(PlanError):
        service.set_bounds("c0", Bounds(min_cycle_s=150.0, max_cycle_s=100.0), "engineer:lan")
    assert service.bounds("c0") is None
    service.set_bounds("c0", Bounds(min_cycle_s=95.0, max_cycle_s=100.0), "engineer:lan")
    service.set_bounds("c1", Bounds(min_cycle_s=95.0, max_cycle_s=100.0), "engineer:lan")
    report = service.run_epoch(NOW, 600)
    assert report.applied == 2
    for cid in ("c0", "c1"):
        assert 95.0 <= report.plans[cid].patternCycleTime <= 100.0
    with db.connect(dsn, autocommit=True) as conn:
        explanation = store.get_plan(conn, report.plans["c0"].plan_id).events[0].detail["explanation"]
    assert explanation["bounds"]["max_cycle_s"] == 100.0
    service.set_bounds("c0", None, "engineer:lan")
    assert service.bounds("c0") is None
