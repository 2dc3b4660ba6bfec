"""Production adapters of the central loop's ports: PostgreSQL for counts and the plan record.

Thin on purpose: every statement lives where it always did
(:mod:`controller.plan_store`, :mod:`controller.locks`,
:func:`controller.demand.fetch_totals`, :func:`traffic.security.audit.record_signature`);
these classes only hold the DSN or the connection so that
:class:`controller.service.CentralService` sees the ports of
:mod:`controller.ports` and nothing of psycopg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from controller import locks as lock_store
from controller import plan_store as store
from controller.demand import DetectorTotals, fetch_failed, fetch_totals
from controller.lifecycle import Lock, PlanRecord, PlanState
from traffic import db
from traffic.intersection import IntersectionSpec
from traffic.plan import TimingPlan, Violation
from traffic.security import audit

log = logging.getLogger(__name__)


class PostgresCounts:
    """:class:`controller.ports.CountsReader` over ``detector_counts`` (one connection per read)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def totals(self, controller_ids: Sequence[str], start: datetime,
               end: datetime) -> dict[str, dict[str, DetectorTotals]]:
        with db.connect(self._dsn, autocommit=True) as conn:
            return {cid: fetch_totals(conn, cid, start, end) for cid in controller_ids}

    def failed(self, controller_ids: Sequence[str], end: datetime) -> dict[str, dict[str, str]]:
        with db.connect(self._dsn, autocommit=True) as conn:
            return {cid: fetch_failed(conn, cid, end) for cid in controller_ids}


class PostgresBook:
    """:class:`controller.ports.PlanBook` on one autocommit connection (each call its own transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def register_controller(self, spec: IntersectionSpec) -> None:
        store.register_controller(self.conn, spec)

    def next_version(self, controller_id: str) -> int:
        return store.next_version(self.conn, controller_id)

    def record_proposed(self, plan: TimingPlan, actor: str, reason: str, *,
                        detail: Mapping[str, Any] | None = None) -> None:
        store.record_proposed(self.conn, plan, actor, reason, detail=detail)

    def record_state(self, plan_id: str, state: PlanState, actor: str,
                     detail: Mapping[str, Any] | None = None) -> PlanState:
        return store.record_state(self.conn, plan_id, state, actor, detail)

    def record_note(self, plan_id: str, actor: str, detail: Mapping[str, Any]) -> PlanState:
        return store.record_note(self.conn, plan_id, actor, detail)

    def set_safety(self, plan_id: str, violations: Sequence[Violation]) -> None:
        store.set_safety(self.conn, plan_id, violations)

    def set_verdict(self, plan_id: str, verdict: Mapping[str, Any]) -> None:
        store.set_verdict(self.conn, plan_id, verdict)

    def active_plan(self, controller_id: str) -> TimingPlan | None:
        return store.active_plan(self.conn, controller_id)

    def get_plan(self, plan_id: str, *, with_events: bool = True) -> PlanRecord | None:
        return store.get_plan(self.conn, plan_id, with_events=with_events)

    def plans_in_state(self, controller_id: str, states: Sequence[PlanState]) -> list[PlanRecord]:
        return store.plans_in_state(self.conn, controller_id, states)

    def locked(self) -> Mapping[str, Lock]:
        return lock_store.locked(self.conn)

    def lock(self, controller_id: str, reason: str, actor: str) -> Lock:
        return lock_store.lock(self.conn, controller_id, reason, actor)

    def unlock(self, controller_id: str, actor: str, reason: str = "") -> bool:
        return lock_store.unlock(self.conn, controller_id, actor, reason)

    def record_signature(self, plan: TimingPlan) -> None:
        audit.record_signature(self.conn, plan)


class PostgresLedger:
    """:class:`controller.ports.PlanLedger` on PostgreSQL: a session is one autocommit connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @contextmanager
    def session(self) -> Iterator[PostgresBook]:
        with db.connect(self.dsn, autocommit=True) as conn:
            yield PostgresBook(conn)
