"""SUMO's own actuated control on a network's existing phases.

The ``actuated`` baseline must differ from ``static`` only in *how long*
each green lasts, not in which movements run together, so the program is the
network's own (same phase sequence, same yellow and red intervals) with
``type="actuated"`` and a duration range on every green stage. SUMO then
places its own loops on the incoming lanes and extends a green while
vehicles keep arriving within the gap (``max-gap``), up to ``maxDur``.

Range of a green stage whose static duration is ``d``: ``minDur = min(d,
min_green_s)`` (never longer than the approved green, so short protected
stages stay short) and ``maxDur = max(d, max_green_s)`` (SUMO's netconvert
defaults: 5 s and 50 s). Change intervals (yellow, red) keep their fixed
durations.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from traffic.errors import ScenarioError
from traffic.signals import GREEN_CHARS

log = logging.getLogger(__name__)

PROGRAM_ID = "traffic-actuated"
DEFAULT_MIN_GREEN_S = 5.0
DEFAULT_MAX_GREEN_S = 50.0
_CHANGE = frozenset("yYu")


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


def actuated_additional(net_file: Path, out_path: Path, *, min_green_s: float = DEFAULT_MIN_GREEN_S,
                        max_green_s: float = DEFAULT_MAX_GREEN_S, max_gap_s: float = 3.0) -> Path:
    """Write an additional file turning every static TLS program of ``net_file`` into an actuated one.

    Loaded after the network, its programs (id ``traffic-actuated``) become
    the active ones. A TLS whose programs are all actuated already keeps
    them. Returns ``out_path``.
    """
    if not 0 < min_green_s <= max_green_s:
        raise ScenarioError(f"need 0 < min_green_s <= max_green_s, got {min_green_s}, {max_green_s}")
    try:
        root = ET.parse(net_file).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ScenarioError(f"cannot read network {net_file}: {exc}") from exc
    chosen: dict[str, ET.Element] = {}
    for logic in root.iter("tlLogic"):
        tls_id = logic.get("id", "")
        # the network's own program: the first static one by programID (as simulation.network maps it)
        if logic.get("type", "static") != "static":
            continue
        if tls_id not in chosen or logic.get("programID", "") < chosen[tls_id].get("programID", ""):
            chosen[tls_id] = logic
    if not chosen:
        # every program is already actuated (an OSM import's default): SUMO's actuated control on the
        # network's own phases is then exactly what the network runs; nothing to add
        log.info("network %s has no static traffic-light program: its own (actuated) programs stay", net_file)
    out = ET.Element("additional")
    for tls_id in sorted(chosen):
        src = chosen[tls_id]
        logic = ET.SubElement(out, "tlLogic", id=tls_id, type="actuated", programID=PROGRAM_ID,
                              offset=src.get("offset", "0"))
        ET.SubElement(logic, "param", key="max-gap", value=_fmt(max_gap_s))
        for phase in src.iter("phase"):
            state = phase.get("state", "")
            try:
                duration = float(phase.get("duration", "0"))
            except ValueError as exc:
                raise ScenarioError(f"TLS {tls_id}: bad phase duration {phase.get('duration')!r}") from exc
            attrs = {"duration": _fmt(duration), "state": state}
            if set(state) & GREEN_CHARS and not set(state) & _CHANGE:
                attrs["minDur"] = _fmt(min(duration, min_green_s))
                attrs["maxDur"] = _fmt(max(duration, max_green_s))
            if phase.get("name"):
                attrs["name"] = phase.get("name", "")
            ET.SubElement(logic, "phase", attrs)
    ET.indent(out)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(out).write(out_path, encoding="UTF-8", xml_declaration=True)
    return out_path
