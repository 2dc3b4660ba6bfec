"""Two-way bandwidth offsets for a coordinated corridor (MAXBAND-style MILP).

Why: one-direction green-wave offsets (:func:`controller.optimizer.green_wave_offsets`)
give the outbound platoon a clean run and leave the inbound one to whatever
the arithmetic produces; on a two-way arterial the inbound platoon often stops
at every other signal. Maximising the *sum* of both through-bands (weighted by
the inbound/outbound demand ratio ``k``) is the classical answer:

* J. D. C. Little, "The synchronization of traffic signals by mixed-integer
  linear programming", Operations Research 14(4):568-594, 1966 (after
  Morgan & Little, "Synchronizing traffic signals for maximal bandwidth",
  Operations Research 12(6):896-912, 1964);
* J. D. C. Little, M. D. Kelson, N. H. Gartner, "MAXBAND: a program for
  setting signals on arteries and triangular networks", Transportation
  Research Record 795:40-46, 1981.

Formulation (times in fractions of the common cycle C, intersections
``0..n-1`` in outbound order, outbound travel ``t_i`` from i to i+1, inbound
``tb_i`` from i+1 to i):

* ``theta_i`` offset: start of the coordinated (outbound) green, as
  ``TimingPlan.patternOffsetTime`` (NTCIP: the coordinated green starts
  ``offset`` after the cycle reference; see :func:`traffic.signals.cycle_start_offset`);
  the inbound green starts ``shift_i`` later and lasts ``gb_i`` (a stage
  serving both directions: ``shift_i = 0``, ``gb_i = g_i``);
* ``w_i`` (``wb_i``): time from the start of the outbound (inbound) green to
  the band's leading edge, ``0 <= w_i``, ``w_i + b <= g_i``,
  ``wb_i + bb <= gb_i`` (Little's "band inside the green" constraints, with
  greens instead of reds);
* the band is continuous along the arterial: outbound
  ``w_{i+1} - w_i + theta_{i+1} - theta_i + n_i = t_i``, inbound
  ``wb_i - wb_{i+1} + theta_i - theta_{i+1} + nb_i = tb_i - shift_i + shift_{i+1}``,
  ``n_i``, ``nb_i`` integers. Their sum is MAXBAND's loop constraint
  ``(w_{i+1} - w_i) + (wb_i - wb_{i+1}) + m_i = t_i + tb_i - shift_i + shift_{i+1}``
  with one integer ``m_i`` per link and no offsets; that is what is solved
  (each ``m_i`` bounded to its two or three feasible values, far tighter
  than the form with explicit offsets), and the offsets follow from the
  outbound equation, ``theta_{i+1} = theta_i + t_i - (w_{i+1} - w_i)``,
  starting from one fixed offset. Every further fixed offset (a locked
  intersection) adds ``w_j - w_f + p_j = (travel f -> j) - (theta_j - theta_f)``
  with one integer ``p_j``;
* maximise ``b + k*bb`` with MAXBAND's target-ratio constraint
  ``(1-k)*bb >= (1-k)*k*b`` (for ``k < 1`` the inbound band is at least ``k``
  times the outbound one, for ``k > 1`` at most). Two tie-breakers with
  weights far below any band that matters: prefer equal bands (``z <= b``,
  ``k*z <= bb``), then bands that start early in the green (small ``w``),
  so that the one-way case reproduces the plain green wave (``w_i = 0``:
  every platoon arrives as the green starts).

MAXBAND asks for a band (possibly of zero width) in each direction through
every signal; with short greens or many signals none may exist, and one full
band can score more than two narrow ones. So the one-direction optimum (the
heavier direction; the green wave) competes on the same objective, a missing
band counting 0, and wins only if it keeps the target ratio or two bands are
impossible.

Solved with :func:`scipy.optimize.milp` (HiGHS) under a time limit; the
offsets are rounded to the plans' 0.1 s and the bands are then *measured* on
the rounded offsets (:func:`measured_bands`), so what the explanation shows
is what the offsets give. Anything that goes wrong (not a chain, solver
failure, infeasible anchors) is returned as a reason, never raised into the
epoch; the caller falls back to the green wave.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds as LinearBounds
from scipy.optimize import LinearConstraint, milp

from traffic.errors import PlanError
from traffic.intersection import Corridor

log = logging.getLogger(__name__)

#: MILP wall-clock limit per chain and direction choice. 20 signals: median 0.2 s, max 0.45 s
#: (bench/bandwidth.py); the limit guards the epoch on long chains (then one direction is kept).
TIME_LIMIT_S = 2.0
#: tie-breaker weights (see module docstring); both far below any band that matters
_BALANCE_WEIGHT = 1e-3
_EARLY_WEIGHT = 1e-6
#: seconds: plans carry 0.1 s resolution
_RESOLUTION_S = 0.1
#: relative MIP gap: 1e-5 of the objective is far below the 0.1 s the plans can express
_MIP_GAP = 1e-5


@dataclass(frozen=True)
class ChainBands:
    """Offsets and bands of one chain, in seconds, in the chain's outbound order."""

    offsets_s: tuple[float, ...]
    bandwidth_s: float
    bandwidth_inbound_s: float | None  # None: one-way chain, no inbound band
    status: str
    solve_s: float


