"""``traffic demo``: the closed loop on an embedded default, with a before/after table.

It starts a private Mosquitto and PostgreSQL in the state folder (unless a
broker URL and DSN are configured), generates a motorcycle-heavy corridor
with SUMO's tools, runs the day twice on the same demand and seed — once on
the controllers' fixed time-of-day plans ("baseline"), once with the central
loop ("adaptive") — and reports both.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.closed_loop import LoopResult, run_loop
from traffic import db
from traffic.config import Settings

log = logging.getLogger(__name__)


def _improvement(before: float, after: float) -> str:
    if before <= 0:
        return "n/a"
    return f"{100.0 * (after - before) / before:+.1f} %"


def summarise(baseline: LoopResult, adaptive: LoopResult, *, scenario_dir: Path, dsn: str, mqtt_url: str,
              wall_s: float) -> dict[str, Any]:
    """The JSON summary (stable keys: baseline.mean_delay_s, adaptive.mean_delay_s, plans.*, records_stored)."""
    return {
        "baseline": baseline.to_dict(),
        "adaptive": adaptive.to_dict(),
        "plans": {
            "proposed": adaptive.plans_proposed,
            "dispatched": adaptive.plans_dispatched,
            "acknowledged": adaptive.plans_acknowledged,
            "applied": adaptive.plans_applied,
            "rejected_by_field": adaptive.plans_rejected_field,
        },
        "records_stored": baseline.records_stored + adaptive.records_stored,
        "scenario": str(scenario_dir),
        "database_dsn": dsn,
        "mqtt_url": mqtt_url,
        "wall_s": round(wall_s, 1),
    }


def render_table(summary: dict[str, Any]):
    """A rich Table of the before/after numbers."""
    from rich.table import Table

    b, a = summary["baseline"], summary["adaptive"]
    table = Table(title="Fixed-time plan vs closed loop (same demand, same seed)")
    table.add_column("measure")
    table.add_column("fixed-time", justify="right")
    table.add_column("closed loop", justify="right")
    table.add_column("change", justify="right")
    rows = [
        ("mean delay per vehicle (s)", "mean_delay_s", "{:.1f}"),
        ("mean trip time (s)", "mean_trip_time_s", "{:.1f}"),
        ("mean stops per vehicle", "mean_stops", "{:.2f}"),
        ("throughput (veh/h)", "throughput_veh_h", "{:.0f}"),
        ("vehicles completed", "completed", "{:d}"),
        ("vehicles not departed", "undeparted", "{:d}"),
    ]
    for name, key, fmt in rows:
        if key in b and key in a:
            table.add_row(name, fmt.format(b[key]), fmt.format(a[key]), _improvement(float(b[key]), float(a[key])))
    for cid in sorted(set(b.get("intersection_delay_s", {})) | set(a.get("intersection_delay_s", {}))):
        before, after = b.get("intersection_delay_s", {}).get(cid), a.get("intersection_delay_s", {}).get(cid)
        table.add_row(f"  delay at {cid} (s/veh, approaches)", "-" if before is None else f"{before:.1f}",
                      "-" if after is None else f"{after:.1f}",
                      _improvement(before, after) if before is not None and after is not None else "")
    table.add_row("detector records stored", str(b["records_stored"]), str(a["records_stored"]), "")
    p = summary["plans"]
    table.add_row("plans dispatched / acknowledged / applied", "-",
                  f"{p['dispatched']} / {p['acknowledged']} / {p['applied']}", "")
    return table


#: push-button presses per crosswalk and hour in the twin (the corridor models no walking people)
PED_CALLS_PER_HOUR = 40.0


def write_reports(dsn: str, out_dir: Path, scenario: Any, results: dict[str, LoopResult]) -> dict[str, Path]:
    """``traffic report`` of each run's window: every intersection, the time-space diagram, before/after delay."""
    from app.report import write_report
    from app.report_data import corridor_from_db

    ids = [s.controller_id for s in scenario.corridor.intersections]
    names = {"baseline": "fixed-time", "adaptive": "closed loop"}
    before_after: dict[str, dict[str, float]] = {}
    for label, result in sorted(results.items(), key=lambda kv: kv[0] != "baseline"):  # before first
        for cid, delay in result.intersection_delay_s.items():
            before_after.setdefault(cid, {})[names.get(label, label)] = delay
    out = {}
    for label, result in results.items():
        start, end = (datetime.fromisoformat(t) for t in result.window)
        corridor, note = corridor_from_db(dsn, start, end, controllers=ids, links=scenario.corridor.links)
        if corridor is None:
            log.warning("report %s: no time-space diagram (%s)", label, note)
        out[label] = write_report(dsn, out_dir / label, ids, start, end, corridor=corridor, before_after=before_after,
                                  before_after_note="mean time loss per vehicle on each signal's approach edges "
                                                    "(SUMO edge data), same demand and seed")
    return out


