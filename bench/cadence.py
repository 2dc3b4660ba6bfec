"""Decision cadence and the split of work between centre and field, measured (issue #14).

``python bench/cadence.py [--scenarios corridor,corridor@1.3,spider,cologne3] [--cadences 600,120,60,field]
[--seeds 1,2,3] [--json OUT]``

The centre re-plans every ``control.epoch_s`` from the last epoch's counts
(cycle, splits as green targets, maximum greens); between plans the field
runs free-mode actuation inside that envelope (gap-out, gap reduction after
the planned green, dynamic max, phase choice by waiting lanes). This bench
runs ``adaptive`` with the centre re-planning every 600, 120 or 60 s, and
``field``: the centre's start-up envelope only (its floor values, no counts
ever), so the field decides alone. Same clearance policy, seeds and
scenarios for every row; mean delay (RESCO definition) and the centre's
optimizer time per run. One run at a time in this process (libsumo).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from statistics import fmean

from app.sim_adaptive import run_adaptive
from simulation.scenario import Scenario
from traffic.config import load_settings

try:  # run as `python -m bench.cadence` or as `python bench/cadence.py`
    from bench.control import SHARED, _scenarios, policy_line
    from bench.networks import NETWORKS
    from bench.networks import scenarios as network_scenarios
except ImportError:  # pragma: no cover - script mode
    from control import SHARED, _scenarios, policy_line
    from networks import NETWORKS
    from networks import scenarios as network_scenarios

log = logging.getLogger("bench.cadence")

#: "field": the centre plans once, at start-up, from no counts (its floors): the field decides alone
FIELD_ONLY = "field"


def _load(names: list[str], workdir: Path) -> dict[str, Scenario]:
    generated = [n for n in names if n in NETWORKS]
    out = network_scenarios(generated, workdir) if generated else {}
    rest = [n for n in names if n not in NETWORKS]
    if rest:
        out.update(_scenarios(rest, SHARED, workdir))
    return {n: out[n] for n in names}


def run(scenarios: dict[str, Scenario], cadences: list[str], seeds: list[int], workdir: Path) -> list[dict]:
    base = load_settings()
    rows = []
    for name, scenario in scenarios.items():
        for cadence in cadences:
            epoch = scenario.end - scenario.begin + 1 if cadence == FIELD_ONLY else int(cadence)
            settings = replace(base, control=replace(base.control, epoch_s=epoch))
            delays, optimizer = [], []
            for seed in seeds:
                report: dict = {}
                kpis = run_adaptive(scenario, seed=seed, settings=settings, report=report,
                                    workdir=workdir / f"{name}-{cadence}-{seed}")
                delays.append(kpis.mean_delay_s)
                optimizer.append(float(report.get("optimizer_s", 0.0)))
                sys.stderr.write(f"{name:14s} {cadence:>6s} seed {seed}: {kpis.mean_delay_s:.1f} s\n")
            rows.append({"scenario": name, "cadence": cadence, "seeds": seeds, "delays": delays,
                         "optimizer_s": optimizer})
    return rows


def table(rows: list[dict]) -> str:
    cadences = list(dict.fromkeys(r["cadence"] for r in rows))
    head = ("| network | " + " | ".join(f"every {c} s" if c != FIELD_ONLY else "field alone" for c in cadences)
            + " |")
    lines = [head, "|" + "---|" * (1 + len(cadences))]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        cells = []
        for c in cadences:
            r = next((x for x in rows if x["scenario"] == name and x["cadence"] == c), None)
            cells.append("-" if r is None else f"{fmean(r['delays']):.1f} ({fmean(r['optimizer_s']):.2f} s opt)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="corridor,corridor@1.3,spider,cologne3")
    parser.add_argument("--cadences", default=f"600,120,60,{FIELD_ONLY}")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traffic-bench-cadence-"))
    names = [n for n in args.scenarios.split(",") if n]
    cadences = [c for c in args.cadences.split(",") if c]
    bad = [c for c in cadences if c != FIELD_ONLY and not c.isdigit()]
    if bad:
        parser.error(f"cadences are seconds or '{FIELD_ONLY}', got {bad}")
    rows = run(_load(names, workdir), cadences, [int(s) for s in args.seeds.split(",") if s], workdir)
    sys.stdout.write(f"{policy_line()}; mean delay s over seeds {args.seeds} (centre optimizer time per run)\n\n"
                     + table(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