@dataclass
class CorridorBands:
    """What :func:`corridor_bands` decided for a corridor.

    ``offsets_s`` holds only the intersections the MILP (or the trivial
    single-intersection case) set; every other intersection is listed in
    ``reasons`` and should keep the caller's fallback offsets.
    """

    offsets_s: dict[str, float] = field(default_factory=dict)
    bandwidth_s: dict[str, float] = field(default_factory=dict)
    bandwidth_inbound_s: dict[str, float | None] = field(default_factory=dict)
    chains: list[tuple[str, ...]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    solve_s: float = 0.0


def solve_chain(cycle_s: float, greens_s: Sequence[float], travel_s: Sequence[float],
                travel_back_s: Sequence[float] | None = None, *,
                inbound_greens_s: Sequence[float] | None = None, inbound_shift_s: Sequence[float] | None = None,
                k: float = 1.0, fixed_s: Mapping[int, float] | None = None,
                time_limit_s: float = TIME_LIMIT_S) -> ChainBands:
    """Maximal two-way bandwidth offsets for one chain of signals (see module docstring).

    ``greens_s[i]``: outbound coordinated green of signal i (split minus
    yellow and red clearance); ``travel_s[i]``: outbound travel time from
    signal i to i+1; ``travel_back_s[i]``: inbound travel time from i+1 to i
    (``None``: one-way street, only the outbound band). ``fixed_s`` maps
    chain positions to offsets that must be kept (engineer-locked signals);
    with none fixed, signal 0 keeps offset 0 (bands only depend on offset
    differences). Raises :class:`PlanError` for bad input, an infeasible
    problem (fixed offsets no band can join) or a solver failure.
    """
    n = len(greens_s)
    if n == 0:
        raise PlanError("bandwidth: empty chain")
    if not (math.isfinite(cycle_s) and cycle_s > 0):
        raise PlanError(f"bandwidth: cycle must be > 0, got {cycle_s}")
    if len(travel_s) != n - 1 or (travel_back_s is not None and len(travel_back_s) != n - 1):
        raise PlanError(f"bandwidth: {n} signals need {n - 1} travel times per direction")
    two_way = travel_back_s is not None and k > 0
    g = _fractions(greens_s, cycle_s, "green", upper=1.0)
    gb = _fractions(inbound_greens_s if inbound_greens_s is not None else greens_s, cycle_s, "inbound green",
                    upper=1.0)
    shift = _fractions(inbound_shift_s if inbound_shift_s is not None else [0.0] * n, cycle_s, "inbound shift")
    t = _fractions(travel_s, cycle_s, "travel time")
    tb = _fractions(travel_back_s if travel_back_s is not None else travel_s, cycle_s, "travel time")
    if not (math.isfinite(k) and k >= 0):
        raise PlanError(f"bandwidth: demand ratio k must be >= 0, got {k}")
    fixed = {int(i): (float(v) % cycle_s) / cycle_s for i, v in (fixed_s or {}).items()}
    if any(not 0 <= i < n for i in fixed):
        raise PlanError(f"bandwidth: fixed positions {sorted(fixed)} outside the chain of {n}")
    if not fixed:
        fixed = {0: 0.0}
    started = time.perf_counter()

    def measured(theta: np.ndarray, status: str) -> ChainBands:
        offsets = [round(round(float(x) * cycle_s / _RESOLUTION_S) * _RESOLUTION_S % cycle_s, 1) % cycle_s
                   for x in theta]
        for i, v in fixed.items():  # exact, not re-derived through floating point
            offsets[i] = round(v * cycle_s, 1) % cycle_s
        b, bb = measured_bands(cycle_s, offsets, greens_s, travel_s, travel_back_s if two_way else None,
                               inbound_greens_s=inbound_greens_s, inbound_shift_s=inbound_shift_s)
        return ChainBands(tuple(offsets), b, bb, status, time.perf_counter() - started)

    if n == 1:
        return measured(np.array([fixed[0]]), "single intersection")
    if not two_way:
        found = _milp(g, gb, shift, t, tb, 0.0, False, fixed, time_limit_s)
        if found is None:
            raise PlanError("bandwidth MILP infeasible: the fixed offsets leave no band through every signal")
        return measured(*found)
    try:
        both = _milp(g, gb, shift, t, tb, k, True, fixed, time_limit_s)
    except PlanError as exc:  # time limit without a solution: long chains with short greens
        log.info("two-way bandwidth: %s; one direction only", exc)
        both = None
    # A direction without any band scores 0 (MAXBAND itself would call that infeasible): one full band
    # for the heavier direction can beat two narrow ones, so the one-way optimum competes on the
    # same objective b + k*bb, as long as it keeps the target ratio (or two bands are impossible).
    one = _one_way_heavier(g, gb, shift, t, tb, k, fixed, time_limit_s)
    candidates = [measured(*found) for found in (both, one) if found is not None]
    if not candidates:
        raise PlanError("bandwidth MILP infeasible: the fixed offsets leave no band through every signal")
    if both is not None and one is not None:
        two, single = candidates
        inbound = single.bandwidth_inbound_s or 0.0
        keeps_ratio = (1 - k) * inbound >= (1 - k) * k * single.bandwidth_s - 1e-6
        gain = (single.bandwidth_s + k * inbound) - (two.bandwidth_s + k * (two.bandwidth_inbound_s or 0.0))
        return single if keeps_ratio and gain > 0.05 else two
    return candidates[0]


def _fractions(values: Sequence[float] | None, cycle_s: float, what: str, upper: float = math.inf) -> np.ndarray:
    arr = np.asarray(values, dtype=float) / cycle_s
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > upper + 1e-9)):
        raise PlanError(f"bandwidth: every {what} must be finite, >= 0 and <= the cycle, got {list(values or [])}")
    return arr


