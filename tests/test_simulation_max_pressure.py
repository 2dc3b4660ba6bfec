"""The field-safe max-pressure: the pressure, the decision rule, and what the controller drives.

Most checks run the real controller against a small fake of the SUMO API
(queues chosen by hypothesis), so the timing properties (min green, changes
only at the end of a green block, yellow + all-red between different phases,
starvation bound) are checked on thousands of situations in well under a
second. One SUMO run checks a netgenerate network with joined junction
clusters (several junctions under one program) runs to the end.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from simulation.binaries import sumo_binary, sumo_tool
from simulation.inloop import run_in_loop
from simulation.max_pressure import (
    MaxPressureController,
    MaxPressureSettings,
    TraceEntry,
    choose_phase,
    is_road_lane,
    phase_pressures,
)
from simulation.scenario import load_scenario
from traffic.clearance import PED_RECALL_PERIOD_S
from traffic.errors import SimulationError
from traffic.intersection import IntersectionSpec, PhaseSpec
from traffic.signals import red_clear_state, yellow_state

GREEN = set("Gg")

# ---- pressure --------------------------------------------------------------------------------


def test_pressure_sums_links_not_lane_sets() -> None:
    links = [[("a", "x"), ("a", "y"), ("b", "x")], [("c", "z")], []]
    q_in = {"a": 4, "b": 1, "c": 2}
    q_out = {"x": 1, "y": 3, "z": 5}
    p = phase_pressures(links, q_in, q_out)
    assert p[0] == (4 - 1) + (4 - 3) + (1 - 1)  # lane a feeds two links: counted for each
    assert p[1] == -3
    assert p[2] == -math.inf  # no vehicle link: never chosen for pressure
    assert phase_pressures([[("unknown", "nowhere")]], {}, {}) == [0.0]


def test_road_lanes() -> None:
    assert is_road_lane([])  # everything allowed
    assert is_road_lane(["passenger", "pedestrian"])
    assert is_road_lane(["bicycle"])
    assert not is_road_lane(["pedestrian"])
    assert not is_road_lane(["rail", "rail_urban"])
    assert not is_road_lane(["tram"])


# ---- the decision rule -------------------------------------------------------------------------

RULE = MaxPressureSettings(max_red_s=120.0)

decisions = st.integers(min_value=2, max_value=6).flatmap(lambda n: st.tuples(
    st.integers(min_value=0, max_value=n - 1),
    st.lists(st.one_of(st.integers(min_value=-30, max_value=60).map(float), st.just(-math.inf)),
             min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.floats(min_value=0, max_value=400), min_size=n, max_size=n),
    st.floats(min_value=0, max_value=300)))


@given(decisions)
def test_choose_phase_is_max_pressure_with_a_starvation_guard(data) -> None:
    current, pressures, demand, waited, green_s = data
    waited[current] = 0.0
    chosen = choose_phase(current, pressures, demand, waited, green_s, RULE)
    limits = [RULE.max_red_s if math.isfinite(p) else RULE.ped_wait_limit_s for p in pressures]
    starved = [k for k in range(len(pressures)) if k != current and demand[k] and waited[k] >= limits[k]]
    if starved:
        assert chosen in starved and waited[chosen] == max(waited[k] for k in starved)
        return
    if chosen != current:  # a change only for a strictly larger, finite pressure
        assert math.isfinite(pressures[chosen]) and pressures[chosen] > pressures[current]
        assert pressures[chosen] == max(pressures)
    else:
        finite = [p for p in pressures if math.isfinite(p)]
        assert not finite or pressures[current] == max(pressures) or not math.isfinite(max(pressures)) \
            or pressures[current] >= max(finite)


def test_choose_phase_cases() -> None:
    # ties keep the current phase; strictly better changes
    assert choose_phase(1, [5.0, 5.0, 1.0], [True] * 3, [0, 0, 0], 10, RULE) == 1
    assert choose_phase(0, [3.0, 5.0, 1.0], [True] * 3, [0, 0, 0], 10, RULE) == 1
    # a pedestrian-only phase (pressure -inf) is never chosen for pressure, even if all else is negative
    assert choose_phase(0, [-4.0, -math.inf], [True, True], [0, 100], 10, RULE) == 0
    # ... but is served once its pedestrians waited the limit
    assert choose_phase(0, [9.0, -math.inf], [True, True], [0, 120], 10, RULE) == 1
    # a starved vehicle link beats pressure; without the guard it does not
    assert choose_phase(0, [9.0, 0.0], [True, True], [0, 130], 10, RULE) == 1
    assert choose_phase(0, [9.0, 0.0], [True, True], [0, 130], 10, MaxPressureSettings(max_red_s=None)) == 0
    # no maximum green by default: a long green stays while it has the largest pressure
    assert choose_phase(0, [9.0, 2.0], [True, True], [0, 60], 500, RULE) == 0
    assert choose_phase(0, [9.0, 2.0], [True, True], [0, 60], 90, MaxPressureSettings(max_green_s=90)) == 1
    with pytest.raises(SimulationError):
        choose_phase(2, [1.0, 2.0], [True, True], [0, 0], 0, RULE)


def test_settings_are_validated() -> None:
    for bad in ({"decision_s": 0}, {"max_green_s": 5}, {"max_red_s": 0}, {"starvation_basis": "phase"},
                {"queue_range_m": 0}, {"pedestrian_timing": "maybe"}, {"ped_max_wait_s": -1}):
        with pytest.raises(SimulationError):
            MaxPressureSettings(**bad)
    resco = MaxPressureSettings.resco()
    assert resco.fixed_yellow_s == 3.0 and resco.pedestrian_timing == "off"


# ---- the controller against a fake SUMO API -------------------------------------------------------

class _Ns:
    pass


class FakeApi:
    """Just enough of libsumo for one signal: queues and stuck vehicles are set by the test."""

    def __init__(self, tls: str, links: list[list[tuple[str, str, str]]], initial: str,
                 allowed: dict[str, list[str]] | None = None) -> None:
        self.state = {tls: initial}
        self.queues: dict[str, int] = {}
        self.stuck: dict[str, tuple[float, int]] = {}  # lane -> (waiting s, link index)
        self.tls = tls
        allowed = allowed or {}
        api = self

        self.simulation = _Ns()
        self.simulation.getDeltaT = lambda: 1.0
        tl = self.trafficlight = _Ns()
        tl.getRedYellowGreenState = lambda t: api.state[t]
        tl.getControlledLinks = lambda t: links
        tl.getAllProgramLogics = lambda t: []

        def set_state(t: str, s: str) -> None:
            api.state[t] = s
        tl.setRedYellowGreenState = set_state
        lane = self.lane = _Ns()
        lane.getAllowed = lambda lid: allowed.get(lid, [])
        lane.getLength = lambda lid: 100.0
        lane.getLastStepHaltingNumber = lambda lid: api.queues.get(lid, 0)
        lane.getEdgeID = lambda lid: lid.rsplit("_", 1)[0]
        lane.getLinks = lambda lid: []
        lane.getLastStepVehicleIDs = lambda lid: [f"v:{lid}"] if lid in api.stuck else []
        veh = self.vehicle = _Ns()
        veh.getWaitingTime = lambda v: api.stuck[v[2:]][0]
        veh.getNextTLS = lambda v: [(api.tls, api.stuck[v[2:]][1], 2.0, "r")]
        edge = self.edge = _Ns()
        edge.getFromJunction = lambda e: "j"
        edge.getLastStepPersonIDs = lambda e: []
        junction = self.junction = _Ns()
        junction.getIncomingEdges = lambda j: []
        self.person = _Ns()


def _spec(greens: list[str], *, width: float = 20.0) -> IntersectionSpec:
    return IntersectionSpec(controller_id="c1", tls_id="t1", link_count=len(greens[0]),
                            phases=tuple(PhaseSpec(phase=k + 1, greens=g, approach_speed_mps=13.89,
                                                   clearance_width_m=width) for k, g in enumerate(greens)))


# four approaches, one link each (in "iN_0" -> out "oN_0"); phases: N+S through, E+W through, N left alone
GREENS = ["GrGr", "rGrG", "Grrr"]
LINKS = [[(f"i{k}_0", f"o{k}_0", f":j_{k}_0")] for k in range(4)]


def _drive(ctl: MaxPressureController, api: FakeApi, queue_draws, end: float) -> list[float]:
    """The in-loop driver's schedule (simulation.inloop._drive) with fresh queues before each act."""
    now = 0.0
    due = ctl.start(api, now)
    acts = []
    while now < end:
        now = max(now + 1.0, float(math.ceil(due - 1e-9)))
        api.queues = queue_draws(now)
        due = max(ctl.update(api, now), now + 1.0)
        acts.append(now)
    return acts


