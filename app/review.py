"""Plan review for engineers: what was proposed, why, what the checks and SUMO said.

Reads through ``controller.plan_store`` and renders with rich, so the CLI
(`traffic plans ...`) and any report share one presentation of a plan's life.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.table import Table

from controller import plan_store
from traffic import db
from traffic.errors import InputError, PlanError

#: the shortest plan-id prefix the CLI accepts (it prints 12 characters)
MIN_PREFIX = 4


def site_zone(name: str | None = None) -> ZoneInfo:
    """The site's time zone (``[site] timezone``; the default settings' when not given)."""
    if name is None:
        from traffic.config import load_settings

        try:
            name = load_settings(None).site.timezone
        except Exception:  # noqa: BLE001 - a broken config file must not hide plan history
            name = "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"unknown time zone {name!r}") from exc


def _local(ts: datetime, zone: ZoneInfo) -> str:
    return f"{ts.astimezone(zone):%Y-%m-%d %H:%M:%S}"


def check_controller(conn: Any, controller_id: str, *, registered_only: bool = False) -> None:
    """InputError (exit 2) unless the site knows ``controller_id`` (registered, or, for reading, with stored plans)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM controllers WHERE controller_id = %s)"
                       " OR (NOT %s AND EXISTS (SELECT 1 FROM plans WHERE controller_id = %s))",
                       (controller_id, registered_only, controller_id)).fetchone()
    if not row[0]:
        known = [r[0] for r in conn.execute("SELECT controller_id FROM controllers ORDER BY 1 LIMIT 20")]
        raise InputError(f"unknown controller {controller_id!r}"
                         + (f" (known: {', '.join(known)})" if known else " (no controller is registered)"))


def resolve_plan_id(conn: Any, text: str) -> str:
    """The full plan id for ``text``: the id itself or a unique prefix of it (as git takes commit ids).

    PlanError when nothing matches; InputError for an ambiguous or too short prefix.
    """
    if conn.execute("SELECT 1 FROM plans WHERE plan_id = %s", (text,)).fetchone():
        return text
    if len(text) < MIN_PREFIX:
        raise InputError(f"plan id {text!r}: give at least {MIN_PREFIX} characters")
    pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = [r[0] for r in conn.execute("SELECT plan_id FROM plans WHERE plan_id LIKE %s ORDER BY plan_id LIMIT 6",
                                       (pattern,))]
    if not rows:
        raise PlanError(f"no plan {text!r} in the store")
    if len(rows) > 1:
        raise InputError(f"plan id prefix {text!r} is ambiguous: {', '.join(r[:16] for r in rows[:5])}"
                         + (" ..." if len(rows) > 5 else ""))
    return rows[0]


def _verdict_text(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return ""
    cand = (verdict.get("candidate") or {}).get("mean_delay_s")
    inc = (verdict.get("incumbent") or {}).get("mean_delay_s")
    word = "accept" if verdict.get("accepted") else "reject"
    if isinstance(cand, (int, float)) and isinstance(inc, (int, float)):
        return f"{word}: {cand:.1f} s vs {inc:.1f} s"
    return f"{word}: {verdict.get('reason') or verdict.get('error', '')}"[:60]


def history_table(dsn: str, controller_id: str, *, limit: int = 20, timezone: str | None = None) -> Table:
    """One row per plan, newest first: version, state, who, cycle, splits, safety and SUMO verdict.

    An unknown controller is an InputError, not an empty table; times are in
    the site's time zone, named in the column heading.
    """
    zone = site_zone(timezone)
    with db.connect(dsn) as conn:
        check_controller(conn, controller_id)
        records = plan_store.history(conn, controller_id, limit=limit)
    table = Table(title=f"plans of {controller_id} (newest first)")
    for column in ("version", "state", "created by", f"created ({zone.key})", "cycle s", "offset s", "splits s",
                   "safety", "SUMO verdict", "plan id"):
        table.add_column(column)
    for r in records:
        safety = "ok" if not r.safety else ",".join(sorted({v.get("rule", "?") for v in r.safety}))
        table.add_row(str(r.version), r.state, r.created_by, _local(r.created_at, zone),
                      f"{r.plan.patternCycleTime:.1f}", f"{r.plan.patternOffsetTime:.1f}",
                      "/".join(f"{s:.0f}" for s in r.plan.splits), safety, _verdict_text(r.verdict),
                      r.plan_id[:12])
    return table


def plan_detail(dsn: str, plan_id: str, *, timezone: str | None = None) -> tuple[Table, Table]:
    """The plan's phases (NTCIP fields) and its lifecycle events; ``plan_id`` may be a unique prefix."""
    zone = site_zone(timezone)
    with db.connect(dsn) as conn:
        plan_id = resolve_plan_id(conn, plan_id)
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
    events = Table(title=f"life of plan {plan_id}")
    for column in (f"at ({zone.key})", "state", "actor", "detail"):
        events.add_column(column)
    for e in record.events:
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if k not in ("verdict", "explanation"))
        events.add_row(_local(e.at, zone), e.state, e.actor, detail[:100])
    return phases, events
