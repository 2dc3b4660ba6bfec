"""The control registry and its baselines on small generated networks.

Max-pressure's safeguards are checked twice: the pure decision rule with
hypothesis, and the signal states it actually drove in SUMO (a 2x2 grid with
protected lefts and modelled crossings): never green to red without yellow,
clearances and minimum greens kept, maximum green and starvation bounded.
"""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import app.sim_adaptive  # noqa: F401 - the composition root: registers adaptive, installs the safety check
from simulation.actuated import FIXED_PROGRAM_ID, PROGRAM_ID, actuated_additional, fixed_time_additional
from simulation.binaries import sumo_binary, sumo_tool
from simulation.controls import (
    CONTROLS,
    SAFE_ACTUATED_MAX_GREEN_S,
    control,
    report,
    run_actuated_safe,
    run_seeds,
    safe_actuated_plans,
    summarize,
)
from simulation.corridor import generate_corridor
from simulation.inloop import run_in_loop
from simulation.kpi import Kpis
from simulation.max_pressure import MaxPressureController, MaxPressureSettings, TraceEntry, choose_phase
from simulation.runner import run
from simulation.scenario import load_scenario
from traffic.errors import SimulationError

GREEN = set("Gg")


@pytest.fixture(scope="module")
def corridor(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("ctl"), n_intersections=2, spacing_m=300,
                             side_length_m=150, duration_s=300, demand_scale=0.8)


