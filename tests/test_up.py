"""``traffic up``: the whole stack of a site as supervised processes (issue 13 B).

It starts (embedded broker and database, two ingest workers, the twin, the
centre, one agent per controller), reports every process healthy, sees
plans applied, restarts a SIGKILLed ingest worker, and on Ctrl-C stops
everything: no process of the site is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_services_e2e import make_site, wait_for  # the fast site and the poll helper

pytestmark = [pytest.mark.slow, pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.sumo]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{entry.name}: {cmd[:200]}")
    return found


def test_up_starts_restarts_a_killed_worker_and_stops_everything(tmp_path, site):
    site_dir = make_site(tmp_path / "site", site)
    up_json = site_dir / ".state" / "run" / "up.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFIC_")}
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--site", str(site_dir), "--workers", "2",
                             "--speed", "5", "--status-every", "1", "--first-epoch-after", "20"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    status: dict = {}
    try:
        def read() -> dict:
            try:
                return json.loads(up_json.read_text())
            except (OSError, ValueError):
                return {}

        def healthy() -> bool:
            nonlocal status
            status = read()
            rows = status.get("processes") or []
            return len(rows) == 2 + 1 + 1 + 3 and all(r["healthy"] for r in rows)

        wait_for("every process healthy", healthy, 180)
        assert status["broker_pid"] and status["database_pid"], "embedded broker and database expected"

        def central() -> bool:
            rows = read().get("processes") or []
            return all("central plan" in r["detail"] or r["detail"].startswith("central")
                       for r in rows if r["name"].startswith("field-"))

        wait_for("plans applied in every field", central, 120)

        victim = next(r for r in status["processes"] if r["name"] == "ingest-1")
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> bool:
            row = next(r for r in read().get("processes", []) if r["name"] == "ingest-1")
            return row["restarts"] >= 1 and row["pid"] not in (None, victim["pid"]) and row["healthy"]

        wait_for("the killed worker restarted and healthy", restarted, 60)
        status = read()
        pids = [r["pid"] for r in status["processes"]] + [status["broker_pid"], status["database_pid"]]

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(90) == 0
        left = [p for p in pids if _alive(p)]
        assert not left, f"processes left behind: {left}"
        assert not _processes_mentioning(str(site_dir)), _processes_mentioning(str(site_dir))
        assert read().get("stopped") is True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        print((tmp_path / "up.log").read_text()[-3000:])
