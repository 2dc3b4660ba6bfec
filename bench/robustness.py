"""Every control on every network of the robustness corpus: does it run to the end?

``python bench/robustness.py --corpus DIR [--controls ...] [--seeds 1] [--only a,b] [--levels moderate]
[--processes 2] [--json OUT]``

Build the corpus first (``python bench/corpus.py build --out DIR``). Each
(network, control, seed) runs in its own process; a run that raises is
recorded with its message, not allowed to stop the table. The table prints,
per network and control: completed (runs that reached the end), crashed
(with the first error), how many signals were left on their own program
(the project could not control them; ``traffic site check`` says why), and
the mean delay (RESCO definition, undeparted vehicles charged).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

CONTROLS = ("static", "actuated", "actuated-safe", "max-pressure", "max-pressure-resco", "adaptive")


def _one(cfg: str, control: str, seed: int, workdir: str) -> dict[str, Any]:
    """One run in a worker process; never raises (the table records the failure)."""
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    out: dict[str, Any] = {"control": control, "seed": seed}
    try:
        import app.sim_adaptive  # noqa: F401 - the composition root: ``adaptive`` and the safety check
        from simulation.controls import control as control_fn
        from simulation.scenario import load_scenario

        work = Path(workdir)
        scenario = load_scenario(Path(cfg), detectors_dir=work / "detectors")
        out["signals"] = len(scenario.corridor.intersections)
        # signals with a choice to make (two green stages or more): none, and every field-safe control is the same
        out["deciding_signals"] = sum(1 for spec in scenario.corridor.intersections if len(spec.phases) >= 2)
        out["own_program"] = list(scenario.corridor.uncontrolled)
        kpis = control_fn(control)(scenario, seed, scenario.begin, scenario.end, work / f"{control}-seed{seed}")
        out.update(ok=True, delay=kpis.mean_delay_s, undeparted=kpis.undeparted, vehicles=kpis.vehicles)
    except BaseException as exc:  # noqa: BLE001 - the bench reports every failure
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:400],
                   where=traceback.format_exc(limit=-3)[-600:])
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="folder built by bench/corpus.py")
    parser.add_argument("--controls", default=",".join(CONTROLS))
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--only", default="")
    parser.add_argument("--levels", default="")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="reprint the tables from earlier --json outputs (later files replace a network's "
                             "runs of the same control); runs nothing")
    args = parser.parse_args(argv)
    controls = [c for c in args.controls.split(",") if c]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.merge:
        merged = merge_results([json.loads(p.read_text()) for p in args.merge])
        sys.stdout.write(table(merged, controls) + "\n")
        seeds = sorted({int(r["seed"]) for runs in merged.values() for r in runs if "seed" in r}) or seeds
        goals = goals14(merged, seeds)
        if goals:
            sys.stdout.write("\n" + goals + "\n")
        return 0
    entries = json.loads((args.corpus / "corpus.json").read_text())
    only = {n for n in args.only.split(",") if n}
    levels = {lv for lv in args.levels.split(",") if lv}
    entries = [e for e in entries if (not only or e["name"] in only) and (not levels or e["level"] in levels
                                                                          or e["level"] == "own")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="traffic-robustness-"))
    jobs = []
    for e in entries:
        label = f"{e['name']}/{e['level']}"
        for c in controls:
            for s in seeds:
                jobs.append((label, e["sumocfg"], c, s, str(workdir / label.replace("/", "-") / f"{c}-{s}")))
    results: dict[str, list[dict[str, Any]]] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.processes, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_one, cfg, c, s, wd): label for label, cfg, c, s, wd in jobs}
        for n, fut in enumerate(as_completed(futures), 1):
            label = futures[fut]
            try:
                r = fut.result()
            except BaseException as exc:  # noqa: BLE001 - a worker that died
                r = {"ok": False, "error": f"worker died: {type(exc).__name__}: {exc}"[:300], "control": "?"}
            results.setdefault(label, []).append(r)
            state = f"{r['delay']:.1f} s" if r.get("ok") else r.get("error", "")[:120]
            sys.stderr.write(f"[{n}/{len(jobs)}] {label} {r.get('control')} seed {r.get('seed')}: {state}\n")
            if args.json:  # after every run: a long corpus run stopped early keeps what it measured
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(table(results, controls) + "\n")
    goals = goals14(results, seeds)
    if goals:
        sys.stdout.write("\n" + goals + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def merge_results(docs: list[dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Several runs' results as one: per network, a later document's run of a (control, seed) replaces an
    earlier one; other seeds pool (seed 1 from one file and seeds 2-3 from another make seeds 1-3)."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        for label, runs in doc.items():
            replaced = {(r.get("control"), r.get("seed")) for r in runs}
            kept = [r for r in merged.get(label, []) if (r.get("control"), r.get("seed")) not in replaced]
            merged[label] = kept + list(runs)
    return merged


def goals14(results: dict[str, list[dict[str, Any]]], seeds: list[int]) -> str:
    """Issue #14's goals table over the networks where every run of a control completed."""
    try:
        from bench.control import goals14_table
    except ImportError:  # pragma: no cover - script mode
        from control import goals14_table
    delays: dict[str, dict[str, float]] = {}
    undeparted: dict[str, dict[str, list[int]]] = {}
    per_seed: dict[str, list[float]] = {}
    for label in sorted(results):
        by: dict[str, list[dict[str, Any]]] = {}
        for r in results[label]:
            by.setdefault(r.get("control", "?"), []).append(r)
        for control, runs in by.items():
            if runs and all(r.get("ok") for r in runs):
                runs = sorted(runs, key=lambda r: r.get("seed", 0))
                delays.setdefault(label, {})[control] = sum(r["delay"] for r in runs) / len(runs)
                undeparted.setdefault(label, {})[control] = [int(r.get("undeparted", 0)) for r in runs]
                if control == "adaptive":
                    per_seed[label] = [float(r["delay"]) for r in runs]
    no_decision = {label for label, runs in results.items()
                   if any(r.get("deciding_signals") == 0 for r in runs)}
    return goals14_table(delays, undeparted, seeds=",".join(map(str, seeds)), no_decision=no_decision,
                         per_seed=per_seed)


