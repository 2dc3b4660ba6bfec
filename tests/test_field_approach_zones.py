"""Turning counts past a split in the road, and the weight a vehicle seen there carries (issue #14)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from field_firmware_stubs.approach_zones import SPILL_MARGIN_M, TurnCounts, weight_past_split


def test_a_share_starts_at_one_half_and_follows_the_counts():
    turns = TurnCounts()
    assert turns.share("u_0", "a_0") == 0.5
    for _ in range(8):
        turns.record("u_0", ["a_0"])
    for _ in range(2):
        turns.record("u_0", [])                      # turned away
    assert turns.share("u_0", "a_0") == (8 + 1) / (10 + 2)
    assert turns.share("u_0", "b_0") == 1 / 12        # never seen turning there, not ruled out
    assert turns.share("v_0", "a_0") == 0.5           # another split keeps its own counts


def test_a_vehicle_entering_two_approach_lanes_at_once_counts_once_on_each():
    turns = TurnCounts()
    turns.record("u_0", ["a_0", "a_1", "a_0"])
    assert turns.share("u_0", "a_0") == turns.share("u_0", "a_1") == 2 / 3


@given(entered=st.integers(0, 500), away=st.integers(0, 500))
def test_a_share_stays_strictly_between_zero_and_one(entered, away):
    turns = TurnCounts()
    for _ in range(entered):
        turns.record("u", ["a"])
    for _ in range(away):
        turns.record("u", [])
    assert 0.0 < turns.share("u", "a") < 1.0


def test_a_standing_vehicle_weighs_in_full_once_the_approach_queue_reaches_the_split():
    split_at = 18.0
    assert weight_past_split(0.3, 0.0, split_at - SPILL_MARGIN_M + 1.0, split_at) == 1.0
    assert weight_past_split(0.3, 0.0, split_at - SPILL_MARGIN_M - 1.0, split_at) == 0.3   # room before it
    assert weight_past_split(0.3, 8.0, split_at, split_at) == 0.3                          # moving: may turn
    assert weight_past_split(0.3, 0.0, 0.0, split_at) == 0.3                               # nobody stands
