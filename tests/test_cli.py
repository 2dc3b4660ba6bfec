"""The console script's review and lock commands against a real database."""

from __future__ import annotations

import json

from app.cli import main
from controller import plan_store
from traffic import db
from traffic.intersection import IntersectionSpec, PhaseSpec

SPEC = IntersectionSpec(
    controller_id="j1", tls_id="J1", link_count=4,
    phases=(PhaseSpec(1, "GGrr", 13.9, clearance_width_m=20.0), PhaseSpec(2, "rrGG", 11.1)),
    conflicts=frozenset({(0, 2), (1, 2), (0, 3), (1, 3)}),
)


def _store_a_plan_life(dsn: str) -> str:
    plan = SPEC.plan_from_splits([50.0, 40.0], version=2, created_by="optimizer", reason="demand rose")
    with db.connect(dsn, autocommit=True) as conn:
        plan_store.register_controller(conn, SPEC)
        plan_store.record_proposed(conn, plan, "optimizer", "demand rose")
        plan_store.set_safety(conn, plan.plan_id, [])
        plan_store.record_state(conn, plan.plan_id, plan_store.CHECKED, "central", {})
        plan_store.set_verdict(conn, plan.plan_id, {"accepted": True, "candidate": {"mean_delay_s": 31.5},
                                                     "incumbent": {"mean_delay_s": 44.0}})
        plan_store.record_state(conn, plan.plan_id, plan_store.SIMULATED, "central", {})
    return plan.plan_id


def test_plans_history_and_show(pg_dsn, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal width
    plan_id = _store_a_plan_life(pg_dsn)
    assert main(["plans", "history", "j1", "--dsn", pg_dsn]) == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "31.5 s vs 44.0 s" in out and "50/40" in out
    assert main(["plans", "show", plan_id, "--dsn", pg_dsn]) == 0
    out = capsys.readouterr().out
    for word in ("proposed", "checked", "simulated", "GGrr", "demand rose"):
        assert word in out
    assert main(["plans", "show", "no-such-plan", "--dsn", pg_dsn]) == 2
    assert "no plan" in capsys.readouterr().err


def test_lock_needs_a_reason_and_round_trips(pg_dsn, capsys):
    with db.connect(pg_dsn, autocommit=True) as conn:
        plan_store.register_controller(conn, SPEC)  # lock refuses a controller the site does not have
    assert main(["lock", "j1", "--dsn", pg_dsn]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main(["lock", "j1", "--reason", "festival detour", "--dsn", pg_dsn]) == 0
    with db.connect(pg_dsn) as conn:
        assert conn.execute("SELECT reason FROM controller_locks WHERE controller_id = 'j1'").fetchone()[0] \
            == "festival detour"
    assert main(["lock", "j1", "--unlock", "--dsn", pg_dsn]) == 0
    with db.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM controller_locks").fetchone()[0] == 0


def test_plan_check_reports_broken_rules(tmp_path, capsys):
    good = SPEC.plan_from_splits([50.0, 40.0])
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(good.to_json())
    assert main(["plan", "check", str(plan_file), "--spec", str(spec_file)]) == 0
    data = good.to_dict()
    data["phases"][0]["phaseYellowChange"] = 2.0
    data["phases"][1]["greens"] = "GGGG"
    plan_file.write_text(json.dumps(data))
    assert main(["plan", "check", str(plan_file), "--spec", str(spec_file)]) == 1
    out = capsys.readouterr().out
    assert "YELLOW" in out and "CONFLICT" in out
