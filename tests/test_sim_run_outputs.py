"""``traffic sim run`` tells the user what happens and where its outputs are, and cleans up after itself.

Progress goes to stderr (a line per finished seed), the KPI table and the
output locations to stdout; the temporary folder (which holds the detector
file SUMO reads during the run) is removed after the run and the report,
while a folder given with ``--workdir`` is kept.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import failing_controls
import pytest

import simulation.scenario
from app.cli import main
from simulation import controls
from simulation.scenario import Scenario
from traffic.intersection import Corridor


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Temporary folders of this test only (other runs on the machine make their own traffic-sim-*)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def fake_scenario(tmp_path, monkeypatch):
    """``load_scenario`` as the real one behaves: it writes the detector file into ``detectors_dir``."""
    seen: dict[str, Path] = {}

    def load(path, *, detectors_dir=None, pedestrians="auto", **_kw):
        detectors_dir = Path(detectors_dir)
        detectors_dir.mkdir(parents=True, exist_ok=True)
        det = detectors_dir / "detectors.add.xml"
        det.write_text("<additional/>\n")
        seen["detectors"] = det
        return Scenario(sumocfg=tmp_path / "x.sumocfg", net_file=tmp_path / "x.net.xml", route_files=(),
                        additional_files=(det,), begin=0, end=300, corridor=Corridor(name="x", intersections=()))

    monkeypatch.setattr(simulation.scenario, "load_scenario", load)
    monkeypatch.setitem(controls.CONTROLS, "test-detectors", failing_controls.reads_its_detectors)
    return seen


def test_temporary_folder_outlives_the_run_then_goes(private_tmp, fake_scenario, tmp_path, capsys) -> None:
    out = tmp_path / "k.json"
    code = main(["sim", "run", "--scenario", str(tmp_path), "--control", "test-detectors", "--seeds", "1-3",
                 "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the control saw its detector file in every seed (else it raises), and afterwards it is gone
    assert not fake_scenario["detectors"].exists()
    assert list(private_tmp.iterdir()) == []
    progress = [line for line in captured.err.splitlines() if line]
    assert len(progress) == 3
    for line in progress:
        assert re.fullmatch(r"\[\d/3\] seed [123] test-detectors: mean delay 1[123]\.0 s, wall 0\.5 s", line), line
    assert f"KPIs written to {out}" in captured.out
    assert "SUMO outputs removed (keep them with --workdir DIR)" in captured.out
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [1, 2, 3] and "workdir" not in doc  # no path to a folder that no longer exists


def test_a_given_workdir_is_kept_and_reported(private_tmp, fake_scenario, tmp_path, capsys) -> None:
    workdir = tmp_path / "keep"
    out = tmp_path / "k.json"
    assert main(["sim", "run", "--scenario", str(tmp_path), "--control", "test-detectors", "--seed", "7",
                 "--workdir", str(workdir), "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"SUMO outputs kept in {workdir}" in captured.out
    assert (workdir / "detectors" / "detectors.add.xml").exists()
    assert (workdir / "test-detectors-seed7" / "tripinfo.xml").exists()
    assert json.loads(out.read_text())["workdir"] == str(workdir)
    assert list(private_tmp.iterdir()) == []


def test_the_temporary_folder_goes_on_failure_too(private_tmp, fake_scenario, tmp_path, monkeypatch,
                                                   capsys) -> None:
    monkeypatch.setitem(controls.CONTROLS, "test-fails", failing_controls.raise_value_error)
    assert main(["sim", "run", "--scenario", str(tmp_path), "--control", "test-fails"]) == 2
    assert "detector loop d7 has no lane" in capsys.readouterr().err
    assert list(private_tmp.iterdir()) == []


def test_real_sumo_run_cleans_up(private_tmp, tmp_path, capsys) -> None:
    """The same with SUMO itself (static control, generated one-signal corridor)."""
    from simulation.corridor import generate_corridor

    tiny = generate_corridor(tmp_path / "c", n_intersections=1, side_length_m=120, duration_s=120, demand_scale=0.7)
    before = set(private_tmp.iterdir())
    assert main(["sim", "run", "--scenario", str(tiny.sumocfg), "--control", "static", "--seeds", "1,2"]) == 0
    captured = capsys.readouterr()
    assert set(private_tmp.iterdir()) == before
    assert len([line for line in captured.err.splitlines() if " static: mean delay " in line]) == 2
    assert "mean_delay_s" in captured.out and "SUMO outputs removed" in captured.out