def _grid_scenario(out: Path, name: str, netgenerate_options: list[str], period_s: float, end_s: int, seed: int):
    """A 2x2 netgenerate grid with random demand from every side, loaded as a scenario."""
    net = out / f"{name}.net.xml"
    subprocess.run([sumo_binary("netgenerate"), "--grid", "--grid.number", "2", "--grid.length", "200",
                    "--grid.attach-length", "150", "-L", "2", "-j", "traffic_light", "--no-turnarounds", "true",
                    *netgenerate_options, "--no-warnings", "-o", str(net)], check=True, capture_output=True)
    subprocess.run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net),
                    "-o", str(out / f"{name}.trips.xml"), "-r", str(out / f"{name}.rou.xml"),
                    "-e", str(end_s), "-p", str(period_s), "--fringe-factor", "100", "--seed", str(seed),
                    "--validate"], check=True, capture_output=True)
    (out / f"{name}.sumocfg").write_text(
        f'<configuration><input><net-file value="{name}.net.xml"/><route-files value="{name}.rou.xml"/></input>'
        f'<time><begin value="0"/><end value="{end_s}"/></time></configuration>')
    return load_scenario(out, detectors_dir=out / "det")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2x2 grid, protected left stages, sidewalks and crossings, heavy random demand from every side."""
    return _grid_scenario(tmp_path_factory.mktemp("grid"), "grid",
                          ["--turn-lanes", "1", "--turn-lanes.length", "40", "--tls.default-type", "static",
                           "--sidewalks.guess", "--crossings.guess"], period_s=0.5, end_s=600, seed=3)


# ---- the pure decision rule ---------------------------------------------------------------

SETTINGS = MaxPressureSettings(decision_s=10, max_green_s=40, max_red_s=90)


def test_choose_phase_cases() -> None:
    # plain max-pressure, ties keep the current stage
    assert choose_phase(0, [3, 5, 1], [True] * 3, [0, 20, 20], 15, SETTINGS) == 1
    assert choose_phase(1, [5, 5, 1], [True] * 3, [20, 0, 20], 15, SETTINGS) == 1
    # max green: the best *other* stage with vehicles, even if current pressure is highest
    assert choose_phase(0, [9, 2, 4], [True, True, True], [0, 30, 30], 40, SETTINGS) == 2
    assert choose_phase(0, [9, 2, 4], [True, False, False], [0, 30, 30], 40, SETTINGS) == 0  # nobody waiting
    # starvation beats pressure: the longest-waiting stage with vehicles
    assert choose_phase(0, [9, 0, 8], [True, True, True], [0, 95, 91], 12, SETTINGS) == 1
    with pytest.raises(SimulationError):
        choose_phase(3, [1, 2], [True, True], [0, 0], 0, SETTINGS)


stage_data = st.integers(min_value=2, max_value=6).flatmap(lambda n: st.tuples(
    st.integers(min_value=0, max_value=n - 1),
    st.lists(st.integers(min_value=-20, max_value=40), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.floats(min_value=0, max_value=300), min_size=n, max_size=n),
    st.floats(min_value=0, max_value=200)))


@given(stage_data)
def test_choose_phase_safeguards_hold(data) -> None:
    current, pressures, demand, waited, green_s = data
    waited[current] = 0.0
    chosen = choose_phase(current, [float(p) for p in pressures], demand, waited, green_s, SETTINGS)
    assert 0 <= chosen < len(pressures)
    starved = [k for k in range(len(pressures)) if k != current and demand[k] and waited[k] >= SETTINGS.max_red_s]
    if starved:  # no stage with vehicles waits beyond max_red_s once a decision is taken
        assert chosen in starved and waited[chosen] == max(waited[k] for k in starved)
    elif green_s >= SETTINGS.max_green_s and any(demand[k] for k in range(len(demand)) if k != current):
        assert chosen != current and demand[chosen]
    else:
        assert pressures[chosen] == max(pressures)
        if pressures[current] == max(pressures):
            assert chosen == current


def test_settings_are_validated() -> None:
    with pytest.raises(SimulationError):
        MaxPressureSettings(decision_s=0)
    with pytest.raises(SimulationError):
        MaxPressureSettings(max_green_s=5, decision_s=10)
    with pytest.raises(SimulationError):
        MaxPressureSettings(pedestrian_timing="sometimes")


# ---- max-pressure in SUMO: what it actually drove ------------------------------------------

def _intervals(trace: list[TraceEntry], end: float) -> dict[str, list[tuple[TraceEntry, float]]]:
    by_tls: dict[str, list[TraceEntry]] = defaultdict(list)
    for e in trace:
        by_tls[e.tls_id].append(e)
    out = {}
    for tls, entries in by_tls.items():
        out[tls] = [(e, (entries[i + 1].time if i + 1 < len(entries) else end) - e.time)
                    for i, e in enumerate(entries)]
    return out


def test_max_pressure_safeguards_in_sumo(grid) -> None:
    settings = MaxPressureSettings(decision_s=5, max_green_s=25, max_red_s=60, starvation_basis="link")
    trace: list[TraceEntry] = []
    specs = {s.tls_id: s for s in grid.corridor.intersections}
    kpis = run_in_loop(grid, seed=1, end=600, make_controllers=lambda _api: [
        MaxPressureController(s, settings, trace=trace) for s in specs.values()])
    assert kpis.vehicles > 300 and kpis.teleports == 0
    assert any(p.ped_crossing_m > 0 for s in specs.values() for p in s.phases)  # crossings are modelled
    for tls, intervals in _intervals(trace, 600.0).items():
        spec = specs[tls]
        phases = spec.phases
        assert len({e.phase for e, _ in intervals if e.kind == "green"}) == len(phases)  # all stages served
        for (a, da), (b, _db) in zip(intervals, intervals[1:], strict=False):
            for i, (x, y) in enumerate(zip(a.state, b.state, strict=False)):
                assert not (x in GREEN and y in "rs"), f"{tls} link {i}: green to red without yellow at {b.time}"
            if a.kind == "yellow":
                leaving = phases[[p.greens for p in phases].index(_previous_green(intervals, a))]
                assert da >= leaving.yellow_s - 1e-6
            if a.kind == "red":
                assert b.kind == "green"
        greens = [(e, d) for e, d in intervals[:-1] if e.kind == "green"]
        for e, d in greens:
            p = phases[e.phase]
            floor = max(p.min_green_s, p.walk_s + p.ped_clear_s) if p.ped_crossing_m > 0 else p.min_green_s
            assert d >= floor - 1e-6, (tls, e, d)
            if e.time > 60:  # after warm-up every approach has vehicles, so max green binds
                assert d <= settings.max_green_s + 1.0, (tls, e, d)
        # no stage waits beyond the starvation bound plus the stages served before it
        hold = max(max(settings.decision_s, p.min_green_s, p.walk_s + p.ped_clear_s) for p in phases)
        change = max(p.yellow_s + p.red_clear_s for p in phases) + 2
        bound = settings.max_red_s + settings.max_green_s + len(phases) * (hold + change)
        starts: dict[int, list[float]] = defaultdict(list)
        for e, _d in greens:
            starts[e.phase].append(e.time)
        for phase, times in starts.items():
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert max(gaps, default=0) <= bound, (tls, phase, gaps, bound)


def _previous_green(intervals, entry) -> str:
    index = [e for e, _ in intervals].index(entry)
    for e, _ in reversed(intervals[:index]):
        if e.kind == "green":
            return e.state.replace("s", "r")
    raise AssertionError("yellow before any green")


# ---- registry and baselines ------------------------------------------------------------------

def test_in_loop_runner_scores_like_the_batch_runner(corridor, tmp_path: Path) -> None:
    batch = run(corridor, seed=4, end=200)
    loop = run_in_loop(corridor, seed=4, end=200, make_controllers=lambda _api: [])
    assert loop.to_dict() | {"wall_s": 0} == batch.to_dict() | {"wall_s": 0}


def test_actuated_program_keeps_phases_and_really_actuates(corridor, tmp_path: Path) -> None:
    add = actuated_additional(corridor.net_file, tmp_path / "act.add.xml")
    net_logics = {t.get("id"): t for t in ET.parse(corridor.net_file).getroot().iter("tlLogic")}
    for logic in ET.parse(add).getroot().iter("tlLogic"):
        assert logic.get("type") == "actuated" and logic.get("programID") == PROGRAM_ID
        src = [p.get("state") for p in net_logics[logic.get("id")].iter("phase")]
        assert [p.get("state") for p in logic.iter("phase")] == src  # same phases, same order
        greens = [p for p in logic.iter("phase") if "minDur" in p.attrib]
        assert greens and all(float(p.get("minDur")) < float(p.get("maxDur")) for p in greens)
    # record the switch times SUMO applied: an actuated program's greens vary, a static one's do not
    switches = tmp_path / "switches.xml"
    tls = corridor.corridor.intersections[0].tls_id
    timed = tmp_path / "timed.add.xml"
    timed.write_text(f'<additional><timedEvent type="SaveTLSSwitchTimes" source="{tls}" dest="{switches}"/>'
                     '</additional>')
    actuated = run(corridor, seed=2, end=300, workdir=tmp_path / "a", extra_additional=(add, timed))
    green_lengths = {round(float(el.get("duration")), 1) for el in ET.parse(switches).getroot().iter("tlsSwitch")}
    assert len(green_lengths) > 2, green_lengths
    static = run(corridor, seed=2, end=300)
    assert actuated.to_dict() | {"wall_s": 0} != static.to_dict() | {"wall_s": 0}


@pytest.fixture(scope="module")
def actuated_town(tmp_path_factory):
    """A 2x2 grid whose own programs are actuated (as an OSM import's are), with random demand."""
    return _grid_scenario(tmp_path_factory.mktemp("town"), "town", ["--tls.default-type", "actuated"],
                          period_s=1.5, end_s=400, seed=5)


def _green_lengths(scenario, tmp_path: Path, name: str, additional: tuple[Path, ...]) -> set[float]:
    """The green lengths SUMO applied at the scenario's first signal in a 400 s run."""
    switches = tmp_path / f"{name}-switches.xml"
    timed = tmp_path / f"{name}-timed.add.xml"
    tls = scenario.corridor.intersections[0].tls_id
    timed.write_text(f'<additional><timedEvent type="SaveTLSSwitchTimes" source="{tls}" dest="{switches}"/>'
                     '</additional>')
    run(scenario, seed=1, end=400, workdir=tmp_path / name, extra_additional=(*additional, timed))
    return {round(float(el.get("duration")), 1) for el in ET.parse(switches).getroot().iter("tlsSwitch")}


def test_fixed_time_baseline_runs_an_actuated_network_at_its_durations(actuated_town, tmp_path: Path) -> None:
    """``static`` is fixed time even where the network's own programs are actuated."""
    own = {t.get("id"): t for t in ET.parse(actuated_town.net_file).getroot().iter("tlLogic")}
    assert own and all(t.get("type") == "actuated" for t in own.values())
    static = control("static")(actuated_town, 1, 0, 400, tmp_path / "static")
    fixed = tmp_path / "static" / "fixed-time.add.xml"
    logics = list(ET.parse(fixed).getroot().iter("tlLogic"))
    assert {t.get("id") for t in logics} == set(own)
    for logic in logics:
        assert logic.get("type") == "static" and logic.get("programID") == FIXED_PROGRAM_ID
        src = own[logic.get("id")]
        assert [(p.get("state"), p.get("duration")) for p in logic.iter("phase")] == \
            [(p.get("state"), p.get("duration")) for p in src.iter("phase")]
        assert not any("minDur" in p.attrib for p in logic.iter("phase"))
    assert static.vehicles > 50
    own_run = run(actuated_town, seed=1, end=400, workdir=tmp_path / "own-run")
    assert static.to_dict() | {"wall_s": 0} != own_run.to_dict() | {"wall_s": 0}
    durations = {float(p.get("duration")) for p in own[actuated_town.corridor.intersections[0].tls_id].iter("phase")}
    # SUMO runs the copy: every green lasts a phase's duration; the network's own program varies them
    assert _green_lengths(actuated_town, tmp_path, "fixed", (fixed,)) <= durations
    assert not _green_lengths(actuated_town, tmp_path, "own", ()) <= durations


def test_fixed_time_baseline_leaves_a_static_network_alone(corridor, tmp_path: Path) -> None:
    assert fixed_time_additional(corridor.net_file, tmp_path / "f.add.xml") is None
    assert not (tmp_path / "f.add.xml").exists()
    static = control("static")(corridor, 4, 0, 200, tmp_path / "s")
    assert static.to_dict() | {"wall_s": 0} == run(corridor, seed=4, end=200).to_dict() | {"wall_s": 0}


def _shown_yellows(scenario, programs: Path, tls: str, work: Path) -> list[tuple[str, float]]:
    """(green state left, seconds of yellow shown) for each change SUMO showed at ``tls`` in 600 s."""
    work.mkdir(parents=True, exist_ok=True)
    states = work / "states.xml"
    timed = work / "timed.add.xml"
    timed.write_text(f'<additional><timedEvent type="SaveTLSStates" source="{tls}" dest="{states}"/></additional>')
    run(scenario, seed=3, end=600, workdir=work / "run", extra_additional=(programs, timed))
    runs: list[list] = []
    for el in ET.parse(states).getroot().iter("tlsState"):
        state = el.get("state")
        if runs and runs[-1][0] == state:
            runs[-1][1] += 1.0
        else:
            runs.append([state, 1.0])
    return [(before[0].replace("s", "r"), change[1]) for before, change in zip(runs, runs[1:-1], strict=False)
            if "y" in change[0] and set(before[0]) & GREEN]


def test_safe_actuated_baseline_times_the_designs_intervals_and_pedestrians(grid, tmp_path: Path) -> None:
    """Every change interval is the ITE yellow + red of the mapped phase; greens hold the walk + clearance."""
    plans = safe_actuated_plans(grid)
    assert set(plans) == {s.tls_id for s in grid.corridor.intersections}
    run_kpis = run_actuated_safe(grid, 3, 0, 300, tmp_path / "run")
    add = tmp_path / "run" / "actuated-safe.add.xml"
    logics = {t.get("id"): t for t in ET.parse(add).getroot().iter("tlLogic")}
    peds = 0
    for spec in grid.corridor.intersections:
        phases = list(logics[spec.tls_id].iter("phase"))
        assert logics[spec.tls_id].get("type") == "actuated"
        for design in spec.phases:
            green = next(p for p in phases if p.get("name") == f"p{design.phase}-green")
            yellow = next(p for p in phases if p.get("name") == f"p{design.phase}-yellow")
            assert float(yellow.get("duration")) == pytest.approx(design.yellow_s)
            red = [p for p in phases if p.get("name") == f"p{design.phase}-red"]
            assert (float(red[0].get("duration")) if red else 0.0) == pytest.approx(design.red_clear_s)
            timing = plans[spec.tls_id].phase(design.phase)
            ped_minimum = timing.phaseWalk + timing.phasePedestrianClear
            peds += ped_minimum > 0
            assert float(green.get("minDur")) >= max(design.min_green_s, ped_minimum) - 1e-9
            assert float(green.get("maxDur")) >= SAFE_ACTUATED_MAX_GREEN_S
    assert peds > 0  # the grid models crossings: some greens time pedestrians
    assert run_kpis.vehicles > 50 and run_kpis.teleports == 0
    assert any(d.yellow_s % 1 or d.red_clear_s % 1 for s in grid.corridor.intersections for d in s.phases)
    # what SUMO shows at its 1 s step: a fractional yellow for the whole seconds around it, never a step
    # short, the design's length on average (as the emulators' tenths are shown; docs/performance.md)
    for spec in grid.corridor.intersections:
        shown = _shown_yellows(grid, add, spec.tls_id, tmp_path / spec.tls_id)
        assert len(shown) > 10
        by_design: dict[int, list[float]] = defaultdict(list)
        for left, yellow_s in shown:
            design = next(p for p in spec.phases if p.greens.replace("s", "r") == left)
            assert math.floor(design.yellow_s + 1e-9) <= yellow_s <= math.ceil(design.yellow_s - 1e-9), design
            by_design[design.phase].append(yellow_s)
        for phase, lengths in by_design.items():
            design = next(p for p in spec.phases if p.phase == phase)
            assert abs(sum(lengths) / len(lengths) - design.yellow_s) <= 0.5, (spec.tls_id, phase, lengths)
    # the same SUMO logic on the network's own intervals is a different run
    plain = control("actuated")(grid, 3, 0, 300, tmp_path / "plain")
    assert plain.to_dict() | {"wall_s": 0} != run_kpis.to_dict() | {"wall_s": 0}


@pytest.mark.parametrize("name", ["static", "actuated", "actuated-safe", "max-pressure", "max-pressure-resco"])
def test_each_baseline_runs(corridor, tmp_path: Path, name: str) -> None:
    kpis = control(name)(corridor, 5, 0, 180, tmp_path)
    assert isinstance(kpis, Kpis)
    assert kpis.vehicles > 20 and kpis.teleports == 0
    assert kpis.mean_delay_s > 0 and kpis.wall_s > 0


def test_without_the_composition_root_adaptive_is_unknown_and_no_check_is_a_clear_error(corridor) -> None:
    """The simulation layer alone knows no centre: no ``adaptive``, and no safety check to pass by default."""
    code = (
        "import sys\n"
        "from simulation.controls import CONTROLS, controllable, control\n"
        "from simulation.scenario import load_scenario\n"
        "from traffic.errors import SimulationError\n"
        "assert 'adaptive' not in CONTROLS and 'max-pressure' in CONTROLS, sorted(CONTROLS)\n"
        "assert not any(m.split('.')[0] in ('controller', 'field_firmware_stubs', 'app') for m in sys.modules)\n"
        "for call in (lambda: control('adaptive'), lambda: controllable(load_scenario(sys.argv[1]))):\n"
        "    try:\n"
        "        call()\n"
        "    except SimulationError as exc:\n"
        "        print(exc)\n"
        "    else:\n"
        "        raise SystemExit('no error')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(corridor.sumocfg.parent)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "unknown control 'adaptive'" in proc.stdout
    assert "no safety check installed" in proc.stdout
    assert "adaptive" in CONTROLS  # here the composition root is imported
    with pytest.raises(SimulationError, match="unknown control"):
        control("fuzzy")


def test_run_seeds_in_processes_and_summary(corridor, tmp_path: Path) -> None:
    results = run_seeds("max-pressure", corridor, [1, 2], workdir=tmp_path, end=150, processes=2)
    assert len(results) == 2 and all(k.vehicles > 0 for k in results)
    assert (tmp_path / "max-pressure-seed1").is_dir()
    doc = report("max-pressure", corridor, [1, 2], results, begin=0, end=150)
    assert doc["mean_delay_s"] == pytest.approx((results[0].mean_delay_s + results[1].mean_delay_s) / 2, abs=1e-3)
    for bad in ([], [1, 1]):
        with pytest.raises(SimulationError):
            run_seeds("static", corridor, bad, workdir=tmp_path)
    with pytest.raises(SimulationError):
        run_seeds("static", corridor, [1], workdir=tmp_path, begin=100, end=50)


def _k(delay: float, vehicles: int = 10) -> Kpis:
    return Kpis(mean_delay_s=delay, mean_trip_time_s=delay * 2, mean_waiting_s=1.0, mean_stops=1.0,
                vehicles=vehicles, completed=vehicles, undeparted=0)


def test_summarize_by_hand() -> None:
    s = summarize([_k(10.0), _k(20.0), _k(30.0, vehicles=40)])
    assert s["mean_delay_s"] == {"mean": 20.0, "std": 10.0, "min": 10.0, "max": 30.0}
    assert s["vehicles"]["mean"] == 20.0
    assert summarize([_k(7.0)])["mean_delay_s"]["std"] == 0.0
    with pytest.raises(SimulationError):
        summarize([])


class _Ticker:
    """Asks to act at fractional times; records when it was called."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.called: list[float] = []

    def start(self, api, now: float) -> float:
        self.asked.append(now + 2.5)
        return self.asked[-1]

    def update(self, api, now: float) -> float:
        self.called.append(now)
        self.asked.append(now + 2.5)
        return self.asked[-1]


def test_in_loop_reaches_fractional_due_times(corridor) -> None:
    ticker = _Ticker()
    run_in_loop(corridor, seed=1, end=30, make_controllers=lambda _api: [ticker])
    assert len(ticker.called) == 10  # every 3 s (2.5 s rounded up to the 1 s step), from 0 to 30
    for asked, called in zip(ticker.asked, ticker.called, strict=False):
        assert asked <= called < asked + 1.0


def test_an_in_loop_control_on_an_executor_runs_each_task_in_its_own_process(corridor) -> None:
    """``traffic sim run`` on a configured executor: each in-loop task in a process of its own that gets the
    safety check installed here (the executor's worker does not import this test, and max-pressure refuses
    to run without one); the same batch again gives the same KPIs."""
    from simulation.executor import LocalProcessExecutor, seed_tasks

    with LocalProcessExecutor(1) as ex:
        first = ex.run(seed_tasks("max-pressure", corridor, [1, 2], begin=0, end=150))
        again = ex.run(seed_tasks("max-pressure", corridor, [1, 2], begin=0, end=150))
    assert len({r.worker for r in first + again}) == 4
    assert all(r.kpis["vehicles"] > 0 for r in first)
    assert [r.kpis | {"wall_s": 0} for r in first] == [r.kpis | {"wall_s": 0} for r in again]