def _one_way_heavier(g: np.ndarray, gb: np.ndarray, shift: np.ndarray, t: np.ndarray, tb: np.ndarray, k: float,
                     fixed: Mapping[int, float], time_limit_s: float) -> tuple[np.ndarray, str] | None:
    """The outbound band alone (``k <= 1``) or the inbound band alone (``k > 1``, solved on the reversed chain)."""
    if k <= 1:
        found = _milp(g, gb, shift, t, tb, 0.0, False, fixed, time_limit_s)
        return None if found is None else (found[0], f"outbound band only; {found[1]}")
    n = len(g)
    # reversed chain: its outbound green is our inbound green, starting at theta + shift
    fixed_rev = {n - 1 - i: (v + shift[i]) % 1.0 for i, v in fixed.items()}
    found = _milp(gb[::-1], g[::-1], np.zeros(n), tb[::-1], t[::-1], 0.0, False, fixed_rev, time_limit_s)
    if found is None:
        return None
    theta = np.mod(found[0][::-1] - shift, 1.0)
    return theta, f"inbound band only; {found[1]}"


def _milp(g: np.ndarray, gb: np.ndarray, shift: np.ndarray, t: np.ndarray, tb: np.ndarray, k: float,
          two_way: bool, fixed: Mapping[int, float], time_limit_s: float) -> tuple[np.ndarray, str] | None:
    """Build and solve the MILP: the offsets (cycle fractions) and HiGHS' status, None if infeasible.

    Solved in Little's loop form (offsets eliminated, one integer per link
    and one per extra fixed offset, each with its few feasible values as
    bounds), which is much tighter than the form with explicit offsets;
    the offsets are then recovered from the band positions.
    """
    n = len(g)
    anchors = sorted(fixed.items())
    extra = anchors[1:]
    # variable layout: b, bb, z, w[n], wb[n], m[n-1] (two-way), p[len(extra)]
    B, BB, Z, W, WB = 0, 1, 2, 3, 3 + n
    M = 3 + 2 * n
    P = M + (n - 1 if two_way else 0)
    size = P + len(extra)
    c = np.zeros(size)
    c[B] = -1.0
    c[BB] = -k
    c[Z] = -_BALANCE_WEIGHT if two_way else 0.0
    c[W:W + n] = _EARLY_WEIGHT / n
    c[WB:WB + n] = _EARLY_WEIGHT / n if two_way else 0.0
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(entries: Mapping[int, float], low: float, high: float) -> None:
        r = np.zeros(size)
        for j, v in entries.items():
            r[j] += v
        rows.append(r)
        lo.append(low)
        hi.append(high)

    lower = np.zeros(size)
    upper = np.zeros(size)
    upper[B] = float(g.min())
    upper[W:W + n] = g
    for i in range(n):
        row({W + i: 1.0, B: 1.0}, -np.inf, g[i])
    if two_way:
        upper[BB] = float(gb.min())
        upper[Z] = upper[B]
        upper[WB:WB + n] = gb
        for i in range(n):
            row({WB + i: 1.0, BB: 1.0}, -np.inf, gb[i])
        for i in range(n - 1):
            # loop integer: (w_{i+1} - w_i) + (wb_i - wb_{i+1}) + m_i = t_i + tb_i - shift_i + shift_{i+1}
            rhs = t[i] + tb[i] - shift[i] + shift[i + 1]
            lower[M + i] = math.ceil(rhs - g[i + 1] - gb[i] - 1e-9)
            upper[M + i] = math.floor(rhs + g[i] + gb[i + 1] + 1e-9)
            if lower[M + i] > upper[M + i]:
                return None
            row({W + i + 1: 1.0, W + i: -1.0, WB + i: 1.0, WB + i + 1: -1.0, M + i: 1.0}, rhs, rhs)
        # MAXBAND target ratio (1-k) bb >= (1-k) k b, and the balance helper z <= b, k z <= bb
        if k < 1:
            row({BB: 1.0, B: -k}, 0.0, np.inf)
        elif k > 1:
            row({BB: 1.0, B: -k}, -np.inf, 0.0)
        row({Z: 1.0, B: -1.0}, -np.inf, 0.0)
        row({Z: k, BB: -1.0}, -np.inf, 0.0)
    travel_from_start = np.concatenate([[0.0], np.cumsum(t)])
    (f0, v0) = anchors[0]
    for j, (fj, vj) in enumerate(extra):
        # a second fixed offset: w_fj - w_f0 + p_j = (travel f0 -> fj) - (v_j - v_0), p_j integer
        rhs = travel_from_start[fj] - travel_from_start[f0] - (vj - v0)
        lower[P + j] = math.ceil(rhs - g[fj] - 1e-9)
        upper[P + j] = math.floor(rhs + g[f0] + 1e-9)
        if lower[P + j] > upper[P + j]:
            return None
        row({W + fj: 1.0, W + f0: -1.0, P + j: 1.0}, rhs, rhs)
    integrality = np.zeros(size)
    integrality[M:] = 1
    constraints = LinearConstraint(np.array(rows), lo, hi)
    result = milp(c, constraints=constraints, integrality=integrality, bounds=LinearBounds(lower, upper),
                  options={"time_limit": float(time_limit_s), "mip_rel_gap": _MIP_GAP})
    if result.status == 2:
        return None
    if result.x is None:
        raise PlanError(f"bandwidth MILP found no solution: status {result.status} ({result.message})")
    if result.status != 0:
        log.info("bandwidth MILP stopped early (%s); using its best solution", result.message)
    w = np.asarray(result.x[W:W + n])
    theta = np.zeros(n)
    theta[f0] = v0
    for i in range(f0, n - 1):  # outbound continuity: theta_{i+1} = theta_i + t_i - (w_{i+1} - w_i)
        theta[i + 1] = theta[i] + t[i] - (w[i + 1] - w[i])
    for i in range(f0 - 1, -1, -1):
        theta[i] = theta[i + 1] - t[i] + (w[i + 1] - w[i])
    return np.mod(theta, 1.0), str(result.message)


