"""Max-pressure signal control, the standard adaptive baseline, with the safeguards it needs.

Every decision step each signal serves the green stage with the largest
*pressure*: vehicles queued (halting) on the lanes the stage releases minus
vehicles queued on the lanes those movements feed (Varaiya's max-pressure;
the RESCO benchmark's "every 10 s choose the phase with the largest
incoming-minus-outgoing queue"). Pure max-pressure can lock up: it may hold
one stage forever while a light side street waits, and it switches without
caring about change intervals. So this controller adds:

* **change intervals**: leaving a stage always shows yellow
  (:func:`traffic.signals.yellow_state`) for the stage's ITE yellow, then red
  clearance (:func:`traffic.signals.red_clear_state`) for its ITE all-red,
  exactly as a field controller would; a green is never cut straight to red;
* **minimum green**: a stage is held at least its design minimum green (and,
  where the network models pedestrian crossings, its walk plus pedestrian
  clearance);
* **maximum green**: after ``max_green_s`` the stage yields to the best other
  stage that has vehicles waiting;
* **no starvation**: a stage with vehicles on its approaches that has not
  been green for ``max_red_s`` is served next, whatever the pressures say.

SUMO's ``s`` signals (green right-turn arrow: stop, then go) of the
network's program are kept wherever the stage shows red, as the network does.
Stages are the network's own (the :class:`~traffic.intersection.IntersectionSpec`
phases), so no movement ever runs with a conflicting one.

The decision rule (:func:`choose_phase`) is pure and unit-tested; the
controller class only reads queues and sets states through the backend API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from traffic.errors import SimulationError
from traffic.intersection import IntersectionSpec
from traffic.signals import GREEN_CHARS, red_clear_state, yellow_state


@dataclass(frozen=True)
class MaxPressureSettings:
    """Tuning of the baseline (seconds). Defaults follow the RESCO reference (10 s decisions)."""

    decision_s: float = 10.0
    max_green_s: float = 90.0
    max_red_s: float = 180.0
    #: "auto": walk + pedestrian clearance bound the minimum green only where the
    #: network models crossings (elsewhere no pedestrian walks in SUMO); "on"/"off" force it.
    pedestrian_timing: str = "auto"
    #: None: each stage's ITE yellow and all-red (field-safe). A number: that fixed
    #: yellow and no all-red, *only* to reproduce published baselines (see :func:`resco`).
    fixed_yellow_s: float | None = None

    def __post_init__(self) -> None:
        if not (self.decision_s > 0 and self.max_green_s >= self.decision_s and self.max_red_s > 0):
            raise SimulationError(f"bad max-pressure settings: {self}")
        if self.pedestrian_timing not in ("auto", "on", "off"):
            raise SimulationError(f"pedestrian_timing must be auto, on or off, got {self.pedestrian_timing!r}")
        if self.fixed_yellow_s is not None and not self.fixed_yellow_s > 0:
            raise SimulationError("fixed_yellow_s must be positive")

    @classmethod
    def resco(cls) -> "MaxPressureSettings":
        """The RESCO benchmark's baseline: 10 s decisions, 3 s yellow, no all-red.

        Not field-safe (clearances shorter than ITE): use it only to compare
        with published numbers. The safeguards (max green, no starvation) stay.
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


def choose_phase(current: int, pressures: Sequence[float], demand: Sequence[bool], waited_s: Sequence[float],
                 green_s: float, settings: MaxPressureSettings) -> int:
    """Index of the stage to serve next (``current`` to keep it).

    Called only once the current stage has had its minimum green. Order of
    the rules: starvation first (the stage with demand that waited longest
    beyond ``max_red_s``), then maximum green (best *other* stage with
    demand), then plain max-pressure with ties kept on the current stage.
    """
    n = len(pressures)
    if not (len(demand) == len(waited_s) == n) or not 0 <= current < n:
        raise SimulationError("choose_phase: inconsistent stage data")
    starved = [k for k in range(n) if k != current and demand[k] and waited_s[k] >= settings.max_red_s]
    if starved:
        return max(starved, key=lambda k: (waited_s[k], pressures[k]))
    others = [k for k in range(n) if k != current and demand[k]]
    if green_s >= settings.max_green_s and others:
        return max(others, key=lambda k: (pressures[k], waited_s[k]))
    best = max(range(n), key=lambda k: (pressures[k], k == current))
    return current if pressures[best] <= pressures[current] else best


def _ceil_to(value: float, step: float) -> float:
    return math.ceil(round(value / step, 6)) * step if value > 0 else 0.0


@dataclass
class _Transition:
    target: int
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, state, duration)


