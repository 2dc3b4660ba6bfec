"""Plan review from the CLI (issue #12 review items): usable id prefixes, site time zone, unknown controllers."""

from __future__ import annotations

from dataclasses import replace

from app.cli import main
from controller import plan_store
from tests.test_cli import SPEC, _store_a_plan_life
from traffic import db


def test_prefix_timezone_and_unknown_controller(pg_dsn, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    plan_id = _store_a_plan_life(pg_dsn)
    assert main(["plans", "history", "j1", "--dsn", pg_dsn]) == 0
    out = capsys.readouterr().out
    assert plan_id[:12] in out and "created (Asia/Ho_Chi_Minh)" in out  # labelled with the site's zone
    assert main(["plans", "show", plan_id[:12], "--dsn", pg_dsn]) == 0  # the printed id works
    out = capsys.readouterr().out
    assert plan_id in out and "at (Asia/Ho_Chi_Minh)" in out
    # an ambiguous prefix is refused with the candidates
    other = replace(SPEC.plan_from_splits([45.0, 45.0], version=3), plan_id=plan_id[:6] + "f" * 26)
    with db.connect(pg_dsn, autocommit=True) as conn:
        plan_store.record_proposed(conn, other, "optimizer", "test")
    assert main(["plans", "show", plan_id[:6], "--dsn", pg_dsn]) == 2
    assert "ambiguous" in capsys.readouterr().err
    assert main(["plans", "show", plan_id[:3], "--dsn", pg_dsn]) == 2
    # unknown controller: an error, not an empty table; lock refuses it
    assert main(["plans", "history", "j9", "--dsn", pg_dsn]) == 2
    assert "unknown controller 'j9'" in capsys.readouterr().err
    assert main(["lock", "j9", "--reason", "typo", "--dsn", pg_dsn]) == 2
    assert "unknown controller" in capsys.readouterr().err
    assert main(["lock", "j1", "--reason", "works", "--dsn", pg_dsn]) == 0
