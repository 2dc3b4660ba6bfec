"""A controller's time-of-day schedule: a day plan of several plans, each from a time of day on.

This is what a cabinet runs when the centre is silent, sends garbage or the
link is down (the emulator's fallback), and what it starts on. NTCIP 1202
calls it a day plan (``dayPlanTable``: hour, minute, action -> pattern); the
project keeps the same idea in a small JSON document per controller::

    {"schema": "day-plan/1", "controller_id": "j1",
     "periods": [{"from": "00:00", "name": "night", "plan": {...TimingPlan...}},
                 {"from": "06:30", "name": "am-peak", "plan": {...}}, ...]}

Periods are sorted by ``from`` (``HH:MM`` local time in the site's time
zone); the first must start at 00:00 so every minute of the day has a plan.
Every plan must pass the field's own safety check for the controller's
spec before the schedule is accepted (:meth:`DaySchedule.check`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time as dtime
from typing import Any

from field_firmware_stubs.plan_check import check_plan
from traffic.errors import ConfigError, PlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import TimingPlan

SCHEMA = "day-plan/1"

__all__ = ["DaySchedule", "Period", "SCHEMA"]


def _parse_hhmm(text: Any) -> dtime:
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise ConfigError(f"period start {text!r} is not HH:MM")
    try:
        return dtime(int(text[:2]), int(text[3:]))
    except ValueError as exc:
        raise ConfigError(f"period start {text!r} is not HH:MM ({exc})") from exc


@dataclass(frozen=True)
class Period:
    """From ``start`` (local time of day) on, ``plan`` runs (until the next period)."""

    start: dtime
    name: str
    plan: TimingPlan

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start.strftime("%H:%M"), "name": self.name, "plan": self.plan.to_dict()}


@dataclass(frozen=True)
class DaySchedule:
    """The day plan of one controller (see the module docstring)."""

    controller_id: str
    periods: tuple[Period, ...]

    def __post_init__(self) -> None:
        if not self.periods:
            raise ConfigError(f"{self.controller_id}: a day plan needs at least one period")
        starts = [p.start for p in self.periods]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ConfigError(f"{self.controller_id}: periods must be in time order, each start once")
        if starts[0] != dtime(0, 0):
            raise ConfigError(f"{self.controller_id}: the first period must start at 00:00")
        for p in self.periods:
            if p.plan.controller_id != self.controller_id:
                raise ConfigError(f"{self.controller_id}: period {p.name!r} holds a plan for "
                                  f"{p.plan.controller_id!r}")

    def period_at(self, local: dtime) -> Period:
        """The period in force at local time of day ``local``."""
        current = self.periods[0]
        for p in self.periods:
            if p.start <= local.replace(tzinfo=None):
                current = p
        return current

    def plan_at(self, local: dtime) -> TimingPlan:
        return self.period_at(local).plan

    def check(self, spec: IntersectionSpec) -> list[str]:
        """Every problem with this schedule for ``spec`` (empty: the cabinet may run it)."""
        problems = []
        if spec.controller_id != self.controller_id:
            problems.append(f"schedule for {self.controller_id!r}, spec for {spec.controller_id!r}")
        for p in self.periods:
            for v in check_plan(p.plan, spec):
                problems.append(f"period {p.name!r} ({p.start:%H:%M}): {v.rule} phase {v.phase}: {v.detail}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "controller_id": self.controller_id,
                "periods": [p.to_dict() for p in self.periods]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaySchedule:
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise ConfigError(f"not a {SCHEMA} document")
        cid = data.get("controller_id")
        raw = data.get("periods")
        if not isinstance(cid, str) or not isinstance(raw, list):
            raise ConfigError("a day plan needs controller_id and a list of periods")
        periods = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise ConfigError(f"period {i} is not an object")
            try:
                plan = TimingPlan.from_dict(item.get("plan"))
            except PlanError as exc:
                raise ConfigError(f"period {i} ({item.get('name')!r}): {exc}") from exc
            periods.append(Period(_parse_hhmm(item.get("from")), str(item.get("name", f"p{i}")), plan))
        return cls(cid, tuple(periods))

    @classmethod
    def single(cls, plan: TimingPlan, name: str = "all-day") -> DaySchedule:
        """One plan all day (a cabinet without a day plan)."""
        return cls(plan.controller_id, (Period(dtime(0, 0), name, plan),))
