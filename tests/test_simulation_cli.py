"""``traffic sim run`` end to end on a tiny generated network, and the libsumo/TraCI switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from simulation.backend import api_name, sumo_api
from simulation.cli import parse_seeds
from simulation.corridor import generate_corridor
from simulation.inloop import run_in_loop
from simulation.max_pressure import MaxPressureController
from traffic.errors import SimulationError

REQUIRED = ("mean_delay_s", "mean_trip_time_s", "mean_waiting_s", "vehicles", "completed", "undeparted",
            "teleports", "wall_s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_corridor(tmp_path_factory.mktemp("cli"), n_intersections=1, side_length_m=120,
                             duration_s=150, demand_scale=0.7)


def test_sim_run_writes_json_with_required_keys(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "kpis.json"
    assert main(["sim", "run", "--scenario", str(tiny.sumocfg.parent), "--control", "static", "--seeds", "1,2",
                 "--json", str(out), "--workdir", str(tmp_path / "w")]) == 0
    doc = json.loads(out.read_text())
    for key in REQUIRED:
        assert isinstance(doc[key], (int, float)), key
        assert doc["summary"][key]["mean"] == doc[key]
    assert [r["seed"] for r in doc["runs"]] == [1, 2]
    assert doc["vehicles"] > 10 and doc["teleports"] == 0
    assert (doc["begin"], doc["end"]) == (0, 150)  # the window of the .sumocfg
    assert doc["mean_delay_s"] == pytest.approx(sum(r["mean_delay_s"] for r in doc["runs"]) / 2, abs=1e-3)
    assert "mean_delay_s" in capsys.readouterr().out


def test_sim_run_window_control_and_errors(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mp.json"
    assert main(["sim", "run", "--scenario", str(tiny.sumocfg), "--control", "max-pressure", "--seed", "3",
                 "--begin", "0", "--end", "90", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["control"] == "max-pressure" and doc["seeds"] == [3] and doc["end"] == 90
    assert main(["sim", "run", "--scenario", str(tmp_path / "nowhere"), "--control", "static"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sim", "run", "--scenario", str(tiny.sumocfg), "--begin", "100", "--end", "50"]) == 2
    with pytest.raises(SystemExit):
        main(["sim", "run", "--scenario", str(tiny.sumocfg), "--control", "fuzzy"])


def test_parse_seeds() -> None:
    assert parse_seeds("1,2,3") == [1, 2, 3]
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("", "a", "1,1", "1-2,2"):
        with pytest.raises(SimulationError):
            parse_seeds(bad)


def test_libsumo_and_traci_give_the_same_run(tiny) -> None:
    def controllers(_api):
        return [MaxPressureController(s) for s in tiny.corridor.intersections]

    assert api_name(sumo_api("traci")) == "traci"
    with pytest.raises(SimulationError):
        sumo_api("corba")
    fast = run_in_loop(tiny, seed=2, end=120, make_controllers=controllers, backend="libsumo")
    slow = run_in_loop(tiny, seed=2, end=120, make_controllers=controllers, backend="traci")
    assert fast.to_dict() | {"wall_s": 0} == slow.to_dict() | {"wall_s": 0}
