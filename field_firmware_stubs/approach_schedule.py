"""Arrival scheduling: when to end the green, from the vehicles an approach sensor sees.

A loop tells the controller a vehicle is over it; an approach sensor (a radar
or video zone covering each approach lane up to ``APPROACH_RANGE_M`` before
the stop line, what SCATS/SURTRAC sites add for queues and arrivals) tells
it where every vehicle on the lane is and how fast it goes. With that the
field can weigh, every second, what ending the green now costs the vehicles
still arriving on it against what holding it costs the vehicles waiting on
the others, instead of waiting for a fixed gap at one loop (SURTRAC's
schedule-driven control, reduced to the one decision the field takes).

How a decision is made (:func:`decide`): for each candidate end of the
current green (``EXTENSIONS_S`` from now, within its maximum), simulate the
stop lines over ``HORIZON_S``: every lane discharges its vehicles in order,
one per saturation headway (``CAR_HEADWAY_S``, ``MOTORCYCLE_HEADWAY_S``:
motorcycles filter and leave two or three abreast), a vehicle only when a
phase serving its lane is green, the first after ``START_LOST_S``; after
the current green each following phase is the one with the most vehicles
waiting per second of junction time it costs, a phase's waiting vehicles
counting one more for every ``AGE_WEIGHT_S`` since its last green ended when
some of them wait on a lane only that phase serves (the program's own choice
by demand ages its calls the same way), served until its lanes gap out
(``GAP_S``) or it reaches its maximum, each change paying its yellow and red
clearance. Without the age, a choice on what is in sight passes a phase with
fewer vehicles again and again while a busier one keeps filling: on the
motorway interchanges a split phase and a protected-only left were skipped
one cycle in four and two in five (a10kw-rebuilt, seed 1: 23 and 18 greens
in 30 minutes against the through phase's 30; 24 and 21 of 31 with the
age), and their vehicles waited beyond what the horizon charges. Only
lanes no other phase serves age a phase: a left turner the through phase
also lets go in the gaps is not starved when the protected-left phase is
skipped, and ageing that phase anyway served it more often for fewer
vehicles, each time paying its clearance (cross, rilsa, grid4x4: up to
9.7 s a vehicle worse).
A lane of the running green whose first vehicle still stands at the stop
line is blocked (its exit is full, or it waits for a gap to turn) and
discharges nothing in that green: holding the green for it only keeps the
others waiting (downstream spillback, seen from the
approach). The cost is the total time every seen vehicle spends before
its stop line. The green is held while some later end costs at least
``HOLD_MARGIN_VEH_S`` less than ending now; the phase the best "end now"
schedule serves next is returned as the next phase.

A vehicle seen past a split in the road counts as the share of the
vehicles there that turn onto this approach (``ApproachVehicle.weight``,
:mod:`field_firmware_stubs.approach_zones`): its time before the stop line
and the headway it takes are multiplied by it; the envelope floor counts
only vehicles that weigh in full.

Which phases serve a lane: the sensor knows the lane, not the turn. A lane
feeding several signal groups is served by the phases that show all of
them green (a shared lane's head vehicle blocks it otherwise); when no phase
shows them all, by the phases showing most of them.

This module is pure: the program (:mod:`field_firmware_stubs.program`)
applies a decision only between the green's minimum (walk included) and
its maximum, never to a pedestrian walk that is due, and does not end a
green while its queue is still leaving (:func:`queue_leaving`) or, while
a queue stands (:func:`queue_left`), before the green the centre planned
for it: the envelope floor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ApproachVehicle", "SchedulePhase", "Decision", "decide", "queue_leaving", "queue_left",
           "serving_phases", "schedule_cost",
           "APPROACH_RANGE_M", "HORIZON_S", "EXTENSIONS_S", "AGE_WEIGHT_S"]

#: how far before the stop line the approach sensor sees (the field-safe max-pressure's queue range)
APPROACH_RANGE_M = 200.0
#: how far ahead each candidate schedule is simulated (s); vehicles within range arrive well inside it
HORIZON_S = 90.0
#: candidate green extensions from now (s); 0 is "end the green now"
EXTENSIONS_S = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)
#: saturation headways at the stop line (s per vehicle and lane)
CAR_HEADWAY_S = 2.0
MOTORCYCLE_HEADWAY_S = 1.0
#: start-up lost time of a lane's first vehicle after its green starts (s)
START_LOST_S = 2.0
#: a following phase is served until no vehicle of its lanes can leave within this of the last (s)
GAP_S = 2.5
#: a moving vehicle is assumed to arrive no slower than this (m/s); one slower counts as queued
MIN_ARRIVAL_SPEED_MPS = 3.0
QUEUED_SPEED_MPS = 1.0
#: hold the green only when that saves at least this much vehicle time (s) over ending it now
HOLD_MARGIN_VEH_S = 0.5
#: a lane whose first vehicle stands this close to the stop line (m, slower than STANDING_SPEED_MPS) while
#: the green serving it runs past its minimum is blocked: its exit is full (spillback) or it waits for a
#: gap (a permissive turn); holding the green does not move it
BLOCKED_HEAD_M = 10.0
STANDING_SPEED_MPS = 0.5
#: a lane of the green with its head moving and at least this many vehicles queued is a queue still leaving
LEAVING_QUEUE_VEH = 2
#: a phase with vehicles waiting on a lane only it serves counts one vehicle more for every this many
#: seconds since its last green
AGE_WEIGHT_S = 20.0


@dataclass(frozen=True)
class ApproachVehicle:
    """One vehicle an approach sensor sees on a lane feeding the signal."""

    lane: str
    links: frozenset[int]      # signal groups (link indices) the lane feeds
    distance_m: float          # to the stop line
    speed_mps: float
    motorcycle: bool = False
    weight: float = 1.0        # how likely it comes to this lane: below 1 when seen past a split in the road


@dataclass(frozen=True)
class SchedulePhase:
    """What the schedule needs of one phase (seconds)."""

    number: int
    greens: str
    min_green_s: float
    max_green_s: float
    change_s: float            # yellow + red clearance after its green
    idle_s: float = 0.0        # since its last green ended (0: unknown)


@dataclass(frozen=True)
class Decision:
    hold: bool                 # keep the current green this second
    next_phase: int | None     # phase the best "end now" schedule serves next (None: nobody seen waiting)
    cost_now: float            # vehicle-seconds if the green ends now
    cost_best: float           # of the best candidate


def serving_phases(phases: Sequence[SchedulePhase], links: Iterable[int]) -> frozenset[int]:
    """Phases that discharge a lane feeding ``links``: those showing all of them green, else most of them."""
    sets = [frozenset(p.number for p in phases if 0 <= link < len(p.greens) and p.greens[link] in "Gg")
            for link in links]
    if not sets:
        return frozenset()
    common = frozenset.intersection(*sets)
    if common or len(sets) == 1:
        return common
    counts: dict[int, int] = {}
    for s in sets:
        for number in s:
            counts[number] = counts.get(number, 0) + 1
    top = max(counts.values(), default=0)
    return frozenset(n for n, c in counts.items() if c == top)


@dataclass
class _Lane:
    etas: list[float]
    headways: list[float]
    servers: frozenset[int]
    standing: bool  # its first vehicle stands at the stop line
    weights: list[float]  # 1 unless seen past a split (approach_zones)


def _lanes(phases: Sequence[SchedulePhase], vehicles: Iterable[ApproachVehicle]) -> list[_Lane]:
    by_lane: dict[str, list[ApproachVehicle]] = {}
    for v in vehicles:
        by_lane.setdefault(v.lane, []).append(v)
    out = []
    for seen in by_lane.values():
        seen.sort(key=lambda v: v.distance_m)
        etas = [0.0 if v.speed_mps < QUEUED_SPEED_MPS else max(0.0, v.distance_m) /
                max(v.speed_mps, MIN_ARRIVAL_SPEED_MPS) for v in seen]
        headways = [(MOTORCYCLE_HEADWAY_S if v.motorcycle else CAR_HEADWAY_S) * v.weight for v in seen]
        servers = serving_phases(phases, seen[0].links)
        standing = seen[0].distance_m <= BLOCKED_HEAD_M and seen[0].speed_mps < STANDING_SPEED_MPS
        if servers:
            out.append(_Lane(etas, headways, servers, standing, [v.weight for v in seen]))
    return out


def _discharge(lanes: list[_Lane], served: list[int], last: list[float], number: int, start: float,
               fixed_end: float | None, min_end: float, max_end: float, flowing: bool) -> tuple[float, float]:
    """Serve ``number`` from ``start``; returns (green end, vehicle-seconds of the vehicles it discharged).

    ``fixed_end``: the green ends then; otherwise it runs at least to
    ``min_end`` and on while a vehicle can leave within ``GAP_S`` of the
    last, up to ``max_end``. ``flowing``: the green is the one running now,
    past its minimum: a lane whose first vehicle still stands at the stop
    line is blocked and discharges nothing in it.
    """
    cost = 0.0
    end = fixed_end if fixed_end is not None else min_end
    mine = [i for i, lane in enumerate(lanes) if number in lane.servers and not (flowing and lane.standing)]
    lost = 0.0 if flowing else START_LOST_S
    last_departure = start
    while True:
        best: tuple[float, int] | None = None
        for i in mine:
            lane, k = lanes[i], served[i]
            if k >= len(lane.etas):
                continue
            earliest = start + lost if last[i] < start else last[i] + lane.headways[k]
            departure = max(lane.etas[k], earliest)
            if best is None or departure < best[0]:
                best = (departure, i)
        if best is None:
            break
        departure, i = best
        limit = end if fixed_end is not None else min(max_end, max(end, last_departure + GAP_S))
        if departure > limit:
            break
        lane = lanes[i]
        cost += (departure - lane.etas[served[i]]) * lane.weights[served[i]]
        served[i] += 1
        last[i] = departure
        last_departure = departure
        if fixed_end is None:
            end = max(end, departure)
    return end, cost


def _next_phase(lanes: list[_Lane], served: list[int], phases: Sequence[SchedulePhase], current: int,
                at: float, ended: Sequence[float]) -> int | None:
    """The phase with the most vehicles waiting by ``at`` (+5 s) per second of junction time it costs.

    A phase with vehicles waiting on a lane no other phase serves counts one
    more for every ``AGE_WEIGHT_S`` since its green last ended (``ended``,
    schedule time).
    """
    best: tuple[float, int] | None = None
    for j, phase in enumerate(phases):
        if j == current:
            continue
        waiting, alone = 0, False
        for i, lane in enumerate(lanes):
            if phase.number in lane.servers:
                here = sum(w for eta, w in zip(lane.etas[served[i]:], lane.weights[served[i]:], strict=True)
                           if eta <= at + 5.0)
                waiting += here
                alone = alone or (here > 0 and len(lane.servers) == 1)  # a lane only this phase serves
        age = max(0.0, at - ended[j]) / AGE_WEIGHT_S if alone else 0.0
        score = (waiting + age) / max(1.0, phase.min_green_s + phase.change_s)
        if best is None or score > best[0]:
            best = (score, j)
    return None if best is None else best[1]


def schedule_cost(phases: Sequence[SchedulePhase], current: int, vehicles: Iterable[ApproachVehicle],
                  end_in_s: float, horizon_s: float = HORIZON_S) -> tuple[float, int | None]:
    """Vehicle-seconds before the stop line if the green of ``phases[current]`` ends in ``end_in_s``.

    Returns the cost and the phase number served first after it (None when
    no other phase exists). Vehicles still waiting at the horizon count up
    to it.
    """
    lanes = _lanes(phases, vehicles)
    served = [0] * len(lanes)
    last = [-1e9] * len(lanes)
    number = phases[current].number
    for i, lane in enumerate(lanes):
        if number in lane.servers:
            last[i] = -1e-3   # already flowing: no start-up loss
    _end, cost = _discharge(lanes, served, last, number, 0.0, end_in_s, 0.0, end_in_s, True)
    t = end_in_s + phases[current].change_s
    at, first = current, None
    ended = [-phase.idle_s for phase in phases]
    ended[current] = end_in_s
    while t < horizon_s and len(phases) > 1:
        j = _next_phase(lanes, served, phases, at, t, ended)
        if j is None:
            break
        if first is None:
            first = phases[j].number
        phase = phases[j]
        end, part = _discharge(lanes, served, last, phase.number, t, None, t + phase.min_green_s,
                               t + phase.max_green_s, False)
        cost += part
        ended[j] = end
        t, at = end + phase.change_s, j
    for i, lane in enumerate(lanes):
        cost += sum(max(0.0, horizon_s - eta) * w
                    for eta, w in zip(lane.etas[served[i]:], lane.weights[served[i]:], strict=True))
    return cost, first


def decide(phases: Sequence[SchedulePhase], current: int, vehicles: Sequence[ApproachVehicle],
           room_s: float, extensions_s: Sequence[float] = EXTENSIONS_S) -> Decision:
    """Hold the current green or end it now, given ``room_s`` left before its maximum.

    Pure: the caller has already checked that the green's minimum is over
    and that another phase asks for the junction.
    """
    cost_now, following = schedule_cost(phases, current, vehicles, 0.0)
    best = cost_now
    for extension in extensions_s:
        if 0.0 < extension <= room_s:
            cost, _ = schedule_cost(phases, current, vehicles, extension)
            best = min(best, cost)
    hold = best < cost_now - HOLD_MARGIN_VEH_S
    return Decision(hold=hold, next_phase=following, cost_now=cost_now, cost_best=best)


def queue_left(phases: Sequence[SchedulePhase], current: int, vehicles: Iterable[ApproachVehicle]) -> bool:
    """Whether a lane the current green serves still shows a queued vehicle (slower than ``QUEUED_SPEED_MPS``;
    one seen past a split counts only when it weighs in full, see :mod:`field_firmware_stubs.approach_zones`).

    The program uses it for the envelope floor: a green whose queue is still
    there is not ended by the schedule before the green the centre planned
    for it (see :mod:`field_firmware_stubs.program`).
    """
    number = phases[current].number
    return any(number in lane.servers
               and any(eta == 0.0 and w >= 1.0 for eta, w in zip(lane.etas, lane.weights, strict=True))
               for lane in _lanes(phases, vehicles))


def queue_leaving(phases: Sequence[SchedulePhase], current: int, vehicles: Iterable[ApproachVehicle]) -> bool:
    """Whether a queue is still leaving on a lane the current green serves: its first vehicle is not
    standing at the stop line (``BLOCKED_HEAD_M``) and at least ``LEAVING_QUEUE_VEH`` of its vehicles
    are queued (slower than ``QUEUED_SPEED_MPS``, and weigh in full).

    The program does not let the schedule end such a green before its
    maximum (the envelope floor, :mod:`field_firmware_stubs.program`).
    """
    number = phases[current].number
    return any(number in lane.servers and not lane.standing
               and sum(1 for eta, w in zip(lane.etas, lane.weights, strict=True) if eta == 0.0 and w >= 1.0)
               >= LEAVING_QUEUE_VEH
               for lane in _lanes(phases, vehicles))


def vehicles_by_lane(vehicles: Iterable[ApproachVehicle]) -> Mapping[str, int]:
    """How many vehicles each lane shows (for logs and tests)."""
    out: dict[str, int] = {}
    for v in vehicles:
        out[v.lane] = out.get(v.lane, 0) + 1
    return out
