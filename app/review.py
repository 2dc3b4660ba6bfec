"""Plan review for engineers: what was proposed, why, what the checks and SUMO said.

Reads through ``controller.plan_store`` and renders with rich, so the CLI
(`traffic plans ...`) and any report share one presentation of a plan's life.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from controller import plan_store
from traffic import db
from traffic.errors import PlanError


def _verdict_text(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return ""
    cand = (verdict.get("candidate") or {}).get("mean_delay_s")
    inc = (verdict.get("incumbent") or {}).get("mean_delay_s")
    word = "accept" if verdict.get("accepted") else "reject"
    if isinstance(cand, (int, float)) and isinstance(inc, (int, float)):
        return f"{word}: {cand:.1f} s vs {inc:.1f} s"
    return f"{word}: {verdict.get('reason') or verdict.get('error', '')}"[:60]


def history_table(dsn: str, controller_id: str, *, limit: int = 20) -> Table:
    """One row per plan, newest first: version, state, who, cycle, splits, safety and SUMO verdict."""
    with db.connect(dsn) as conn:
        records = plan_store.history(conn, controller_id, limit=limit)
    table = Table(title=f"plans of {controller_id} (newest first)")
    for column in ("version", "state", "created by", "created", "cycle s", "offset s", "splits s", "safety",
                   "SUMO verdict", "plan id"):
        table.add_column(column)
    for r in records:
        safety = "ok" if not r.safety else ",".join(sorted({v.get("rule", "?") for v in r.safety}))
        table.add_row(str(r.version), r.state, r.created_by, f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                      f"{r.plan.patternCycleTime:.1f}", f"{r.plan.patternOffsetTime:.1f}",
                      "/".join(f"{s:.0f}" for s in r.plan.splits), safety, _verdict_text(r.verdict),
                      r.plan_id[:12])
    return table


def plan_detail(dsn: str, plan_id: str) -> tuple[Table, Table]:
    """The plan's phases (NTCIP fields) and its lifecycle events."""
    with db.connect(dsn) as conn:
        record = plan_store.get_plan(conn, plan_id)
    if record is None:
        raise PlanError(f"no plan {plan_id!r} in the store")
    plan = record.plan
    phases = Table(title=(f"{plan.controller_id} v{plan.version} ({record.state}) cycle {plan.patternCycleTime} s, "
                          f"offset {plan.patternOffsetTime} s, coordinated phase {plan.splitCoordPhase}, "
                          f"{plan.mode}; by {record.created_by}: {record.reason}"))
    for column in ("phase", "greens", "splitTime", "green", "phaseMinimumGreen", "phaseMaximum1",
                   "phaseYellowChange", "phaseRedClear", "phaseWalk", "phasePedestrianClear"):
        phases.add_column(column, justify="right")
    for p in plan.phases:
        phases.add_row(str(p.phase), p.greens, f"{p.splitTime:.1f}", f"{p.green:.1f}", f"{p.phaseMinimumGreen:.1f}",
                       f"{p.phaseMaximum1:.1f}", f"{p.phaseYellowChange:.1f}", f"{p.phaseRedClear:.1f}",
                       f"{p.phaseWalk:.1f}", f"{p.phasePedestrianClear:.1f}")
    events = Table(title="life of the plan")
    for column in ("at", "state", "actor", "detail"):
        events.add_column(column)
    for e in record.events:
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if k not in ("verdict", "explanation"))
        events.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.state, e.actor, detail[:100])
    return phases, events
