"""`traffic demo` end to end, as a user runs it: private broker and cluster, JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_writes_the_summary_and_leaves_no_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFIC_")}
    env.update(TRAFFIC_STATE_DIR=str(tmp_path / "state"), TRAFFIC_CONTROL_EPOCH_S="300",
               TRAFFIC_CONTROL_GATE_HORIZON_S="300", TRAFFIC_CONTROL_GATE_SEEDS="1", COLUMNS="200")
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--minutes", "15", "--intersections", "3",
                           "--json", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    for key in ("mean_delay_s", "mean_stops", "throughput_veh_h", "completed"):
        assert summary["baseline"][key] >= 0 and summary["adaptive"][key] >= 0
    assert summary["adaptive"]["completed"] > 100
    assert summary["plans"]["dispatched"] >= 3
    assert summary["plans"]["acknowledged"] == summary["plans"]["dispatched"]
    stored = summary["baseline"]["records_stored"] + summary["adaptive"]["records_stored"]
    assert summary["records_stored"] == stored > 0
    assert "Fixed-time plan vs closed loop" in proc.stdout and "Where the data lives" in proc.stdout
    assert (tmp_path / "state" / "grafana").is_dir()
    # the private services are gone: nothing still runs out of this state folder
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "state") not in ps
