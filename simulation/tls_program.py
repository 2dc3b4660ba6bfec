"""Timing plans as SUMO ``tlLogic`` programs.

The intervals come from :func:`traffic.signals.cycle_intervals`, the very
function the field emulator drives its heads with, so SUMO shows exactly the
states and durations the field would. The NTCIP offset is turned into SUMO's
``offset`` with :func:`traffic.signals.cycle_start_offset`: SUMO starts a
static program's first phase at simulation times ``offset + k * cycle``
(checked by ``tests/test_simulation_tls.py`` through libsumo), which is the
field's "first interval starts ``cycle_start_offset`` after the cycle
reference" when the reference is simulation time 0.

At SUMO's 1 s step an interval of fractional length is shown for whole
steps, some shorter and some longer (a 3.3 s yellow: 3 s two times in
three, 4 s the third), its mean kept: the same as the field emulators'
intervals, timed in tenths and sampled each second, are shown (see
docs/performance.md, session 14).

A ``tlLogic`` with a new ``programID`` in an additional file becomes the
active program when SUMO loads it (the last loaded program wins), so a run
only needs the extra file.

Plans the field runs actuated (``mode`` ``actuated`` or ``free``) become
SUMO ``type="actuated"`` programs: each green gets ``minDur`` = the plan's
minimum green (at least walk + pedestrian clearance where pedestrians are
served) and ``maxDur`` = ``phaseMaximum1``, with the plan's passage time as
SUMO's ``max-gap``; change intervals stay fixed. SUMO's gap-out logic is not
the emulator's (no phase skipping, no coordination), so the gate judges an
actuated plan on an approximation of its field behaviour, which is closer
than running its splits fixed-time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from traffic.errors import SimulationError
from traffic.plan import PlanMode, TimingPlan
from traffic.signals import KIND_GREEN, cycle_intervals, cycle_start_offset

DEFAULT_PROGRAM_ID = "traffic"
ACTUATED_MODES = (PlanMode.ACTUATED, PlanMode.FREE)


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}"


def tllogic_element(plan: TimingPlan, tls_id: str, program_id: str) -> ET.Element:
    """The ``<tlLogic>`` element for ``plan`` (see module docstring)."""
    if not tls_id:
        raise SimulationError("tls_id must not be empty")
    if not program_id:
        raise SimulationError("program_id must not be empty")
    intervals = cycle_intervals(plan)
    if not intervals:
        raise SimulationError(f"plan {plan.plan_id} of {plan.controller_id} has no intervals")
    total = round(sum(i.duration for i in intervals), 1)
    if abs(total - plan.patternCycleTime) > 0.05:
        raise SimulationError(
            f"plan {plan.plan_id}: intervals sum to {total} s but patternCycleTime is {plan.patternCycleTime} s")
    offset = round(cycle_start_offset(plan), 1)
    actuated = plan.mode in ACTUATED_MODES
    logic = ET.Element("tlLogic", id=tls_id, type="actuated" if actuated else "static", programID=program_id,
                       offset=_fmt(offset))
    if actuated:
        passages = [p.phasePassage for p in plan.phases if p.phasePassage > 0]
        ET.SubElement(logic, "param", key="max-gap", value=_fmt(min(passages) if passages else 3.0))
    for interval in intervals:
        attrs = {"duration": _fmt(interval.duration), "state": interval.state,
                 "name": f"p{interval.phase}-{interval.kind}"}
        if actuated and interval.kind == KIND_GREEN:
            timing = plan.phase(interval.phase)
            min_green = max(timing.phaseMinimumGreen, timing.phaseWalk + timing.phasePedestrianClear)
            max_green = max(min_green, timing.phaseMaximum1)
            attrs.update(minDur=_fmt(min_green), maxDur=_fmt(max_green),
                         duration=_fmt(min(max(interval.duration, min_green), max_green)))
        ET.SubElement(logic, "phase", **attrs)
    return logic


def plan_to_tllogic_xml(plan: TimingPlan, tls_id: str, program_id: str = DEFAULT_PROGRAM_ID) -> str:
    """One ``<tlLogic>`` (as XML text) that runs ``plan`` on SUMO TLS ``tls_id`` (static or actuated by mode)."""
    element = tllogic_element(plan, tls_id, program_id)
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


def write_plans_additional(plans: Mapping[str, TimingPlan], path: Path,
                           program_id: str = DEFAULT_PROGRAM_ID) -> Path:
    """Write an additional file whose programs replace the network's for every TLS in ``plans``.

    ``plans`` is keyed by SUMO tls id (``IntersectionSpec.tls_id``).
    """
    root = ET.Element("additional")
    for tls_id in sorted(plans):
        root.append(tllogic_element(plans[tls_id], tls_id, program_id))
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path