def _intervals(trace: list[TraceEntry], end: float) -> list[tuple[TraceEntry, float]]:
    return [(e, (trace[i + 1].time if i + 1 < len(trace) else end) - e.time) for i, e in enumerate(trace)]


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=12), min_size=8, max_size=8), min_size=1, max_size=40),
       st.sampled_from([10.0, 7.0]))
def test_controller_timing_is_field_safe(queue_rows, decision_s) -> None:
    spec = _spec(GREENS)
    settings = MaxPressureSettings(decision_s=decision_s, max_red_s=None)
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, settings, trace=trace)
    api = FakeApi("t1", LINKS, initial="GrGr")
    lanes = [f"i{k}_0" for k in range(4)] + [f"o{k}_0" for k in range(4)]

    def draws(now: float) -> dict[str, int]:
        row = queue_rows[int(now) % len(queue_rows)]
        return dict(zip(lanes, row, strict=False))
    end = 900.0
    _drive(ctl, api, draws, end)
    intervals = _intervals(trace, end)
    assert trace[0].kind == "green" and trace[0].state == "GrGr"  # took over the shown phase, no cut
    for (a, da), (b, _) in zip(intervals, intervals[1:], strict=False):
        for x, y in zip(a.state, b.state, strict=False):
            assert not (x in GREEN and y == "r"), f"green to red without yellow at {b.time}"
        if a.kind == "green":
            floor = max(5.0, spec.phases[a.phase].min_green_s)
            assert da >= floor - 1e-9
            assert abs(da / decision_s - round(da / decision_s)) < 1e-9  # changes only at the end of a block
            assert b.kind == "yellow" or b.kind == "green"
            if b.kind == "yellow":
                assert b.state == yellow_state(a.state, spec.phases[b.phase].greens)
        if a.kind == "yellow":
            leaving = spec.phases[_green_before(intervals, a).phase]
            assert da >= leaving.yellow_s - 1e-9
            assert b.kind == "red" and db_ok(intervals, b, leaving.red_clear_s)
            assert b.state == red_clear_state(_green_before(intervals, a).state, spec.phases[b.phase].greens)
        if a.kind == "red":
            assert b.kind == "green" and b.phase == a.phase and b.state == spec.phases[b.phase].greens
    # the served phase at each decision had the largest pressure (no starvation guard here)
    greens = [e for e, _ in intervals if e.kind == "green"]
    assert len(greens) >= 1


