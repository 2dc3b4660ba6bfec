"""A SUMO scenario as the rest of the system sees it.

A :class:`Scenario` bundles the files SUMO needs (config, network, demand,
additional files) with the :class:`~traffic.intersection.Corridor` mapped from
the network, and the options every run of it must use (for example the
sublane resolution the demand was tuned with). It is built either by
:func:`simulation.corridor.generate_corridor` or by :func:`load_scenario` for
any existing ``.sumocfg``.
"""

from __future__ import annotations

import logging
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from simulation.network import corridor_from_net, missing_loops, write_detectors_additional
from traffic.clearance import ClearancePolicy
from traffic.errors import ScenarioError
from traffic.intersection import Corridor

log = logging.getLogger(__name__)

#: Options every batch run uses on top of a scenario's own. Teleporting is off
#: so gridlock shows up as delay and undeparted vehicles instead of vanishing.
BASE_OPTIONS: tuple[str, ...] = ("--time-to-teleport", "-1")


@dataclass(frozen=True)
class Scenario:
    """Files and mapping of one SUMO scenario (paths are absolute)."""

    sumocfg: Path
    net_file: Path
    route_files: tuple[Path, ...]
    additional_files: tuple[Path, ...]
    begin: int
    end: int
    corridor: Corridor
    sumo_options: tuple[str, ...] = ()


def _values(input_el: ET.Element | None, name: str, base: Path) -> tuple[Path, ...]:
    if input_el is None:
        return ()
    el = input_el.find(name)
    if el is None or not el.get("value"):
        return ()
    return tuple((base / part.strip()).resolve() for part in el.get("value", "").split(",") if part.strip())


def _time(root: ET.Element, name: str, default: int) -> int:
    el = root.find(f"time/{name}")
    if el is None or el.get("value") is None:
        return default
    raw = el.get("value", "")
    try:
        if ":" in raw:  # SUMO also accepts h:m:s
            parts = [float(p) for p in raw.split(":")]
            seconds = 0.0
            for p in parts:
                seconds = seconds * 60 + p
            return int(seconds)
        return int(float(raw))
    except ValueError as exc:
        raise ScenarioError(f"time/{name}: cannot read {raw!r}") from exc


def find_sumocfg(path: Path) -> Path:
    """The ``.sumocfg`` at ``path`` (a file, or a folder holding exactly one preferred config)."""
    path = Path(path)
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        configs = sorted(path.glob("*.sumocfg"))
        if not configs:
            raise ScenarioError(f"no .sumocfg in {path}")
        if len(configs) > 1:
            log.info("several configs in %s, using %s", path, configs[0].name)
        return configs[0].resolve()
    raise ScenarioError(f"scenario {path} does not exist")


def site_clearance() -> ClearancePolicy:
    """The site's clearance policy from the configuration (``[clearance]``, ``TRAFFIC_CLEARANCE_*``)."""
    from traffic.config import load_settings

    return load_settings().clearance.to_policy()


def load_scenario(path: Path, *, site: str = "hanoi", detectors_dir: Path | None = None,
                  sumo_options: tuple[str, ...] = (), pedestrians: str = "auto",
                  clearance: ClearancePolicy | None = None) -> Scenario:
    """Read a ``.sumocfg`` (or a folder holding one) into a :class:`Scenario`.

    The network is mapped with :func:`simulation.network.corridor_from_net`
    (``pedestrians``: ``auto`` times the crossings the network models,
    ``assume`` also estimated crosswalks where people cross unmodelled, as on
    the generated Hanoi corridor; ``none`` for what-if runs).
    When the scenario has no usable induction loops on signalised approaches,
    detectors are placed automatically and written to
    ``detectors_dir/detectors.add.xml`` (a fresh temporary folder when not
    given, so a read-only scenario is never modified); that file is added to
    the scenario's additional files so SUMO and the field world see the same
    loops, named ``<controller_id>.<detector_id>``.
    """
    cfg = find_sumocfg(path)
    try:
        root = ET.parse(cfg).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ScenarioError(f"cannot read {cfg}: {exc}") from exc
    base = cfg.parent
    input_el = root.find("input")
    nets = _values(input_el, "net-file", base)
    if len(nets) != 1:
        raise ScenarioError(f"{cfg}: expected exactly one net-file, found {len(nets)}")
    routes = _values(input_el, "route-files", base)
    additionals = _values(input_el, "additional-files", base)
    for f in (*nets, *routes, *additionals):
        if not f.exists():
            raise ScenarioError(f"{cfg}: referenced file {f} does not exist")
    begin = _time(root, "begin", 0)
    end = _time(root, "end", 3600)
    corridor = corridor_from_net(nets[0], site=site, additional_files=additionals, name=cfg.stem,
                                 pedestrians=pedestrians).with_clearance(clearance or site_clearance())
    missing = missing_loops(corridor, additionals)
    if missing:
        out_dir = Path(detectors_dir) if detectors_dir else Path(tempfile.mkdtemp(prefix="traffic-det-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        det_file = write_detectors_additional(corridor, out_dir / "detectors.add.xml", net_file=nets[0])
        additionals = (*additionals, det_file.resolve())
        log.info("wrote %d detector loops for %s to %s", missing, cfg.name, det_file)
    return Scenario(sumocfg=cfg, net_file=nets[0], route_files=routes, additional_files=additionals,
                    begin=begin, end=end, corridor=corridor, sumo_options=tuple(sumo_options))


def write_sumocfg(path: Path, *, net: Path, routes: Sequence[Path], additionals: Sequence[Path], end_s: int,
                  processing: Mapping[str, str]) -> Path:
    """Write a ``.sumocfg`` that runs ``net`` with ``routes`` and ``additionals`` from 0 to ``end_s``.

    Files are referenced by name (they sit beside the config), ``processing``
    holds SUMO's processing options (``time-to-teleport`` and friends), and
    the step log is off: the one writer for the generated corridor and the
    benchmark networks, so every generated scenario reads the same way.
    """
    root = ET.Element("configuration")
    inp = ET.SubElement(root, "input")
    ET.SubElement(inp, "net-file", value=Path(net).name)
    ET.SubElement(inp, "route-files", value=",".join(Path(r).name for r in routes))
    ET.SubElement(inp, "additional-files", value=",".join(Path(a).name for a in additionals))
    t = ET.SubElement(root, "time")
    ET.SubElement(t, "begin", value="0")
    ET.SubElement(t, "end", value=str(end_s))
    proc = ET.SubElement(root, "processing")
    for key, value in processing.items():
        ET.SubElement(proc, key, value=value)
    report = ET.SubElement(root, "report")
    ET.SubElement(report, "no-step-log", value="true")
    ET.indent(root)
    path = Path(path)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path
