"""Plan lifecycle in PostgreSQL: every step recorded with who, when, why and the numbers.

Tables ``plans`` and ``plan_events`` (migration 001) hold the plans and their
life; ``controllers`` holds the registered specs and the plan in force.
The states and the moves allowed between them are
:mod:`controller.lifecycle`'s (shared with the in-memory plan record).
Refusing any other move makes a bug in the service loop show up as
a :class:`PlanError` instead of a silently wrong history.

Each function runs in its own ``conn.transaction()`` (a savepoint when the
caller already has one open), so a failure leaves nothing half-written.
Use an autocommit connection, or commit yourself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from controller._db import storage_errors as _storage
from controller.lifecycle import TRANSITIONS, PlanEvent, PlanRecord, PlanState, allowed_moves

__all__ = ["TRANSITIONS", "PlanEvent", "PlanRecord", "PlanState", "STATES", "register_controller", "next_version",
           "record_proposed", "record_state", "record_note", "set_safety", "set_verdict", "active_plan",
           "get_plan", "plans_in_state", "history"]
from traffic.errors import PlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import TimingPlan, Violation

log = logging.getLogger(__name__)

# the states as module names too (``store.ACTIVE``): the values are the StrEnum's, identical on the wire
PROPOSED = PlanState.PROPOSED
CHECKED = PlanState.CHECKED
SIMULATED = PlanState.SIMULATED
REJECTED = PlanState.REJECTED
DISPATCHED = PlanState.DISPATCHED
ACCEPTED = PlanState.ACCEPTED
ACTIVE = PlanState.ACTIVE
SUPERSEDED = PlanState.SUPERSEDED
ROLLED_BACK = PlanState.ROLLED_BACK
FAILED = PlanState.FAILED
STATES = tuple(PlanState)


def _lock_controller(conn: psycopg.Connection, controller_id: str) -> None:
    # serialises version allocation per controller across services, held to the end of the transaction
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("plans:" + controller_id,))


def register_controller(conn: psycopg.Connection, spec: IntersectionSpec) -> None:
    """Insert or update the controller row with its spec (idempotent)."""
    with _storage(f"register {spec.controller_id}"), conn.transaction():
        conn.execute(
            "INSERT INTO controllers (controller_id, site, tls_id, spec) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (controller_id) DO UPDATE SET site = EXCLUDED.site, tls_id = EXCLUDED.tls_id,"
            " spec = EXCLUDED.spec, updated_at = now()",
            (spec.controller_id, spec.site, spec.tls_id, Jsonb(spec.to_dict())))


def next_version(conn: psycopg.Connection, controller_id: str) -> int:
    """The version a new plan for ``controller_id`` should carry (one above any stored)."""
    with _storage(f"next version of {controller_id}"):
        row = conn.execute("SELECT coalesce(max(version), 0) FROM plans WHERE controller_id = %s",
                           (controller_id,)).fetchone()
    return int(row[0]) + 1 if row else 1


def record_proposed(conn: psycopg.Connection, plan: TimingPlan, actor: str, reason: str, *,
                    detail: Mapping[str, Any] | None = None) -> None:
    """Store a new plan in state ``proposed``; its version must exceed every stored one."""
    with _storage(f"record plan {plan.plan_id}"), conn.transaction():
        _lock_controller(conn, plan.controller_id)
        row = conn.execute("SELECT coalesce(max(version), 0) FROM plans WHERE controller_id = %s",
                           (plan.controller_id,)).fetchone()
        highest = int(row[0]) if row else 0
        if plan.version <= highest:
            raise PlanError(f"plan {plan.plan_id} for {plan.controller_id} has version {plan.version}; "
                            f"versions must increase (highest stored: {highest})")
        exists = conn.execute("SELECT 1 FROM plans WHERE plan_id = %s", (plan.plan_id,)).fetchone()
        if exists:
            raise PlanError(f"plan {plan.plan_id} is already stored")
        conn.execute(
            "INSERT INTO plans (plan_id, controller_id, version, state, created_by, reason, body)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (plan.plan_id, plan.controller_id, plan.version, PROPOSED, actor, reason or plan.reason,
             Jsonb(plan.to_dict())))
        _event(conn, plan.plan_id, plan.controller_id, PROPOSED, actor,
               {"reason": reason or plan.reason, "version": plan.version, **dict(detail or {})})


def record_state(conn: psycopg.Connection, plan_id: str, state: str, actor: str,
                 detail: Mapping[str, Any] | None = None) -> PlanState:
    """Move a plan to ``state`` and log the step; return the previous state.

    Going ``active`` supersedes the controller's previously active plan and
    updates the ``controllers`` row (when the controller is registered).
    """
    if state not in STATES:
        raise PlanError(f"unknown plan state {state!r} (known: {', '.join(STATES)})")
    state = PlanState(state)
    with _storage(f"record {state} for plan {plan_id}"), conn.transaction():
        row = conn.execute("SELECT controller_id, state, version FROM plans WHERE plan_id = %s FOR UPDATE",
                           (plan_id,)).fetchone()
        if row is None:
            raise PlanError(f"no stored plan {plan_id!r}")
        controller_id, current, version = row
        current = PlanState(current)
        allowed = allowed_moves(current, bootstrap=bool(detail and detail.get("bootstrap")))
        if state not in allowed:
            raise PlanError(f"plan {plan_id} cannot go from {current} to {state} "
                            f"(allowed: {', '.join(sorted(allowed)) or 'none, final state'})")
        if state == ACTIVE:
            _lock_controller(conn, controller_id)
            previous = conn.execute(
                "SELECT plan_id FROM plans WHERE controller_id = %s AND state = %s AND plan_id <> %s",
                (controller_id, ACTIVE, plan_id)).fetchall()
            for (old_id,) in previous:
                conn.execute("UPDATE plans SET state = %s, updated_at = now() WHERE plan_id = %s", (SUPERSEDED, old_id))
                _event(conn, old_id, controller_id, SUPERSEDED, actor, {"by": plan_id})
            conn.execute("UPDATE controllers SET active_plan_id = %s, active_version = %s, updated_at = now()"
                         " WHERE controller_id = %s", (plan_id, version, controller_id))
        conn.execute("UPDATE plans SET state = %s, updated_at = now() WHERE plan_id = %s", (state, plan_id))
        _event(conn, plan_id, controller_id, state, actor, dict(detail or {}))
    return current


def record_note(conn: psycopg.Connection, plan_id: str, actor: str, detail: Mapping[str, Any]) -> PlanState:
    """Log an event for ``plan_id`` in its *current* state (no transition); return that state.

    Why: some steps change nothing in a plan's life but still belong in its
    history, e.g. the centre re-sending the active plan as a heartbeat so the
    field does not fall back to its time-of-day plan.
    """
    with _storage(f"note on plan {plan_id}"), conn.transaction():
        row = conn.execute("SELECT controller_id, state FROM plans WHERE plan_id = %s", (plan_id,)).fetchone()
        if row is None:
            raise PlanError(f"no stored plan {plan_id!r}")
        _event(conn, plan_id, row[0], row[1], actor, dict(detail))
    return PlanState(row[1])


def set_safety(conn: psycopg.Connection, plan_id: str, violations: Sequence[Violation]) -> None:
    """Store the safety check's findings (an empty list means the plan passed)."""
    with _storage(f"store safety of {plan_id}"), conn.transaction():
        cur = conn.execute("UPDATE plans SET safety = %s, updated_at = now() WHERE plan_id = %s",
                           (Jsonb([v.to_dict() for v in violations]), plan_id))
        if cur.rowcount == 0:
            raise PlanError(f"no stored plan {plan_id!r}")