def db_ok(intervals: list[tuple[TraceEntry, float]], entry: TraceEntry, red_s: float) -> bool:
    duration = next(d for e, d in intervals if e is entry)
    return duration >= red_s - 1e-9 or entry is intervals[-1][0]


def _green_before(intervals: list[tuple[TraceEntry, float]], entry: TraceEntry) -> TraceEntry:
    entries = [e for e, _ in intervals]
    for e in reversed(entries[:entries.index(entry)]):
        if e.kind == "green":
            return e
    raise AssertionError("change interval before any green")


def test_controller_follows_pressure_and_keeps_the_best() -> None:
    spec = _spec(GREENS)
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, MaxPressureSettings(max_red_s=None), trace=trace)
    api = FakeApi("t1", LINKS, initial="GrGr")
    # E-W queues dominate from the start: one change to phase 2, then it stays (its queue never drains here)
    _drive(ctl, api, lambda now: {"i1_0": 8, "i3_0": 8, "i0_0": 2, "i2_0": 1}, 200.0)
    assert [(e.phase, e.kind) for e in trace][:4] == [(0, "green"), (1, "yellow"), (1, "red"), (1, "green")]
    assert trace[1].time == 10.0  # first decision at the end of the first 10 s block
    assert len(trace) == 4
    # outgoing queues count against a link: a blocked exit turns the choice around
    trace.clear()
    ctl = MaxPressureController(spec, MaxPressureSettings(max_red_s=None), trace=trace)
    api = FakeApi("t1", LINKS, initial="rGrG")
    _drive(ctl, api, lambda now: {"i1_0": 8, "i3_0": 8, "o1_0": 10, "o3_0": 10, "i0_0": 2}, 100.0)
    assert trace[-1].phase == 0 and trace[-1].kind == "green"


