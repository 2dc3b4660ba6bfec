"""Two-way bandwidth offsets: known solutions, an independent brute-force check, fallbacks, locked anchors."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from controller import bandwidth
from controller.bandwidth import corridor_bands, solve_chain
from controller.demand import PhaseDemand
from controller.examples import four_leg, uniform_corridor
from controller.optimizer import green_wave_offsets, optimize_corridor
from controller.safety import check_plan
from traffic.config import OptimizerSettings, load_settings
from traffic.errors import ConfigError, PlanError
from traffic.intersection import Corridor

COORDINATED = OptimizerSettings(plan_mode="actuated", offset_method="bandwidth")


# ---- an independent brute-force bandwidth: sweep a platoon across the time-space diagram ----------

STEP = 0.05


def _longest_run(ok: np.ndarray) -> int:
    """Longest circular run of True samples."""
    if ok.all():
        return len(ok)
    doubled = np.concatenate([ok, ok])
    best = run = 0
    for v in doubled:
        run = run + 1 if v else 0
        best = max(best, run)
    return min(best, len(ok))


def brute_bands(cycle, offsets, greens, travel, travel_back=None):
    """Send a vehicle every STEP s from the first signal of each direction; the band is the longest
    run of consecutive departures that reach every stop line during its green."""
    x = np.arange(0.0, cycle, STEP)
    arrive = np.concatenate([[0.0], np.cumsum(travel)])
    ok = np.ones_like(x, dtype=bool)
    for i, (theta, g) in enumerate(zip(offsets, greens, strict=False)):
        ok &= np.mod(x + arrive[i] - theta, cycle) < g - 1e-9
    out = _longest_run(ok) * STEP
    if travel_back is None:
        return out, None
    back = np.concatenate([np.cumsum(travel_back[::-1])[::-1], [0.0]])  # from the last signal to signal i
    ok = np.ones_like(x, dtype=bool)
    for i, (theta, g) in enumerate(zip(offsets, greens, strict=False)):
        ok &= np.mod(x + back[i] - theta, cycle) < g - 1e-9
    return out, _longest_run(ok) * STEP


# ---- known solutions on a uniform corridor -------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 8])
def test_alternate_system_when_travel_time_is_half_the_cycle(n):
    # 90 s cycle, 45 s between signals both ways: alternate offsets give both directions the full green
    r = solve_chain(90.0, [40.0] * n, [45.0] * (n - 1), [45.0] * (n - 1))
    assert r.bandwidth_s == pytest.approx(40.0) and r.bandwidth_inbound_s == pytest.approx(40.0)
    assert list(r.offsets_s) == pytest.approx([0.0 if k % 2 == 0 else 45.0 for k in range(n)])


@pytest.mark.parametrize("n", [2, 6])
def test_simultaneous_system_when_travel_time_is_the_cycle(n):
    r = solve_chain(80.0, [35.0] * n, [80.0] * (n - 1), [80.0] * (n - 1))
    assert r.bandwidth_s == pytest.approx(35.0) and r.bandwidth_inbound_s == pytest.approx(35.0)
    assert set(r.offsets_s) == {0.0}


def test_half_cycle_greens_with_quarter_cycle_spacing():
    # g = C/2, t = C/4 each way: any offsets pair gives b + bb = g between two signals (the inbound
    # window is the outbound one moved by 2t = C/2), so three or more signals cannot beat g in total
    r = solve_chain(100.0, [50.0] * 4, [25.0] * 3, [25.0] * 3)
    assert r.bandwidth_s + r.bandwidth_inbound_s == pytest.approx(50.0, abs=0.2)
    assert r.bandwidth_s == pytest.approx(r.bandwidth_inbound_s, abs=0.2)  # balanced by the tie-breaker


def test_single_intersection_is_trivial():
    r = solve_chain(90.0, [37.0], [], [], fixed_s={0: 12.0})
    assert r.offsets_s == (12.0,) and r.bandwidth_s == 37.0 and r.bandwidth_inbound_s == 37.0


def test_demand_ratio_constraint():
    greens, travel, back = [40.0, 30.0, 50.0, 45.0, 35.0], [24.0, 33.0, 17.0, 60.0], [25.0, 30.0, 18.0, 61.0]
    heavy_out = solve_chain(90.0, greens, travel, back, k=0.5)
    heavy_in = solve_chain(90.0, greens, travel, back, k=2.0)
    assert heavy_out.bandwidth_inbound_s >= 0.5 * heavy_out.bandwidth_s - 0.2
    assert heavy_in.bandwidth_inbound_s <= 2.0 * heavy_in.bandwidth_s + 0.2
    assert heavy_out.bandwidth_s >= heavy_out.bandwidth_inbound_s - 0.2
    assert heavy_in.bandwidth_inbound_s >= heavy_in.bandwidth_s - 0.2


def test_bad_input_is_a_plan_error():
    with pytest.raises(PlanError):
        solve_chain(0.0, [10.0], [], [])
    with pytest.raises(PlanError):
        solve_chain(90.0, [10.0, 10.0], [-5.0], [5.0])
    with pytest.raises(PlanError):
        solve_chain(90.0, [100.0, 10.0], [5.0], [5.0])
    with pytest.raises(PlanError):
        solve_chain(90.0, [10.0, 10.0], [5.0, 5.0], [5.0])


# ---- properties: the offsets give the bands claimed, bands in [0, min green], optimal ---------------

cycles = st.floats(min_value=50.0, max_value=150.0).map(lambda c: round(c))
chains = st.integers(min_value=2, max_value=6)


@st.composite
def chain_cases(draw):
    cycle = float(draw(cycles))
    n = draw(chains)
    greens = [round(draw(st.floats(min_value=0.25, max_value=0.7)) * cycle, 1) for _ in range(n)]
    travel = [round(draw(st.floats(min_value=5.0, max_value=90.0)), 1) for _ in range(n - 1)]
    back = [round(t * draw(st.floats(min_value=0.9, max_value=1.1)), 1) for t in travel]
    k = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5]))
    return cycle, greens, travel, back, k


@hsettings(max_examples=60, deadline=None)
@given(chain_cases())
def test_returned_offsets_give_the_returned_bands(case):
    cycle, greens, travel, back, k = case
    r = solve_chain(cycle, greens, travel, back, k=k)
    assert 0.0 <= r.bandwidth_s <= min(greens) + 1e-9
    assert all(0.0 <= o < cycle for o in r.offsets_s)
    brute_out, brute_in = brute_bands(cycle, r.offsets_s, greens, travel, back if k > 0 else None)
    assert r.bandwidth_s == pytest.approx(brute_out, abs=2 * STEP)
    if k > 0:
        assert 0.0 <= r.bandwidth_inbound_s <= min(greens) + 1e-9
        assert r.bandwidth_inbound_s == pytest.approx(brute_in, abs=2 * STEP)
    else:
        assert r.bandwidth_inbound_s is None


def _widest_many(cycle, starts, greens):
    """Widest band (negative: none) for many offset sets at once: max_j min_i g_i - ((s_j - s_i) mod C)."""
    s = np.mod(starts, cycle)
    gap = np.mod(s[:, :, None] - s[:, None, :], cycle)
    gap[gap > cycle - 1e-6] = 0.0
    return np.max(np.min(greens[None, None, :] - gap, axis=2), axis=1)


@hsettings(max_examples=25, deadline=None)
@given(st.integers(min_value=60, max_value=120), st.lists(st.floats(min_value=0.3, max_value=0.7), min_size=3,
                                                           max_size=3),
       st.lists(st.floats(min_value=5.0, max_value=70.0), min_size=2, max_size=2))
def test_three_signals_match_an_exhaustive_offset_search(cycle, shares, travel):
    cycle = float(cycle)
    greens = [round(s * cycle, 1) for s in shares]
    travel = [round(t, 1) for t in travel]
    r = solve_chain(cycle, greens, travel, travel)
    # every pair of offsets for signals 1 and 2 on a 0.5 s grid, signal 0 at 0
    grid = np.arange(0.0, cycle, 0.5)
    o1, o2 = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    offsets = np.stack([np.zeros_like(o1), o1, o2], axis=1)
    g = np.array(greens)
    out = _widest_many(cycle, offsets - np.array([0.0, travel[0], travel[0] + travel[1]]), g)
    back = _widest_many(cycle, offsets - np.array([travel[0] + travel[1], travel[1], 0.0]), g)
    best = float(np.max(np.maximum(out, 0.0) + np.maximum(back, 0.0)))  # a missing band scores 0
    total = r.bandwidth_s + r.bandwidth_inbound_s
    assert best - 0.2 <= total <= best + 1.0  # offsets rounded to 0.1 s; the grid is 0.5 s coarse


@hsettings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=7), st.floats(min_value=100.0, max_value=800.0),
       st.floats(min_value=8.0, max_value=17.0), st.integers(min_value=50, max_value=150),
       st.floats(min_value=0.0, max_value=149.0))
def test_one_way_reproduces_the_green_wave(n, spacing, speed, cycle, anchor):
    corridor = uniform_corridor(n, spacing_m=round(spacing, 1), speed_mps=round(speed, 2))  # links one way
    cycle = float(cycle)
    anchor = round(anchor % cycle, 1)
    rng = np.random.default_rng(n)
    greens = {s.controller_id: round(float(rng.uniform(0.25, 0.7)) * cycle, 1) for s in corridor.intersections}
    found = corridor_bands(corridor, cycle, greens, anchors_s={"c0": anchor})
    wave = green_wave_offsets(corridor, cycle, {"c0": anchor})
    assert found.chains == [tuple(f"c{k}" for k in range(n))]
    for cid, offset in found.offsets_s.items():
        gap = abs(offset - wave[cid]) % cycle
        assert min(gap, cycle - gap) <= 0.1 + 1e-6, (cid, offset, wave[cid])
    assert found.bandwidth_s["c0"] == pytest.approx(min(greens.values()), abs=0.15)
    assert found.bandwidth_inbound_s["c0"] is None
    # k = 0 on a two-way chain: the same progression
    r = solve_chain(cycle, [greens[f"c{k}"] for k in range(n)], [corridor.links[0][2] / corridor.links[0][3]] * (n - 1),
                    [1.0] * (n - 1), k=0.0, fixed_s={0: anchor})
    for k in range(n):
        gap = abs(r.offsets_s[k] - wave[f"c{k}"]) % cycle
        assert min(gap, cycle - gap) <= 0.1 + 1e-6


# ---- locked anchors ----------------------------------------------------------------------------------


@hsettings(max_examples=30, deadline=None)
@given(chain_cases(), st.data())
def test_fixed_offsets_are_kept(case, data):
    cycle, greens, travel, back, k = case
    n = len(greens)
    where = data.draw(st.integers(min_value=0, max_value=n - 1))
    value = round(data.draw(st.floats(min_value=0.0, max_value=cycle - 0.1)), 1)
    r = solve_chain(cycle, greens, travel, back, k=k, fixed_s={where: value})
    assert r.offsets_s[where] == pytest.approx(value)
    brute_out, _ = brute_bands(cycle, r.offsets_s, greens, travel)
    assert r.bandwidth_s == pytest.approx(brute_out, abs=2 * STEP)


def test_two_fixed_offsets_no_band_can_join_is_a_plan_error():
    # 20 s greens, signal 1 fixed 50 s after signal 0 but the platoon arrives 10 s after: no band exists
    with pytest.raises(PlanError):
        solve_chain(100.0, [20.0, 20.0, 20.0], [10.0, 10.0], None, fixed_s={0: 0.0, 1: 50.0})


# ---- the corridor: chains, fallbacks, optimize_corridor ------------------------------------------------


def two_way(n: int, spacing: float = 450.0, speed: float = 12.5) -> Corridor:
    one = uniform_corridor(n, spacing_m=spacing, speed_mps=speed)
    return replace(one, links=one.links + tuple((b, a, d, v) for a, b, d, v in one.links))


def demand(spec, flows) -> PhaseDemand:
    phases = tuple(p.phase for p in spec.phases)
    return PhaseDemand(spec.controller_id, None, None, phases, tuple(flows), tuple(flows))


def _inputs(corridor, flows=(500.0, 300.0), cycle=90.0):
    specs = corridor.by_id()
    demands = {c: demand(s, flows) for c, s in specs.items()}
    incumbents = {c: s.default_plan(cycle) for c, s in specs.items()}
    return specs, demands, incumbents, {c: 3 for c in specs}


def _plan_bands(corridor, plans, order):
    by = {c: p for c, p in plans.items()}
    travel = {(a, b): d / v for a, b, d, v in corridor.links}
    out = [travel[(a, b)] for a, b in zip(order[:-1], order[1:], strict=False)]
    back = [travel[(b, a)] for a, b in zip(order[:-1], order[1:], strict=False)]
    cycle = by[order[0]].patternCycleTime
    offsets = [by[c].patternOffsetTime for c in order]
    greens = [by[c].phase(by[c].splitCoordPhase).green for c in order]
    return brute_bands(cycle, offsets, greens, out, back)


def test_optimize_corridor_uses_two_way_bandwidth_and_explains_it():
    # unequal spacing: the one-way green wave leaves the inbound platoon a narrow band
    specs = tuple(four_leg(f"c{k}") for k in range(5))
    links = tuple((f"c{k}", f"c{k + 1}", d, 12.5) for k, d in enumerate((600.0, 350.0, 500.0, 300.0)))
    corridor = Corridor("main", specs, links + tuple((b, a, d, v) for a, b, d, v in links))
    specs, demands, incumbents, versions = _inputs(corridor)
    out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)
    wave = optimize_corridor(corridor, demands, incumbents, replace(COORDINATED, offset_method="green-wave"),
                             versions)
    order = [f"c{k}" for k in range(5)]
    got = _plan_bands(corridor, {c: p.plan for c, p in out.items()}, order)
    before = _plan_bands(corridor, {c: p.plan for c, p in wave.items()}, order)
    ex = out["c2"].explanation
    assert ex["offset_method"] == "bandwidth" and wave["c2"].explanation["offset_method"] == "green-wave"
    assert ex["bandwidth_s"] == pytest.approx(got[0], abs=2 * STEP)
    assert ex["bandwidth_inbound_s"] == pytest.approx(got[1], abs=2 * STEP)
    assert "green_wave_offset_s" in ex and ex["corridor_common"]
    assert ex["bandwidth_chain"] == order and ex["offset_s"] == out["c2"].plan.patternOffsetTime
    # equal greens both ways: the total is the same (Little 1966), the MILP shares it between the directions
    assert got[0] + got[1] >= before[0] + before[1] - 2 * STEP
    assert min(got) > min(before) + 5.0
    for cid, proposal in out.items():
        assert check_plan(proposal.plan, specs[cid]) == []
        assert proposal.plan.patternCycleTime == wave[cid].plan.patternCycleTime
        assert proposal.plan.splits == wave[cid].plan.splits  # offsets move, never the splits


def test_locked_intersection_keeps_its_offset_and_anchors_the_others():
    corridor = two_way(4)
    specs, demands, incumbents, versions = _inputs(corridor)
    cycle = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)["c0"].plan.patternCycleTime
    incumbents["c1"] = specs["c1"].default_plan(cycle, offset_s=33.0)  # locked, running the common cycle
    out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions, exclude={"c1"})
    assert set(out) == {"c0", "c2", "c3"}
    plans = {c: p.plan for c, p in out.items()} | {"c1": incumbents["c1"]}
    assert {p.patternCycleTime for p in plans.values()} == {cycle}
    got = _plan_bands(corridor, plans, ["c0", "c1", "c2", "c3"])
    assert out["c0"].explanation["offset_method"] == "bandwidth"
    assert out["c0"].explanation["bandwidth_s"] == pytest.approx(got[0], abs=2 * STEP)
    assert out["c0"].explanation["bandwidth_inbound_s"] == pytest.approx(got[1], abs=2 * STEP)
    assert got[0] > 0 and got[1] > 0


def test_branching_links_fall_back_to_the_green_wave(caplog):
    # c0 feeds c1, c2 and c3: a star, not a chain
    specs = tuple(four_leg(f"c{k}") for k in range(4))
    links = tuple(("c0", f"c{k}", 300.0, 12.5) for k in (1, 2, 3))
    corridor = Corridor("star", specs, links + tuple((b, a, d, v) for a, b, d, v in links))
    _, demands, incumbents, versions = _inputs(corridor)
    with caplog.at_level(logging.INFO, logger="controller.bandwidth"):
        out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)
    wave = green_wave_offsets(corridor, out["c0"].plan.patternCycleTime, {c: 0.0 for c in out})
    assert all(p.explanation["offset_method"] == "green-wave" for p in out.values())
    assert all(p.explanation["bandwidth_s"] is None for p in out.values())
    assert {c: p.plan.patternOffsetTime for c, p in out.items()} == pytest.approx(wave)
    assert "simple chain" in caplog.text


def test_a_loop_falls_back_but_a_separate_chain_still_gets_bandwidth():
    specs = tuple(four_leg(f"c{k}") for k in range(5))
    ring = (("c0", "c1"), ("c1", "c2"), ("c2", "c0"))
    links = tuple((a, b, 300.0, 12.5) for a, b in ring) + (("c3", "c4", 400.0, 12.5), ("c4", "c3", 400.0, 12.5))
    corridor = Corridor("mixed", specs, links)
    _, demands, incumbents, versions = _inputs(corridor)
    out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)
    assert [out[f"c{k}"].explanation["offset_method"] for k in range(5)] == ["green-wave"] * 3 + ["bandwidth"] * 2


@pytest.mark.parametrize("failure", ["raises", "no-solution", "time-limit"])
def test_solver_failure_falls_back_and_never_raises(monkeypatch, failure):
    class Result:
        x = None
        status = 4 if failure == "no-solution" else 1
        message = "time limit reached" if failure == "time-limit" else "solver error"

    def broken(*args, **kwargs):
        if failure == "raises":
            raise RuntimeError("HiGHS crashed")
        return Result()

    monkeypatch.setattr(bandwidth, "milp", broken)
    corridor = two_way(3)
    specs, demands, incumbents, versions = _inputs(corridor)
    out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)
    cycle = out["c0"].plan.patternCycleTime
    wave = green_wave_offsets(corridor, cycle, {c: 0.0 for c in out})
    assert all(p.explanation["offset_method"] == "green-wave" for p in out.values())
    assert {c: p.plan.patternOffsetTime for c, p in out.items()} == pytest.approx(wave)
    assert all(check_plan(p.plan, specs[c]) == [] for c, p in out.items())


def test_no_common_cycle_yet_uses_the_green_wave():
    corridor = two_way(3)
    specs, demands, incumbents, versions = _inputs(corridor)
    incumbents["c0"] = specs["c0"].default_plan(60.0)
    incumbents["c2"] = specs["c2"].default_plan(140.0)  # 80 s apart, steps of 20 s: cannot meet this epoch
    out = optimize_corridor(corridor, demands, incumbents, COORDINATED, versions)
    assert not out["c1"].explanation["corridor_common"]
    assert all(p.explanation["offset_method"] == "green-wave" for p in out.values())


def test_free_mode_has_no_offsets_to_optimise():
    corridor = two_way(3)
    _, demands, incumbents, versions = _inputs(corridor)
    out = optimize_corridor(corridor, demands, incumbents, OptimizerSettings(plan_mode="free"), versions)
    assert all("offset_method" not in p.explanation for p in out.values())


# ---- configuration ------------------------------------------------------------------------------------


def test_offset_method_setting_is_validated(tmp_path):
    assert OptimizerSettings().offset_method == "bandwidth"
    with pytest.raises(ConfigError):
        OptimizerSettings(offset_method="maxband-please")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    loaded = load_settings(empty, env={"TRAFFIC_OPTIMIZER_OFFSET_METHOD": "green-wave"})
    assert loaded.optimizer.offset_method == "green-wave"
    bad = tmp_path / "traffic.toml"
    bad.write_text('[optimizer]\noffset_method = "zigzag"\n')
    with pytest.raises(ConfigError):
        load_settings(bad, env={})


def test_one_way_chains_run_the_drivable_way():
    specs = tuple(four_leg(f"c{k}") for k in range(3))
    greens = {s.controller_id: 30.0 for s in specs}
    westbound = Corridor("w", specs, (("c2", "c1", 250.0, 12.5), ("c1", "c0", 400.0, 12.5)))
    found = corridor_bands(westbound, 80.0, greens, anchors_s={"c2": 5.0})
    assert found.chains == [("c2", "c1", "c0")] and found.bandwidth_inbound_s["c0"] is None
    assert [found.offsets_s[c] for c in ("c2", "c1", "c0")] == pytest.approx([5.0, 25.0, 57.0])
    # links that meet head on at c1: no direction drives the whole chain
    clash = Corridor("x", specs, (("c0", "c1", 250.0, 12.5), ("c2", "c1", 400.0, 12.5)))
    found = corridor_bands(clash, 80.0, greens)
    assert found.offsets_s == {} and "end to end" in found.reasons[0]