def set_verdict(conn: psycopg.Connection, plan_id: str, verdict: Mapping[str, Any]) -> None:
    """Store the simulation gate's numbers and decision."""
    with _storage(f"store verdict of {plan_id}"), conn.transaction():
        cur = conn.execute("UPDATE plans SET verdict = %s, updated_at = now() WHERE plan_id = %s",
                           (Jsonb(dict(verdict)), plan_id))
        if cur.rowcount == 0:
            raise PlanError(f"no stored plan {plan_id!r}")


def active_plan(conn: psycopg.Connection, controller_id: str) -> TimingPlan | None:
    """The plan the store believes is in force, or None."""
    with _storage(f"read active plan of {controller_id}"):
        row = conn.execute("SELECT body FROM plans WHERE controller_id = %s AND state = %s"
                           " ORDER BY version DESC LIMIT 1", (controller_id, ACTIVE)).fetchone()
    return TimingPlan.from_dict(row[0]) if row else None


def get_plan(conn: psycopg.Connection, plan_id: str, *, with_events: bool = True) -> PlanRecord | None:
    """One stored plan (and its events), or None."""
    with _storage(f"read plan {plan_id}"):
        row = conn.execute(_RECORD_SQL + " WHERE plan_id = %s", (plan_id,)).fetchone()
        if row is None:
            return None
        return _record(conn, row, with_events)


def plans_in_state(conn: psycopg.Connection, controller_id: str, states: Sequence[str]) -> list[PlanRecord]:
    """Plans of a controller currently in one of ``states`` (newest first), without events."""
    with _storage(f"read plans of {controller_id}"):
        rows = conn.execute(_RECORD_SQL + " WHERE controller_id = %s AND state = ANY(%s) ORDER BY version DESC",
                            (controller_id, list(states))).fetchall()
        return [_record(conn, r, False) for r in rows]


def history(conn: psycopg.Connection, controller_id: str, *, limit: int = 50) -> list[PlanRecord]:
    """The controller's plans, newest first, each with its lifecycle events in order."""
    with _storage(f"read history of {controller_id}"):
        rows = conn.execute(_RECORD_SQL + " WHERE controller_id = %s ORDER BY version DESC LIMIT %s",
                            (controller_id, limit)).fetchall()
        return [_record(conn, r, True) for r in rows]


_RECORD_SQL = "SELECT body, state, created_by, reason, safety, verdict, created_at, updated_at, plan_id FROM plans"


def _record(conn: psycopg.Connection, row: tuple[Any, ...], with_events: bool) -> PlanRecord:
    events: tuple[PlanEvent, ...] = ()
    if with_events:
        rows = conn.execute("SELECT at, state, actor, detail FROM plan_events WHERE plan_id = %s ORDER BY id",
                            (row[8],)).fetchall()
        events = tuple(PlanEvent(r[0], PlanState(r[1]), r[2], r[3]) for r in rows)
    return PlanRecord(TimingPlan.from_dict(row[0]), PlanState(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                      events)


def _event(conn: psycopg.Connection, plan_id: str, controller_id: str, state: str, actor: str,
           detail: Mapping[str, Any]) -> None:
    conn.execute("INSERT INTO plan_events (plan_id, controller_id, state, actor, detail) VALUES (%s, %s, %s, %s, %s)",
                 (plan_id, controller_id, state, actor, Jsonb(dict(detail))))
    log.info("plan %s (%s): %s by %s", plan_id, controller_id, state, actor)
