"""Cycle search: the delay optimum under constraints, Webster where Webster holds, throughput when saturated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import webster
from controller.cycle_search import X_MAX, best_cycle, best_cycles
from traffic.errors import PlanError

S = [1900.0] * 4
LOST = [5.0] * 4
SMALL_MIN = [7.0] * 4  # never binding at these demands


@pytest.mark.parametrize("flows", [[300, 200, 250, 150], [450, 300, 350, 250], [200, 150, 100, 120]])
def test_optimum_matches_webster_where_webster_is_optimal(flows):
    """No binding minimum, moderate demand: Webster's C0 and equal-x splits are (near) optimal."""
    choice = best_cycle(flows, S, LOST, SMALL_MIN, min_cycle_s=20, max_cycle_s=180)
    y = np.array(flows) / 1900.0
    c0 = (1.5 * sum(LOST) + 5) / (1 - y.sum())
    assert choice.method == "delay"
    assert choice.cycle_s == pytest.approx(c0, rel=0.15)  # Webster's formula is itself an approximation
    greens = np.array(choice.splits_s) - LOST
    assert greens / greens.sum() == pytest.approx(y / y.sum(), rel=1e-6)
    # and the search really is the minimum of the delay model over whole seconds
    for other in (choice.cycle_s - 5, choice.cycle_s + 5):
        g = webster.allocate_splits(other, y, LOST, SMALL_MIN) - LOST
        assert webster.mean_delay(other, g, flows, S) >= choice.delay_s - 1e-9


def test_binding_pedestrian_minimum_lengthens_the_cycle_beyond_c0():
    flows = [300, 200, 250, 150]
    free = best_cycle(flows, S, LOST, SMALL_MIN, min_cycle_s=20, max_cycle_s=180)
    ped = best_cycle(flows, S, LOST, [7.0, 30.0, 7.0, 7.0], min_cycle_s=20, max_cycle_s=180)
    assert ped.cycle_s > free.cycle_s and ped.splits_s[1] >= 30.0 - 1e-9


def test_oversaturation_maximises_throughput_at_the_longest_cycle():
    choice = best_cycle([800, 700, 600, 500], S, LOST, SMALL_MIN, min_cycle_s=40, max_cycle_s=150)
    assert choice.method == "throughput" and choice.cycle_s == 150.0 and choice.max_x > X_MAX


def test_impossible_minimums_are_a_plan_error():
    with pytest.raises(PlanError):
        best_cycle([100, 100], [1900, 1900], [5, 5], [80, 80], min_cycle_s=40, max_cycle_s=150)
    with pytest.raises(PlanError):
        best_cycle([100, 100], [1900, 1900], [5, 5], [10], min_cycle_s=40, max_cycle_s=150)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 1500), min_size=n, max_size=n),
    st.lists(st.floats(3, 8), min_size=n, max_size=n),
    st.lists(st.floats(8, 30), min_size=n, max_size=n))),
    st.integers(30, 80), st.integers(0, 120))
def test_splits_always_satisfy_the_constraints(problem, min_cycle, extra):
    flows, lost, minimum = problem
    max_cycle = max(min_cycle, int(np.ceil(sum(minimum)))) + extra
    choice = best_cycle(flows, [1900.0] * len(flows), lost, minimum, min_cycle_s=min_cycle, max_cycle_s=max_cycle)
    assert max(min_cycle, sum(minimum) - 1e-6) <= choice.cycle_s <= max_cycle
    assert sum(choice.splits_s) == pytest.approx(choice.cycle_s, abs=1e-6)
    assert all(s >= m - 1e-6 for s, m in zip(choice.splits_s, minimum, strict=False))
    assert np.isfinite(choice.delay_s) and choice.delay_s >= 0
    assert (choice.method == "delay") == (choice.max_x <= X_MAX)


def test_batch_search_equals_one_by_one():
    rng = np.random.default_rng(3)
    q = rng.uniform(0, 800, (20, 4))
    rows = best_cycles(q, np.full((20, 4), 1900.0), np.full((20, 4), 5.0), np.full((20, 4), 10.0),
                       min_cycle_s=np.full(20, 40.0), max_cycle_s=np.full(20, 150.0))
    for r, row in enumerate(rows):
        one = best_cycle(q[r], S, LOST, [10.0] * 4, min_cycle_s=40, max_cycle_s=150)
        assert (row.cycle_s, row.method) == (one.cycle_s, one.method)
        assert row.splits_s == pytest.approx(one.splits_s)