def measured_bands(cycle_s: float, offsets_s: Sequence[float], greens_s: Sequence[float],
                   travel_s: Sequence[float], travel_back_s: Sequence[float] | None = None, *,
                   inbound_greens_s: Sequence[float] | None = None,
                   inbound_shift_s: Sequence[float] | None = None) -> tuple[float, float | None]:
    """Outbound and inbound bandwidth (s) that given offsets actually give; inbound ``None`` if one-way.

    Each green, moved back by the travel time from the first signal of the
    direction, becomes a window on that signal's clock; a band is a common
    part of all windows. The widest band starts where some window starts
    (slide it earlier until an edge stops it), so it is
    ``max_j min_i (g_i - ((s_j - s_i) mod C))`` over window starts ``s``.
    """
    n = len(offsets_s)
    arrive = np.concatenate([[0.0], np.cumsum(np.asarray(travel_s, dtype=float))])
    out = _widest(cycle_s, np.asarray(offsets_s, dtype=float) - arrive, np.asarray(greens_s, dtype=float))
    if travel_back_s is None:
        return out, None
    back = np.concatenate([np.cumsum(np.asarray(travel_back_s, dtype=float)[::-1])[::-1], [0.0]])
    shift = np.asarray(inbound_shift_s if inbound_shift_s is not None else [0.0] * n, dtype=float)
    gb = np.asarray(inbound_greens_s if inbound_greens_s is not None else greens_s, dtype=float)
    return out, _widest(cycle_s, np.asarray(offsets_s, dtype=float) + shift - back, gb)


