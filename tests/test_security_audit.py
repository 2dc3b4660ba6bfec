"""The audit trail on real PostgreSQL: who made a plan, its checks, what was signed and sent, the field's answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller import plan_store as store
from controller.safety import check_plan
from field_firmware_stubs.samples import four_leg
from traffic import db
from traffic.security.audit import audit_trail, record_signature, signatures
from traffic.security.signing import PlanSignatureError, PlanSigner, generate_signing_key

SIGNER = PlanSigner(generate_signing_key())


def _dispatched(conn, version: int = 2):
    spec = four_leg("j1")
    plan = spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=version, created_by="optimizer",
                                 reason="morning peak")
    store.record_proposed(conn, plan, "optimizer", "morning peak", detail={"explanation": "Webster"})
    store.set_safety(conn, plan.plan_id, check_plan(plan, spec))
    store.record_state(conn, plan.plan_id, store.CHECKED, "central")
    store.set_verdict(conn, plan.plan_id, {"accepted": True, "delay_s": {"candidate": 31.2, "incumbent": 35.0}})
    store.record_state(conn, plan.plan_id, store.SIMULATED, "central")
    store.record_state(conn, plan.plan_id, store.DISPATCHED, "central", {"expiry_s": 120})
    expires = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    sent = SIGNER.sign(replace(plan, expires_at=expires))  # what Dispatcher.signed_plan() returns
    return plan, sent


def test_the_audit_holds_author_checks_signature_dispatch_and_field_answer(pg_dsn):
    with db.connect(pg_dsn) as conn:
        plan, sent = _dispatched(conn)
        record = record_signature(conn, sent)
        assert record is not None and record.key_id == SIGNER.key_id and record.version == 2
        assert record_signature(conn, sent) == record  # the same publication is stored once
        resent = SIGNER.sign(replace(plan, expires_at=(datetime.now(UTC) + timedelta(minutes=5)).isoformat()))
        record_signature(conn, resent)  # a re-send with a new expiry is a second publication
        store.record_state(conn, plan.plan_id, store.ACCEPTED, "central", {"field": "accepted"})
        store.record_state(conn, plan.plan_id, store.ACTIVE, "central", {"at": "2026-03-02T07:05:00+00:00"})
        conn.commit()
        audit = audit_trail(conn, plan.plan_id, verifier=SIGNER.verifier())
    assert audit.created_by == "optimizer" and audit.reason == "morning peak"
    assert audit.safety == [] and audit.verdict["delay_s"]["candidate"] == 31.2
    assert [s.signature for s in audit.signatures] == [sent.signature, resent.signature]
    assert audit.dispatched_at is not None
    assert [e["state"] for e in audit.field_answers] == ["accepted", "active"]
    assert audit.state == "active"


def test_a_tampered_record_fails_the_audit(pg_dsn):
    with db.connect(pg_dsn) as conn:
        plan, sent = _dispatched(conn)
        record_signature(conn, sent)
        conn.commit()
        assert audit_trail(conn, plan.plan_id, verifier=SIGNER.verifier()) is not None
        # someone edits the stored plan afterwards (longer green on phase 1, shorter on phase 2)
        conn.execute("UPDATE plans SET body = jsonb_set(jsonb_set(body, '{phases,0,splitTime}', '35.0'),"
                     " '{phases,1,splitTime}', '7.0') WHERE plan_id = %s", (plan.plan_id,))
        with pytest.raises(PlanSignatureError, match="differs from what was signed"):
            audit_trail(conn, plan.plan_id, verifier=SIGNER.verifier())
        conn.rollback()
        # or rewrites the recorded publication itself
        # (RFC 8785 bytes: 30.0 is written 30)
        conn.execute("UPDATE plan_signatures SET signed_payload = replace(signed_payload, '\"splitTime\":30',"
                     " '\"splitTime\":35') WHERE plan_id = %s", (plan.plan_id,))
        assert conn.execute("SELECT count(*) FROM plan_signatures WHERE plan_id = %s AND signed_payload LIKE"
                            " '%%\"splitTime\":35%%'", (plan.plan_id,)).fetchone()[0] == 1
        with pytest.raises(PlanSignatureError, match="digest"):
            audit_trail(conn, plan.plan_id, verifier=SIGNER.verifier())
        conn.rollback()
        other = PlanSigner(generate_signing_key())
        with pytest.raises(PlanSignatureError, match="unknown key"):
            audit_trail(conn, plan.plan_id, verifier=other.verifier())


def test_unsigned_plans_record_nothing_and_unknown_plans_have_no_audit(pg_dsn):
    with db.connect(pg_dsn) as conn:
        plan, _ = _dispatched(conn)
        assert record_signature(conn, plan) is None
        assert signatures(conn, plan.plan_id) == []
        assert audit_trail(conn, "no-such-plan") is None
