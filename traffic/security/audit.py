"""The audit of a plan: who made it, its checks, what was signed and sent, what the field said.

``plans`` and ``plan_events`` (``controller.plan_store``) already hold the
author, the safety and simulation numbers and every state change with its
actor and time; this module adds the one thing they cannot: the signature of
each publication (``plan_signatures``, migration 300), recorded from the plan
exactly as the dispatcher put it on the wire (``Dispatcher.signed_plan``), and
:func:`audit_trail`, which reads all of it back as one record an engineer or
an investigator can check, including whether each recorded signature still
verifies against the trusted keys.

Why store the signature and not only a flag: a signature plus the signed
bytes' hash lets anyone later prove which key authorised which exact timing
on a given day, without trusting the database's other columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from traffic.errors import StorageError
from traffic.plan import TimingPlan
from traffic.security.signing import (
    PlanSignatureError,
    PlanVerifier,
    parse_signature,
    signature_fingerprint,
    signed_bytes,
)

__all__ = ["SignatureRecord", "PlanAudit", "record_signature", "signatures", "audit_trail"]


@dataclass(frozen=True)
class SignatureRecord:
    """One signed publication of a plan."""

    plan_id: str
    controller_id: str
    version: int
    key_id: str
    signature: str
    fingerprint: str
    payload_sha256: str
    signed_payload: str
    expires_at: datetime | None
    dispatched_at: datetime


@dataclass(frozen=True)
class PlanAudit:
    """Everything recorded about one plan, in one place."""

    plan_id: str
    controller_id: str
    version: int
    state: str
    created_by: str
    reason: str
    created_at: datetime
    safety: Any                      # violations found by the central check (empty list: safe)
    verdict: Any                     # simulation gate numbers
    events: tuple[dict[str, Any], ...]  # state, actor, at, detail, in order
    signatures: tuple[SignatureRecord, ...]
    body: dict[str, Any]

    @property
    def dispatched_at(self) -> datetime | None:
        return next((e["at"] for e in self.events if e["state"] == "dispatched"), None)

    @property
    def field_answers(self) -> tuple[dict[str, Any], ...]:
        """The events that record what the controller said (accepted / active / rejected by the field)."""
        return tuple(e for e in self.events if e["state"] in ("accepted", "active")
                     or (e["state"] == "rejected" and e["detail"].get("stage") == "field"))


def record_signature(conn: psycopg.Connection, plan: TimingPlan, *, dispatched_at: datetime | None = None,
                     ) -> SignatureRecord | None:
    """Store the signature of ``plan`` as published; None (nothing stored) for an unsigned plan.

    Idempotent per (plan, signature). Commits nothing: the caller owns the
    transaction, as with ``controller.plan_store``.
    """
    if plan.signature is None:
        return None
    kid, _ = parse_signature(plan.signature)
    payload = signed_bytes(plan.to_dict())
    payload_hash = hashlib.sha256(payload).hexdigest()
    fingerprint = signature_fingerprint(plan.signature)
    try:
        conn.execute(
            "INSERT INTO plan_signatures (plan_id, controller_id, version, key_id, signature, fingerprint,"
            " payload_sha256, signed_payload, expires_at, dispatched_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()))"
            " ON CONFLICT (plan_id, fingerprint) DO NOTHING",
            (plan.plan_id, plan.controller_id, plan.version, kid, plan.signature, fingerprint, payload_hash,
             payload.decode("utf-8"), plan.expires_at, dispatched_at))
        row = conn.execute(_SIG_SQL + " WHERE plan_id = %s AND fingerprint = %s",
                           (plan.plan_id, fingerprint)).fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"cannot record the signature of plan {plan.plan_id}: {exc}") from exc
    if row is None:  # inserted or already there: the row exists
        raise StorageError(f"signature of plan {plan.plan_id} not found after recording it")
    return SignatureRecord(*row)


def signatures(conn: psycopg.Connection, plan_id: str) -> list[SignatureRecord]:
    """Every recorded signature of ``plan_id``, oldest first."""
    try:
        rows = conn.execute(_SIG_SQL + " WHERE plan_id = %s ORDER BY dispatched_at, id", (plan_id,)).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read signatures of plan {plan_id}: {exc}") from exc
    return [SignatureRecord(*r) for r in rows]


def audit_trail(conn: psycopg.Connection, plan_id: str, *, verifier: PlanVerifier | None = None,
                ) -> PlanAudit | None:
    """The whole recorded life of ``plan_id`` (None if unknown).

    With ``verifier``, each recorded publication is checked: its bytes hash
    to the recorded digest, its signature verifies with a trusted key, and
    it carries the same timing as the stored plan body (only ``expires_at``
    may differ: the dispatcher sets it). Any mismatch raises
    PlanSignatureError, because then the record has been tampered with.
    """
    try:
        row = conn.execute(
            "SELECT plan_id, controller_id, version, state, created_by, reason, created_at, safety, verdict, body"
            " FROM plans WHERE plan_id = %s", (plan_id,)).fetchone()
        if row is None:
            return None
        events = conn.execute(
            "SELECT state, actor, at, detail FROM plan_events WHERE plan_id = %s ORDER BY at, id",
            (plan_id,)).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read the audit of plan {plan_id}: {exc}") from exc
    sigs = signatures(conn, plan_id)
    body = dict(row[9])
    if verifier is not None:
        for sig in sigs:
            _check_publication(sig, body, verifier)
    return PlanAudit(plan_id=row[0], controller_id=row[1], version=row[2], state=row[3], created_by=row[4],
                     reason=row[5], created_at=row[6], safety=row[7], verdict=row[8],
                     events=tuple({"state": e[0], "actor": e[1], "at": e[2], "detail": e[3]} for e in events),
                     signatures=tuple(sigs), body=body)


_SET_AT_DISPATCH = ("expires_at", "signature")


def _check_publication(sig: SignatureRecord, body: dict[str, Any], verifier: PlanVerifier) -> None:
    where = f"plan {sig.plan_id}, signature {sig.fingerprint[:12]}"
    if hashlib.sha256(sig.signed_payload.encode("utf-8")).hexdigest() != sig.payload_sha256:
        raise PlanSignatureError(f"{where}: recorded bytes do not match their digest")
    try:
        published = json.loads(sig.signed_payload)
    except ValueError as exc:
        raise PlanSignatureError(f"{where}: recorded bytes are not JSON") from exc
    verifier.verify_dict(dict(published, signature=sig.signature))
    same = {k: v for k, v in published.items() if k not in _SET_AT_DISPATCH}
    stored = {k: v for k, v in body.items() if k not in _SET_AT_DISPATCH}
    if signed_bytes(same) != signed_bytes(stored):
        raise PlanSignatureError(f"{where}: the stored plan differs from what was signed and sent")


_SIG_SQL = ("SELECT plan_id, controller_id, version, key_id, signature, fingerprint, payload_sha256, signed_payload,"
            " expires_at,"
            " dispatched_at FROM plan_signatures")
