"""``traffic report``: a self-contained HTML report with PNG figures for engineers.

Per intersection: the Purdue Coordination Diagram of each phase, the split
monitor, and a table of every 15-minute ATSPM measure; per corridor: a
time-space diagram with the green bands and the bandwidth the optimizer
computed, and before/after delay per intersection. Figures are PNG (matplotlib,
Agg backend), embedded as data URIs, so the one HTML file opens anywhere.

Dashboards do not import the controller: bandwidth and before/after numbers
come in as plain data (:class:`Corridor`, ``before_after``), wired by the
composition root (the CLI).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sensors.atspm.store import measures_between  # noqa: E402
from traffic.errors import ConfigError  # noqa: E402

log = logging.getLogger(__name__)

BIN = timedelta(minutes=15)   # the measures' bin (sensors.atspm Params.bin_minutes)
TERMINATION_COLOURS = {"gap_out": "#2ca02c", "max_out": "#d62728", "force_off": "#1f77b4", None: "#7f7f7f"}


@dataclass(frozen=True)
class CorridorLink:
    """One intersection on the time-space diagram: position, offset, coordinated green."""

    controller_id: str
    position_m: float
    offset_s: float
    green_start_s: float     # within the cycle, from the offset reference
    green_s: float
    cycle_s: float | None = None   # this signal's own cycle when it differs from the corridor's (no band then)


@dataclass(frozen=True)
class Corridor:
    cycle_s: float
    speed_mps: float
    links: tuple[CorridorLink, ...]
    bandwidth_s: float | None = None           # outbound, from controller/bandwidth.py
    bandwidth_inbound_s: float | None = None
    note: str = ""                              # where the plans and bands came from (the figure's caption)


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Page:
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pcd_figure(cycles: Sequence[Any], arrivals: Sequence[tuple[datetime, float]], phase: int, title: str) -> bytes:
    """PCD: x = cycle start, y = seconds in cycle; green band, yellow line, arrivals as dots."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for c in cycles:
        if c.next_green is None:
            continue
        length = (c.next_green - c.green_start).total_seconds()
        green = c.green_s or 0.0
        width = max(length / 86400.0, 1e-6)
        ax.bar(c.green_start, green, width=width * 0.95, bottom=0, color="#b7e4c7", align="edge", linewidth=0)
        if c.yellow_start is not None and c.red_start is not None:
            y0 = (c.yellow_start - c.green_start).total_seconds()
            y1 = (c.red_start - c.green_start).total_seconds()
            ax.bar(c.green_start, y1 - y0, width=width * 0.95, bottom=y0, color="#ffe066", align="edge", linewidth=0)
        ax.plot([c.green_start, c.next_green], [length, length], color="#c92a2a", linewidth=0.8)
    if arrivals:
        ax.scatter([a[0] for a in arrivals], [a[1] for a in arrivals], s=4, color="black", zorder=3, label="arrival")
    ax.set_ylabel("seconds in cycle (from begin green)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.autofmt_xdate()
    return _png(fig)


def split_monitor_figure(cycles: Sequence[Any], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    phases = sorted({c.phase for c in cycles})
    markers = "osd^v<>p*h"
    for i, phase in enumerate(phases):
        for term, colour in TERMINATION_COLOURS.items():
            pts = [(c.green_start, c.split_s) for c in cycles if c.phase == phase and c.termination == term
                   and c.split_s is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color=colour,
                           marker=markers[i % len(markers)], label=f"phase {phase} {term or 'fixed'}")
    ax.set_ylabel("split (s): begin green to end of red clearance")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=6, ncol=2)
    fig.autofmt_xdate()
    return _png(fig)


def time_space_figure(corridor: Corridor, cycles: int = 3) -> bytes:
    """Intersections along the corridor, green windows per cycle, and the outbound band at the design speed."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    horizon = cycles * max([corridor.cycle_s, *(lk.cycle_s or 0.0 for lk in corridor.links)])
    for link in corridor.links:
        own = link.cycle_s or corridor.cycle_s
        ax.plot([0, horizon], [link.position_m] * 2, color="#c92a2a", linewidth=3, solid_capstyle="butt")
        for k in range(-1, int(horizon // own) + 2):
            start = link.offset_s + link.green_start_s + k * own
            if start + link.green_s > 0 and start < horizon:
                ax.plot([max(0, start), min(horizon, start + link.green_s)], [link.position_m] * 2,
                        color="#2b8a3e", linewidth=3, solid_capstyle="butt")
        label = link.controller_id + (f" ({own:.0f} s)" if link.cycle_s else "")
        ax.annotate(label, (horizon, link.position_m), textcoords="offset points", xytext=(4, -3),
                    ha="left", fontsize=7, annotation_clip=False)
    first, last = (corridor.links[0], corridor.links[-1]) if corridor.links else (None, None)
    span = (last.position_m - first.position_m) if first is not None else 0.0
    for width, outbound, colour, style in ((corridor.bandwidth_s, True, "#1c7ed6", "-"),
                                           (corridor.bandwidth_inbound_s, False, "#e8590c", "--")):
        if not width or first is None or span <= 0:
            continue
        t0, fits = _band_start(corridor, outbound)
        if fits <= 0:  # the offsets give no band this way (the stated width does not fit the greens drawn)
            continue
        ends = ([first.position_m, last.position_m] if outbound else [last.position_m, first.position_m])
        for k in range(-1, cycles + 1):
            for edge in (0.0, width):
                s = t0 + edge + k * corridor.cycle_s
                ax.plot([s, s + span / corridor.speed_mps], ends, color=colour, linewidth=0.9, linestyle=style)
    ax.set_xlim(0, horizon)
    ax.set_xlabel("time from the cycle reference (s)")
    ax.set_ylabel("distance along the corridor (m)")
    bw = (f"outbound bandwidth {corridor.bandwidth_s:.1f} s" if corridor.bandwidth_s is not None
          else "no common cycle, no band")
    if corridor.bandwidth_inbound_s is not None:
        bw += f", inbound {corridor.bandwidth_inbound_s:.1f} s"
    cyc = ("each signal on its own cycle" if any(lk.cycle_s for lk in corridor.links)
           else f"cycle {corridor.cycle_s:.0f} s")
    ax.set_title(f"Time-space diagram, {cyc}, {corridor.speed_mps * 3.6:.0f} km/h: {bw}")
    return _png(fig)


def _band_start(corridor: Corridor, outbound: bool) -> tuple[float, float]:
    """When the widest band leaves the first signal of its direction (s on the diagram's clock).

    Each green, moved back by the travel time from the direction's first
    signal, is a window on that signal's clock; the widest common part starts
    where some window starts (as ``controller.bandwidth.measured_bands``), so
    the band drawn lies inside every green it crosses. Returns that start
    and the widest width found (<= 0: no band through every green).
    """
    links = list(corridor.links) if outbound else list(reversed(corridor.links))
    c = corridor.cycle_s
    origin = links[0].position_m
    starts = [(lk.offset_s + lk.green_start_s - abs(lk.position_m - origin) / corridor.speed_mps) % c
              for lk in links]
    best, best_start = -math.inf, starts[0]
    for sj in starts:
        width = min(lk.green_s - ((sj - si) % c if (sj - si) % c < c - 1e-6 else 0.0)
                    for lk, si in zip(links, starts, strict=True))
        if width > best:
            best, best_start = width, sj
    return best_start, best


def before_after_figure(rows: Mapping[str, Mapping[str, float]], title: str) -> bytes:
    """Grouped bars: mean delay (s/veh) per intersection for each run (demo, sim run, replay ...)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    runs = list(dict.fromkeys(r for per in rows.values() for r in per))   # as given: "before" first
    names = sorted(rows)
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        ax.bar([k + i * width for k in range(len(names))], [rows[n].get(run, 0.0) for n in names], width=width,
               label=run)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, rotation=30, fontsize=7)
    ax.set_ylabel("mean delay (s/veh)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def intersection_page(dsn: str, device_id: str, start: datetime, end: datetime) -> Page:
    """PCD per phase, split monitor and the 15-minute measures of one intersection."""
    from sensors._conn import connection
    from sensors.atspm.store import CONTEXT, load_detectors, load_events

    m = measures_between(dsn, device_id, start, end)
    with connection(dsn, "report events") as conn:
        dets = load_detectors(conn, device_id)
        events = load_events(conn, device_id, start - CONTEXT, end + CONTEXT)
    page = Page(f"Intersection {device_id}")
    cycles = [c for c in m.cycles if start <= c.green_start < end]
    advance = defaultdict(set)
    for d in dets:
        if "advance" in d.functions:
            advance[d.phase].add(d.channel)
    for phase in sorted({c.phase for c in cycles}):
        pc = [c for c in cycles if c.phase == phase and c.next_green is not None]
        arrivals = []
        for c in pc:
            arrivals += [(c.green_start, (e.ts - c.green_start).total_seconds()) for e in events
                         if e.code == 82 and e.param in advance[phase] and c.green_start <= e.ts < c.next_green]
        aog = sum(c.arrivals_on_green for c in pc)
        total = sum(c.arrivals for c in pc)
        share = f"{100.0 * aog / total:.0f} % arrivals on green" if total else "no arrivals"
        page.figures.append(Figure(f"PCD phase {phase}", pcd_figure(pc, arrivals, phase,
                                   f"{device_id} phase {phase}: Purdue Coordination Diagram ({share})"),
                                   f"{len(pc)} cycles, {total} arrivals, {share}"))
    if cycles:
        page.figures.append(Figure("Split monitor", split_monitor_figure(cycles, f"{device_id}: split monitor"),
                                   "colour = termination (gap-out green, max-out red, force-off blue, grey fixed)"))
    header = ["bin", "phase", "volume veh/h", "AoG %", "delay s/veh", "split failures", "green occ", "red occ",
              "services", "mean split s", "gap/max/force", "yellow/red act.", "ped walks/calls", "ped delay s"]
    rows = []
    for (b, phase), v in sorted(m.phase.items()):
        if not start - BIN < b < end:   # every bin that overlaps the window
            continue
        rows.append([b.strftime("%H:%M") + ("*" if b < start or b + BIN > end else ""), phase, v.arrivals * 4,
                     f"{100 * v.arrivals_on_green / v.arrivals:.0f}" if v.arrivals else "",
                     f"{v.total_delay_s / v.arrivals:.1f}" if v.arrivals else "",
                     f"{v.split_failures}/{v.sf_cycles}" if v.sf_cycles else "",
                     f"{v.green_occupancy_sum / v.sf_cycles:.2f}" if v.sf_cycles else "",
                     f"{v.red_occupancy_sum / v.sf_cycles:.2f}" if v.sf_cycles else "",
                     v.services, f"{v.split_s_sum / v.services:.1f}" if v.services else "",
                     f"{v.gap_outs}/{v.max_outs}/{v.force_offs}", f"{v.yellow_actuations}/{v.red_actuations}",
                     f"{v.ped_services}/{v.ped_actuations}",
                     f"{v.ped_delay_s_sum / v.ped_delay_samples:.1f}" if v.ped_delay_samples else ""])
    page.tables.append(("ATSPM measures, 15-minute bins (* bin only partly inside the window: counts of the part)",
                        header, rows))
    comm = [[b.strftime("%H:%M") + ("*" if b < start or b + BIN > end else ""), v.events, "yes" if v.has_data else "NO", f"{v.max_gap_s:.1f}"]
            for b, v in sorted(m.device.items()) if start - BIN < b < end]
    page.tables.append(("Communications", ["bin", "events", "has data", "longest silence s"], comm))
    return page


def render_html(pages: Sequence[Page], title: str) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "section{page-break-after:always;margin-bottom:2em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><nav><ul>"]
    parts += [f"<li><a href='#p{i}'>{html.escape(p.title)}</a></li>" for i, p in enumerate(pages)]
    parts.append("</ul></nav>")
    for i, page in enumerate(pages):
        parts.append(f"<section id='p{i}'><h2>{html.escape(page.title)}</h2>")
        for fig in page.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<figure><img class='figure' alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
        for caption, header, rows in page.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3><table><tr>"
                         + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(dsn: str, out_dir: Path, controllers: Sequence[str], start: datetime, end: datetime, *,
                 corridor: Corridor | None = None,
                 before_after: Mapping[str, Mapping[str, float]] | None = None,
                 before_after_note: str = "") -> Path:
    """Write ``out_dir/index.html`` (and the PNGs beside it); return the HTML path."""
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ConfigError(f"report range must be aware and non-empty: {start} .. {end}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = [intersection_page(dsn, cid, start, end) for cid in controllers]
    if corridor is not None or before_after:
        page = Page("Corridor")
        if corridor is not None:
            page.figures.append(Figure("Time-space diagram", time_space_figure(corridor),
                                       "green: coordinated green per intersection; blue (outbound) and orange "
                                       "dashed (inbound): the bands at the corridor speed"
                                       + (f". {corridor.note}" if corridor.note else "")))
        if before_after:
            runs = list(dict.fromkeys(r for per in before_after.values() for r in per))  # "before" first
            page.figures.append(Figure("Before/after delay", before_after_figure(before_after,
                                       "Mean delay per intersection by run"),
                                       "runs: " + ", ".join(runs) + (f". {before_after_note}" if before_after_note
                                                                     else "")))
            rows = []
            for cid in sorted(before_after):
                per = before_after[cid]
                vals = [per.get(r) for r in runs]
                change = ""
                if len(runs) == 2 and vals[0] and vals[1] is not None:
                    change = f"{100.0 * (vals[1] - vals[0]) / vals[0]:+.1f} %"
                rows.append([cid, *("" if v is None else f"{v:.1f}" for v in vals), change])
            page.tables.append(("Mean delay per intersection (s/veh)", ["controller", *runs,
                                f"change ({runs[-1]} vs {runs[0]})" if len(runs) == 2 else ""], rows))
        pages.append(page)
    for i, page in enumerate(pages):
        for j, fig in enumerate(page.figures):
            (out_dir / f"fig-{i:02d}-{j:02d}.png").write_bytes(fig.png)
    path = out_dir / "index.html"
    path.write_text(render_html(pages, f"Signal performance {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC"))
    log.info("report written to %s", path)
    return path


def add_commands(subparsers: Any) -> None:
    """Register ``traffic report`` (the composition root calls this; it wires the DSN from settings)."""
    p = subparsers.add_parser("report", help="HTML report with ATSPM figures (PCD, split monitor, ...)")
    p.add_argument("--controller", action="append", default=[], help="controller id (repeatable)")
    p.add_argument("--corridor", action="store_true", help="every controller with events, plus corridor figures")
    p.add_argument("--from", dest="start", required=True, type=datetime.fromisoformat, help="ISO time with offset")
    p.add_argument("--to", dest="end", required=True, type=datetime.fromisoformat, help="ISO time with offset")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--before-after", type=Path, default=None, metavar="JSON",
                   help="per-intersection delay by run: a `traffic demo --json` summary or {controller: {run: s}}")
    p.set_defaults(report_handler=run_command)


def run_command(args: Any, dsn: str, *, corridor: Corridor | None = None,
                before_after: Mapping[str, Mapping[str, float]] | None = None,
                before_after_note: str = "") -> Path:
    """What ``traffic report`` runs once the CLI has the DSN (and, for --corridor, the bandwidth data)."""
    controllers = list(args.controller)
    if args.corridor:
        from sensors._conn import connection
        from sensors.atspm.store import devices
        with connection(dsn, "report devices") as conn:
            controllers = sorted(set(controllers) | set(devices(conn)))
    if not controllers:
        raise ConfigError("report needs --controller ID or --corridor")
    return write_report(dsn, args.out, controllers, args.start, args.end, corridor=corridor, before_after=before_after,
                        before_after_note=before_after_note)