def _widest(cycle_s: float, starts: np.ndarray, greens: np.ndarray) -> float:
    s = np.mod(starts, cycle_s)
    gap = np.mod(s[:, None] - s[None, :], cycle_s)  # gap[j, i]: window j starts this long after window i
    gap[gap > cycle_s - 1e-6] = 0.0
    best = float(np.max(np.min(greens[None, :] - gap, axis=1)))
    return round(max(0.0, best), 2)


# ---- corridor level -------------------------------------------------------


def corridor_bands(corridor: Corridor, cycle_s: float, greens_s: Mapping[str, float], *,
                   fixed_s: Mapping[str, float] | None = None, anchors_s: Mapping[str, float] | None = None,
                   k: float = 1.0, time_limit_s: float = TIME_LIMIT_S) -> CorridorBands:
    """Bandwidth offsets for every simple chain among the intersections of ``greens_s``.

    ``greens_s``: coordinated green (s) of every intersection taking part
    (all running ``cycle_s``); ``fixed_s``: offsets that must stay (locked
    intersections, also in ``greens_s``); ``anchors_s``: offsets to keep for
    the first signal of a chain without a fixed one (the incumbents', so the
    whole chain does not drift). Links between intersections are
    ``corridor.links``: a pair linked both ways is a two-way street, a pair
    linked one way only a one-way street (``corridor_from_net`` finds a link
    for every direction a road runs). A connected group that is not a simple
    chain (a grid, a junction of three arterials) is left out with a logged
    reason; so is a chain whose MILP fails. Never raises for those.
    """
    fixed = dict(fixed_s or {})
    anchors = dict(anchors_s or {})
    out = CorridorBands()
    members = [s.controller_id for s in corridor.intersections if s.controller_id in greens_s]
    travel: dict[tuple[str, str], float] = {}
    for up, down, distance, speed in corridor.links:
        if up in greens_s and down in greens_s and up != down:
            if not (speed > 0 and distance >= 0 and math.isfinite(distance)):
                out.reasons.append(f"link {up}->{down}: distance {distance} m / speed {speed} m/s unusable")
                continue
            travel[(up, down)] = min(travel.get((up, down), math.inf), distance / speed)
    neighbours: dict[str, set[str]] = {c: set() for c in members}
    for up, down in travel:
        neighbours[up].add(down)
        neighbours[down].add(up)
    seen: set[str] = set()
    for start in members:
        if start in seen:
            continue
        group = _component(start, neighbours)
        seen |= group
        order, why = _chain_order(group, neighbours, members, travel)
        if order is None:
            reason = f"intersections {', '.join(sorted(group))} {why}; green wave kept there"
            log.info("corridor %s: %s", corridor.name, reason)
            out.reasons.append(reason)
            continue
        if len(order) == 1:  # trivial: nothing to coordinate with; the green is the band both ways
            cid = order[0]
            offset = fixed.get(cid, anchors.get(cid, 0.0)) % cycle_s
            out.offsets_s[cid] = round(round(offset, 1) % cycle_s, 1)
            out.bandwidth_s[cid] = out.bandwidth_inbound_s[cid] = round(float(greens_s[cid]), 2)
            out.chains.append((cid,))
            continue
        try:
            bands = _solve_order(order, cycle_s, greens_s, travel, fixed, anchors, k, time_limit_s)
        except Exception as exc:  # noqa: BLE001 - a solver problem must never stop the epoch
            reason = f"chain {'-'.join(order)}: {type(exc).__name__}: {exc}; green wave kept there"
            log.warning("corridor %s: %s", corridor.name, reason)
            out.reasons.append(reason)
            continue
        out.chains.append(tuple(order))
        out.solve_s += bands.solve_s
        for cid, offset in zip(order, bands.offsets_s, strict=False):
            out.offsets_s[cid] = offset
            out.bandwidth_s[cid] = bands.bandwidth_s
            out.bandwidth_inbound_s[cid] = bands.bandwidth_inbound_s
    return out