def table(results: dict[str, list[dict[str, Any]]], controls: list[str]) -> str:
    """Markdown: per network, per control, ``delay`` or ``CRASH``; plus signals left on their own program."""
    head = "| network | signals | own program | " + " | ".join(controls) + " |"
    lines = [head, "|" + "---|" * (3 + len(controls))]
    totals = {c: [0, 0] for c in controls}
    for label in sorted(results):
        runs = results[label]
        signals = next((r["signals"] for r in runs if "signals" in r), "?")
        own = next((len(r["own_program"]) for r in runs if "own_program" in r), "?")
        cells = []
        for c in controls:
            mine = [r for r in runs if r.get("control") == c]
            ok = [r for r in mine if r.get("ok")]
            totals[c][0] += len(ok)
            totals[c][1] += len(mine)
            if mine and len(ok) == len(mine):
                cells.append(f"{sum(r['delay'] for r in ok) / len(ok):.1f}")
            elif mine:
                cells.append(f"CRASH {len(mine) - len(ok)}/{len(mine)}")
            else:
                cells.append("-")
        lines.append(f"| {label} | {signals} | {own} | " + " | ".join(cells) + " |")
    lines.append("| **completed** | | | " + " | ".join(f"{a}/{b}" for a, b in totals.values()) + " |")
    errors = sorted({f"{label} {r.get('control')}: {r['error']}" for label, runs in results.items() for r in runs
                     if not r.get("ok")})
    if errors:
        lines += ["", "Failures:", *(f"- {e}" for e in errors)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
