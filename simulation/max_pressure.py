"""Max-pressure signal control: the field-safe adaptive baseline every comparison is made against.

The rule (Varaiya's max-pressure, as the RESCO benchmark and field-safe
re-implementations run it): each signal serves its mapped phases
(:class:`~traffic.intersection.IntersectionSpec` ``phases``, greens per SUMO
link index). A green is served in blocks of ``decision_s`` (10 s); at the end
of each block the phase with the largest *pressure* is chosen, the current
one kept while it is still (one of) the best, and a change always runs through
the leaving phase's ITE yellow and all-red, shown with the same
:func:`traffic.signals.yellow_state` / :func:`~traffic.signals.red_clear_state`
the field emulator and the gate use, so clearance is identical everywhere.

Pressure of a phase = sum over its green (``G``/``g``) *vehicle* links of
(queue on the link's incoming lane - queue on its outgoing lane). A queue is
the number of halting vehicles (speed < 0.1 m/s, SUMO's own halting
threshold) within ``queue_range_m`` (200 m) of the stop line on the incoming
lane, walking upstream over the lanes that feed a shorter lane through
unsignalised junctions (OSM imports split streets into short lanes at every
geometry node; a 20 m stop-line lane alone holds three cars, so every phase
would look alike), and within ``queue_range_m`` of the start of the outgoing
lane.

Why the earlier version collapsed on real networks (the measured diagnosis
is in ``bench/max_pressure_check.py``'s docstring): its starvation rule (any
phase with a vehicle anywhere on its lanes, not green for 180 s, is served
next) and its 90 s maximum green took over whenever a signal has many phases
and long change intervals (joined clusters: 16 single-approach phases with
15 s of change each), turning the controller into a round robin of minimum
greens; and it weighed whole lanes as sets, so short stop-line lanes capped
every queue. Here the pressure decides; the starvation guard only acts on
halting vehicles, per link, after ``max_red_s``.

Robustness on real networks:

* links whose incoming or outgoing lane is internal (``:``), pedestrian-,
  rail- or tram-only count for nothing;
* one program over several junctions (joined clusters) is just more links;
* a phase without vehicle links is never chosen for its pressure; if it
  serves pedestrian crossings it is served once pedestrians have waited
  ``ped_max_wait_s`` (or ``max_red_s``), with walk + pedestrian clearance as
  its minimum green;
* minimum green = max(``min_green_s`` (5 s), the spec's minimum green, walk +
  pedestrian clearance where the network models crossings);
* crosswalks the spec only assumes (``pedestrians="assume"``: people cross,
  SUMO does not walk them, nobody can press a button) get the field's timed
  pedestrian recall: each such phase shows its walk at least every
  ``PED_RECALL_PERIOD_S`` (90 s), the longest overdue first, holding that
  green for walk + pedestrian clearance (and a walk falling due in its own
  green starts there and holds it). Before, this baseline timed no
  pedestrian there while ``adaptive`` and ``actuated-safe`` did, which made
  it look 7-8 s a vehicle better than it is on the motorcycle corridor;
  ``pedestrian_timing="off"`` keeps that pedestrian-blind variant;
* no starvation: a vehicle link with halting vehicles that has been red for
  ``max_red_s`` forces the phase serving it (longest wait first). ``None``
  switches the guard off;
* ``max_green_s`` (off by default) caps a green when others have halting
  vehicles.

SUMO's ``s`` signals (green right-turn arrow: stop, then go) of the
network's program are kept wherever the phase shows red, as the network does.

The decision rule (:func:`choose_phase`) and the pressure (:func:`phase_pressures`)
are pure and unit-tested; the controller class only reads queues and sets
states through the backend API (libsumo or TraCI).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from traffic.clearance import PED_RECALL_PERIOD_S, ceil_to_step
from traffic.errors import SimulationError
from traffic.intersection import IntersectionSpec
from traffic.signals import GREEN_CHARS, red_clear_state, yellow_state

log = logging.getLogger(__name__)

#: values of ``MaxPressureSettings.pedestrian_timing``
PEDESTRIAN_TIMINGS = ("auto", "on", "recall", "off")

#: SUMO's halting threshold (``getLastStepHaltingNumber`` counts speed < 0.1 m/s).
HALTING_SPEED_MPS = 0.1

#: vehicle classes that make a lane count for pressure (anything on the road; not rail, not people)
_NOT_ROAD = frozenset({"pedestrian", "rail", "rail_urban", "rail_electric", "rail_fast", "tram", "subway",
                       "cable_car", "aircraft", "ship", "wheelchair", "scooter"})

#: link states (``lane.getLinks``) of unsignalised junctions, through which a queue is followed upstream
_UNSIGNALISED = frozenset("Mm=Z")


@dataclass(frozen=True)
class MaxPressureSettings:
    """Tuning of the baseline (seconds, metres). Defaults: the field-safe max-pressure of the issue."""

    decision_s: float = 10.0
    #: None: no maximum green (pressure alone ends a green). A number: yield after it to a phase with a queue.
    max_green_s: float | None = None
    #: None: no starvation guard. A number: a link with halting vehicles red that long forces its phase.
    max_red_s: float | None = 120.0
    #: "auto": where the network models crossings, walk + pedestrian clearance bound every green of a
    #: phase that times them ("on"); where the spec only assumes its crosswalks (no crossing in SUMO,
    #: nobody to press a button), the timed pedestrian recall ("recall"): each such phase shows its walk
    #: at least every ``PED_RECALL_PERIOD_S``, as the field's free mode does. "off": no pedestrian timing
    #: (not field-safe where people cross; the published RESCO baseline and the no-crosswalk variants).
    pedestrian_timing: str = "auto"
    #: None: each phase's ITE yellow and all-red (field-safe). A number: that fixed
    #: yellow and no all-red, *only* to reproduce published baselines (see :func:`resco`).
    fixed_yellow_s: float | None = None
    #: floor of every minimum green (the spec's min green and pedestrian minimum apply when larger)
    min_green_s: float = 5.0
    #: queues count halting vehicles this far from the stop line (incoming) / the lane start (outgoing)
    queue_range_m: float = 200.0
    #: follow a queue upstream over lanes feeding a shorter stop-line lane (through unsignalised junctions)
    walk_upstream: bool = True
    #: True: a permissive (g) link adds to its phase's pressure even where another phase protects it (G)
    permissive_pressure: bool = True
    #: "vehicle": a link is starved when a vehicle at its stop line has halted ``max_red_s`` without a break;
    #: "link": when it has halting vehicles and has not shown its best green for ``max_red_s``
    starvation_basis: str = "vehicle"
    #: wait after which pedestrians of a phase without vehicle links are served (None: ``max_red_s``, else 120 s)
    ped_max_wait_s: float | None = None

    def __post_init__(self) -> None:
        if not self.decision_s > 0:
            raise SimulationError(f"bad max-pressure settings: {self}")
        if self.max_green_s is not None and not self.max_green_s >= self.decision_s:
            raise SimulationError(f"max_green_s must be at least decision_s: {self}")
        if self.max_red_s is not None and not self.max_red_s > 0:
            raise SimulationError(f"max_red_s must be positive: {self}")
        if self.ped_max_wait_s is not None and not self.ped_max_wait_s > 0:
            raise SimulationError(f"ped_max_wait_s must be positive: {self}")
        if self.starvation_basis not in ("vehicle", "link"):
            raise SimulationError(f"starvation_basis must be vehicle or link, got {self.starvation_basis!r}")
        if self.pedestrian_timing not in PEDESTRIAN_TIMINGS:
            raise SimulationError(f"pedestrian_timing must be one of {', '.join(PEDESTRIAN_TIMINGS)}, "
                                  f"got {self.pedestrian_timing!r}")
        if self.fixed_yellow_s is not None and not self.fixed_yellow_s > 0:
            raise SimulationError("fixed_yellow_s must be positive")
        if not (self.min_green_s >= 0 and self.queue_range_m > 0):
            raise SimulationError(f"bad max-pressure settings: {self}")

    @property
    def ped_wait_limit_s(self) -> float:
        """How long pedestrians of a pedestrian-only phase may wait before it is served."""
        if self.ped_max_wait_s is not None:
            return self.ped_max_wait_s
        return self.max_red_s if self.max_red_s is not None else 120.0

    @classmethod
    def resco(cls) -> MaxPressureSettings:
        """The RESCO benchmark's baseline: 10 s decisions, 3 s yellow, no all-red.

        Not field-safe (clearances shorter than ITE): use it only to compare
        with published numbers. Same decision rule and queues as the default.
        """
        return cls(fixed_yellow_s=3.0, pedestrian_timing="off")


@dataclass(frozen=True)
class TraceEntry:
    """One signal state shown from ``time`` on (for audits and tests)."""

    time: float
    tls_id: str
    state: str
    phase: int       # phase index being served or entered
    kind: str        # green / yellow / red


def phase_pressures(phase_links: Sequence[Sequence[tuple[str, str]]], queue_in: Mapping[str, float],
                    queue_out: Mapping[str, float]) -> list[float]:
    """Pressure per phase: sum over its vehicle links (in lane, out lane) of queue in - queue out.

    A phase without vehicle links gets ``-inf``: it is never chosen for its
    pressure (only for waiting pedestrians, see :func:`choose_phase`).
    A lane missing from the queue maps counts as an empty queue.
    """
    out: list[float] = []
    for links in phase_links:
        if not links:
            out.append(-math.inf)
            continue
        out.append(float(sum(queue_in.get(i, 0.0) - queue_out.get(o, 0.0) for i, o in links)))
    return out


def choose_phase(current: int, pressures: Sequence[float], demand: Sequence[bool], waited_s: Sequence[float],
                 green_s: float, settings: MaxPressureSettings) -> int:
    """Index of the phase to serve next (``current`` to keep it).

    Called only at a decision point (the current phase has had its minimum
    green). Order of the rules:

    1. starvation: among the other phases with demand that waited at least
       their limit (``max_red_s`` for a phase with vehicle links, the
       pedestrian limit for one without: pressure ``-inf``), the one that
       waited longest;
    2. maximum green (when set): the best *other* phase with demand;
    3. plain max-pressure; ties keep the current phase, and a phase with
       pressure ``-inf`` (no vehicle links) is never chosen here.
    """
    n = len(pressures)
    if not (len(demand) == len(waited_s) == n) or not 0 <= current < n:
        raise SimulationError("choose_phase: inconsistent stage data")

    def limit(k: int) -> float | None:
        return settings.max_red_s if math.isfinite(pressures[k]) else settings.ped_wait_limit_s

    starved = [k for k in range(n) if k != current and demand[k] and limit(k) is not None
               and waited_s[k] >= limit(k)]  # type: ignore[operator]
    if starved:
        return max(starved, key=lambda k: (waited_s[k], pressures[k]))
    if settings.max_green_s is not None and green_s >= settings.max_green_s:
        others = [k for k in range(n) if k != current and demand[k] and math.isfinite(pressures[k])]
        if others:
            return max(others, key=lambda k: (pressures[k], waited_s[k]))
    best = max(range(n), key=lambda k: (pressures[k], k == current))
    if not math.isfinite(pressures[best]) or pressures[best] <= pressures[current]:
        return current
    return best


def is_road_lane(allowed: Sequence[str]) -> bool:
    """Whether a lane with SUMO ``allowed`` classes carries road vehicles (empty list: everything allowed)."""
    return not allowed or any(c not in _NOT_ROAD for c in allowed)


@dataclass(frozen=True)
class _Segment:
    """Part of a lane whose halting vehicles count: positions in [start, end] (metres from the lane start)."""

    lane: str
    start: float
    end: float
    whole: bool  # the segment covers the whole lane: SUMO's halting count is enough


@dataclass
class _Transition:
    target: int
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, state, duration)


class MaxPressureController:
    """Field-safe max-pressure for one signal (see module docstring)."""

    def __init__(self, spec: IntersectionSpec, settings: MaxPressureSettings | None = None, *,
                 trace: list[TraceEntry] | None = None) -> None:
        self.spec = spec
        self.settings = settings or MaxPressureSettings()
        self.trace = trace
        self.greens = [p.greens for p in spec.phases]
        self.min_green = [max(self.settings.min_green_s, p.min_green_s) for p in spec.phases]
        self.current = 0
        self.green_start = 0.0
        self.transition: _Transition | None = None
        #: per phase: its green vehicle links as (incoming lane, outgoing lane), one entry per SUMO link
        self.phase_links: list[list[tuple[str, str]]] = []
        #: per phase: SUMO link indices of its green vehicle links
        self.phase_link_indices: list[list[int]] = []
        #: per phase: the links it serves at their best green (G if some phase protects the link, else g)
        self.phase_serves: list[list[int]] = []
        #: per phase: walking areas in front of the crossings it serves (pedestrian demand)
        self.phase_walkingareas: list[list[str]] = []
        self.link_in_lane: dict[int, list[str]] = {}
        self.last_green: dict[int, float] = {}
        self.stopline_lanes: list[str] = []
        self.in_segments: dict[str, tuple[_Segment, ...]] = {}
        self.out_segments: dict[str, tuple[_Segment, ...]] = {}
        self.step = 1.0
        self.stop_go: frozenset[int] = frozenset()
        self._ped_green_end: dict[int, float] = {}
        self._started = 0.0
        #: per phase: walk + pedestrian clearance of a crosswalk on timed recall (0: none)
        self.ped_recall: list[float] = [0.0] * len(spec.phases)
        self._last_walk: dict[int, float] = {}  # recall phase -> start of its last walk
        self._walk_end = 0.0                     # end of the walk (+ flashing don't-walk) the green now times
        #: (phase index, start) of every recall walk shown, for audits and tests
        self.walks: list[tuple[int, float]] = []

    # ---- wiring ------------------------------------------------------
    def start(self, api, now: float) -> float:
        """Read the signal's links and lanes, take over from the network's program without an unsafe cut."""
        tls = self.spec.tls_id
        self.step = float(api.simulation.getDeltaT())
        shown = api.trafficlight.getRedYellowGreenState(tls)
        if len(shown) != self.spec.link_count:
            raise SimulationError(f"TLS {tls} has {len(shown)} signal groups, its spec {self.spec.link_count}")
        links = api.trafficlight.getControlledLinks(tls)
        crossings = any(link and link[0] and link[0].startswith(":") for group in links for link in group)
        ped = self.settings.pedestrian_timing
        if ped == "on" or (ped == "auto" and crossings):
            self.min_green = [max(m, p.walk_s + p.ped_clear_s) if p.ped_crossing_m > 0 else m
                              for m, p in zip(self.min_green, self.spec.phases, strict=False)]
        elif ped == "recall" or (ped == "auto" and not crossings):
            self.ped_recall = [p.walk_s + p.ped_clear_s if p.ped_crossing_m > 0 else 0.0 for p in self.spec.phases]
            self._last_walk = {k: now for k, d in enumerate(self.ped_recall) if d > 0}
        road: dict[str, bool] = {}

        def is_road(lane_id: str) -> bool:
            if lane_id not in road:
                road[lane_id] = not lane_id.startswith(":") and is_road_lane(api.lane.getAllowed(lane_id))
            return road[lane_id]

        vehicle_pairs: dict[int, list[tuple[str, str]]] = {}
        walkingareas: dict[int, list[str]] = {}
        for index, group in enumerate(links):
            pairs: list[tuple[str, str]] = []
            for link in group:
                if not link or not link[0] or not link[1]:
                    continue
                in_lane, out_lane = link[0], link[1]
                if is_road(in_lane) and is_road(out_lane):
                    if (in_lane, out_lane) not in pairs:
                        pairs.append((in_lane, out_lane))
                elif in_lane.startswith(":") and "_w" in in_lane:  # walking area -> crossing
                    walkingareas.setdefault(index, []).append(in_lane.rsplit("_", 1)[0])
            if pairs:
                vehicle_pairs[index] = pairs
        for greens in self.greens:
            indices = [i for i, ch in enumerate(greens) if ch in GREEN_CHARS and i in vehicle_pairs]
            self.phase_link_indices.append(indices)
            self.phase_links.append([pair for i in indices for pair in vehicle_pairs[i]])
            self.phase_walkingareas.append(sorted({w for i, ch in enumerate(greens) if ch in GREEN_CHARS
                                                   for w in walkingareas.get(i, ())}))
        self.link_in_lane = {i: sorted({a for a, _ in pairs}) for i, pairs in vehicle_pairs.items()}
        self.stopline_lanes = sorted({a for lanes in self.link_in_lane.values() for a in lanes})
        if not any(self.phase_links):
            log.warning("max-pressure: TLS %s has no vehicle links; it will only serve pedestrians", tls)
        # a link counts as served when it shows its best green: protected (G) where some phase
        # protects it, else permissive (g). A permissive left that cannot find gaps is not served.
        best = {i: ("G" if any(g[i] == "G" for g in self.greens) else "g") for i in vehicle_pairs}
        self.phase_serves = [[i for i in indices if self.greens[k][i] == best[i]]
                             for k, indices in enumerate(self.phase_link_indices)]
        if not self.settings.permissive_pressure:
            self.phase_links = [[pair for i in serves for pair in vehicle_pairs[i]] for serves in self.phase_serves]
        for a, b in (pair for pairs in vehicle_pairs.values() for pair in pairs):
            if a not in self.in_segments:
                self.in_segments[a] = self._upstream_segments(api, a)
            if b not in self.out_segments:
                self.out_segments[b] = self._downstream_segments(api, b)
        # SUMO's "s" (green right-turn arrow: stop, then go when clear) is not part of the
        # plan model; links the network's program gives "s" keep it whenever we show red.
        self.stop_go = frozenset(i for logic in api.trafficlight.getAllProgramLogics(tls) for ph in logic.phases
                                 for i, ch in enumerate(ph.state) if ch == "s")
        self.last_green = {i: now for i in vehicle_pairs}
        self._started = now
        # Take over from whatever the network's program shows without an unsafe cut:
        # keep a phase that is showing, else change from the shown greens to phase 1.
        plain = "".join(c if c in GREEN_CHARS else "r" for c in shown)
        if plain in self.greens:
            self.current = self.greens.index(plain)
            return self._begin_green(api, now)
        self.current = 0
        self.transition = self._plan_transition(plain, 0, leaving=None)
        return self._advance(api, now)

    def update(self, api, now: float) -> float:
        """Act at ``now``: continue a change interval, or take the decision at the end of a green block."""
        if self.transition is not None:
            return self._advance(api, now)
        if self._walk_due(self.current, now):  # pedestrian recycle: the walk falls due in its own green
            self._begin_walk(now)
        if now + 1e-6 < self._walk_end:
            return max(self._walk_end, self._next_decision(now))
        green_s = now - self.green_start
        if green_s + 1e-6 < self.min_green[self.current]:
            return self._next_decision(now)
        pressures, demand, waited = self.measure(api, now)
        chosen = choose_phase(self.current, pressures, demand, waited, green_s, self.settings)
        overdue = [k for k in self._last_walk if k != self.current and self._walk_due(k, now)]
        if overdue:  # a crosswalk on timed recall goes first, the longest overdue first (as in the field)
            chosen = min(overdue, key=lambda k: (self._last_walk[k], k))
        if chosen == self.current:
            return self._next_decision(now)
        for i in self.phase_serves[self.current]:
            self.last_green[i] = now
        self.transition = self._plan_transition(self.greens[self.current], chosen, leaving=self.current)
        return self._advance(api, now)

    # ---- measurement -------------------------------------------------
    def _upstream_segments(self, api, lane_id: str) -> tuple[_Segment, ...]:
        """Where the queue of stop-line lane ``lane_id`` may stand: ``queue_range_m`` back from the stop line."""
        rng = self.settings.queue_range_m
        length = api.lane.getLength(lane_id)
        segments = [_Segment(lane_id, max(0.0, length - rng), length, length <= rng)]
        if not self.settings.walk_upstream:
            return tuple(segments)
        seen = {lane_id}
        frontier = [(lane_id, rng - length)]
        while frontier:
            lane, remaining = frontier.pop()
            if remaining <= 0:
                continue
            for pred in _predecessors(api, lane):
                if pred in seen or not is_road_lane(api.lane.getAllowed(pred)):
                    continue
                seen.add(pred)
                plen = api.lane.getLength(pred)
                segments.append(_Segment(pred, max(0.0, plen - remaining), plen, plen <= remaining))
                frontier.append((pred, remaining - plen))
        return tuple(segments)

    def _downstream_segments(self, api, lane_id: str) -> tuple[_Segment, ...]:
        """Where vehicles blocking outgoing lane ``lane_id`` may stand: ``queue_range_m`` from its start.

        A short outgoing lane is followed downstream through unsignalised
        junctions (when ``walk_upstream``, the same switch as upstream), so a
        street jammed beyond a short first lane still pushes back.
        """
        rng = self.settings.queue_range_m
        length = api.lane.getLength(lane_id)
        segments = [_Segment(lane_id, 0.0, min(length, rng), length <= rng)]
        if not self.settings.walk_upstream:
            return tuple(segments)
        seen = {lane_id}
        frontier = [(lane_id, rng - length)]
        while frontier:
            lane, remaining = frontier.pop()
            if remaining <= 0:
                continue
            for link in api.lane.getLinks(lane):
                succ = link[0]
                if succ in seen or str(link[5]) not in _UNSIGNALISED or succ.startswith(":") \
                        or not is_road_lane(api.lane.getAllowed(succ)):
                    continue
                seen.add(succ)
                slen = api.lane.getLength(succ)
                segments.append(_Segment(succ, 0.0, min(slen, remaining), slen <= remaining))
                frontier.append((succ, remaining - slen))
        return tuple(segments)

    def measure(self, api, now: float) -> tuple[list[float], list[bool], list[float]]:
        """Pressures, demand (halting vehicles or waiting pedestrians) and waits per phase at ``now``."""
        cache: dict[_Segment, int] = {}

        def count(segments: Sequence[_Segment]) -> float:
            total = 0
            for seg in segments:
                if seg not in cache:
                    cache[seg] = _halting(api, seg)
                total += cache[seg]
            return float(total)

        q_in = {lane: count(segs) for lane, segs in self.in_segments.items()}
        q_out = {lane: count(segs) for lane, segs in self.out_segments.items()}
        pressures = phase_pressures(self.phase_links, q_in, q_out)
        if self.settings.starvation_basis == "link":
            current_green = set(self.phase_serves[self.current])
            link_wait = {i: (0.0 if i in current_green else now - self.last_green[i])
                         for i, lanes in self.link_in_lane.items() if any(q_in[a] > 0 for a in lanes)}
        else:
            link_wait = {i: 0.0 for i, lanes in self.link_in_lane.items() if any(q_in[a] > 0 for a in lanes)}
            if self.settings.max_red_s is not None:
                for i, w in self._stuck_vehicles(api, self.settings.max_red_s).items():
                    link_wait[i] = max(link_wait.get(i, 0.0), w)
        demand: list[bool] = []
        waited: list[float] = []
        for k, indices in enumerate(self.phase_link_indices):
            if indices:
                waits = [link_wait[i] for i in self.phase_serves[k] if i in link_wait]
                demand.append(bool(waits))
                waited.append(max(waits, default=0.0))
            else:
                peds = _pedestrians_waiting(api, self.phase_walkingareas[k])
                demand.append(peds > 0)
                waited.append(0.0 if k == self.current else now - self.last_ped_green(k))
        return pressures, demand, waited

    def _stuck_vehicles(self, api, limit: float) -> dict[int, float]:
        """Per link of this signal: the longest continuous halt (>= ``limit``) of a vehicle at its stop line."""
        out: dict[int, float] = {}
        vehicle = api.vehicle
        for lane in self.stopline_lanes:
            for veh in api.lane.getLastStepVehicleIDs(lane):
                wait = vehicle.getWaitingTime(veh)
                if wait < limit:
                    continue
                for tls, index, _dist, _state in vehicle.getNextTLS(veh):
                    if tls == self.spec.tls_id:
                        out[index] = max(out.get(index, 0.0), float(wait))
                        break
        return out

    def last_ped_green(self, phase: int) -> float:
        """When the pedestrian-only ``phase`` last ended its green (start of control if never)."""
        return self._ped_green_end.get(phase, self._started)

    # ---- internals ---------------------------------------------------
    def _next_decision(self, now: float) -> float:
        """End of the current green block: green start + k decision periods, at or after min green and now."""
        d = self.settings.decision_s
        elapsed = max(now - self.green_start + self.step / 2, self.min_green[self.current])
        return self.green_start + max(1, math.ceil(round(elapsed / d, 6))) * d

    def _begin_green(self, api, now: float) -> float:
        self.green_start = now
        self._walk_end = now
        if self._walk_due(self.current, now):
            self._begin_walk(now)
        self._show(api, now, self.greens[self.current], self.current, "green")
        return max(self._walk_end, self._next_decision(now))

    def _walk_due(self, phase: int, now: float) -> bool:
        """Whether ``phase``'s crosswalk on timed recall must show its walk now (not while it already does)."""
        last = self._last_walk.get(phase)
        return last is not None and now + 1e-6 >= last + PED_RECALL_PERIOD_S and now + 1e-6 >= self._walk_end

    def _begin_walk(self, now: float) -> None:
        """The current green shows its walk from ``now``: it lasts at least walk + pedestrian clearance more."""
        self._last_walk[self.current] = now
        self._walk_end = now + self.ped_recall[self.current]
        self.walks.append((self.current, now))

    def _plan_transition(self, shown: str, target: int, *, leaving: int | None) -> _Transition:
        following = self.greens[target]
        spec_phase = self.spec.phases[leaving if leaving is not None else target]
        stages: list[tuple[str, str, float]] = []
        if any(c in GREEN_CHARS and n not in GREEN_CHARS for c, n in zip(shown, following, strict=False)):
            fixed = self.settings.fixed_yellow_s
            yellow = fixed if fixed is not None else spec_phase.yellow_s
            stages.append(("yellow", yellow_state(shown, following), ceil_to_step(yellow, self.step)))
            red = 0.0 if fixed is not None else ceil_to_step(spec_phase.red_clear_s, self.step)
            if red > 0:
                stages.append(("red", red_clear_state(shown, following), red))
        return _Transition(target=target, stages=stages)

    def _advance(self, api, now: float) -> float:
        if self.transition is None:
            raise SimulationError("max-pressure: no transition in progress")
        if self.transition.stages:
            kind, state, duration = self.transition.stages.pop(0)
            if kind == "yellow" and not self.phase_link_indices[self.current]:
                self._ped_green_end[self.current] = now
            self._show(api, now, state, self.transition.target, kind)
            return now + max(duration, self.step)
        self.current = self.transition.target
        self.transition = None
        return self._begin_green(api, now)

    def _show(self, api, now: float, state: str, phase: int, kind: str) -> None:
        if self.stop_go:
            state = "".join("s" if ch == "r" and i in self.stop_go else ch for i, ch in enumerate(state))
        api.trafficlight.setRedYellowGreenState(self.spec.tls_id, state)
        if self.trace is not None:
            self.trace.append(TraceEntry(now, self.spec.tls_id, state, phase, kind))


