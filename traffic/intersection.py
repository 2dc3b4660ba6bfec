"""Intersection geometry and policy that both the centre and the field know.

An :class:`IntersectionSpec` is what a traffic engineer would enter into a
controller's database and its conflict monitor: the phases (stages) with the
movements they release, the approach speed, grade and clearance width behind
each phase's change interval, pedestrian crossings, detectors, and which
signal groups may never be green together (the conflict matrix). It is built
from a SUMO network by ``simulation.network`` and shipped to the field
emulator and the central service alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from traffic.clearance import (
    MIN_WALK_S,
    POLICY_ITE,
    ClearancePolicy,
    floor_problem,
    pedestrian_clear_s,
    policy_red_clear_s,
    policy_yellow_s,
)
from traffic.errors import ScenarioError
from traffic.plan import PhaseTiming, PlanMode, TimingPlan


@dataclass(frozen=True)
class PhaseSpec:
    """Design data of one phase (stage)."""

    phase: int
    greens: str                      # approved green state (G/g/r per signal group)
    approach_speed_mps: float        # fastest approach released by this phase
    approach_grade: float = 0.0      # fraction, uphill positive
    clearance_width_m: float = 15.0  # stop line to far side of last conflicting lane
    ped_crossing_m: float = 0.0      # 0: no pedestrian crossing runs with this phase
    min_green_s: float = 5.0         # local policy floor
    lanes: int = 1                   # lanes (approach-lane equivalents) discharging in this phase
    saturation_flow_pcu_h_lane: float = 1900.0
    ped_clear_in_buffer: bool = True  # MUTCD 4E.06: yellow + red clearance count towards the crossing time
    #: the crossing has push buttons (pedestrian detectors): fully actuated operation shows its walk
    #: when somebody pressed, never on a timer; False: timed pedestrian recall (nobody can call it)
    ped_push_button: bool = False
    #: the agency's own yellow change / red clearance for this approach (clearance policy ``agency``);
    #: None: ITE from speed, grade and width. Never below the floor (traffic.clearance).
    agency_yellow_s: float | None = None
    agency_red_clear_s: float | None = None

    def __post_init__(self) -> None:
        problem = floor_problem(self.agency_yellow_s, self.agency_red_clear_s)
        if problem:
            raise ScenarioError(f"phase {self.phase}: {problem}")

    @property
    def yellow_s(self) -> float:
        """Yellow change under the site's clearance policy (never below ``FLOOR_YELLOW_S``)."""
        return policy_yellow_s(self.approach_speed_mps, self.approach_grade, self.agency_yellow_s)

    @property
    def red_clear_s(self) -> float:
        """Red clearance under the site's clearance policy (never below ``FLOOR_RED_CLEAR_S``)."""
        return policy_red_clear_s(self.approach_speed_mps, self.clearance_width_m, self.agency_red_clear_s)

    @property
    def ped_clear_s(self) -> float:
        """Flashing don't-walk: the crossing time, less the yellow + red buffer when policy allows it."""
        buffer = self.yellow_s + self.red_clear_s if self.ped_clear_in_buffer else 0.0
        return pedestrian_clear_s(self.ped_crossing_m, buffer)

    @property
    def walk_s(self) -> float:
        return MIN_WALK_S if self.ped_crossing_m > 0 else 0.0

    @property
    def min_split_s(self) -> float:
        """Smallest split that satisfies min green, clearances and pedestrian timing."""
        green = max(self.min_green_s, self.walk_s + self.ped_clear_s)
        return round(green + self.yellow_s + self.red_clear_s, 1)


@dataclass(frozen=True)
class DetectorSpec:
    """A loop detector wired to the controller."""

    detector_id: str          # unique within the controller, e.g. "d03"
    lane_id: str              # SUMO lane (world binding)
    phase: int                # phase whose movements it measures
    distance_to_stopline_m: float = 40.0
    entry: bool = False       # on a network boundary approach (demand from counts)
    # approach edge whose flow the loop counts; "" for an advance loop upstream of a short lane
    edge_id: str = ""
    links: tuple[int, ...] = ()  # signal groups (SUMO link indices) fed by the lane; () when unknown