class MaxPressureController:
    """Max-pressure with safeguards for one signal (see module docstring)."""

    def __init__(self, spec: IntersectionSpec, settings: MaxPressureSettings | None = None, *,
                 trace: list[TraceEntry] | None = None) -> None:
        self.spec = spec
        self.settings = settings or MaxPressureSettings()
        self.trace = trace
        self.greens = [p.greens for p in spec.phases]
        self.min_green = [p.min_green_s for p in spec.phases]
        self.current = 0
        self.green_start = 0.0
        self.last_green_end = [0.0] * len(self.greens)
        self.transition: _Transition | None = None
        self.in_lanes: list[tuple[str, ...]] = []
        self.out_lanes: list[tuple[str, ...]] = []
        self.step = 1.0
        self.stop_go: frozenset[int] = frozenset()

    # ---- wiring ------------------------------------------------------
    def start(self, api, now: float) -> float:
        tls = self.spec.tls_id
        self.step = float(api.simulation.getDeltaT())
        shown = api.trafficlight.getRedYellowGreenState(tls)
        if len(shown) != self.spec.link_count:
            raise SimulationError(f"TLS {tls} has {len(shown)} signal groups, its spec {self.spec.link_count}")
        links = api.trafficlight.getControlledLinks(tls)
        crossings = any(link and link[0] and link[0].startswith(":") for group in links for link in group)
        ped = self.settings.pedestrian_timing
        if ped == "on" or (ped == "auto" and crossings):
            self.min_green = [max(p.min_green_s, p.walk_s + p.ped_clear_s) if p.ped_crossing_m > 0 else p.min_green_s
                              for p in self.spec.phases]
        for greens in self.greens:
            ins: set[str] = set()
            outs: set[str] = set()
            for index, ch in enumerate(greens):
                if ch not in GREEN_CHARS or index >= len(links):
                    continue
                for link in links[index]:
                    if not link:
                        continue
                    in_lane, out_lane = link[0], link[1]
                    if in_lane and not in_lane.startswith(":"):
                        ins.add(in_lane)
                    if out_lane and not out_lane.startswith(":"):
                        outs.add(out_lane)
            self.in_lanes.append(tuple(sorted(ins)))
            self.out_lanes.append(tuple(sorted(outs)))
        # SUMO's "s" (green right-turn arrow: stop, then go when clear) is not part of the
        # plan model; links the network's program gives "s" keep it whenever we show red.
        self.stop_go = frozenset(i for logic in api.trafficlight.getAllProgramLogics(tls) for ph in logic.phases
                                 for i, ch in enumerate(ph.state) if ch == "s")
        self.last_green_end = [now] * len(self.greens)
        # Take over from whatever the network's program shows without an unsafe cut:
        # keep a stage that is showing, else change from the shown greens to stage 1.
        plain = "".join(c if c in GREEN_CHARS else "r" for c in shown)
        if plain in self.greens:
            self.current = self.greens.index(plain)
            self._show(api, now, plain, self.current, "green")
            self.green_start = now
            return now + self._hold()
        self.current = 0
        self.transition = self._plan_transition(plain, 0, leaving=None)
        return self._advance(api, now)

    def update(self, api, now: float) -> float:
        if self.transition is not None:
            return self._advance(api, now)
        green_s = now - self.green_start
        if green_s + 1e-6 < self.min_green[self.current]:
            return self.green_start + self.min_green[self.current]
        pressures, demand = self._measure(api)
        waited = [0.0 if k == self.current else now - self.last_green_end[k] for k in range(len(self.greens))]
        chosen = choose_phase(self.current, pressures, demand, waited, green_s, self.settings)
        if chosen == self.current:
            nxt = now + self.settings.decision_s
            if any(demand[k] for k in range(len(demand)) if k != self.current):
                nxt = min(nxt, max(self.green_start + self.settings.max_green_s, now + self.step))
            return nxt
        self.last_green_end[self.current] = now
        self.transition = self._plan_transition(self.greens[self.current], chosen, leaving=self.current)
        return self._advance(api, now)

    # ---- internals ---------------------------------------------------
    def _hold(self) -> float:
        return max(self.min_green[self.current], self.settings.decision_s)

    def _measure(self, api) -> tuple[list[float], list[bool]]:
        lane = api.lane
        halting: dict[str, int] = {}
        present: dict[str, int] = {}

        def h(lane_id: str) -> int:
            if lane_id not in halting:
                halting[lane_id] = lane.getLastStepHaltingNumber(lane_id)
            return halting[lane_id]

        pressures: list[float] = []
        demand: list[bool] = []
        for ins, outs in zip(self.in_lanes, self.out_lanes):
            pressures.append(float(sum(h(x) for x in ins) - sum(h(x) for x in outs)))
            waiting = False
            for x in ins:
                if x not in present:
                    present[x] = lane.getLastStepVehicleNumber(x)
                if present[x] > 0:
                    waiting = True
                    break
            demand.append(waiting)
        return pressures, demand

    def _plan_transition(self, shown: str, target: int, *, leaving: int | None) -> _Transition:
        following = self.greens[target]
        spec_phase = self.spec.phases[leaving if leaving is not None else target]
        stages: list[tuple[str, str, float]] = []
        if any(c in GREEN_CHARS and n not in GREEN_CHARS for c, n in zip(shown, following)):
            fixed = self.settings.fixed_yellow_s
            yellow = fixed if fixed is not None else spec_phase.yellow_s
            stages.append(("yellow", yellow_state(shown, following), _ceil_to(yellow, self.step)))
            red = 0.0 if fixed is not None else _ceil_to(spec_phase.red_clear_s, self.step)
            if red > 0:
                stages.append(("red", red_clear_state(shown, following), red))
        return _Transition(target=target, stages=stages)

    def _advance(self, api, now: float) -> float:
        if self.transition is None:
            raise SimulationError("max-pressure: no transition in progress")
        if self.transition.stages:
            kind, state, duration = self.transition.stages.pop(0)
            self._show(api, now, state, self.transition.target, kind)
            return now + max(duration, self.step)
        self.current = self.transition.target
        self.transition = None
        self.green_start = now
        self._show(api, now, self.greens[self.current], self.current, "green")
        return now + self._hold()

    def _show(self, api, now: float, state: str, phase: int, kind: str) -> None:
        if self.stop_go:
            state = "".join("s" if ch == "r" and i in self.stop_go else ch for i, ch in enumerate(state))
        api.trafficlight.setRedYellowGreenState(self.spec.tls_id, state)
        if self.trace is not None:
            self.trace.append(TraceEntry(now, self.spec.tls_id, state, phase, kind))
