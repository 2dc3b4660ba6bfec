"""A plan's life as data: its states, the moves allowed between them, and the records of both.

Why a module of its own (no database here): the same state machine is kept
by the PostgreSQL plan store (production) and by the in-memory plan record
(simulation, tests), so both refuse exactly the same wrong moves. States and
the moves allowed between them::

    proposed -> checked -> simulated -> dispatched -> accepted -> active -> superseded
         \\          \\           \\            \\           \\         \\-> rolled_back
          `-> rejected / failed (from any step before active)

``failed`` (no answer from the field) may still become ``active`` if the
field later reports it runs the plan: the record follows the field, which is
the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from traffic.plan import TimingPlan


class PlanState(StrEnum):
    """A plan's lifecycle state; the values are what ``plans.state`` and ``plan_events.state`` hold."""

    PROPOSED = "proposed"
    CHECKED = "checked"
    SIMULATED = "simulated"
    REJECTED = "rejected"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


TRANSITIONS: dict[PlanState, frozenset[PlanState]] = {
    PlanState.PROPOSED: frozenset({PlanState.CHECKED, PlanState.REJECTED, PlanState.FAILED}),
    PlanState.CHECKED: frozenset({PlanState.SIMULATED, PlanState.DISPATCHED, PlanState.REJECTED, PlanState.FAILED}),
    PlanState.SIMULATED: frozenset({PlanState.DISPATCHED, PlanState.REJECTED, PlanState.FAILED}),
    PlanState.DISPATCHED: frozenset({PlanState.ACCEPTED, PlanState.ACTIVE, PlanState.REJECTED, PlanState.FAILED}),
    PlanState.ACCEPTED: frozenset({PlanState.ACTIVE, PlanState.REJECTED, PlanState.FAILED, PlanState.ROLLED_BACK}),
    PlanState.ACTIVE: frozenset({PlanState.SUPERSEDED, PlanState.ROLLED_BACK}),
    PlanState.FAILED: frozenset({PlanState.ACTIVE}),
    PlanState.REJECTED: frozenset(),
    PlanState.SUPERSEDED: frozenset(),
    PlanState.ROLLED_BACK: frozenset(),
}
#: bootstrap: a plan the field already runs (its own time-of-day plan) enters as proposed and goes active
BOOTSTRAP_TRANSITIONS = frozenset({PlanState.ACTIVE})


def allowed_moves(current: PlanState, *, bootstrap: bool = False) -> frozenset[PlanState]:
    """The states a plan in ``current`` may move to (``bootstrap``: the detail says so)."""
    extra = BOOTSTRAP_TRANSITIONS if bootstrap and current == PlanState.PROPOSED else frozenset()
    return TRANSITIONS[current] | extra


@dataclass(frozen=True)
class PlanEvent:
    """One lifecycle step."""

    at: datetime
    state: PlanState
    actor: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class PlanRecord:
    """A stored plan with its current state, checks and (optionally) its events."""

    plan: TimingPlan
    state: PlanState
    created_by: str
    reason: str
    safety: list[dict[str, Any]] | None
    verdict: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    events: tuple[PlanEvent, ...] = ()

    @property
    def plan_id(self) -> str:
        return self.plan.plan_id

    @property
    def version(self) -> int:
        return self.plan.version


@dataclass(frozen=True)
class Lock:
    """An engineer's lock: the controller keeps its plan and is never re-optimised."""

    controller_id: str
    actor: str
    reason: str
    locked_at: datetime
