"""The central loop's ports: what :class:`controller.service.CentralService` needs from the world.

Why ports: there is one central loop. Production runs it over PostgreSQL
and MQTT; the benchmarks and ``traffic sim run --control adaptive`` run the
very same loop inside a SUMO run, with in-process stand-ins. The epoch logic
(demand, optimizer, safety, gate, dispatch, heartbeat, reconciliation) only
talks to these four small interfaces, so both get identical decisions from
identical counts (``tests/test_central_same_loop.py`` checks it).

* :class:`CountsReader` - detector totals for a window (production:
  ``detector_counts`` in PostgreSQL; simulation: the in-process bus);
* :class:`PlanSender` - dispatch a plan and hear the field's answer
  (production: :class:`controller.dispatch.Dispatcher` over MQTT 5;
  simulation: :class:`controller.inprocess.InProcessSender`);
* :class:`PlanLedger` / :class:`PlanBook` - a plan's recorded life, engineer
  locks and the signature audit (production: ``plans``/``plan_events``/
  ``controller_locks``; simulation: :class:`controller.inprocess.MemoryLedger`);
* the SUMO gate, :data:`controller.service.Gate` (a callable, optional).

Adapters live in :mod:`controller.pg_adapters` and :mod:`controller.inprocess`;
the composition root (``app``) picks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from controller.demand import DetectorTotals
from controller.lifecycle import Lock, PlanRecord, PlanState
from traffic.intersection import IntersectionSpec
from traffic.messages import PlanResult, StatusMessage
from traffic.plan import TimingPlan, Violation


class CountsReader(Protocol):
    """What the detectors said: totals per controller for a window, and which detectors are failed."""

    def totals(self, controller_ids: Sequence[str], start: datetime,
               end: datetime) -> dict[str, dict[str, DetectorTotals]]:
        """``{controller: {detector: totals}}`` for intervals starting in ``[start, end)``; no data: absent."""
        ...

    def failed(self, controller_ids: Sequence[str], end: datetime) -> dict[str, dict[str, str]]:
        """``{controller: {detector: health state}}`` of detectors judged not ok around ``end``."""
        ...


class PlanSender(Protocol):
    """Sends plans to one site's field controllers and reports what they answered."""

    @property
    def site(self) -> str:
        """The site the plans go to (part of every topic)."""
        ...

    def dispatch(self, plan: TimingPlan, spec: IntersectionSpec, *, expiry_s: float,
                 timeout_s: float) -> PlanResult:
        """Check, send and return the field's first answer; raise UnsafePlanError, TransportError or DispatchError."""
        ...

    def await_applied(self, plan_id: str, timeout_s: float) -> PlanResult:
        """The field's ``applied`` or ``rejected`` for ``plan_id``; DispatchError when none came in time."""
        ...

    def signed_plan(self, plan_id: str) -> TimingPlan | None:
        """The plan exactly as last sent (expiry, signature), for the audit."""
        ...

    def results(self, plan_id: str) -> list[PlanResult]:
        """Every answer received for ``plan_id`` so far."""
        ...

    def field_active(self, controller_id: str) -> TimingPlan | None:
        """The plan the field last reported in force."""
        ...

    def field_status(self, controller_id: str) -> StatusMessage | None:
        """The controller's last status (online/offline, mode), if known."""
        ...


class PlanBook(Protocol):
    """One session of the plan record (a database connection, or the in-memory record itself)."""

    def register_controller(self, spec: IntersectionSpec) -> None: ...

    def next_version(self, controller_id: str) -> int: ...

    def record_proposed(self, plan: TimingPlan, actor: str, reason: str, *,
                        detail: Mapping[str, Any] | None = None) -> None: ...

    def record_state(self, plan_id: str, state: PlanState, actor: str,
                     detail: Mapping[str, Any] | None = None) -> PlanState: ...

    def record_note(self, plan_id: str, actor: str, detail: Mapping[str, Any]) -> PlanState: ...

    def set_safety(self, plan_id: str, violations: Sequence[Violation]) -> None: ...

    def set_verdict(self, plan_id: str, verdict: Mapping[str, Any]) -> None: ...

    def active_plan(self, controller_id: str) -> TimingPlan | None: ...

    def get_plan(self, plan_id: str, *, with_events: bool = True) -> PlanRecord | None: ...

    def plans_in_state(self, controller_id: str, states: Sequence[PlanState]) -> list[PlanRecord]: ...

    def locked(self) -> Mapping[str, Lock]: ...

    def lock(self, controller_id: str, reason: str, actor: str) -> Lock: ...

    def unlock(self, controller_id: str, actor: str, reason: str = "") -> bool: ...

    def record_signature(self, plan: TimingPlan) -> None:
        """Keep the signature of exactly what was sent (nothing for an unsigned plan)."""
        ...


class PlanLedger(Protocol):
    """Where plans' lives are recorded; :meth:`session` opens one unit of work (one epoch)."""

    def session(self) -> AbstractContextManager[PlanBook]: ...
