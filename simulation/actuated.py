"""SUMO's own actuated control, and fixed time, on a network's existing phases.

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

The ``static`` baseline is the mirror (:func:`fixed_time_additional`): a
network whose own programs are actuated (an OSM import's default, the
wheel's DRT town) runs them at their phases' ``duration``, so "fixed time"
is fixed time on every network. Until session 14 such a network ran its
programs as SUMO's actuated control on its own 3 s yellows and no all-red
under the name ``static``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from traffic.errors import ScenarioError
from traffic.signals import GREEN_CHARS

log = logging.getLogger(__name__)

PROGRAM_ID = "traffic-actuated"
FIXED_PROGRAM_ID = "traffic-fixed"
#: SUMO program types that decide their own green lengths (``static`` runs each phase for its duration)
_SELF_TIMED = frozenset({"actuated", "delay_based"})
DEFAULT_MIN_GREEN_S = 5.0
DEFAULT_MAX_GREEN_S = 50.0
_CHANGE = frozenset("yYu")


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


def _network_root(net_file: Path) -> ET.Element:
    try:
        return ET.parse(net_file).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ScenarioError(f"cannot read network {net_file}: {exc}") from exc


def _write(additional: ET.Element, out_path: Path) -> Path:
    ET.indent(additional)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(additional).write(out_path, encoding="UTF-8", xml_declaration=True)
    return out_path


def actuated_additional(net_file: Path, out_path: Path, *, min_green_s: float = DEFAULT_MIN_GREEN_S,
                        max_green_s: float = DEFAULT_MAX_GREEN_S, max_gap_s: float = 3.0) -> Path:
    """Write an additional file turning every static TLS program of ``net_file`` into an actuated one.

    Loaded after the network, its programs (id ``traffic-actuated``) become
    the active ones. A TLS whose programs are all actuated already keeps
    them. Returns ``out_path``.
    """
    if not 0 < min_green_s <= max_green_s:
        raise ScenarioError(f"need 0 < min_green_s <= max_green_s, got {min_green_s}, {max_green_s}")
    root = _network_root(net_file)
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
    return _write(out, out_path)


def fixed_time_additional(net_file: Path, out_path: Path) -> Path | None:
    """Write an additional file running every self-timed program of ``net_file`` as fixed time.

    For each TLS whose first program (by programID) is ``actuated`` or
    ``delay_based``, a copy of it with ``type="static"`` (id
    ``traffic-fixed``): the same phases in the same order, each lasting its
    ``duration``; SUMO makes the last program loaded the active one. A NEMA
    program has no phase sequence to copy and keeps running (logged).
    Returns ``out_path``, or None when every program is static already (no
    file is written: the run is the network's own, byte for byte).
    """
    first: dict[str, ET.Element] = {}
    for logic in _network_root(net_file).iter("tlLogic"):
        tls_id = logic.get("id", "")
        if tls_id not in first or logic.get("programID", "") < first[tls_id].get("programID", ""):
            first[tls_id] = logic
    out = ET.Element("additional")
    for tls_id in sorted(first):
        src = first[tls_id]
        kind = src.get("type", "static")
        if kind == "static":
            continue
        if kind not in _SELF_TIMED:
            log.warning("TLS %s: its %s program has no fixed phase sequence; it keeps running as is", tls_id, kind)
            continue
        logic = ET.SubElement(out, "tlLogic", id=tls_id, type="static", programID=FIXED_PROGRAM_ID,
                              offset=src.get("offset", "0"))
        for phase in src.iter("phase"):
            attrs = {"duration": phase.get("duration", "0"), "state": phase.get("state", "")}
            if phase.get("name"):
                attrs["name"] = phase.get("name", "")
            ET.SubElement(logic, "phase", attrs)
    if not len(out):
        return None
    log.info("network %s: %d self-timed program(s) run as fixed time", net_file, len(out))
    return _write(out, out_path)
