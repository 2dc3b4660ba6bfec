"""The signal program engine: what a controller's timing core does, without I/O.

Given a plan and the clock, :class:`SignalProgram` decides which interval
(green, yellow change, red clearance) of which phase is showing, emits the
Indiana hi-res events for every change, and returns the SUMO state string to
drive. It is pure logic so hundreds run in one process and tests can step it
at any resolution.

Design choices (and why):

* Time is kept in integer tenths of a second: plans carry 0.1 s resolution,
  and integer arithmetic keeps a simulated day free of float drift so the
  intervals shown last exactly what the plan says.
* The engine's cycle runs from the phase *after* the coordinated phase to the
  end of the coordinated phase's red clearance. That makes "unused time
  returns to the coordinated phase" natural for coordinated-actuated
  operation (non-coordinated phases gap out early, the coordinated green
  starts early and still ends at its fixed point), and the cycle boundary is
  where plan changes and offset corrections happen. With the NTCIP offset
  referenced to the start of the coordinated green, the boundary lies at
  ``offset + split(coord)`` in cycle time, consistent with
  :func:`traffic.signals.cycle_start_offset` used by the SUMO programs.
* A new plan is committed when the coordinated green ends (start of the last
  change interval of the cycle), so the yellow/red clearance states are
  derived towards the *new* plan's first phase and never show a green that
  turns red without yellow. It is in force from the next boundary.
* Offset changes are absorbed by lengthening or shortening the coordinated
  green by at most ``transition_max_step_s`` per cycle and never below its
  minimum green (and pedestrian timing), whichever way converges sooner.
* Actuated operation (``mode="actuated"``, coordinated; ``mode="free"``,
  fully actuated) works on *lane calls*: a detector occupied while none of
  the phases serving its lane is green places a call that is held until one
  of them is served (locking memory, because the loops lie upstream and a
  vehicle that stopped past one is no longer seen); when a phase maxes out
  or is forced off, its lanes that were still arriving call again. A phase with detectors, no pedestrian
  timing and no call is skipped. In pretimed and coordinated-actuated
  operation, phases that time pedestrians are always served with their
  walk (pedestrian recall, every cycle); so are phases without
  detectors (minimum recall: served at minimum green) and phases whose
  detectors the world does not report (maximum recall, the fail-safe for
  a broken loop: they run to their maximum or split). Detectors belong to the phases
  :meth:`IntersectionSpec.detector_phases` names.
* Free mode has no cycle to keep: every phase, the coordinated one
  included, gaps out or maxes out (the max timer starts with the first
  conflicting call), and the green rests on the current phase while no
  other phase calls. Pedestrians are served on demand: a pedestrian phase
  shows its walk (and times walk + flashing don't-walk as its minimum green)
  when a push button called it (:meth:`SignalProgram.place_ped_call`) or
  when its last walk began ``PED_MAX_WAIT_S`` ago (timed pedestrian recall,
  for crossings without push buttons (``PhaseSpec.ped_push_button`` false;
  a crossing with buttons waits for a press): a walk at least that often, as a
  fixed 90 s cycle would give; the running green still ends by gap-out or
  max-out, so the wait is at most that plus one maximum green and its
  clearance); otherwise it is served for its vehicles like any other phase,
  with the pedestrian heads kept at don't-walk; a walk that falls due while
  its phase is green starts at once and holds the green (pedestrian recycle). The next phase is the one
  that serves the most waiting lanes per second of junction time it costs,
  aged so nobody waits forever (``AGE_WEIGHT_S``; recall phases age from
  their last service; a pedestrian walk that fell due goes first), rather
  than the next in a fixed ring: with eight
  stages that overlap (a grid junction's through, left and single-approach
  stages) a fixed ring serves several stages for the same lanes. Every
  phase change is a boundary, where a pending plan takes over; no offsets.
  The centre's plan is the envelope: maximum greens, and splits as green
  targets: once a phase has had its planned green and a conflicting call
  has waited ``GAP_REDUCE_AFTER_S``, its passage shrinks to ``MIN_GAP_S``
  (gap reduction, volume-density operation), except on phases with a loop
  at the stop line, where gaps are discharge headways.
  A phase that maxes out has its maximum raised one step (dynamic max,
  ``DYNAMIC_MAX_STEP_S`` up to ``DYNAMIC_MAX_LIMIT_S``, within the site's
  longest cycle) and lowered one step per gap-out: the field's answer to a
  centre that under-rates a queue its loops cannot count.
* Arrival scheduling (free mode, when the world passes what an approach
  sensor sees to :meth:`SignalProgram.step`): once a green is past its
  minimum (walk included) and another phase calls, it is held or ended
  each second by :func:`approach_schedule.decide` instead of by gap-out,
  never past its maximum, and the phase that schedule serves next goes
  next unless a pedestrian walk is due. Why: the loops see a vehicle 3-4 s
  before the stop line and cannot tell a platoon 100 m away from an empty
  road, so gap-out both cuts greens a platoon is about to use and holds
  greens for a straggler while a queue waits; the sensor sees both. A
  step without a reading (no sensor, or it failed) falls back to gap-out.
  The envelope floor: the schedule may hold a green longer, or end one
  whose queue has gone, but a green whose queue is still leaving (its
  first vehicle moving, others standing behind) runs on to its maximum,
  as gap-out would, and one whose queue stands runs at least the green the
  centre planned for it (split less clearance, sized on measured demand).
  Without it the schedule, which weighs only the vehicles it sees,
  served the widest stop line first and cut the others' queues short
  again and again: a single-lane approach starved until its queue grew
  out of sight, and near saturation the extra changes cost the capacity
  the queues needed (seeds 1-3, no floor -> planned-green floor -> this:
  merge/saturated 83.1 -> 66.7 -> 60.8, a10kw-osm/saturated 365.9 ->
  363.3 -> 279.9; loops only 62.5 and 306.9).
  Where the sensor sees part of an approach only (``partial_view``: a
  lane covered for less than the world's minimum, its queue may stand out
  of sight), the schedule may hold a green past the loops' gap-out but
  never end one before it: a platoon from beyond the view shows up a few
  seconds before the stop line, too late for the schedule, while the
  loops' passage time still catches it. Until session 13 such signals ran
  on their loops alone (seeds 1-3: drt-osm/moderate 145.6 -> 126.1,
  cologne1 23.6 -> 21.7, ingolstadt-fkk/moderate 27.3 -> 25.2; letting the
  schedule end their greens too cost ingolstadt1 17.2 -> 20.8).
* Start-up (``startup_all_red_s`` > 0, what :class:`FieldEmulator` uses):
  the heads show all-red for that long, then the first phase of the cycle
  starts a full green and the cycle boundary is there; the bounded offset
  transition brings a coordinated plan in step over the next cycles, as an
  NTCIP controller's start-up sequence does. Without it the engine starts
  *in step*, i.e. in the middle of whatever interval the offset puts at the
  start time: a yellow shown for its last second looks to any monitor like
  a short yellow (issue 12: 8 of 120 start seconds sent a corridor to
  flash), and a green begun mid-way is shorter than its minimum.
* Every plan the engine runs is re-checked with :func:`plan_check.check_plan`;
  an unsafe plan raises :class:`~traffic.errors.UnsafePlanError` instead of
  reaching the heads, whoever the caller is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from field_firmware_stubs import approach_schedule as sched
from field_firmware_stubs import events as ev
from field_firmware_stubs.approach_schedule import ApproachVehicle
from field_firmware_stubs.events import HiResEvent
from field_firmware_stubs.plan_check import check_plan
from traffic.clearance import PED_RECALL_PERIOD_S
from traffic.errors import PlanError, UnsafePlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import PhaseTiming, PlanMode, TimingPlan
from traffic.signals import KIND_GREEN, KIND_RED, KIND_YELLOW, red_clear_state, yellow_state

__all__ = ["SignalProgram", "Transition", "to_ds", "BLOCKED_S", "AGE_WEIGHT_S", "PED_MAX_WAIT_S",
           "GAP_REDUCE_AFTER_S", "GAP_REDUCE_OVER_S", "MIN_GAP_S", "GAP_REDUCE_MIN_LOOP_M", "reduced_passage"]

#: a loop occupied this long without a break while its lane has green means the lane is not moving
#: (typically a left-turner waiting for a gap in a permissive green): it calls the protected phase
BLOCKED_S = 12.0
#: free mode picks the next phase by demand: one waiting lane counts as much as this many seconds of waiting
AGE_WEIGHT_S = sched.AGE_WEIGHT_S  # the approach schedule ages its phase choice the same way
#: free mode: a phase timing pedestrians shows its walk at least this often (s), whatever the vehicles want
PED_MAX_WAIT_S = PED_RECALL_PERIOD_S
#: free mode, gap reduction (volume-density operation, NTCIP 1202 phaseTimeBeforeReduction,
#: phaseTimeToReduce, phaseMinimumGap): once a conflicting call has waited GAP_REDUCE_AFTER_S and the
#: phase has had the green the centre planned for it (its split less yellow and red clearance: the
#: centre's split target at the measured demand), the passage time shrinks linearly over
#: GAP_REDUCE_OVER_S down to MIN_GAP_S, so a green kept alive by sparse arrivals yields sooner to the
#: longer wait (every change pays yellow + red clearance)
GAP_REDUCE_AFTER_S = 5.0
GAP_REDUCE_OVER_S = 15.0
MIN_GAP_S = 2.0
#: a phase with a loop this close to its stop line keeps its full passage: there the gaps are the
#: queue's own discharge headways (about 2 s), and a reduced passage would cut the queue, not the tail
GAP_REDUCE_MIN_LOOP_M = 15.0


#: free mode, dynamic max (NTCIP 1202 phaseDynamicMaxLimit / phaseDynamicMaxStep): every max-out raises
#: the phase's maximum green by DYNAMIC_MAX_STEP_S and every gap-out lowers it again, never below the
#: centre's maximum nor above DYNAMIC_MAX_LIMIT_S (or the centre's maximum if that is higher), and only
#: while every phase at its raised maximum, with its change interval, fits the site's longest cycle. Why: a
#: queue standing over a loop caps what the loop counts, so the centre under-rates a saturated approach
#: and plans a maximum green it keeps hitting; the field sees the max-outs at once.
DYNAMIC_MAX_STEP_S = 5.0
DYNAMIC_MAX_LIMIT_S = 60.0
#: "not due" for a push-button walk nobody asked for (tenths of a second; later than any simulated day)
NEVER = 10**15


def to_ds(seconds: float) -> int:
    """Seconds to integer tenths (the controller's timing resolution)."""
    return int(round(seconds * 10.0))


@dataclass(frozen=True)
class Transition:
    """One cycle of offset correction: ``adjust_s`` added to (or cut from) the coordinated green."""

    at: float           # s: cycle boundary where the corrected cycle starts
    adjust_s: float     # s: positive lengthens, negative shortens the cycle
    remaining_s: float  # s: misalignment left after this cycle


@dataclass
class _Phase:
    """A plan phase with its timings in tenths, precomputed once per plan."""

    timing: PhaseTiming
    number: int
    greens: str
    green: int
    yellow: int
    red: int
    split: int
    min_green: int      # with the pedestrian walk + flashing don't-walk when the phase times pedestrians
    veh_min_green: int  # without them (free mode, green served without a walk)
    max_green: int
    passage: int
    walk: int
    ped_clear: int


class SignalProgram:
    """One controller's timing core for one intersection.

    Call :meth:`step` with non-decreasing times; it processes everything up to
    ``now`` (several intervals if the step is long) and returns the state in
    force at ``now``.
    """

    def __init__(self, spec: IntersectionSpec, plan: TimingPlan, *, start_time: float,
                 transition_max_step_s: float = 10.0, startup_all_red_s: float = 0.0) -> None:
        if transition_max_step_s < 0:
            raise PlanError(f"transition_max_step_s must be >= 0, got {transition_max_step_s}")
        if not (math.isfinite(startup_all_red_s) and startup_all_red_s >= 0):
            raise PlanError(f"startup_all_red_s must be >= 0, got {startup_all_red_s}")
        self.spec = spec
        self._max_step = to_ds(transition_max_step_s)
        self._det_phases = {d.detector_id: spec.detector_phases(d) for d in spec.detectors}
        self._det_channel = {d.detector_id: i + 1 for i, d in enumerate(spec.detectors)}
        self._phase_detectors: dict[int, tuple[str, ...]] = {}
        for d in spec.detectors:
            for phase in self._det_phases[d.detector_id]:
                self._phase_detectors[phase] = self._phase_detectors.get(phase, ()) + (d.detector_id,)
        # protected phases that only repeat movements other phases also serve (protected lefts run
        # permissive in the through phase) and have no loop of their own: served only when called,
        # i.e. when a lane they protect stands still over its loop during its green (BLOCKED_S)
        self._redundant = self._redundant_phases(spec)
        # phases whose passage is never reduced (a loop at the stop line: GAP_REDUCE_MIN_LOOP_M)
        self._full_passage = frozenset(p for d in spec.detectors if d.distance_to_stopline_m < GAP_REDUCE_MIN_LOOP_M
                                       for p in self._det_phases[d.detector_id])
        self._protects: dict[str, tuple[int, ...]] = {
            d.detector_id: tuple(p.phase for p in spec.phases if p.phase in self._redundant
                                 and any(0 <= i < len(p.greens) and p.greens[i] == "G" for i in d.links))
            for d in spec.detectors}
        self._blocked_since: dict[str, int] = {}
        self._served_at: dict[int, int] = {}  # phase -> end of its last green
        self._dyn_max: dict[int, int] = {}    # phase -> dynamic-max extension above its maximum green (tenths)
        self._walk_at: dict[int, int] = {}    # phase -> start of its last walk (free mode: timed ped recall)
        self._ped_calls: dict[int, int] = {}  # phase -> time (tenths) a push button called it
        # crossings with push buttons: free mode serves their walk on a press only (no timed recall)
        self._push_button = frozenset(p.phase for p in spec.phases if p.ped_push_button)
        self._walk_now = False                # the current green shows the walk (times pedestrian minimum)
        self._walk_end = 0                    # end of the current green's walk + flashing don't-walk
        self._calls: dict[int, int] = {}      # phase -> time (tenths) a phase-level call was placed
        self._det_calls: dict[str, int] = {}  # detector -> time its lane call was placed
        self._det_last: dict[str, int] = {}   # detector -> last time it was occupied
        self._next_idx = 0       # index (in the order in force at the next green) of the next phase to serve
        self._wrap = False       # the next green starts a new cycle (boundary)
        self._det_on: dict[str, bool] = {}
        self._last_presence: dict[int, int] = {}
        self._events: list[HiResEvent] = []
        self._applied: list[tuple[float, TimingPlan]] = []
        self.transitions: list[Transition] = []
        self._pending: TimingPlan | None = None
        self._committed: TimingPlan | None = None
        self._coord_state = -1
        self._recording = False
        self._in_startup = False
        # free mode with an approach sensor: this tick's vehicles, and the decision taken on them
        self._approach: tuple[int, tuple[ApproachVehicle, ...]] | None = None
        self._partial_view = False  # the sensor sees part of some approach only (see step)
        self._decision: tuple[tuple[int, int, int], sched.Decision] | None = None
        self._scheduled_next: tuple[int, int] | None = None  # (time, phase) the schedule serves next
        self.schedule_stats = {"hold": 0, "end": 0, "next_phase": 0, "floor": 0}
        self._floored: tuple[int, int] | None = None  # (phase, green start) last held by the envelope floor

        self._set_plan(plan)
        start = to_ds(start_time)
        if to_ds(startup_all_red_s) > 0:
            self._begin_startup(start, to_ds(startup_all_red_s))
            return
        cycle = self._cycle
        boundary_phase = self._boundary_phase(plan)
        # free mode keeps no cycle: start in the first phase's green rather than fast-forward into
        # the middle of an interval the heads never showed
        first = start if plan.mode == PlanMode.FREE else start - ((start - boundary_phase) % cycle)
        self._now = first
        self._begin_cycle(first, initial=True)
        self._start_green(0, first)
        self._advance(start)  # fast-forward silently to the start time, in step with the offset
        self._recording = True
        self._emit_raw(start, ev.COORD_PATTERN_CHANGE, plan.version & 0xFFFF)
        self._emit_raw(start, ev.COORD_CYCLE_STATE, ev.COORD_IN_STEP)
        self._emit_raw(start, ev.PHASE_BEGIN_GREEN if self._kind == KIND_GREEN else
                       ev.PHASE_BEGIN_YELLOW if self._kind == KIND_YELLOW else ev.PHASE_BEGIN_RED_CLEAR,
                       self._order[self._idx].number)
        self._now = start

    # ------------------------------------------------------------------ public
    @property
    def plan(self) -> TimingPlan:
        """The plan in force now."""
        return self._plan

    @property
    def pending_plan(self) -> TimingPlan | None:
        """The plan waiting for the next cycle boundary (requested or already committed)."""
        return self._committed or self._pending

    @property
    def state(self) -> str:
        """The signal state in force at the last step."""
        return self._state

    @property
    def phase(self) -> int:
        """Number of the phase currently timing."""
        return self._order[self._idx].number

    @property
    def interval(self) -> str:
        """``green``, ``yellow`` or ``red`` (red clearance)."""
        return self._kind

    @property
    def starting_up(self) -> bool:
        """True during the start-up all-red (no phase is timing yet)."""
        return self._in_startup

    @property
    def cycle_start(self) -> float:
        """Time (s) of the current cycle's boundary."""
        return self._cycle_start / 10.0

    @property
    def next_boundary(self) -> float:
        """Time (s) of the next cycle boundary (current cycle length includes any transition)."""
        return (self._cycle_start + self._cycle_len) / 10.0

    @property
    def in_transition(self) -> bool:
        """True while the cycle is being lengthened or shortened to reach a new offset."""
        return self._coord_state in (ev.COORD_TRANSITION_ADD, ev.COORD_TRANSITION_SUBTRACT)

    def request_plan(self, plan: TimingPlan) -> None:
        """Queue ``plan`` to take effect at the next cycle boundary (replacing any queued plan).

        Raises UnsafePlanError if the plan breaks a safety rule for this intersection.
        """
        self._require_safe(plan)
        self._pending = plan

    def place_ped_call(self, phase: int) -> None:
        """A pedestrian pushed the button of ``phase``'s crossing (held until its walk is shown).

        Unknown phases and phases without pedestrian timing are ignored (a
        miswired button must not change the timing). Logs every press
        (Indiana 90, pedestrian detector on) and the call it latches (45,
        pedestrian call registered, once until the walk serves it), which is
        what ATSPM's pedestrian actuations and delay read. Timed pedestrian
        recall and the every-cycle walk of coordinated plans log no call.
        """
        if any(p.number == phase and (p.walk > 0 or p.ped_clear > 0) for p in self._order):
            self._emit(self._now, ev.PED_DETECTOR_ON, phase)
            if phase not in self._ped_calls:
                self._emit(self._now, ev.PED_CALL_REGISTERED, phase)
            self._ped_calls.setdefault(phase, self._now)

    def step(self, now: float, detector_presence: Mapping[str, bool] | None = None,
             approach: Sequence[ApproachVehicle] | None = None, partial_view: bool = False) -> str:
        """Advance to ``now`` (s) and return the state to drive.

        ``detector_presence`` maps detector ids to presence during the step that
        ends at ``now``; phases without reported detectors are not gapped out.
        ``approach``: what the approach sensor sees now (None: no sensor, or it
        failed this step). In free mode a green past its minimum then ends
        by :func:`approach_schedule.decide` instead of by gap-out, within its
        maximum; without it the loops decide as before. ``partial_view``:
        that sensor sees part of some approach only, so the schedule may
        hold a green past the loops' gap-out but never end it before.
        """
        now_ds = to_ds(now)
        if now_ds < self._now:
            raise PlanError(f"time went backwards: {now} s after {self._now / 10.0} s")
        self._approach = None if approach is None else (now_ds, tuple(approach))
        self._partial_view = partial_view
        if detector_presence:
            self._update_detectors(now_ds, detector_presence)
        self._advance(now_ds)
        self._now = now_ds
        return self._state

    def drain_events(self) -> list[HiResEvent]:
        """Events emitted since the last call, in time order."""
        out, self._events = self._events, []
        return out

    def drain_applied(self) -> list[tuple[float, TimingPlan]]:
        """Plans that took effect since the last call, with the boundary time (s)."""
        out, self._applied = self._applied, []
        return out

    # ---------------------------------------------------------------- plans
    def _require_safe(self, plan: TimingPlan) -> None:
        violations = check_plan(plan, self.spec)
        if violations:
            raise UnsafePlanError(violations)

    def _set_plan(self, plan: TimingPlan) -> None:
        self._require_safe(plan)
        phases = self._rotation(plan)
        self._order = phases
        self._plan = plan
        self._cycle = sum(p.split for p in phases)
        self._actuated = plan.mode in (PlanMode.ACTUATED, PlanMode.FREE)
        self._free = plan.mode == PlanMode.FREE

    def _rotation(self, plan: TimingPlan) -> list[_Phase]:
        """``plan``'s phases in engine order: the one after the coordinated phase first, the coordinated last."""
        phases = [self._precompute(p) for p in plan.phases]
        coord_index = next(i for i, p in enumerate(phases) if p.number == plan.splitCoordPhase)
        return phases[coord_index + 1:] + phases[:coord_index + 1]

    def _precompute(self, t: PhaseTiming) -> _Phase:
        design = self.spec.phase(t.phase)
        walk, ped_clear = to_ds(t.phaseWalk), to_ds(t.phasePedestrianClear)
        veh_min_green = max(to_ds(t.phaseMinimumGreen), to_ds(design.min_green_s))
        min_green = max(veh_min_green, walk + ped_clear)
        green = to_ds(t.splitTime) - to_ds(t.phaseYellowChange) - to_ds(t.phaseRedClear)
        return _Phase(
            timing=t, number=t.phase, greens=t.greens, green=green,
            yellow=to_ds(t.phaseYellowChange), red=to_ds(t.phaseRedClear), split=to_ds(t.splitTime),
            min_green=min(min_green, green), veh_min_green=min(veh_min_green, green),
            max_green=max(to_ds(t.phaseMaximum1), min_green),
            passage=max(1, to_ds(t.phasePassage)), walk=walk, ped_clear=ped_clear,
        )

    def _boundary_phase(self, plan: TimingPlan) -> int:
        """Cycle time (tenths) of the engine's cycle boundary for ``plan``: offset + coordinated split."""
        coord = plan.phase(plan.splitCoordPhase)
        cycle = sum(to_ds(p.splitTime) for p in plan.phases)
        return (to_ds(plan.patternOffsetTime) + to_ds(coord.splitTime)) % cycle

    # ---------------------------------------------------------------- timeline
    def _begin_startup(self, start: int, all_red: int) -> None:
        """All-red from ``start`` for ``all_red`` tenths, then a new cycle in the first phase's green.

        The start-up interval is timed as a red clearance after the
        coordinated phase (so the machinery that ends a red clearance starts
        the next cycle), but it shows every group red, emits no phase event
        of its own and begins a cycle whose offset the transition corrects.
        """
        self._recording = True
        self._now = start
        self._emit(start, ev.COORD_PATTERN_CHANGE, self._plan.version & 0xFFFF)
        self._in_startup = True
        self._idx = len(self._order) - 1
        self._kind = KIND_RED
        self._state = "r" * self.spec.link_count
        self._int_start, self._int_end = start, start + all_red
        self._marks = []
        self._walk_now, self._walk_end = False, 0
        self._cycle_start, self._cycle_len, self._coord_end = start, all_red, start
        self._wrap, self._next_idx = True, 0

    def _begin_cycle(self, t: int, *, initial: bool = False) -> None:
        if self._committed is not None:
            old = self._plan
            new = self._committed
            self._committed = None
            self._set_plan(new)
            self._emit_plan_change(t, old, new)
            self._applied.append((t / 10.0, new))
        self._cycle_start = t
        adjust, remaining = (0, 0) if initial else self._transition_adjust(t)
        self._cycle_len = self._cycle + adjust
        self._coord_end = t + self._cycle_len - self._order[-1].yellow - self._order[-1].red
        state = (ev.COORD_IN_STEP if adjust == 0 else
                 ev.COORD_TRANSITION_ADD if adjust > 0 else ev.COORD_TRANSITION_SUBTRACT)
        if adjust:
            self.transitions.append(Transition(t / 10.0, adjust / 10.0, remaining / 10.0))
        if state != self._coord_state:
            self._coord_state = state
            self._emit(t, ev.COORD_CYCLE_STATE, state)

    def _transition_adjust(self, t: int) -> tuple[int, int]:
        """How much to lengthen (+) or shorten (-) the cycle starting at ``t`` to approach the offset."""
        if self._free:
            return 0, 0
        cycle = self._cycle
        late = (self._boundary_phase(self._plan) - t) % cycle   # aligned boundary is `late` tenths later
        if late == 0:
            return 0, 0
        coord = self._order[-1]
        shorten_cap = min(self._max_step, max(0, coord.green - coord.min_green))
        lengthen_cap = self._max_step
        early = cycle - late
        if lengthen_cap == 0 and shorten_cap == 0:
            return 0, late
        cycles_lengthen = math.ceil(late / lengthen_cap) if lengthen_cap else math.inf
        cycles_shorten = math.ceil(early / shorten_cap) if shorten_cap else math.inf
        if cycles_lengthen <= cycles_shorten:
            step = min(late, lengthen_cap)
            return step, late - step
        step = min(early, shorten_cap)
        return -step, early - step

    def _emit_plan_change(self, t: int, old: TimingPlan, new: TimingPlan) -> None:
        self._emit(t, ev.COORD_PATTERN_CHANGE, new.version & 0xFFFF)
        if to_ds(old.patternCycleTime) != to_ds(new.patternCycleTime):
            self._emit(t, ev.CYCLE_LENGTH_CHANGE, int(round(new.patternCycleTime)))
        if to_ds(old.patternOffsetTime) != to_ds(new.patternOffsetTime):
            self._emit(t, ev.OFFSET_LENGTH_CHANGE, int(round(new.patternOffsetTime)))
        old_splits = {p.phase: to_ds(p.splitTime) for p in old.phases}
        for p in new.phases:
            if 1 <= p.phase <= 16 and old_splits.get(p.phase) != to_ds(p.splitTime):
                self._emit(t, ev.SPLIT_CHANGE_BASE + p.phase - 1, int(round(p.splitTime)))

    def _start_green(self, idx: int, t: int) -> None:
        self._idx = idx
        phase = self._order[idx]
        self._kind = KIND_GREEN
        self._state = phase.greens
        self._int_start = t
        self._calls.pop(phase.number, None)
        for det in self._phase_detectors.get(phase.number, ()):  # this green serves these lanes
            self._det_calls.pop(det, None)
        self._marks: list[tuple[int, int, int]] = []
        self._walk_now, self._walk_end = False, 0
        self._emit(t, ev.PHASE_BEGIN_GREEN, phase.number)
        if _times_peds(phase) and (not self._free or self._ped_due_at(phase, t) <= t):
            self._begin_walk(phase, t)

    def _begin_walk(self, phase: _Phase, t: int) -> None:
        """Show ``phase``'s walk from ``t``: the green now lasts at least walk + flashing don't-walk more."""
        self._walk_now = True
        self._walk_end = t + phase.walk + phase.ped_clear
        self._walk_at[phase.number] = t
        self._ped_calls.pop(phase.number, None)
        self._marks = [(t + phase.walk, ev.PED_BEGIN_CLEAR, phase.number),
                       (self._walk_end, ev.PED_BEGIN_DONT_WALK, phase.number)]
        if phase.walk > 0:
            self._emit(t, ev.PED_BEGIN_WALK, phase.number)

    def _min_end(self, phase: _Phase, start: int) -> int:
        """Earliest end of the green now timing: its minimum, and any walk shown run to its end.

        Pretimed and coordinated plans always time the pedestrian minimum;
        free mode only when (and from when) the walk is shown.
        """
        floor = phase.veh_min_green if self._free else phase.min_green
        return max(start + floor, self._walk_end)

    def _ped_due_at(self, phase: _Phase, t: int) -> int:
        """Free mode: when ``phase`` must next show its walk (push-button call, or the timed recall).

        A crossing with push buttons (``PhaseSpec.ped_push_button``) gets no
        timed recall: its walk is due only once somebody pressed.
        """
        if phase.number in self._push_button:
            return self._ped_calls.get(phase.number, NEVER)
        recall = self._walk_at.setdefault(phase.number, t) + to_ds(PED_MAX_WAIT_S)
        return min(self._ped_calls.get(phase.number, recall), recall)

    def _green_end(self, now: int) -> tuple[int, int]:
        """End time of the current green and the termination code (gap-out / max-out / force-off)."""
        phase = self._order[self._idx]
        start = self._int_start
        if self._free:
            return self._free_green_end(phase, start, now)
        if self._idx == len(self._order) - 1:
            return self._coord_end, 0
        force_off = start + phase.green
        if not self._actuated:
            return force_off, ev.PHASE_FORCE_OFF
        max_out = start + phase.max_green
        end, code = (max_out, ev.PHASE_MAX_OUT) if max_out < force_off else (force_off, ev.PHASE_FORCE_OFF)
        gap = self._gap_time(phase, start, now)
        if gap is not None and gap < end:
            end, code = gap, ev.PHASE_GAP_OUT
        return end, code

    def _gap_time(self, phase: _Phase, start: int, now: int, conflict: int | None = None) -> int | None:
        """When the phase gaps out (None: its detectors are not reported, it cannot gap out).

        A phase with no detectors at all (minimum recall) gaps out at its
        minimum green; one whose detectors exist but are not reported (failed
        or not wired: maximum recall) runs to its maximum or split.
        """
        own = self._phase_detectors.get(phase.number, ())
        earliest = self._min_end(phase, start)
        if not own:
            return earliest
        reported = [d for d in own if d in self._det_on]
        if not reported:
            return None
        passage = phase.passage if conflict is None else reduced_passage(phase.passage, now - conflict)
        if any(self._det_on[d] for d in reported):
            gap = now + passage  # call present: extend at least one passage time
        else:
            gap = max(self._last_presence.get(phase.number, start), start) + passage
        return max(gap, earliest)

    def _free_green_end(self, phase: _Phase, start: int, now: int) -> tuple[int, int]:
        """Fully actuated: gap-out or max-out once another phase calls; rest in green until then.

        Pedestrian recycle: when the walk of the phase in green falls due
        while its green is still running (a long or resting green), the walk
        starts now and the green is held until it has been timed, instead of
        ending the green and serving the phase again later for its walk.
        """
        end, code = self._free_green_end_at(phase, start, now)
        if end > now and not self._walk_now and _times_peds(phase) and self._ped_due_at(phase, now) <= now:
            self._begin_walk(phase, now)
            end, code = self._free_green_end_at(phase, start, now)
        return end, code

    def _free_green_end_at(self, phase: _Phase, start: int, now: int) -> tuple[int, int]:
        conflict = self._conflicting_call_time(phase.number, start, now)
        if conflict is None:
            return now + 1, 0  # nobody else wants the junction: rest in green
        end, code = max(start, conflict) + self._max_green(phase), ev.PHASE_MAX_OUT
        scheduled = self._scheduled_end(phase, start, now, end)
        if scheduled is not None:
            return scheduled
        # reduction is timed from the conflicting call, but not before the planned green has run
        anchor = max(conflict, start + phase.green - to_ds(GAP_REDUCE_AFTER_S))
        gap = self._gap_time(phase, start, now, None if phase.number in self._full_passage else anchor)
        if gap is not None and gap < end:
            end, code = gap, ev.PHASE_GAP_OUT
        # never end (and so never start the yellow) before the call that allows it arrived
        return max(end, conflict, self._min_end(phase, start)), code

    def _scheduled_end(self, phase: _Phase, start: int, now: int, max_end: int) -> tuple[int, int] | None:
        """Free mode with an approach sensor: hold this second or end now (None: the loops decide).

        Only between the green's minimum (walk included) and its maximum,
        and only on a reading taken this tick.
        """
        if self._approach is None or self._approach[0] != now:
            return None
        min_end = self._min_end(phase, start)
        if now < min_end or max_end <= now:
            return None
        key = (now, phase.number, start)
        phases = self._sched_phases()
        if self._decision is None or self._decision[0] != key:
            decision = sched.decide(phases, self._idx, self._approach[1], (max_end - now) / 10.0)
            self._decision = (key, decision)
            self.schedule_stats["hold" if decision.hold else "end"] += 1
            if not decision.hold and decision.next_phase is not None:
                self._scheduled_next = (now, decision.next_phase)
        decision = self._decision[1]
        if decision.hold:
            return min(max_end, now + 10), ev.PHASE_MAX_OUT if max_end <= now + 10 else ev.PHASE_GAP_OUT
        if self._partial_view:
            return None  # part of a queue may stand out of sight: the loops' gap-out ends the green
        floor = self._floor_end(key, phases, phase, start, max_end)
        if now < floor:
            return min(max_end, now + 10, floor), ev.PHASE_GAP_OUT
        return now, ev.PHASE_GAP_OUT

    def _floor_end(self, key: tuple[int, int, int], phases: list[sched.SchedulePhase], phase: _Phase, start: int,
                   max_end: int) -> int:
        """Until when the schedule may not end this green (the envelope floor; ``start``: no floor).

        A queue still leaving on one of its lanes (:func:`approach_schedule.queue_leaving`):
        the green's maximum, as the loops' gap-out would never cut it either;
        ending it throws away the start-up it has paid and, near saturation,
        the capacity every extra change costs. A queue standing but not
        leaving (blocked, or a single car): the centre's planned green. No
        queue: no floor, the schedule decides.
        """
        assert self._approach is not None
        vehicles = self._approach[1]
        if sched.queue_leaving(phases, self._idx, vehicles):
            floor = max_end
        elif sched.queue_left(phases, self._idx, vehicles):
            floor = start + phase.green
        else:
            return start
        if self._floored != key[1:] and key[0] < floor:
            self._floored = key[1:]
            self.schedule_stats["floor"] += 1
        return floor

    def _sched_phases(self) -> list[sched.SchedulePhase]:
        """The phases as the approach schedule sees them (seconds, maximum with its dynamic extension)."""
        return [sched.SchedulePhase(p.number, p.greens, p.veh_min_green / 10.0, self._max_green(p) / 10.0,
                                    (p.yellow + p.red) / 10.0, self._idle_s(p.number)) for p in self._order]

    def _idle_s(self, number: int) -> float:
        """Seconds since ``number``'s last green ended, or since the demand choice first weighed it (0 before)."""
        ended = self._served_at.get(number)
        return 0.0 if ended is None else max(0.0, (self._now - ended) / 10.0)

    def _max_green(self, phase: _Phase) -> int:
        """Free mode: the phase's maximum green with its dynamic-max extension (tenths)."""
        limit = max(phase.max_green, to_ds(DYNAMIC_MAX_LIMIT_S))
        return min(limit, phase.max_green + self._dyn_max.get(phase.number, 0))

    def _step_dynamic_max(self, phase: _Phase, code: int) -> None:
        """NTCIP 1202 dynamic max: a max-out raises the phase's maximum one step, a gap-out lowers it one."""
        step = to_ds(DYNAMIC_MAX_STEP_S)
        extra = self._dyn_max.get(phase.number, 0)
        if code == ev.PHASE_MAX_OUT:
            # every phase at its raised maximum still fits the site's longest cycle (spec.max_cycle_s)
            turns = sum(self._max_green(p) + p.yellow + p.red for p in self._order)
            room = max(0, to_ds(self.spec.max_cycle_s) - turns)
            extra = min(extra + min(step, room), max(0, to_ds(DYNAMIC_MAX_LIMIT_S) - phase.max_green))
        elif code == ev.PHASE_GAP_OUT:
            extra = max(0, extra - step)
        self._dyn_max[phase.number] = extra

    @staticmethod
    def _redundant_phases(spec: IntersectionSpec) -> frozenset[int]:
        """Phases without loops or pedestrians whose every green movement another phase also releases."""
        own = {p for d in spec.detectors for p in spec.detector_phases(d)}
        out = set()
        for phase in spec.phases:
            if phase.phase in own or phase.ped_crossing_m > 0:
                continue
            links = [i for i, c in enumerate(phase.greens) if c in "Gg"]
            others = [o for o in spec.phases if o.phase != phase.phase]
            if links and all(any(o.greens[i] in "Gg" for o in others) for i in links):
                out.add(phase.phase)
        return frozenset(out)

    def _serve(self, phase: _Phase, t: int) -> bool:
        """Whether ``phase`` must be served when its turn comes (call, recall, unknown demand)."""
        if self._call_time(phase.number) is not None:
            return True
        if _times_peds(phase) and (not self._free or self._ped_due_at(phase, t) <= t):
            return True  # pedestrian recall (every cycle; free mode: when the walk is due)
        if phase.number in self._redundant:
            return False
        return not any(d in self._det_on for d in self._phase_detectors.get(phase.number, ()))

    def _conflicting_call_time(self, number: int, start: int, now: int) -> int | None:
        """Earliest time another phase asked for the junction (recalls count from ``start``)."""
        times = []
        for p in self._order:
            if p.number != number and self._serve(p, now):
                called = self._call_time(p.number)
                if called is None and self._free and _times_peds(p):
                    called = max(start, self._ped_due_at(p, now))  # the walk fell due then
                times.append(start if called is None else called)
        return min(times) if times else None

    def _call_time(self, number: int) -> int | None:
        """When ``number`` was first called (by a phase-level call or a lane it serves), or None."""
        times = [self._det_calls[d] for d in self._phase_detectors.get(number, ()) if d in self._det_calls]
        if number in self._calls:
            times.append(self._calls[number])
        return min(times) if times else None

    def _choose_by_demand(self, t: int) -> None:
        """Free mode: serve next the phase that clears the most waiting per second of junction time.

        Score = (lanes with a call it serves + time its oldest call has waited
        / ``AGE_WEIGHT_S``) / (its minimum green + yellow + red clearance), so
        a stage with a long pedestrian minimum is not chosen for one car when
        a short stage serves it too; recall phases age from their last
        service, and a pedestrian phase not served for ``PED_MAX_WAIT_S``
        goes first. Ties go to the next phase in sequence. Every phase change
        is a boundary in free mode (no cycle, no offset), so a pending plan
        takes over at once.
        """
        current = self._order[self._idx].number
        self._served_at[current] = t
        if self._pending is not None:
            self._committed, self._pending = self._pending, None
        order = self._rotation(self._committed) if self._committed is not None else self._order
        n = len(order)
        start = next((j for j, p in enumerate(order) if p.number == current), -1)
        best: tuple[float, int] | None = None
        for step in range(1, n + 1):
            j = (start + step) % n
            phase = order[j]
            if phase.number == current and best is not None:
                continue
            if not self._serve(phase, t):
                continue
            lanes = sum(1 for d in self._phase_detectors.get(phase.number, ()) if d in self._det_calls)
            last_served = self._served_at.setdefault(phase.number, t)
            since = self._call_time(phase.number)
            if since is None:
                since = last_served
            walk_due = _times_peds(phase) and self._ped_due_at(phase, t) <= t
            cost = max(1, (phase.min_green if walk_due else phase.veh_min_green) + phase.yellow + phase.red)
            score = (lanes + (t - since) / to_ds(AGE_WEIGHT_S)) * 10.0 / cost
            if walk_due:
                score += 1e6 + (t - self._ped_due_at(phase, t))  # pedestrians first, longest wait first
            if best is None or score > best[0] + 1e-9:
                best = (score, j)
        self._next_idx = best[1] if best is not None else (start + 1) % n
        self._take_scheduled_next(order, t)
        self._wrap = self._committed is not None or self._next_idx <= self._idx

    def _take_scheduled_next(self, order: list[_Phase], t: int) -> None:
        """The approach schedule that ended this green names the next phase, unless a walk is due."""
        planned, self._scheduled_next = self._scheduled_next, None
        if planned is None or planned[0] != t:
            return
        chosen = order[self._next_idx]
        if _times_peds(chosen) and self._ped_due_at(chosen, t) <= t:
            return  # pedestrians first
        for j, phase in enumerate(order):
            if phase.number == planned[1] and phase.number != self._order[self._idx].number and self._serve(phase, t):
                if j != self._next_idx:
                    self.schedule_stats["next_phase"] += 1
                self._next_idx = j
                return

    def _choose_next(self, t: int) -> None:
        """Decide, as the current green ends, which phase comes next (skipping those without a call).

        Sets ``_next_idx`` (an index in the order that will be in force then)
        and ``_wrap`` (the sequence passes the coordinated phase: a cycle
        boundary, where a pending plan is committed).
        """
        order, idx = self._order, self._idx
        if self._free:
            self._choose_by_demand(t)
            return
        if not self._actuated:
            self._wrap = idx == len(order) - 1
            self._next_idx = 0 if self._wrap else idx + 1
            if self._wrap and self._pending is not None:
                self._committed, self._pending = self._pending, None
            return
        if idx < len(order) - 1:
            last = len(order) - 1
            for j in range(idx + 1, len(order)):
                # coordinated mode: the coordinated phase is always served (it holds the cycle's fixed point)
                if self._serve(order[j], t) or (j == last and not self._free):
                    self._wrap, self._next_idx = False, j
                    return
        # past the coordinated phase: a boundary; a pending plan takes over from here
        self._wrap = True
        if self._pending is not None:
            self._committed, self._pending = self._pending, None
        order = self._rotation(self._committed) if self._committed is not None else order
        committed_free = (self._committed or self._plan).mode == PlanMode.FREE
        fallback = 0 if committed_free else len(order) - 1  # coordinated: rest in the coordinated phase
        self._next_idx = next((j for j, p in enumerate(order) if self._serve(p, t)), fallback)

    def _advance(self, now: int) -> None:
        while True:
            if self._kind == KIND_GREEN:
                end, code = self._green_end(now)
            else:
                end, code = self._int_end, 0
            if self._marks and self._marks[0][0] <= min(end, now):
                t, mcode, param = self._marks.pop(0)
                self._emit(t, mcode, param)
                continue
            if end > now:
                return
            # The heads showed the running interval at the last step: it cannot have ended before it.
            # A green's computed end can fall further back (its maximum counted from a call that
            # changed, a reduced passage, a sensor reading missing this step so the loops decide);
            # timing the yellow from there would show it short by as much (a conflict-monitor fault).
            self._finish(max(end, self._now), code)

    def _finish(self, t: int, code: int) -> None:
        phase = self._order[self._idx]
        if self._kind == KIND_GREEN:
            for mt, mcode, param in self._marks:   # pedestrian timing never outlives the green
                self._emit(min(mt, t), mcode, param)
            self._marks = []
            if code:
                self._emit(t, code, phase.number)
            if self._free:
                self._step_dynamic_max(phase, code)
            self._emit(t, ev.PHASE_END_GREEN, phase.number)
            if code in (ev.PHASE_MAX_OUT, ev.PHASE_FORCE_OFF) and self._actuated:
                # its queue was not served: the lanes still arriving call again (any phase serving them will do)
                for det in self._phase_detectors.get(phase.number, ()):
                    if det in self._det_last and t - self._det_last[det] <= 2 * phase.passage:
                        self._det_calls.setdefault(det, t)
            self._choose_next(t)
            following = self._following()
            if phase.yellow > 0:
                self._kind, self._int_start, self._int_end = KIND_YELLOW, t, t + phase.yellow
                self._state = yellow_state(phase.greens, following)
                self._emit(t, ev.PHASE_BEGIN_YELLOW, phase.number)
                return
            self._begin_red_or_next(t, phase, following)
            return
        if self._kind == KIND_YELLOW:
            self._emit(t, ev.PHASE_END_YELLOW, phase.number)
            self._begin_red_or_next(t, phase, self._following())
            return
        if self._in_startup:
            self._in_startup = False
            self._next_phase(t)
            return
        self._emit(t, ev.PHASE_END_RED_CLEAR, phase.number)
        self._next_phase(t)

    def _following(self) -> str:
        """Greens of the phase chosen to follow the current one (in the committed plan, at a boundary)."""
        if self._wrap and self._committed is not None:
            return self._rotation(self._committed)[self._next_idx].greens
        return self._order[self._next_idx].greens

    def _begin_red_or_next(self, t: int, phase: _Phase, following: str) -> None:
        if phase.red > 0:
            self._kind, self._int_start, self._int_end = KIND_RED, t, t + phase.red
            self._state = red_clear_state(phase.greens, following)
            self._emit(t, ev.PHASE_BEGIN_RED_CLEAR, phase.number)
            return
        self._next_phase(t)

    def _next_phase(self, t: int) -> None:
        if self._wrap:
            self._begin_cycle(t)
        self._start_green(self._next_idx, t)

    # ---------------------------------------------------------------- detectors & events
    def _update_detectors(self, now: int, presence: Mapping[str, bool]) -> None:
        green = self._order[self._idx].number if self._kind == KIND_GREEN else None
        for det, on in presence.items():
            phases = self._det_phases.get(det)
            if phases is None:
                continue
            on = bool(on)
            if on:
                self._det_last[det] = now
                for phase in phases:
                    self._last_presence[phase] = now
                if green not in phases:  # a lane call, cleared by whichever phase serving the lane runs next
                    self._det_calls.setdefault(det, now)
            if self._det_on.get(det, False) != on:
                self._emit(now, ev.DETECTOR_ON if on else ev.DETECTOR_OFF, self._det_channel[det])
            self._det_on[det] = on
            protects = self._protects.get(det)
            if protects:
                if on and green in phases:
                    since = self._blocked_since.setdefault(det, now)
                    if now - since >= to_ds(BLOCKED_S):
                        for phase in protects:
                            self._calls.setdefault(phase, now)
                else:
                    self._blocked_since.pop(det, None)

    def _emit(self, t: int, code: int, param: int) -> None:
        if self._recording:
            self._events.append(HiResEvent(t / 10.0, code, param))

    def _emit_raw(self, t: int, code: int, param: int) -> None:
        self._events.append(HiResEvent(t / 10.0, code, param))


def _times_peds(phase: _Phase) -> bool:
    """Whether the plan times a pedestrian walk / clearance in this phase."""
    return phase.walk > 0 or phase.ped_clear > 0


def reduced_passage(passage: int, waited: int) -> int:
    """Passage time (tenths) after a conflicting call has waited ``waited`` tenths (gap reduction).

    Full ``passage`` until ``GAP_REDUCE_AFTER_S``, then linearly down over
    ``GAP_REDUCE_OVER_S`` to ``MIN_GAP_S`` (never above ``passage``).
    """
    floor = min(passage, to_ds(MIN_GAP_S))
    into = waited - to_ds(GAP_REDUCE_AFTER_S)
    if into <= 0:
        return passage
    span = max(1, to_ds(GAP_REDUCE_OVER_S))
    return max(floor, passage - (passage - floor) * into // span)
