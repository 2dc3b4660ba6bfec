"""``traffic report``: HTML with PNG figures, opened in headless Chromium without console errors."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from app import report
from tests.test_dashboards_atspm import SPEC, T0, twin_dsn  # noqa: F401  (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _write(dsn: str, out: Path) -> Path:
    corridor = report.Corridor(cycle_s=80.0, speed_mps=12.5, bandwidth_s=18.0, bandwidth_inbound_s=12.0, links=(
        report.CorridorLink("c1", 0.0, 0.0, 0.0, 26.0), report.CorridorLink("c2", 300.0, 24.0, 0.0, 26.0),
        report.CorridorLink("c3", 650.0, 52.0, 0.0, 26.0)))
    before_after = {"c1": {"fixed-time": 42.0, "adaptive": 31.5}, "c2": {"fixed-time": 38.0, "adaptive": 30.1}}
    return report.write_report(dsn, out, ["c1"], T0, T0 + timedelta(minutes=30), corridor=corridor,
                               before_after=before_after)


def test_report_has_every_figure(twin_dsn, tmp_path):  # noqa: F811
    path = _write(twin_dsn, tmp_path)
    text = path.read_text()
    phases = {p.phase for p in SPEC.phases}
    for phase in phases:
        assert f"alt='PCD phase {phase}'" in text
    for title in ("Split monitor", "Time-space diagram", "Before/after delay"):
        assert f"alt='{title}'" in text
    assert text.count("data:image/png;base64,") == len(phases) + 3
    pngs = sorted(tmp_path.glob("fig-*.png"))
    assert len(pngs) == len(phases) + 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "ATSPM measures, 15-minute bins" in text and "Communications" in text


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_console_errors(twin_dsn, tmp_path):  # noqa: F811
    path = _write(twin_dsn, tmp_path / "report")
    probe = tmp_path / "probe.html"
    # The report page is loaded in an iframe-free way: dump the DOM after load and read the console log.
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert dom.count("class=\"figure\"") == len(SPEC.phases) + 3
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "error" in line.lower()], console
    del probe
