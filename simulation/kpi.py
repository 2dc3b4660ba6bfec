"""Traffic KPIs from SUMO's ``--tripinfo-output``.

The headline measure is **mean delay per vehicle over all vehicles**, the
ones that never got into the network included: a plan that gridlocks an
entry must not look good because the queued vehicles are missing from the
average. Runs therefore use ``--tripinfo-output.write-undeparted`` (SUMO
writes ``depart="-1"`` and ``departDelay`` = end minus scheduled departure,
which is exactly the delay to charge) and ``--tripinfo-output.write-unfinished``
(vehicles still driving at the end, ``arrival="-1"``, with their time loss
so far).

Per vehicle: delay = ``timeLoss`` + ``departDelay`` (departed) or
``departDelay`` (undeparted). Trip time averages completed trips only;
waiting time and stops (``waitingCount``) average the vehicles that departed.

The undeparted *count* cannot tell an entry gridlock from a vehicle that was
scheduled in the last second or two of the run and whose insertion slipped
by one step (SUMO inserts at ``departSpeed="avg"``, so a car behind a slow
or stopped leader enters slowly and blocks the insertion point for the next
second; any control shows this when the entry lane is not moving at the end).
So two diagnostics ride along, without changing any measure:
``undeparted_wait_max_s`` (the longest an undeparted vehicle had been waiting
at the end) and ``depart_delay_max_s`` (the longest insertion wait of any
vehicle, departed or not: the symptom of a queue reaching the network edge).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from traffic.errors import SimulationError


@dataclass(frozen=True)
class Kpis:
    """Outcome of one simulation run (seconds, vehicles, vehicles per hour)."""

    mean_delay_s: float
    mean_trip_time_s: float
    mean_waiting_s: float
    mean_stops: float
    vehicles: int
    completed: int
    undeparted: int
    teleports: int = 0
    throughput_veh_h: float = 0.0
    wall_s: float = 0.0
    #: longest wait of a vehicle still not inserted at the end (0 when none): 1-2 s is an end-of-run slip
    undeparted_wait_max_s: float = 0.0
    #: longest insertion wait of any vehicle (departed or not): large when a queue reaches an entry
    depart_delay_max_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(el: ET.Element, name: str, path: Path) -> float:
    raw = el.get(name)
    if raw is None:
        raise SimulationError(f"{path}: tripinfo {el.get('id')} lacks {name}")
    try:
        value = float(raw)
    except ValueError as exc:
        raise SimulationError(f"{path}: tripinfo {el.get('id')} has bad {name}={raw!r}") from exc
    if not math.isfinite(value):
        raise SimulationError(f"{path}: tripinfo {el.get('id')} has non-finite {name}")
    return value


def read_tripinfo(path: Path, *, end_s: float, begin_s: float = 0.0) -> Kpis:
    """Aggregate a tripinfo file of a run that covered ``[begin_s, end_s]``.

    ``end_s`` charges undeparted vehicles whose ``departDelay`` is missing
    (older SUMO) with ``end_s`` minus their scheduled departure, and sets the
    throughput's time base.
    """
    path = Path(path)
    if end_s <= begin_s:
        raise SimulationError(f"end_s ({end_s}) must be after begin_s ({begin_s})")
    delay_sum = trip_sum = wait_sum = stops_sum = 0.0
    undeparted_wait_max = depart_delay_max = 0.0
    vehicles = completed = undeparted = departed = 0
    try:
        for _event, el in ET.iterparse(path, events=("end",)):
            if el.tag != "tripinfo":
                continue
            vehicles += 1
            depart = _f(el, "depart", path)
            if depart < 0:
                undeparted += 1
                raw_delay = el.get("departDelay")
                if raw_delay is not None and float(raw_delay) >= 0:
                    waited = float(raw_delay)
                else:  # fall back to the scheduled departure, when SUMO wrote it
                    scheduled = float(el.get("desiredDepart", el.get("depart", begin_s)))
                    waited = max(0.0, end_s - max(scheduled, begin_s))
                delay_sum += waited
                undeparted_wait_max = max(undeparted_wait_max, waited)
                depart_delay_max = max(depart_delay_max, waited)
                el.clear()
                continue
            departed += 1
            depart_delay = max(0.0, _f(el, "departDelay", path))
            depart_delay_max = max(depart_delay_max, depart_delay)
            delay_sum += _f(el, "timeLoss", path) + depart_delay
            wait_sum += _f(el, "waitingTime", path)
            stops_sum += _f(el, "waitingCount", path)
            if _f(el, "arrival", path) >= 0:
                completed += 1
                trip_sum += _f(el, "duration", path)
            el.clear()
    except ET.ParseError as exc:
        raise SimulationError(f"tripinfo {path} is not valid XML: {exc}") from exc
    except OSError as exc:
        raise SimulationError(f"cannot read tripinfo {path}: {exc}") from exc
    hours = (end_s - begin_s) / 3600.0
    return Kpis(
        mean_delay_s=round(delay_sum / vehicles, 3) if vehicles else 0.0,
        mean_trip_time_s=round(trip_sum / completed, 3) if completed else 0.0,
        mean_waiting_s=round(wait_sum / departed, 3) if departed else 0.0,
        mean_stops=round(stops_sum / departed, 4) if departed else 0.0,
        vehicles=vehicles,
        completed=completed,
        undeparted=undeparted,
        throughput_veh_h=round(completed / hours, 2),
        undeparted_wait_max_s=round(undeparted_wait_max, 3),
        depart_delay_max_s=round(depart_delay_max, 3),
    )


def read_teleports(statistic_path: Path) -> int:
    """Total teleports from SUMO's ``--statistic-output`` (0 when the element is absent)."""
    try:
        root = ET.parse(statistic_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise SimulationError(f"cannot read statistics {statistic_path}: {exc}") from exc
    el = root.find("teleports")
    if el is None:
        return 0
    try:
        return int(el.get("total", "0"))
    except ValueError as exc:
        raise SimulationError(f"{statistic_path}: bad teleports total {el.get('total')!r}") from exc