def test_starvation_guard_serves_a_stuck_vehicle() -> None:
    spec = _spec(GREENS)
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, MaxPressureSettings(max_red_s=120), trace=trace)
    api = FakeApi("t1", LINKS, initial="GrGr")
    # phase 1 always has the larger pressure; a vehicle on lane i1 has halted 130 s
    api.stuck = {"i1_0": (130.0, 1)}
    _drive(ctl, api, lambda now: {"i0_0": 9, "i2_0": 9, "i1_0": 1}, 60.0)
    assert any(e.phase == 1 and e.kind == "green" for e in trace)
    # without the stuck vehicle nothing forces it
    trace.clear()
    ctl = MaxPressureController(spec, MaxPressureSettings(max_red_s=120), trace=trace)
    api = FakeApi("t1", LINKS, initial="GrGr")
    _drive(ctl, api, lambda now: {"i0_0": 9, "i2_0": 9, "i1_0": 1}, 60.0)
    assert all(e.phase == 0 for e in trace)


def test_link_starvation_serves_a_protected_phase_within_the_bound() -> None:
    # phase 3 protects link 0 that phase 1 also greens (permissive there): link basis forces it
    greens = ["grGr", "rGrG", "Grrr"]
    spec = _spec(greens)
    trace: list[TraceEntry] = []
    settings = MaxPressureSettings(max_red_s=60, starvation_basis="link")
    ctl = MaxPressureController(spec, settings, trace=trace)
    api = FakeApi("t1", LINKS, initial="grGr")
    _drive(ctl, api, lambda now: {"i0_0": 3, "i2_0": 9, "i1_0": 0}, 400.0)
    starts = [e.time for e in trace if e.kind == "green" and e.phase == 2]
    assert starts, "the protected phase was never served"
    hold = settings.decision_s
    change = max(p.yellow_s + p.red_clear_s for p in spec.phases) + 2
    gaps = [b - a for a, b in zip([0.0, *starts], starts, strict=False)]
    assert max(gaps) <= settings.max_red_s + hold + 2 * change


def test_non_road_links_count_for_nothing() -> None:
    spec = _spec(GREENS)
    ctl = MaxPressureController(spec, MaxPressureSettings())
    links = [list(group) for group in LINKS]
    links[1] = [("rail_0", "o1_0", ":j_1_0")]
    links[3] = [(":j_w0_0", ":j_c0_0", "")]  # a crossing: walking area -> crossing
    api = FakeApi("t1", links, initial="GrGr", allowed={"rail_0": ["rail"]})
    ctl.start(api, 0.0)
    assert ctl.phase_links[1] == []  # only the rail link and the crossing are green in phase 2
    assert ctl.phase_walkingareas[1] == [":j_w0"]
    api.queues = {"rail_0": 50, "i0_0": 1}
    pressures, _demand, _waited = ctl.measure(api, 10.0)
    assert pressures[1] == -math.inf and pressures[0] == 1.0


