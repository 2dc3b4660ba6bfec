"""Plan lifecycle and engineer locks on a real PostgreSQL database."""

from __future__ import annotations

import pytest

from controller import locks
from controller import plan_store as ps
from controller.examples import four_leg
from controller.safety import check_plan
from traffic import db
from traffic.errors import PlanError, StorageError
from traffic.plan import Violation

SPEC = four_leg("c1")


@pytest.fixture
def conn(pg_dsn):
    with db.connect(pg_dsn, autocommit=True) as c:
        ps.register_controller(c, SPEC)
        yield c


def test_full_lifecycle_and_supersede(conn):
    assert ps.active_plan(conn, "c1") is None
    assert ps.next_version(conn, "c1") == 1
    first = SPEC.plan_from_splits([40.0, 30.0], version=ps.next_version(conn, "c1"))
    ps.record_proposed(conn, first, "optimizer", "epoch 1", detail={"C0": 70})
    ps.set_safety(conn, first.plan_id, check_plan(first, SPEC))
    for state in ("checked", "simulated", "dispatched", "accepted", "active"):
        ps.record_state(conn, first.plan_id, state, "central", {"step": state})
    ps.set_verdict(conn, first.plan_id, {"accepted": True, "delay_before": 30.1, "delay_after": 25.2})
    assert ps.active_plan(conn, "c1") == first
    assert ps.next_version(conn, "c1") == 2

    second = SPEC.plan_from_splits([45.0, 30.0], version=2)
    ps.record_proposed(conn, second, "engineer:anh", "school event")
    for state in ("checked", "dispatched", "active"):
        ps.record_state(conn, second.plan_id, state, "central")
    assert ps.active_plan(conn, "c1") == second

    hist = ps.history(conn, "c1")
    assert [r.version for r in hist] == [2, 1]
    assert [r.state for r in hist] == ["active", "superseded"]
    old = hist[1]
    assert [e.state for e in old.events] == ["proposed", "checked", "simulated", "dispatched", "accepted",
                                             "active", "superseded"]
    assert old.events[0].detail["C0"] == 70 and old.events[0].actor == "optimizer"
    assert old.events[-1].detail == {"by": second.plan_id}
    assert old.safety == [] and old.verdict["delay_after"] == 25.2
    assert hist[0].created_by == "engineer:anh" and hist[0].reason == "school event"
    row = conn.execute("SELECT active_plan_id, active_version FROM controllers WHERE controller_id = 'c1'").fetchone()
    assert row == (second.plan_id, 2)


def test_versions_strictly_increase(conn):
    ps.record_proposed(conn, SPEC.plan_from_splits([40.0, 30.0], version=3), "optimizer", "")
    for version in (3, 2):
        with pytest.raises(PlanError, match="versions must increase"):
            ps.record_proposed(conn, SPEC.plan_from_splits([40.0, 30.0], version=version), "optimizer", "")
    assert ps.next_version(conn, "c1") == 4
    assert len(ps.history(conn, "c1")) == 1


def test_illegal_transitions_and_unknown_plans_are_refused(conn):
    plan = SPEC.plan_from_splits([40.0, 30.0], version=1)
    ps.record_proposed(conn, plan, "optimizer", "")
    with pytest.raises(PlanError, match="cannot go from proposed to active"):
        ps.record_state(conn, plan.plan_id, "active", "central")
    with pytest.raises(PlanError, match="unknown plan state"):
        ps.record_state(conn, plan.plan_id, "teleported", "central")
    ps.record_state(conn, plan.plan_id, "rejected", "central", {"rules": ["YELLOW"]})
    with pytest.raises(PlanError, match="final state"):
        ps.record_state(conn, plan.plan_id, "checked", "central")
    with pytest.raises(PlanError, match="no stored plan"):
        ps.record_state(conn, "nope", "checked", "central")
    with pytest.raises(PlanError):
        ps.set_safety(conn, "nope", [Violation("YELLOW", "x")])
    # a refused step leaves the history unchanged
    assert [e.state for e in ps.get_plan(conn, plan.plan_id).events] == ["proposed", "rejected"]


def test_bootstrap_and_late_activation(conn):
    tod = SPEC.default_plan(version=1)
    ps.record_proposed(conn, tod, "bootstrap", "field time-of-day plan")
    ps.record_state(conn, tod.plan_id, "active", "bootstrap", {"bootstrap": True})
    assert ps.active_plan(conn, "c1") == tod
    late = SPEC.plan_from_splits([40.0, 30.0], version=2)
    ps.record_proposed(conn, late, "optimizer", "")
    for state in ("checked", "dispatched", "failed", "active"):  # the field applied it after our timeout
        ps.record_state(conn, late.plan_id, state, "central")
    assert ps.active_plan(conn, "c1") == late
    assert [r.plan_id for r in ps.plans_in_state(conn, "c1", ["superseded"])] == [tod.plan_id]


def test_locks(conn):
    assert locks.locked(conn) == {}
    with pytest.raises(PlanError):
        locks.lock(conn, "c1", " ", "anh")
    lk = locks.lock(conn, "c1", "road works", "engineer:anh")
    assert locks.locked(conn)["c1"].reason == "road works" and lk.actor == "engineer:anh"
    assert locks.unlock(conn, "c1", "engineer:anh", "done") is True
    assert locks.unlock(conn, "c1", "engineer:anh") is False
    actions = conn.execute("SELECT action, actor FROM controller_lock_events ORDER BY id").fetchall()
    assert actions == [("lock", "engineer:anh"), ("unlock", "engineer:anh")]


def test_database_errors_are_storage_errors(pg_dsn):
    conn = db.connect(pg_dsn, autocommit=True)
    conn.close()
    with pytest.raises(StorageError) as info:
        ps.active_plan(conn, "c1")
    assert info.value.__cause__ is not None
