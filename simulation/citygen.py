"""Generated cities: a signalised ``netgenerate`` grid with ``randomTrips`` demand.

For city-scale measurements (``bench/city.py``) and the executor and
partition tests: every junction is a traffic light (a 25 x 25 grid is 625
signals, the size of Hanoi's signalised network), every border junction gets
an attached entry/exit road so it is a four-leg intersection like the rest,
and the demand is explicit vehicle routes (``randomTrips.py -r``, routed by
``duarouter``), which ``cutRoutes.py`` can cut into regions.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from simulation.binaries import sumo_binary, sumo_home, sumo_tool
from traffic.errors import SimulationError


@dataclass(frozen=True)
class City:
    """Files of a generated city (absolute paths)."""

    folder: Path
    sumocfg: Path
    net_file: Path
    route_file: Path
    signals: int
    begin: int
    end: int


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    env = {"SUMO_HOME": str(sumo_home()), "PATH": f"{Path(sumo_binary('sumo')).parent}:/usr/bin:/bin"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SimulationError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def write_sumocfg(path: Path, net_file: str, route_files: str, begin: int, end: int, additional: str = "") -> Path:
    """A minimal ``.sumocfg`` naming files relative to its folder."""
    root = ET.Element("configuration")
    inp = ET.SubElement(root, "input")
    ET.SubElement(inp, "net-file", value=net_file)
    ET.SubElement(inp, "route-files", value=route_files)
    if additional:
        ET.SubElement(inp, "additional-files", value=additional)
    time_el = ET.SubElement(root, "time")
    ET.SubElement(time_el, "begin", value=str(begin))
    ET.SubElement(time_el, "end", value=str(end))
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def grid_city(folder: Path, *, n: int = 25, length_m: float = 200.0, lanes: int = 2, end: int = 600,
              period_s: float = 0.1, fringe_factor: float = 5.0, seed: int = 42, name: str = "city") -> City:
    """Write an ``n`` x ``n`` signalised grid with random-trip routes over ``[0, end)`` to ``folder``.

    ``period_s``: one new trip every ``period_s`` seconds (0.5: 7,200 veh/h
    into the whole city), from fringe to fringe mostly (fringe factor 10),
    trips of at least 600 m. Deterministic for a given ``seed``.
    """
    if n < 2:
        raise SimulationError("a grid city needs n >= 2")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / f"{name}.net.xml"
    routes = folder / f"{name}.rou.xml"
    if not net.exists():
        _run([sumo_binary("netgenerate"), "--grid", "--grid.number", str(n), "--grid.length", str(length_m),
              "--grid.attach-length", str(length_m / 2), "--default.lanenumber", str(lanes),
              "--default-junction-type", "traffic_light", "--tls.guess", "false", "--no-turnarounds", "true",
              "--tls.default-type", "static", "--seed", str(seed), "-o", str(net)], "netgenerate", folder)
    if not routes.exists():
        trips = folder / f"{name}.trips.xml"
        _run([sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net), "-b", "0", "-e", str(end),
              "-p", str(period_s), "--fringe-factor", str(fringe_factor), "--min-distance", "600", "--seed", str(seed),
              "-o", str(trips), "-r", str(routes), "--validate", "--remove-loops"], "randomTrips", folder)
        for extra in folder.glob(f"{name}.rou.alt.xml"):
            extra.unlink()
    cfg = write_sumocfg(folder / f"{name}.sumocfg", net.name, routes.name, 0, end)
    signals = sum(1 for _ev, el in ET.iterparse(net, events=("end",)) if el.tag == "tlLogic")
    return City(folder=folder, sumocfg=cfg, net_file=net, route_file=routes, signals=signals, begin=0, end=end)
