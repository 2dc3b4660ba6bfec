"""Change and clearance intervals from the ITE formulas, and pedestrian timing.

Yellow change (ITE kinematic formula)::

    Y = t + v / (2a + 2Gg)

with perception-reaction time ``t`` (1.0 s), approach speed ``v`` (m/s),
deceleration ``a`` (3.05 m/s², 10 ft/s²), grade ``G`` (fraction, uphill
positive) and ``g`` = 9.81 m/s². Red clearance::

    R = (W + L) / v

with ``W`` the distance from the stop line to the far side of the last
conflicting lane (m) and ``L`` the design vehicle length (6.1 m, 20 ft).
The *pedestrian clearance time* is the crossing length over the walking
speed (1.07 m/s, 3.5 ft/s, MUTCD). MUTCD 2009 section 4E.06 (and its figure
4E-2) lets the *buffer interval* (the steady don't-walk shown after the
flashing don't-walk and before any conflicting vehicle is released, at least
3 s) help satisfy it: the flashing don't-walk (NTCIP
``phasePedestrianClear``) then only has to last the clearance time minus the
phase's yellow change and red clearance, which always follow it. A
pedestrian who steps off the kerb on the last second of walk therefore still
has the full clearance time before any conflicting movement gets green; the
phase just does not hold the vehicles' green for the part of the crossing
that the change interval covers anyway. An intersection whose policy wants
the whole clearance inside the green sets ``ped_clear_in_buffer=False`` on
its phases (:class:`traffic.intersection.PhaseSpec`); both plan checks read
the same flag. The flashing interval never drops below
``MIN_PED_CHANGE_S`` (a warning pedestrians can see).

Results are rounded *up* to the 0.1 s a controller can time, so rounding
never makes an interval shorter than the formula.

Clearance policy (site configuration, ``[clearance]`` in ``traffic.toml``)
---------------------------------------------------------------------------
Which change and clearance intervals are safe at a site is the agency's
decision, not the project's. :class:`ClearancePolicy` says which one a site
runs: ``ite`` (the default: the formulas above, per approach, from speed,
grade and width) or ``agency`` (the agency's own yellow and all-red, one
pair for the site and optionally one per controller or per phase, e.g. a
national standard's 3 s yellow and 1-2 s all-red). Whatever the policy, no
interval goes below the project's floor, enforced here, in
:class:`traffic.intersection.PhaseSpec` and in both plan checks:

* ``FLOOR_YELLOW_S`` = 3.0 s: MUTCD 2009 section 4D.26 (guidance) puts the
  yellow change interval between 3 and 6 s, and the ITE formula is clamped
  the same way; 3 s is the shortest a driver at urban speeds can react to
  (1 s perception-reaction) and stop comfortably from about 30 km/h.
* ``FLOOR_RED_CLEAR_S`` = 1.0 s: MUTCD 4D.26 makes the red clearance
  optional (at most 6 s), and the ITE formula can give well under a second
  on a narrow junction; ITE's recommended practice (*Guidelines for
  Determining Traffic Signal Change and Clearance Intervals*, 2020) and
  most agencies' standards keep at least 1 s of all-red between conflicting
  releases, which is also what the field's clearance monitor needs to tell
  a red clearance from a controller fault. A policy of "no all-red" (what
  many simulation networks and the RESCO benchmarks run) cannot be
  configured; it exists only as a comparison baseline.

The policy's name (``ite`` or ``agency:<label>``) is carried by every
:class:`~traffic.intersection.IntersectionSpec`, appears in every plan's
explanation and is printed with every benchmark table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

PERCEPTION_REACTION_S = 1.0
DECELERATION_MPS2 = 3.05
GRAVITY_MPS2 = 9.81
VEHICLE_LENGTH_M = 6.1
WALKING_SPEED_MPS = 1.07
MIN_YELLOW_S = 3.0        # common policy floor (MUTCD: 3 to 6 s)
MAX_YELLOW_S = 6.0
MIN_WALK_S = 7.0          # MUTCD minimum walk interval
#: a crosswalk without push buttons shows its walk at least this often (timed pedestrian recall, s):
#: what a fixed 90 s cycle gives. The field's free mode and the field-safe baselines use the same period.
PED_RECALL_PERIOD_S = 90.0
MIN_BUFFER_S = 3.0        # MUTCD 4E.06: buffer (steady don't-walk before conflicting release) >= 3 s
MIN_PED_CHANGE_S = 3.0    # policy floor of the flashing don't-walk when the buffer covers most of the crossing
TOLERANCE_S = 0.05        # plans carry 0.1 s resolution; compare with this slack
FLOOR_YELLOW_S = 3.0      # project floor of any yellow change interval, whatever the policy (MUTCD 4D.26)
FLOOR_RED_CLEAR_S = 1.0   # project floor of any red clearance (all-red), whatever the policy (ITE 2020 RP)
MAX_RED_CLEAR_S = 6.0     # MUTCD 4D.26: red clearance at most 6 s
POLICY_ITE = "ite"
POLICY_AGENCY = "agency"
POLICY_KINDS = (POLICY_ITE, POLICY_AGENCY)


def ceil_tenth(value: float) -> float:
    """Round up to the next 0.1 s (with a guard against float noise)."""
    return math.ceil(round(value * 10.0, 6)) / 10.0


def ceil_to_step(value: float, step_s: float) -> float:
    """Round a positive interval up to whole steps of ``step_s`` (0 stays 0): how long a controller stepping
    every ``step_s`` must show it so that it is never shorter (float noise guarded)."""
    return math.ceil(round(value / step_s, 6)) * step_s if value > 0 else 0.0


def yellow_change_s(speed_mps: float, grade: float = 0.0) -> float:
    """ITE yellow change interval for an approach, clamped to [3, 6] s policy bounds."""
    if speed_mps <= 0:
        raise ValueError(f"approach speed must be positive, got {speed_mps}")
    denominator = 2.0 * DECELERATION_MPS2 + 2.0 * grade * GRAVITY_MPS2
    if denominator <= 0:
        raise ValueError(f"grade {grade} too steep downhill for the ITE formula")
    raw = PERCEPTION_REACTION_S + speed_mps / denominator
    return min(MAX_YELLOW_S, max(MIN_YELLOW_S, ceil_tenth(raw)))


def red_clearance_s(speed_mps: float, clearance_width_m: float) -> float:
    """ITE red clearance interval for a vehicle to clear the conflict area."""
    if speed_mps <= 0:
        raise ValueError(f"approach speed must be positive, got {speed_mps}")
    if clearance_width_m < 0:
        raise ValueError(f"clearance width must be non-negative, got {clearance_width_m}")
    return ceil_tenth((clearance_width_m + VEHICLE_LENGTH_M) / speed_mps)


def pedestrian_clearance_time_s(crossing_length_m: float) -> float:
    """Time a pedestrian needs to cross after the walk ends (MUTCD's calculated pedestrian clearance time)."""
    if crossing_length_m <= 0:
        return 0.0
    return ceil_tenth(crossing_length_m / WALKING_SPEED_MPS)


def pedestrian_clear_s(crossing_length_m: float, buffer_s: float = 0.0) -> float:
    """Flashing don't-walk for a crossing of this length, given the buffer that follows it.

    ``buffer_s`` is the yellow change plus red clearance shown after the
    phase's green (0: the flashing don't-walk covers the whole crossing). A
    buffer shorter than ``MIN_BUFFER_S`` does not count (MUTCD requires at
    least 3 s of it; yellow alone is never shorter under this module's
    floor, so the case only arises for hand-made plans).
    """
    clearance = pedestrian_clearance_time_s(crossing_length_m)
    if clearance <= 0:
        return 0.0
    if buffer_s < MIN_BUFFER_S - TOLERANCE_S:
        buffer_s = 0.0
    return max(min(MIN_PED_CHANGE_S, clearance), ceil_tenth(clearance - buffer_s))


def policy_yellow_s(speed_mps: float, grade: float = 0.0, agency_s: float | None = None) -> float:
    """Yellow change a phase must show: the agency's value when set, else ITE; never below the floor."""
    value = yellow_change_s(speed_mps, grade) if agency_s is None else ceil_tenth(float(agency_s))
    return max(FLOOR_YELLOW_S, value)


def policy_red_clear_s(speed_mps: float, clearance_width_m: float, agency_s: float | None = None) -> float:
    """Red clearance a phase must show: the agency's value when set, else ITE; never below the floor."""
    value = red_clearance_s(speed_mps, clearance_width_m) if agency_s is None else ceil_tenth(float(agency_s))
    return max(FLOOR_RED_CLEAR_S, value)


def floor_problem(yellow_s: float | None, red_clear_s: float | None) -> str | None:
    """What is wrong with an agency's yellow / red clearance pair (None: within the floor and the maxima)."""
    if yellow_s is not None:
        if isinstance(yellow_s, bool) or not isinstance(yellow_s, (int, float)) or not math.isfinite(yellow_s):
            return f"yellow {yellow_s!r} is not a number"
        if not FLOOR_YELLOW_S - 1e-9 <= yellow_s <= MAX_YELLOW_S + 1e-9:
            return f"yellow {yellow_s:g} s outside [{FLOOR_YELLOW_S:g}, {MAX_YELLOW_S:g}] s (the project's floor)"
    if red_clear_s is not None:
        if isinstance(red_clear_s, bool) or not isinstance(red_clear_s, (int, float)) or not math.isfinite(red_clear_s):
            return f"red clearance {red_clear_s!r} is not a number"
        if not FLOOR_RED_CLEAR_S - 1e-9 <= red_clear_s <= MAX_RED_CLEAR_S + 1e-9:
            return (f"red clearance {red_clear_s:g} s outside [{FLOOR_RED_CLEAR_S:g}, {MAX_RED_CLEAR_S:g}] s "
                    f"(the project's floor)")
    return None


@dataclass(frozen=True)
class ClearancePolicy:
    """A site's clearance policy: ITE per approach, or the agency's own intervals (within the floor).

    ``yellow_s`` / ``red_clear_s``: the agency's site-wide pair (``agency``
    only); ``approaches``: ``{"<tls id>": (y, r), "<tls id>:<phase>": (y, r)}``
    overrides (a phase entry beats a controller entry beats the site pair).
    Building one below the floor raises ``ValueError``.
    """

    kind: str = POLICY_ITE
    label: str = ""
    yellow_s: float | None = None
    red_clear_s: float | None = None
    approaches: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"clearance policy {self.kind!r} is not one of {', '.join(POLICY_KINDS)}")
        if self.kind == POLICY_ITE and (self.yellow_s is not None or self.red_clear_s is not None
                                        or self.approaches):
            raise ValueError("the ite policy takes no intervals of its own (use policy 'agency')")
        if self.kind == POLICY_AGENCY and (self.yellow_s is None or self.red_clear_s is None):
            raise ValueError("the agency policy needs its yellow and red clearance")
        problem = floor_problem(self.yellow_s, self.red_clear_s)
        if problem:
            raise ValueError(problem)
        for key, pair in self.approaches.items():
            if len(pair) != 2:
                raise ValueError(f"approach {key}: needs (yellow, red clearance)")
            problem = floor_problem(*pair)
            if problem:
                raise ValueError(f"approach {key}: {problem}")

    @property
    def name(self) -> str:
        """The name plans and benchmark tables carry: ``ite`` or ``agency:<label>``."""
        if self.kind == POLICY_ITE:
            return POLICY_ITE
        return f"{POLICY_AGENCY}:{self.label or f'Y{self.yellow_s:g}/R{self.red_clear_s:g}'}"

    def intervals(self, tls_id: str, phase: int) -> tuple[float | None, float | None]:
        """The agency's (yellow, red clearance) for one phase; (None, None) under ITE."""
        if self.kind == POLICY_ITE:
            return None, None
        pair = self.approaches.get(f"{tls_id}:{phase}") or self.approaches.get(tls_id)
        if pair is not None:
            return float(pair[0]), float(pair[1])
        return self.yellow_s, self.red_clear_s

    def describe(self) -> str:
        """One line for reports and benchmark tables."""
        if self.kind == POLICY_ITE:
            return (f"clearance policy ite: ITE yellow t + v/(2a + 2Gg) and red clearance (W + L)/v per approach, "
                    f"floors yellow >= {FLOOR_YELLOW_S:g} s, all-red >= {FLOOR_RED_CLEAR_S:g} s")
        extra = f", {len(self.approaches)} approach override(s)" if self.approaches else ""
        return (f"clearance policy {self.name}: yellow {self.yellow_s:g} s, all-red {self.red_clear_s:g} s{extra} "
                f"(floors yellow >= {FLOOR_YELLOW_S:g} s, all-red >= {FLOOR_RED_CLEAR_S:g} s)")


_APPROACH = re.compile(r"^\s*([A-Za-z0-9_.#:-]+?)(?::(\d+))?\s*=\s*([0-9.]+)\s*/\s*([0-9.]+)\s*$")


def parse_approaches(text: str) -> dict[str, tuple[float, float]]:
    """``"J1=3.5/2.0; J2:3=4.0/1.5"`` -> ``{"J1": (3.5, 2.0), "J2:3": (4.0, 1.5)}`` (ValueError when malformed)."""
    out: dict[str, tuple[float, float]] = {}
    for item in (x for x in re.split(r"[;,]", text or "") if x.strip()):
        m = _APPROACH.match(item)
        if not m:
            raise ValueError(f"{item.strip()!r} is not <tls id>[:<phase>]=<yellow>/<all-red>")
        key = m.group(1) + (f":{m.group(2)}" if m.group(2) else "")
        if key in out:
            raise ValueError(f"approach {key} given twice")
        pair = (float(m.group(3)), float(m.group(4)))
        problem = floor_problem(*pair)
        if problem:
            raise ValueError(f"approach {key}: {problem}")
        out[key] = pair
    return out