def run_demo(settings: Settings, *, json_path: Path | None, seed: int, minutes: int, intersections: int,
             console=None) -> dict[str, Any]:
    """Run the whole demo; return the summary (also written to ``json_path`` when given)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app.services import ensure_services
    from simulation.corridor import generate_corridor

    console = console or Console()
    started = time.monotonic()
    state_dir = Path(settings.state_dir).resolve()
    with ensure_services(settings) as handles:
        settings = handles.apply(settings)
        dsn = settings.database.dsn
        console.print(f"[bold]broker[/] {handles.mqtt_url}   [bold]database[/] {dsn}")
        db.migrate(dsn)
        scenario_dir = state_dir / "corridor"
        with console.status("generating the corridor with netconvert ..."):
            scenario = generate_corridor(scenario_dir, n_intersections=intersections, duration_s=minutes * 60,
                                         site=settings.site.site)
        console.print(f"corridor: {len(scenario.corridor.intersections)} signals, {minutes} min of demand, "
                      f"files in {scenario_dir}")
        today = datetime.now(UTC).replace(second=0, microsecond=0)
        origins = {"baseline": today - timedelta(days=1), "adaptive": today}
        results: dict[str, LoopResult] = {}
        with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:
            tasks = {label: bar.add_task(label, total=1.0, info="") for label in origins}

            def progress(label: str, fraction: float, info: dict) -> None:
                text = ""
                if "dispatched" in info:
                    text = (f"plans sent {info['dispatched']} acked {info['acknowledged']}"
                            f"  {info.get('verdict', '')[:50]}")
                bar.update(tasks[label], completed=fraction, info=text)

            for label, origin in origins.items():
                results[label] = run_loop(settings, scenario, dsn=dsn, adaptive=(label == "adaptive"), seed=seed,
                                          clock_origin=origin, workdir=state_dir / "runs", label=label,
                                          progress=progress, ped_calls_per_hour=PED_CALLS_PER_HOUR)
        summary = summarise(results["baseline"], results["adaptive"], scenario_dir=scenario_dir, dsn=dsn,
                            mqtt_url=handles.mqtt_url, wall_s=time.monotonic() - started)
        from dashboards.build import build_all

        grafana_dir = state_dir / "grafana"
        build_all(grafana_dir, settings)
        summary["grafana_provisioning"] = str(grafana_dir)
        with console.status("writing the report (PCD, split monitor, measures, time-space, before/after) ..."):
            summary["report"] = {label: str(path) for label, path in
                                 write_reports(dsn, state_dir / "report", scenario, results).items()}
        console.print(render_table(summary))
        console.print(
            "\n[bold]Where the data lives[/]\n"
            f"  PostgreSQL {dsn}\n"
            "    detector_counts (per detector and interval), controller_events (Indiana hi-res),\n"
            "    plans + plan_events (every plan's life with safety and SUMO verdict numbers),\n"
            "    controllers / controller_status, dead_letters\n"
            f"  SUMO outputs   {state_dir / 'runs'}\n"
            "  Look at it:    psql \"" + dsn + "\" -c \"SELECT controller_id, version, state, created_by"
            " FROM plans ORDER BY created_at\"\n"
            f"  Dashboards:    Grafana provisioning + dashboard JSON in {grafana_dir}\n"
            "                 (point Grafana's provisioning path there; the data source reads this database)\n"
            f"  Report:        {summary['report'].get('adaptive', '')} (closed loop)\n"
            f"                 {summary['report'].get('baseline', '')} (fixed-time)\n"
            + ("  The private broker and database stop with the demo; the database files stay in "
               f"{state_dir} and are reused next time.\n" if handles.postgres is not None else "")
        )
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2, default=str))
            console.print(f"summary written to {json_path}")
    return summary