def _component(start: str, neighbours: Mapping[str, set[str]]) -> set[str]:
    group, stack = {start}, [start]
    while stack:
        for nxt in neighbours[stack.pop()]:
            if nxt not in group:
                group.add(nxt)
                stack.append(nxt)
    return group


def _chain_order(group: set[str], neighbours: Mapping[str, set[str]], members: Sequence[str],
                 travel: Mapping[tuple[str, str], float]) -> tuple[list[str] | None, str]:
    """The group as a path in outbound order, or None and why not.

    Outbound runs from the end listed first in the corridor, unless only the
    other way is drivable all along (a one-way street); a path that no
    direction can drive end to end has no band to give.
    """
    if len(group) == 1:
        return [next(iter(group))], ""
    degree = {c: len(neighbours[c]) for c in group}
    pairs = {frozenset(p) for p in travel if p[0] in group}
    ends = [c for c in members if c in group and degree[c] == 1]
    if any(d > 2 for d in degree.values()) or len(pairs) != len(group) - 1 or len(ends) != 2:
        return None, "do not form a simple chain (branching or a loop)"
    order, previous = [ends[0]], None
    while len(order) < len(group):
        nxt = next(c for c in neighbours[order[-1]] if c != previous)
        previous = order[-1]
        order.append(nxt)
    steps = list(zip(order[:-1], order[1:], strict=False))
    if all(p in travel for p in steps):
        return order, ""
    if all((b, a) in travel for a, b in steps):
        return order[::-1], ""
    return None, "form a chain no direction can drive end to end (one-way links both ways)"


def _solve_order(order: Sequence[str], cycle_s: float, greens_s: Mapping[str, float],
                 travel: Mapping[tuple[str, str], float], fixed: Mapping[str, float],
                 anchors: Mapping[str, float], k: float, time_limit_s: float) -> ChainBands:
    pairs = list(zip(order[:-1], order[1:], strict=False))
    out = [travel[p] for p in pairs]
    two_way = all((b, a) in travel for a, b in pairs)
    back = [travel[(b, a)] for a, b in pairs] if two_way else None
    fixed_pos = {i: fixed[c] for i, c in enumerate(order) if c in fixed}
    if not fixed_pos:
        fixed_pos = {0: anchors.get(order[0], 0.0)}
    if not two_way:
        log.debug("chain %s is (partly) one-way: outbound band only", "-".join(order))
    return solve_chain(cycle_s, [greens_s[c] for c in order], out, back, k=k, fixed_s=fixed_pos,
                       time_limit_s=time_limit_s)
