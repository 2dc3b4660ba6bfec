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
"""

from __future__ import annotations

import math

PERCEPTION_REACTION_S = 1.0
DECELERATION_MPS2 = 3.05
GRAVITY_MPS2 = 9.81
VEHICLE_LENGTH_M = 6.1
WALKING_SPEED_MPS = 1.07
MIN_YELLOW_S = 3.0        # common policy floor (MUTCD: 3 to 6 s)
MAX_YELLOW_S = 6.0
MIN_WALK_S = 7.0          # MUTCD minimum walk interval
MIN_BUFFER_S = 3.0        # MUTCD 4E.06: buffer (steady don't-walk before conflicting release) >= 3 s
MIN_PED_CHANGE_S = 3.0    # policy floor of the flashing don't-walk when the buffer covers most of the crossing
TOLERANCE_S = 0.05        # plans carry 0.1 s resolution; compare with this slack


def ceil_tenth(value: float) -> float:
    """Round up to the next 0.1 s (with a guard against float noise)."""
    return math.ceil(round(value * 10.0, 6)) / 10.0


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