def test_spec_and_pedestrian_minimum_green_apply() -> None:
    phases = (PhaseSpec(1, "GrGr", 13.89, min_green_s=8.0), PhaseSpec(2, "rGrG", 13.89, ped_crossing_m=12.0))
    links = [list(group) for group in LINKS] + [[(":j_w0_0", ":j_c0_0", "")]]
    spec = IntersectionSpec("c1", "t1", 5, tuple(PhaseSpec(p.phase, p.greens + "r", 13.89,
                                                           min_green_s=p.min_green_s,
                                                           ped_crossing_m=p.ped_crossing_m) for p in phases))
    ctl = MaxPressureController(spec, MaxPressureSettings())
    ctl.start(FakeApi("t1", links, initial="GrGrr"), 0.0)
    assert ctl.min_green[0] == 8.0
    assert ctl.min_green[1] == max(5.0, spec.phases[1].walk_s + spec.phases[1].ped_clear_s) > 7.0


# ---- SUMO: a network with joined junction clusters ------------------------------------------------

@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """3x3 grid, 30 m apart along x and 150 m along y: each row joined into one cluster under one program."""
    out = tmp_path_factory.mktemp("joined")
    net = out / "joined.net.xml"
    subprocess.run([sumo_binary("netgenerate"), "--grid", "--grid.x-number", "3", "--grid.y-number", "3",
                    "--grid.x-length", "30", "--grid.y-length", "150", "--grid.attach-length", "120", "-L", "2",
                    "-j", "traffic_light",
                    "--tls.default-type", "static", "--junctions.join", "--junctions.join-dist", "40",
                    "--tls.join", "--no-turnarounds", "true", "--no-warnings", "-o", str(net)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net), "-o", str(out / "j.trips.xml"),
                    "-r", str(out / "joined.rou.xml"), "-e", "400", "-p", "2.5", "--fringe-factor", "100",
                    "--seed", "5", "--validate"], check=True, capture_output=True)
    (out / "joined.sumocfg").write_text(
        '<configuration><input><net-file value="joined.net.xml"/><route-files value="joined.rou.xml"/></input>'
        '<time><begin value="0"/><end value="500"/></time></configuration>')
    return load_scenario(out, detectors_dir=out / "det")


def test_max_pressure_runs_a_joined_cluster_network_to_the_end(joined) -> None:
    specs = joined.corridor.intersections
    assert len(specs) == 3 and all(s.link_count > 12 for s in specs)  # three rows, three junctions each
    trace: list[TraceEntry] = []
    kpis = run_in_loop(joined, seed=1, end=500, make_controllers=lambda _api: [
        MaxPressureController(s, trace=trace) for s in specs])
    assert kpis.vehicles > 100 and kpis.completed > 0.5 * kpis.vehicles
    assert {e.tls_id for e in trace} == {s.tls_id for s in specs}
    by_tls: dict[str, list[TraceEntry]] = {}
    for e in trace:
        by_tls.setdefault(e.tls_id, []).append(e)
    for entries in by_tls.values():
        for a, b in zip(entries, entries[1:], strict=False):
            for x, y in zip(a.state, b.state, strict=False):
                assert not (x in GREEN and y in "rs"), (a, b)


# ---- timed pedestrian recall on assumed crosswalks ------------------------------------------------------

def _recall_spec() -> IntersectionSpec:
    """N-S through (phase 1) and E-W through with an assumed 19 m crosswalk (phase 2): no crossing in SUMO."""
    return IntersectionSpec("c1", "t1", 4, (PhaseSpec(1, "GrGr", 13.89, clearance_width_m=20.0),
                                            PhaseSpec(2, "rGrG", 13.89, clearance_width_m=20.0,
                                                      ped_crossing_m=19.0)))


def _greens_of(trace: list[TraceEntry], end: float) -> list[tuple[int, float, float]]:
    """(phase index, start, length) of every green in the trace."""
    return [(e.phase, e.time, d) for e, d in _intervals(trace, end) if e.kind == "green"]


