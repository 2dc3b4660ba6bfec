"""``traffic site check``: how every signal of a SUMO network is mapped, and what to look at before trusting it.

A city brings its own SUMO model. Before any control runs on it, a traffic
engineer needs to see, per signal: the phases (stages) taken from the
approved program, the signal groups, the detectors placed, the conflict
model (conflicts, foes, foes the junction resolves and how), and every
finding in plain words. The exit code says whether the site is usable:
0 usable, 1 usable with findings (warnings, or signals left on their own
program), 2 unusable (nothing the project can control, or the input cannot
be read).

Accepts a ``.net.xml`` (optionally ``.gz``), a ``.sumocfg``, or a folder
holding one ``.sumocfg`` (a site folder's SUMO model).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traffic.errors import ScenarioError
from traffic.intersection import Corridor, FindingLevel, IntersectionSpec, SignalFinding

#: exit codes of ``traffic site check``
USABLE, USABLE_WITH_FINDINGS, UNUSABLE = 0, 1, 2


@dataclass(frozen=True)
class SiteReport:
    """What ``traffic site check`` found: the mapped signals and the findings, or why nothing could be mapped."""

    source: str
    corridor: Corridor | None
    error: str = ""
    detectors_placed: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        if self.corridor is None or not self.corridor.intersections:
            return UNUSABLE
        if any(f.level in (FindingLevel.WARNING, FindingLevel.UNCONTROLLED) for f in self.corridor.findings):
            return USABLE_WITH_FINDINGS
        return USABLE

    @property
    def verdict(self) -> str:
        return {USABLE: "usable", USABLE_WITH_FINDINGS: "usable with findings", UNUSABLE: "unusable"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        corridor = self.corridor
        return {
            "source": self.source,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "error": self.error,
            "detectors_placed": self.detectors_placed,
            "signals": [_signal_dict(s, corridor) for s in corridor.intersections] if corridor else [],
            "uncontrolled": list(corridor.uncontrolled) if corridor else [],
            "findings": [f.to_dict() for f in corridor.findings] if corridor else [],
            "links": [list(link) for link in corridor.links] if corridor else [],
        }


def _signal_dict(spec: IntersectionSpec, corridor: Corridor | None) -> dict[str, Any]:
    return {
        "tls_id": spec.tls_id,
        "controller_id": spec.controller_id,
        "signal_groups": spec.link_count,
        "phases": [{"phase": p.phase, "greens": p.greens, "min_split_s": p.min_split_s, "yellow_s": p.yellow_s,
                    "red_clear_s": p.red_clear_s, "ped_crossing_m": p.ped_crossing_m} for p in spec.phases],
        "detectors": len(spec.detectors),
        "conflicts": len(spec.conflicts),
        "foes": len(spec.foes),
        "resolved_foes": sorted(list(p) for p in spec.resolved_foes),
        "findings": [f.to_dict() for f in (corridor.findings if corridor else ()) if f.tls_id == spec.tls_id],
    }


def check_site(path: Path, *, pedestrians: str = "auto") -> SiteReport:
    """Map the network at ``path`` (net, sumocfg or folder) and collect the findings; never raises on bad input."""
    from simulation.network import corridor_from_net, missing_loops
    from simulation.scenario import find_sumocfg, load_scenario

    path = Path(path)
    if not path.exists():
        return SiteReport(str(path), None, error=f"{path} does not exist")
    try:
        if path.is_file() and (path.name.endswith(".net.xml") or path.name.endswith(".net.xml.gz")):
            corridor = corridor_from_net(path, site="site", pedestrians=pedestrians)
            return SiteReport(str(path), corridor, detectors_placed=missing_loops(corridor, ()))
        cfg = find_sumocfg(path)
        with tempfile.TemporaryDirectory(prefix="traffic-site-check-") as tmp:
            scenario = load_scenario(cfg, detectors_dir=Path(tmp), pedestrians=pedestrians)
            placed = missing_loops(scenario.corridor, tuple(p for p in scenario.additional_files
                                                              if not str(p).startswith(tmp)))
        return SiteReport(str(cfg), scenario.corridor, detectors_placed=placed)
    except ScenarioError as exc:
        return SiteReport(str(path), None, error=str(exc))


def render(report: SiteReport) -> str:
    """Plain-text report: one block per signal, then the signals left on their own program, then the verdict."""
    lines = [f"site check: {report.source}"]
    corridor = report.corridor
    if corridor is None:
        lines.append(f"  cannot map: {report.error}")
        lines.append("verdict: unusable (exit 2)")
        return "\n".join(lines)
    by_tls: dict[str, list[SignalFinding]] = {}
    for f in corridor.findings:
        by_tls.setdefault(f.tls_id, []).append(f)
    for spec in corridor.intersections:
        lines.append(f"\n{spec.tls_id} -> controller {spec.controller_id}")
        lines.append(f"  {len(spec.phases)} phases over {spec.link_count} signal groups; "
                     f"{len(spec.detectors)} detectors; conflict model: {len(spec.conflicts)} conflicts, "
                     f"{len(spec.foes)} foes, {len(spec.resolved_foes)} resolved by the junction")
        for p in spec.phases:
            lines.append(f"    phase {p.phase}: {p.greens}  min split {p.min_split_s:.1f} s "
                         f"(yellow {p.yellow_s:.1f} + red {p.red_clear_s:.1f})"
                         + (f", crossing {p.ped_crossing_m:.0f} m" if p.ped_crossing_m else ""))
        for f in by_tls.get(spec.tls_id, []):
            lines.append(f"  {f.level}: {f.rule}: {f.message}" + (f" -> {f.advice}" if f.advice else ""))
    left = [f for f in corridor.findings if f.level == FindingLevel.UNCONTROLLED]
    if left:
        lines.append("\nleft on their own program (not controlled):")
        for f in left:
            lines.append(f"  {f.tls_id}: {f.rule}: {f.message}" + (f" -> {f.advice}" if f.advice else ""))
    if report.detectors_placed:
        lines.append(f"\n{report.detectors_placed} approach lanes had no loop: the project places one 40 m "
                     "before the stop line (advance loops upstream of short lanes)")
    lines.append(f"\n{len(corridor.intersections)} controlled, {len(corridor.uncontrolled)} on their own program")
    lines.append(f"verdict: {report.verdict} (exit {report.exit_code})")
    return "\n".join(lines)


def _cmd_site_check(args: argparse.Namespace) -> int:
    report = check_site(args.path, pedestrians=args.pedestrians)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=1) + "\n")
    else:
        sys.stdout.write(render(report) + "\n")
    return report.exit_code


def add_check_command(site_subparsers: argparse._SubParsersAction) -> None:
    """Register ``check`` under ``traffic site``."""
    check = site_subparsers.add_parser("check", help="map a SUMO network's signals and list every finding "
                                                      "(exit 0 usable, 1 with findings, 2 unusable)")
    check.add_argument("path", type=Path, help=".net.xml, .sumocfg, or a folder holding one .sumocfg")
    check.add_argument("--pedestrians", choices=("auto", "assume", "none"), default="auto")
    check.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    check.set_defaults(func=_cmd_site_check)


def add_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Register ``traffic site check``; returns the ``site`` subparsers so other ``site`` commands can join."""
    site = subparsers.add_parser("site", help="check (and build) a site's SUMO model and signal mapping")
    site_sub = site.add_subparsers(dest="site_command", required=True)
    add_check_command(site_sub)
    return site_sub
