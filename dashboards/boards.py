"""The ATSPM, corridor and operations dashboards (grafana-foundation-sdk), SQL from :mod:`dashboards.queries`.

* ``atspm_intersection()`` - one intersection (``$device``): PCD, split monitor,
  terminations, split failures and occupancy, AoG, approach volume and delay,
  yellow/red actuations, pedestrians.
* ``corridor()`` - many intersections (``$controller``): flow in veh/h and
  pcu/h, motorcycle share per controller, plan changes as annotations, the ten
  worst approaches instead of one line per detector (a Hanoi-size site has
  thousands of detectors; the panels' output is bounded by controllers, not
  detectors).
* ``operations()`` - controllers by mode, dead letters, ingest lag, detectors
  not ok, gate verdicts, communications.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m

from dashboards.build import DATASOURCE_TYPE, DATASOURCE_UID, SqlQuery, _controller_variable, datasource_ref
from dashboards.queries import QUERIES

ATSPM_UID = "traffic-atspm-intersection"
CORRIDOR_ATSPM_UID = "traffic-corridor"
OPS_UID = "traffic-operations"
FILES = {ATSPM_UID: "atspm-intersection.json", CORRIDOR_ATSPM_UID: "corridor.json", OPS_UID: "operations.json"}


def _series(pid: int, title: str, queries: list[str], unit: str, description: str, *, span: int = 12,
            points: bool = False) -> ts_b.Panel:
    panel = (ts_b.Panel().id(pid).title(title).description(description).datasource(datasource_ref())
             .unit(unit).height(9).span(span))
    for i, name in enumerate(queries):
        panel = panel.with_target(SqlQuery(name, fmt="time_series", ref_id=chr(ord("A") + i)))
    if points:
        panel = panel.draw_style(_points()).point_size(4)
    return panel


def _points() -> Any:
    from grafana_foundation_sdk.models import common as common_m
    return common_m.GraphDrawStyle.POINTS


def _table(pid: int, title: str, name: str, description: str, *, span: int = 12) -> table_b.Panel:
    return (table_b.Panel().id(pid).title(title).description(description).datasource(datasource_ref())
            .with_target(SqlQuery(name)).height(8).span(span))


def _device_variable() -> dash_b.QueryVariable:
    return (dash_b.QueryVariable("device").label("Intersection").datasource(datasource_ref())
            .query(QUERIES["atspm_device_variable"]).refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC).multi(False).include_all(False))


def _json(board: dash_b.Dashboard) -> dict[str, Any]:
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def atspm_intersection() -> dict[str, Any]:
    """Per-intersection ATSPM dashboard."""
    board = (
        dash_b.Dashboard("ATSPM: intersection").uid(ATSPM_UID).tags(["traffic", "atspm"])
        .description("ATSPM measures of one intersection from its hi-res event log (sensors.atspm, 15-min bins).")
        .time("now-6h", "now").refresh("1m").timezone("browser").editable()
        .with_variable(_device_variable())
        .with_panel(_series(1, "Purdue Coordination Diagram", ["atspm_pcd_arrivals", "atspm_pcd_lines"], "s",
                            "Each dot: an arrival, at its second in the cycle (from begin green). Lines: begin "
                            "yellow and cycle end per phase.", span=24, points=True))
        .with_panel(_series(2, "Split monitor", ["atspm_split_monitor"], "s",
                            "Split (begin green to end of red clearance) of every cycle, per phase.", points=True))
        .with_panel(_table(3, "Terminations", "atspm_terminations",
                           "Gap-outs, max-outs and force-offs per phase, with services and mean split."))
        .with_panel(_series(4, "Split failures", ["atspm_split_failures"], "short",
                            "Cycles with green and red (first 5 s) occupancy both >= 80 %, per 15 min."))
        .with_panel(_table(5, "Green and red occupancy", "atspm_occupancy",
                           "Mean green and red occupancy over the cycles judged, per phase."))
        .with_panel(_series(6, "Arrivals on green", ["atspm_aog"], "percent",
                            "Share of arrivals (advance detector) during green, per 15 min."))
        .with_panel(_series(7, "Approach delay", ["atspm_approach_delay"], "s",
                            "Mean delay per vehicle: arrivals on red wait until the next begin green."))
        .with_panel(_series(8, "Approach volume", ["atspm_approach_volume"], "short",
                            "Arrivals per hour (15-min counts x 4), per phase."))
        .with_panel(_table(9, "Yellow and red actuations", "atspm_yellow_red",
                           "Detector actuations during yellow and during red, per phase."))
        .with_panel(_table(10, "Pedestrians", "atspm_ped",
                           "Walk services, push-button actuations and mean delay from call to walk."))
    )
    return _json(board)


def corridor() -> dict[str, Any]:
    """Corridor dashboard: aggregated flow, motorcycle share, plan changes as annotations, worst approaches."""
    board = (
        dash_b.Dashboard("Corridor").uid(CORRIDOR_ATSPM_UID).tags(["traffic", "corridor"])
        .description("Flow in veh/h and pcu/h, motorcycle share, plan changes, the ten worst approaches.")
        .time("now-6h", "now").refresh("1m").timezone("browser").editable()
        .with_variable(_controller_variable())
        .with_panel(_series(1, "Flow", ["corridor_flow"], "short",
                            "Sum over the selected controllers' detectors, veh/h and pcu/h (motorcycle 0.3 pcu)."))
        .with_panel(_series(2, "Motorcycle share", ["corridor_motorcycle_share"], "percent",
                            "Motorcycles among classified vehicles, per controller."))
        .with_panel(_table(3, "Worst approaches (top 10 by delay)", "corridor_worst_approaches",
                           "Approaches (controller, phase) with the highest delay per vehicle, with AoG and "
                           "split failures.", span=24))
    )
    out = _json(board)
    out.setdefault("annotations", {}).setdefault("list", []).append({
        "name": "Plan changes",
        "enable": True,
        "iconColor": "orange",
        "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
        "target": {"refId": "Anno", "rawSql": QUERIES["corridor_plan_annotations"], "format": "table",
                   "rawQuery": True, "editorMode": "code"},
    })
    return out


def operations() -> dict[str, Any]:
    """Operations dashboard."""
    board = (
        dash_b.Dashboard("Operations").uid(OPS_UID).tags(["traffic", "operations"])
        .description("Controllers by mode, dead letters, ingest lag, detector health, gate verdicts, comms.")
        .time("now-6h", "now").refresh("30s").timezone("browser").editable()
        .with_panel(_table(1, "Controllers by mode", "ops_controllers_by_mode",
                           "How many controllers are central / tod / flash, online or not.", span=8))
        .with_panel(_series(2, "Dead letters", ["ops_dead_letters"], "short",
                            "Refused messages per 15 min by reason.", span=16))
        .with_panel(_series(3, "Ingest lag (p95)", ["ops_ingest_lag"], "s",
                            "Seconds from the end of a counting interval to its row in the database."))
        .with_panel(_table(4, "Detectors not ok", "ops_detector_health",
                           "Detector health (sensors.health, scheduled in the ingest worker): stuck on, stuck "
                           "off, chattering, missing, since when."))
        .with_panel(_table(5, "Gate verdicts", "ops_gate_verdicts",
                           "Plans simulated by the SUMO gate, and those it rejected with the reason."))
        .with_panel(_table(6, "Communications", "ops_communications",
                           "Per controller: 15-min bins without enough events, longest silence."))
    )
    return _json(board)


BOARDS = {ATSPM_UID: atspm_intersection, CORRIDOR_ATSPM_UID: corridor, OPS_UID: operations}