@pytest.mark.parametrize("timing", ["auto", "recall"])
def test_assumed_crosswalk_gets_its_walk_at_least_every_recall_period(timing) -> None:
    spec = _recall_spec()
    walk = spec.phases[1].walk_s + spec.phases[1].ped_clear_s
    turn = max(p.yellow_s + p.red_clear_s for p in spec.phases) + 10.0  # a change interval and one decision block
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, MaxPressureSettings(pedestrian_timing=timing, max_red_s=None), trace=trace)
    api = FakeApi("t1", LINKS[:4], initial="GrGr")
    end = 1800.0
    # vehicles only ever queue on phase 1's lanes: pressure alone would never leave it
    _drive(ctl, api, lambda now: {"i0_0": 9, "i2_0": 9}, end)
    served = [(s, d) for k, s, d in _greens_of(trace, end) if k == 1]
    assert len(served) >= end / (PED_RECALL_PERIOD_S + turn) - 1
    for start, length in served:
        assert length >= walk - 1e-9, f"the walk green at {start} lasted {length} s, walk + clearance is {walk}"
    starts = [0.0] + [s for s, _ in served]
    assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) <= PED_RECALL_PERIOD_S + turn


def test_pedestrian_timing_off_never_serves_an_empty_crosswalk_phase() -> None:
    spec = _recall_spec()
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, MaxPressureSettings(pedestrian_timing="off", max_red_s=None), trace=trace)
    _drive(ctl, FakeApi("t1", LINKS[:4], initial="GrGr"), lambda now: {"i0_0": 9, "i2_0": 9}, 900.0)
    assert [k for k, _s, _d in _greens_of(trace, 900.0)] == [0]


def test_the_walk_falling_due_in_its_own_green_holds_that_green() -> None:
    spec = _recall_spec()
    walk = spec.phases[1].walk_s + spec.phases[1].ped_clear_s
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, MaxPressureSettings(pedestrian_timing="recall", max_red_s=None), trace=trace)
    # phase 2 has the queue from the start, then (after 95 s, its walk due at 90 s) phase 1 takes over
    _drive(ctl, FakeApi("t1", LINKS[:4], initial="rGrG"),
           lambda now: {"i1_0": 9, "i3_0": 9} if now < 95.0 else {"i0_0": 30, "i2_0": 30}, 300.0)
    first = _greens_of(trace, 300.0)[0]
    assert first[0] == 1 and first[2] >= PED_RECALL_PERIOD_S + walk - 1e-9  # recycled: the walk ran in full


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=15), min_size=4, max_size=4), min_size=1, max_size=30))
def test_any_queues_the_crosswalk_walks_within_the_recall_period(queue_rows) -> None:
    spec = _recall_spec()
    walk = spec.phases[1].walk_s + spec.phases[1].ped_clear_s
    change = max(p.yellow_s + p.red_clear_s for p in spec.phases)
    settings = MaxPressureSettings(pedestrian_timing="recall")
    trace: list[TraceEntry] = []
    ctl = MaxPressureController(spec, settings, trace=trace)
    end = 1200.0

    def draws(now: float) -> dict[str, int]:
        row = queue_rows[int(now // 7) % len(queue_rows)]
        return {f"i{k}_0": n for k, n in enumerate(row)}
    _drive(ctl, FakeApi("t1", LINKS[:4], initial="GrGr"), draws, end)
    starts = [t for k, t in ctl.walks if t < end]  # the trace's greens end at ``end``; the drive may step past it
    assert {k for k, _ in ctl.walks} <= {1}
    # a walk at least every period, late by at most a decision block, a minimum green and two changes
    bound = PED_RECALL_PERIOD_S + settings.decision_s + settings.min_green_s + 2 * change + 1.0
    assert max(b - a for a, b in zip([0.0, *starts], [*starts, end], strict=False)) <= bound
    greens = _greens_of(trace, end)
    for t in starts:  # each walk is shown in a green of its phase that lasts the walk + clearance
        k, start, length = next(g for g in greens if g[1] <= t + 1e-6 and t < g[1] + g[2] + 1e-6)
        assert k == 1 and (start + length >= t + walk - 1e-6 or start + length >= end - 1e-6)