@dataclass(frozen=True)
class IntersectionSpec:
    """Everything the centre and the field must agree on for one controller."""

    controller_id: str
    tls_id: str
    link_count: int
    phases: tuple[PhaseSpec, ...]
    detectors: tuple[DetectorSpec, ...] = ()
    foes: frozenset[tuple[int, int]] = frozenset()       # geometric foes (i < j)
    conflicts: frozenset[tuple[int, int]] = frozenset()  # never green together (i < j)
    position: tuple[float, float] = (0.0, 0.0)
    site: str = "hanoi"
    max_cycle_s: float = 180.0
    #: foe pairs (i < j) the approved program shows both protected (``G``) and the junction itself
    #: resolves: their streams merge into one lane, or one gives way to the other by the junction's
    #: right-of-way table (``docs/foes.md``); the safety checks accept these, and only these, foes both ``G``
    resolved_foes: frozenset[tuple[int, int]] = frozenset()
    #: name of the clearance policy the phases' intervals follow (``ite`` or ``agency:<label>``)
    clearance_policy: str = POLICY_ITE

    # ---- derived -----------------------------------------------------
    def with_clearance(self, policy: ClearancePolicy) -> IntersectionSpec:
        """This intersection under ``policy`` (the agency's intervals per phase, or ITE)."""
        phases = []
        for p in self.phases:
            yellow, red = policy.intervals(self.tls_id, p.phase)
            phases.append(replace(p, agency_yellow_s=yellow, agency_red_clear_s=red))
        return replace(self, phases=tuple(phases), clearance_policy=policy.name)

    def phase(self, number: int) -> PhaseSpec:
        for p in self.phases:
            if p.phase == number:
                return p
        raise ScenarioError(f"{self.controller_id} has no phase {number}")

    def is_conflict(self, i: int, j: int) -> bool:
        return (min(i, j), max(i, j)) in self.conflicts

    def is_foe(self, i: int, j: int) -> bool:
        return (min(i, j), max(i, j)) in self.foes

    @property
    def exclusive_foes(self) -> frozenset[tuple[int, int]]:
        """Foe pairs that may never both show a protected green (``G``): all foes but the resolved ones."""
        return self.foes - self.resolved_foes

    def detector_phases(self, detector: DetectorSpec) -> tuple[int, ...]:
        """Phases whose demand ``detector`` measures (calls and extends when run actuated).

        With known ``links``: the phases in which every movement of the lane
        may go (all its links ``G`` or ``g``), so a vehicle over the loop is
        served by them; failing that, the phases giving one of its links a
        protected green. Without links: the single ``detector.phase``.
        """
        if detector.links:
            def green(p: PhaseSpec, i: int, kinds: str) -> bool:
                return 0 <= i < len(p.greens) and p.greens[i] in kinds

            found = tuple(p.phase for p in self.phases if all(green(p, i, "Gg") for i in detector.links))
            if not found:
                found = tuple(p.phase for p in self.phases if any(green(p, i, "G") for i in detector.links))
            if found:
                return found
        return (detector.phase,)

    def default_plan(self, cycle_s: float | None = None, *, offset_s: float = 0.0,
                     created_by: str = "field-tod", version: int = 1) -> TimingPlan:
        """A safe fixed-time plan: every phase at its minimum split, spare time shared equally."""
        minimum = [p.min_split_s for p in self.phases]
        cycle = float(cycle_s if cycle_s is not None else max(60.0, sum(minimum)))
        spare = max(0.0, cycle - sum(minimum))
        splits = [round(m + spare / len(minimum), 1) for m in minimum]
        splits[-1] = round(cycle - sum(splits[:-1]), 1)
        return self.plan_from_splits(splits, offset_s=offset_s, created_by=created_by, version=version)

    def plan_from_splits(self, splits: list[float] | tuple[float, ...], *, offset_s: float = 0.0,
                         created_by: str = "optimizer", version: int = 1, reason: str = "",
                         mode: str = PlanMode.PRETIMED, coord_phase: int | None = None) -> TimingPlan:
        """Build a plan whose intervals follow this intersection's design (ITE, pedestrians)."""
        if len(splits) != len(self.phases):
            raise ScenarioError(f"{len(splits)} splits for {len(self.phases)} phases of {self.controller_id}")
        phases = []
        for spec, split in zip(self.phases, splits, strict=False):
            phases.append(PhaseTiming(
                phase=spec.phase,
                greens=spec.greens,
                splitTime=round(float(split), 1),
                phaseMinimumGreen=spec.min_green_s,
                phaseMaximum1=round(max(spec.min_green_s, float(split) - spec.yellow_s - spec.red_clear_s), 1),
                phasePassage=2.0,
                phaseYellowChange=spec.yellow_s,
                phaseRedClear=spec.red_clear_s,
                phaseWalk=spec.walk_s,
                phasePedestrianClear=spec.ped_clear_s,
            ))
        cycle = round(sum(p.splitTime for p in phases), 1)
        return TimingPlan(
            controller_id=self.controller_id,
            phases=tuple(phases),
            patternCycleTime=cycle,
            # round, then wrap again: 52.68 % 52.7 rounds to 52.7, which is not < cycle
            patternOffsetTime=round(round(offset_s % cycle, 1) % cycle, 1) if cycle > 0 else 0.0,
            splitCoordPhase=coord_phase if coord_phase is not None else self.phases[0].phase,
            mode=mode,
            version=version,
            created_by=created_by,
            reason=reason,
        )

    # ---- serialisation -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["foes"] = sorted(list(p) for p in self.foes)
        data["conflicts"] = sorted(list(p) for p in self.conflicts)
        data["resolved_foes"] = sorted(list(p) for p in self.resolved_foes)
        data["phases"] = [asdict(p) for p in self.phases]
        data["detectors"] = [asdict(d) for d in self.detectors]
        data["position"] = list(self.position)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntersectionSpec:
        try:
            return cls(
                controller_id=data["controller_id"],
                tls_id=data["tls_id"],
                link_count=int(data["link_count"]),
                phases=tuple(PhaseSpec(**p) for p in data["phases"]),
                detectors=tuple(DetectorSpec(**{**d, "links": tuple(d.get("links", ()))})
                                for d in data.get("detectors", ())),
                foes=frozenset(tuple(sorted(p)) for p in data.get("foes", ())),
                conflicts=frozenset(tuple(sorted(p)) for p in data.get("conflicts", ())),
                position=tuple(data.get("position", (0.0, 0.0))),
                site=data.get("site", "hanoi"),
                max_cycle_s=float(data.get("max_cycle_s", 180.0)),
                resolved_foes=frozenset(tuple(sorted(p)) for p in data.get("resolved_foes", ())),
                clearance_policy=str(data.get("clearance_policy", POLICY_ITE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScenarioError(f"bad intersection spec: {exc}") from exc


class FindingLevel(StrEnum):
    """Severity of a :class:`SignalFinding`, least to most serious."""

    INFO = "info"
    WARNING = "warning"
    UNCONTROLLED = "uncontrolled"


#: severities of a :class:`SignalFinding`, least to most serious
FINDING_LEVELS = tuple(lv.value for lv in FindingLevel)


@dataclass(frozen=True)
class SignalFinding:
    """Something a traffic engineer should know about how one signal of a network was mapped.

    ``level`` is ``info`` (how it was mapped), ``warning`` (controlled, but
    check this) or ``uncontrolled`` (the project does not control this
    signal: it stays on its own program, SUMO's or the cabinet's, and the
    rest of the network is controlled). ``rule`` is a short stable code
    (``RAIL_SIGNAL``, ``NO_PROGRAM``, ``UNRESOLVED_FOES``, a safety rule id,
    ...); ``advice`` says what to check.
    """

    tls_id: str
    level: str
    rule: str
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Corridor:
    """A set of intersections with the links between them (for offsets)."""

    name: str
    intersections: tuple[IntersectionSpec, ...]
    # (upstream controller, downstream controller, distance m, free speed m/s)
    links: tuple[tuple[str, str, float, float], ...] = field(default=())
    #: what the mapping found, per signal (``uncontrolled`` ones are not in ``intersections``)
    findings: tuple[SignalFinding, ...] = field(default=())

    @property
    def uncontrolled(self) -> tuple[str, ...]:
        """TLS ids left on their own program (not in ``intersections``), in the order found."""
        seen: dict[str, None] = {}
        for f in self.findings:
            if f.level == FindingLevel.UNCONTROLLED:
                seen.setdefault(f.tls_id, None)
        return tuple(seen)

    def by_id(self) -> dict[str, IntersectionSpec]:
        return {i.controller_id: i for i in self.intersections}

    def with_clearance(self, policy: ClearancePolicy) -> Corridor:
        """Every intersection under the site's clearance ``policy``."""
        return replace(self, intersections=tuple(i.with_clearance(policy) for i in self.intersections))