def _predecessors(api, lane_id: str) -> list[str]:
    """Normal lanes feeding ``lane_id`` through an unsignalised junction (a queue continues on them)."""
    edge = api.lane.getEdgeID(lane_id)
    junction = api.edge.getFromJunction(edge)
    out: list[str] = []
    for in_edge in api.junction.getIncomingEdges(junction):
        if in_edge.startswith(":"):
            continue
        for k in range(api.edge.getLaneNumber(in_edge)):
            lane = f"{in_edge}_{k}"
            for link in api.lane.getLinks(lane):
                if link[0] == lane_id and str(link[5]) in _UNSIGNALISED:
                    out.append(lane)
                    break
    return out


def _halting(api, seg: _Segment) -> int:
    """Halting vehicles (speed < 0.1 m/s) on ``seg``."""
    if seg.whole:
        return int(api.lane.getLastStepHaltingNumber(seg.lane))
    n = 0
    vehicle = api.vehicle
    for veh in api.lane.getLastStepVehicleIDs(seg.lane):
        if vehicle.getSpeed(veh) < HALTING_SPEED_MPS and seg.start <= vehicle.getLanePosition(veh) <= seg.end:
            n += 1
    return n


def _pedestrians_waiting(api, walkingareas: Sequence[str]) -> int:
    """People standing (speed < 0.1 m/s) on the walking areas in front of a phase's crossings."""
    n = 0
    for edge in walkingareas:
        for person in api.edge.getLastStepPersonIDs(edge):
            if api.person.getSpeed(person) < HALTING_SPEED_MPS:
                n += 1
    return n
