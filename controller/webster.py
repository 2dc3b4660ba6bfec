"""Webster's method: cycle length, green splits and delay, in plain numpy.

Everything here is pure and vectorised over a leading "intersection" axis:
pass 1-D arrays (phases) for one intersection or 2-D arrays (intersections x
phases) to size a whole city in one call. Units: flows in pcu/h, times in
seconds.

The formulas (Webster 1958, as in every traffic-engineering textbook):

* flow ratio of a phase ``y_i = q_i / s_i`` (critical lane flow over its
  saturation flow), intersection flow ratio ``Y = sum(y_i)``;
* lost time ``L = sum(l_i)`` with ``l_i`` the phase's intergreen
  (yellow + all-red) plus start-up loss;
* optimum cycle ``C0 = (1.5 L + 5) / (1 - Y)``, clipped to policy bounds and
  set to the maximum when ``Y`` approaches 1 (oversaturation: the formula
  diverges, the longest cycle gives the most capacity);
* effective greens ``g_i = (C - L) y_i / Y``;
* delay per vehicle
  ``d = C(1-λ)² / (2(1-λx)) + x² / (2q(1-x)) - 0.65 (C/q²)^(1/3) x^(2+5λ)``
  with ``λ = g/C`` and degree of saturation ``x = q / (λ s)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

SATURATED_Y = 0.9          # at or above this Y the cycle goes to its maximum
MAX_DEGREE_OF_SATURATION = 0.98  # delay formula diverges at x = 1; clamp to report a large finite delay

FloatArray = NDArray[np.float64]


def flow_ratios(flow_pcu_h: ArrayLike, saturation_pcu_h: ArrayLike) -> FloatArray:
    """``y = q / s`` per phase; negative flows are treated as zero."""
    q = np.maximum(np.asarray(flow_pcu_h, dtype=float), 0.0)
    s = np.asarray(saturation_pcu_h, dtype=float)
    if np.any(s <= 0):
        raise ValueError("saturation flow must be positive")
    y: FloatArray = q / s
    return y


def phase_lost_time(yellow_s: ArrayLike, red_s: ArrayLike, *, startup_lost_s: float = 0.0,
                    min_lost_s: float = 0.0) -> FloatArray:
    """Lost time per phase: intergreen plus start-up loss, at least ``min_lost_s``."""
    lost = np.asarray(yellow_s, dtype=float) + np.asarray(red_s, dtype=float) + startup_lost_s
    out: FloatArray = np.maximum(lost, min_lost_s)
    return out


def optimum_cycle(lost_s: ArrayLike, y_total: ArrayLike, *, min_cycle_s: float, max_cycle_s: float,
                  saturated_y: float = SATURATED_Y) -> FloatArray:
    """Webster's ``C0 = (1.5 L + 5) / (1 - Y)`` clipped to ``[min_cycle_s, max_cycle_s]``.

    ``Y >= saturated_y`` gives ``max_cycle_s``: there the formula explodes or
    turns negative, and the longest allowed cycle has the least lost time per hour.
    """
    lost = np.asarray(lost_s, dtype=float)
    y = np.asarray(y_total, dtype=float)
    saturated = y >= saturated_y
    with np.errstate(divide="ignore", invalid="ignore"):
        c0 = (1.5 * lost + 5.0) / (1.0 - np.where(saturated, 0.0, y))
    c0 = np.where(saturated, max_cycle_s, c0)
    return np.clip(c0, min_cycle_s, max_cycle_s)


def allocate_splits(cycle_s: ArrayLike, y: ArrayLike, lost_s: ArrayLike, min_split_s: ArrayLike) -> FloatArray:
    """Splits (green + intergreen) in proportion to ``y``, each at least its minimum.

    Effective greens share ``C - L`` in proportion to ``y`` (equally when there
    is no demand). Phases that fall below their minimum split are pinned there
    and the rest of the cycle is re-shared among the others in proportion to
    ``y`` (water filling); at most one pass per phase is needed. The result
    sums to the cycle whenever the cycle is at least the sum of minimum splits;
    otherwise every phase gets its minimum and the sum exceeds the cycle (the
    caller must lengthen the cycle).
    """
    one = np.ndim(y) == 1
    y = np.atleast_2d(np.asarray(y, dtype=float))
    lost = np.broadcast_to(np.atleast_2d(np.asarray(lost_s, dtype=float)), y.shape)
    minimum = np.broadcast_to(np.atleast_2d(np.asarray(min_split_s, dtype=float)), y.shape)
    cycle = np.broadcast_to(np.asarray(cycle_s, dtype=float).reshape(-1, 1), (y.shape[0], 1))
    weights = np.where(y.sum(axis=1, keepdims=True) > 0, y, 1.0)
    pinned = np.zeros(y.shape, dtype=bool)
    splits = minimum.copy()
    for _ in range(y.shape[1] + 1):
        free_w = np.where(pinned, 0.0, weights)
        w_sum = free_w.sum(axis=1, keepdims=True)
        budget = cycle - np.where(pinned, minimum, 0.0).sum(axis=1, keepdims=True) \
            - np.where(pinned, 0.0, lost).sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(w_sum > 0, free_w / w_sum, 0.0)
        splits = np.where(pinned, minimum, lost + np.maximum(budget, 0.0) * share)
        below = (~pinned) & (splits < minimum - 1e-9)
        if not below.any():
            break
        pinned |= below
    splits = np.where(pinned, minimum, splits)
    return splits[0] if one else splits


def round_splits(splits: ArrayLike, cycle_s: float, *, resolution_s: float = 0.1,
                 min_split_s: ArrayLike | None = None) -> FloatArray:
    """Round one intersection's splits to ``resolution_s`` so they sum exactly to ``cycle_s``.

    Largest-remainder rounding: floor every split, then hand the leftover ticks
    to the largest remainders. Flooring never takes a split below a minimum that
    is itself a multiple of the resolution, so safety margins survive rounding.
    """
    s = np.asarray(splits, dtype=float)
    ticks_total = int(round(cycle_s / resolution_s))
    raw = s / resolution_s
    ticks = np.floor(raw + 1e-6).astype(np.int64)
    if min_split_s is not None:
        ticks = np.maximum(ticks, np.round(np.asarray(min_split_s, dtype=float) / resolution_s).astype(np.int64))
    leftover = ticks_total - int(ticks.sum())
    if leftover > 0:
        order = np.argsort(-(raw - ticks), kind="stable")
        for k in range(leftover):
            ticks[order[k % len(order)]] += 1
    elif leftover < 0:
        # only when minimums forced rounding up: take ticks back from the phases with most slack
        floor_min = (np.zeros_like(ticks) if min_split_s is None
                     else np.round(np.asarray(min_split_s, dtype=float) / resolution_s).astype(np.int64))
        for _ in range(-leftover):
            slack = ticks - floor_min
            k = int(np.argmax(slack))
            if slack[k] <= 0:
                raise ValueError(f"cycle {cycle_s} s is shorter than the sum of minimum splits")
            ticks[k] -= 1
    return np.round(ticks * resolution_s, 6)


def webster_delay(cycle_s: ArrayLike, green_s: ArrayLike, flow_pcu_h: ArrayLike,
                  saturation_pcu_h: ArrayLike) -> FloatArray:
    """Webster's average delay per vehicle (s) for each approach.

    The degree of saturation is clamped at :data:`MAX_DEGREE_OF_SATURATION` so
    an oversaturated approach reports a large finite delay (JSON-safe) instead
    of infinity; report ``x`` alongside when it matters.
    """
    c = np.asarray(cycle_s, dtype=float)
    g = np.asarray(green_s, dtype=float)
    q = np.maximum(np.asarray(flow_pcu_h, dtype=float), 0.0) / 3600.0
    s = np.asarray(saturation_pcu_h, dtype=float) / 3600.0
    lam = np.clip(g / c, 1e-6, 1.0)
    x = np.minimum(q / (lam * s), MAX_DEGREE_OF_SATURATION)
    uniform = c * (1.0 - lam) ** 2 / (2.0 * (1.0 - lam * x))
    # the random terms vanish as q -> 0; below a trickle (0.0036 pcu/h) treat q as zero
    # rather than evaluate inf * 0 = NaN
    active = q > 1e-6
    q_safe = np.where(active, q, 1.0)
    random = np.where(active, x ** 2 / (2.0 * q_safe * (1.0 - x)), 0.0)
    correction = np.where(active, 0.65 * np.cbrt(c / q_safe ** 2) * x ** (2.0 + 5.0 * lam), 0.0)
    delay: FloatArray = np.maximum(uniform + random - correction, 0.0)
    return delay


def degree_of_saturation(cycle_s: ArrayLike, green_s: ArrayLike, flow_pcu_h: ArrayLike,
                         saturation_pcu_h: ArrayLike) -> FloatArray:
    """``x = q C / (g s)`` per approach (unclamped)."""
    c = np.asarray(cycle_s, dtype=float)
    g = np.maximum(np.asarray(green_s, dtype=float), 1e-6)
    x: FloatArray = np.asarray(flow_pcu_h, dtype=float) * c / (g * np.asarray(saturation_pcu_h, dtype=float))
    return x


def mean_delay(cycle_s: ArrayLike, green_s: ArrayLike, flow_pcu_h: ArrayLike,
               saturation_pcu_h: ArrayLike) -> float:
    """Flow-weighted mean delay (s/pcu) over the phases of one intersection."""
    q = np.maximum(np.asarray(flow_pcu_h, dtype=float), 0.0)
    d = webster_delay(cycle_s, green_s, q, saturation_pcu_h)
    total = float(q.sum())
    return float((d * q).sum() / total) if total > 0 else float(np.mean(d))
