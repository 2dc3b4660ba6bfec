"""Webster's method against a hand-computed example, plus split properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import webster


def test_textbook_two_phase_example():
    # Two phases, critical flows 600 and 450 pcu/h on 1800 pcu/h lanes,
    # intergreen 3 s yellow + 1 s all-red each.
    # By hand: y = 1/3 and 1/4, Y = 7/12, L = 8 s,
    # C0 = (1.5*8 + 5) / (1 - 7/12) = 17 / (5/12) = 40.8 s,
    # effective green 32.8 s shared 4:3 -> 18.743 and 14.057 s, splits + 4 s each.
    y = webster.flow_ratios([600, 450], [1800, 1800])
    assert y == pytest.approx([1 / 3, 1 / 4])
    lost = webster.phase_lost_time([3.0, 3.0], [1.0, 1.0])
    c0 = webster.optimum_cycle(lost.sum(), y.sum(), min_cycle_s=30, max_cycle_s=150)
    assert float(c0) == pytest.approx(40.8)
    splits = webster.allocate_splits(c0, y, lost, [10.0, 10.0])
    assert splits == pytest.approx([4 + 32.8 * 4 / 7, 4 + 32.8 * 3 / 7])


def test_cycle_clipping_and_oversaturation():
    assert float(webster.optimum_cycle(8.0, 0.1, min_cycle_s=40, max_cycle_s=150)) == 40.0
    assert float(webster.optimum_cycle(8.0, 0.92, min_cycle_s=40, max_cycle_s=150)) == 150.0
    assert float(webster.optimum_cycle(8.0, 1.4, min_cycle_s=40, max_cycle_s=120)) == 120.0
    many = webster.optimum_cycle([8.0, 12.0], [0.5, 0.7], min_cycle_s=30, max_cycle_s=150)
    assert many == pytest.approx([34.0, 23 / 0.3])


def test_min_split_pins_and_redistributes():
    # y heavily favours phase 1; phase 2 would get 4.6 s, below its 20 s minimum.
    splits = webster.allocate_splits(60.0, [0.5, 0.01], [4.0, 4.0], [10.0, 20.0])
    assert splits == pytest.approx([40.0, 20.0])


def test_no_demand_shares_equally():
    splits = webster.allocate_splits(60.0, [0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [10.0, 10.0, 10.0])
    assert splits == pytest.approx([20.0, 20.0, 20.0])


def test_vectorised_matches_loop():
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 0.3, size=(50, 3))
    lost = np.array([5.0, 4.0, 6.0])
    minimum = np.array([12.0, 9.0, 15.0])
    cycle = rng.uniform(40, 120, size=50)
    together = webster.allocate_splits(cycle, y, lost, minimum)
    for k in range(50):
        assert together[k] == pytest.approx(webster.allocate_splits(cycle[k], y[k], lost, minimum))


def test_delay_formula_by_hand():
    # C=60, g=27, q=600 pcu/h, s=1800: lambda=0.45, x=0.7407
    c, g, q, s = 60.0, 27.0, 600.0, 1800.0
    lam, qs = g / c, q / 3600
    x = qs / (lam * s / 3600)
    expected = (c * (1 - lam) ** 2 / (2 * (1 - lam * x)) + x ** 2 / (2 * qs * (1 - x))
                - 0.65 * (c / qs ** 2) ** (1 / 3) * x ** (2 + 5 * lam))
    assert float(webster.webster_delay(c, g, q, s)) == pytest.approx(expected)
    # longer green for the same flow never increases delay
    assert float(webster.webster_delay(c, g + 5, q, s)) < expected
    # no flow: uniform term only, finite
    assert float(webster.webster_delay(c, g, 0.0, s)) == pytest.approx(c * (1 - lam) ** 2 / 2)
    # oversaturated approach: large but finite
    assert np.isfinite(webster.webster_delay(c, 5.0, 1500.0, s))


phase_count = st.integers(min_value=2, max_value=5)


@st.composite
def split_problem(draw):
    n = draw(phase_count)
    y = draw(st.lists(st.floats(min_value=0.0, max_value=0.4), min_size=n, max_size=n))
    lost = draw(st.lists(st.floats(min_value=3.0, max_value=7.0), min_size=n, max_size=n))
    minimum = [round(lo + draw(st.floats(min_value=5.0, max_value=25.0)), 1) for lo in lost]
    cycle = round(sum(minimum) + draw(st.floats(min_value=0.0, max_value=120.0)), 0) + 1
    return cycle, y, lost, minimum


@settings(max_examples=300, deadline=None)
@given(split_problem())
def test_splits_sum_to_cycle_and_respect_minimums(problem):
    cycle, y, lost, minimum = problem
    splits = webster.allocate_splits(cycle, y, lost, minimum)
    assert splits.sum() == pytest.approx(cycle)
    assert np.all(splits >= np.array(minimum) - 1e-9)
    rounded = webster.round_splits(splits, cycle, min_split_s=minimum)
    assert round(float(rounded.sum()), 6) == pytest.approx(cycle)
    assert np.all(rounded >= np.array(minimum) - 1e-9)
    assert np.allclose(rounded * 10, np.round(rounded * 10))
    assert np.all(np.abs(rounded - splits) < 0.1 * len(splits) + 1e-9)


@settings(max_examples=200, deadline=None)
@given(split_problem())
def test_unpinned_effective_greens_follow_flow_ratios(problem):
    cycle, y, lost, minimum = problem
    splits = webster.allocate_splits(cycle, y, lost, minimum)
    free = [i for i in range(len(y)) if splits[i] > minimum[i] + 1e-6 and y[i] > 0]
    for i in free:
        for j in free:
            # g_i / y_i is the same for every phase above its minimum
            assert (splits[i] - lost[i]) * y[j] == pytest.approx((splits[j] - lost[j]) * y[i], rel=1e-6, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=20.0, max_value=200.0), st.floats(min_value=0.05, max_value=1.0),
       st.floats(min_value=0.0, max_value=5000.0, allow_subnormal=True))
def test_delay_is_finite_and_non_negative(cycle, green_fraction, q):
    d = float(webster.webster_delay(cycle, cycle * green_fraction, q, 1900.0))
    assert np.isfinite(d) and d >= 0.0
