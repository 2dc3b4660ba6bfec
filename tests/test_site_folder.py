"""Site folders (issue 13 B): init from a network, check, day plans, the CLI's answers."""

from __future__ import annotations

import json
import shutil
from datetime import time as dtime
from pathlib import Path

import pytest

from app.cli import main
from app.site import check_site_folder, load_site

pytestmark = [pytest.mark.sumo]

EXAMPLE = Path(__file__).resolve().parents[1] / "sites" / "hanoi-corridor"


def test_example_site_is_usable_and_has_a_day_plan(capsys):
    assert main(["site", "check", str(EXAMPLE)]) == 0
    assert "site verdict: usable" in capsys.readouterr().out
    site = load_site(EXAMPLE)
    assert site.controller_ids == ["j1", "j2", "j3", "j4"]
    for cid in site.controller_ids:
        schedule = site.schedules[cid]
        assert len(schedule.periods) >= 4
        assert schedule.check(site.spec(cid)) == []
        night, peak = schedule.plan_at(dtime(3, 0)), schedule.plan_at(dtime(7, 30))
        assert peak.patternCycleTime > night.patternCycleTime


def test_site_init_from_a_network(tmp_path):
    net = EXAMPLE / "model" / "corridor.net.xml"
    assert main(["site", "init", "--from-net", str(net), "--out", str(tmp_path / "s"), "--site", "pilot",
                 "--hours", "1"]) == 0
    code, findings, report = check_site_folder(tmp_path / "s")
    assert code in (0, 1), findings
    site = load_site(tmp_path / "s")
    assert site.name == "pilot" and len(site.controller_ids) == 4
    assert (tmp_path / "s" / "model" / "demand.rou.xml").exists()


def test_a_broken_site_is_refused_with_the_file_named(tmp_path, capsys):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site, ignore=shutil.ignore_patterns(".state"))
    schedule = json.loads((site / "schedules" / "j2.json").read_text())
    schedule["periods"][1]["plan"]["phases"][0]["phaseYellowChange"] = 1.0  # an unsafe fallback
    (site / "schedules" / "j2.json").write_text(json.dumps(schedule))
    code, findings, _ = check_site_folder(site)
    assert code == 2 and any("schedules/j2" in f.where and "YELLOW" in f.message for f in findings)
    (site / "specs" / "j3.json").write_text("{")
    assert main(["site", "check", str(site)]) == 2
    assert "specs/j3.json" in capsys.readouterr().out


def test_engineer_commands_need_a_running_centre(tmp_path, capsys):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site, ignore=shutil.ignore_patterns(".state"))
    assert main(["bounds", "set", "j1", "--site", str(site), "--max-cycle", "90", "--timeout", "1"]) == 3
    assert "is 'traffic serve' running" in capsys.readouterr().err
    assert main(["bounds", "set", "nope", "--site", str(site), "--timeout", "1"]) == 2
