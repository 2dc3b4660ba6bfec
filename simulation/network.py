"""Map a SUMO network's traffic lights to controllers, phases and detectors.

Every traffic light system (TLS) becomes an
:class:`~traffic.intersection.IntersectionSpec` without hand-written data:

* **phases** are the green stages of the network's own static program (the
  approved program): states without yellow that show at least one green.
  Consecutive stages that differ only in pedestrian-crossing signals (SUMO's
  pedestrian clearance stage) are merged, because in the plan model the
  pedestrian walk and clearance run *inside* the phase's green.
* **foes** come from the junction's ``<request>`` bit strings (the rightmost
  bit is link 0), translated from junction link indices to TLS link indices
  through the connections; **conflicts** are the foe pairs that the approved
  program never shows green together, so a permissive left turn (``g`` with
  opposing ``G``) is a foe but not a conflict.
* **clearance width** is the larger side of the junction shape's bounding box
  (stop line to far side, conservative for every movement).
* **pedestrian crossing length**: pedestrian timing applies where the
  scenario says pedestrians cross. With modelled crossings (SUMO crossings
  and their signals), the longest crossing whose green ends with the phase
  (its clearance must fit in that phase). A network without modelled
  crossings gets no pedestrian timing (``pedestrians="auto"``, the default):
  nobody walks in that scenario, and assuming walkers would impose walk +
  clearance minimum greens and periodic pedestrian service that no one
  uses. A generator or deployment that *knows* pedestrians cross but does
  not model them passes ``pedestrians="assume"``: pedestrians then walk
  beside a protected through movement, across an arm whose traffic is red
  and into which only right-turners (who yield) drive; the length is that
  arm's incoming plus outgoing vehicle lanes times their widths, and each
  arm's crosswalk is served once per cycle, by the eligible phase with the
  longest green in the approved program. Protected-left stages serve none.
  ``pedestrians="none"`` drops pedestrian timing even where crossings are
  modelled (what-if studies only). This is geometry input, not tuning.
* **detectors** are the scenario's E1 loops on lanes feeding the TLS, or, if a
  lane has none, a loop placed 40 m before the stop line (mid-lane on a lane
  too short for that). Real advance loops sit at a distance from the stop
  line wherever SUMO happens to split an edge at a geometry node, so for a
  short lane the placement also walks upstream over its predecessor lanes
  while the chain is unambiguous (the lane has exactly one incoming lane and
  that lane feeds only it; the walk stops at a signalised junction, the
  network boundary, a merge or a split) and adds an **advance loop** 40 m
  along the chain (half-way along a chain shorter than that), which measures
  the queue and the arrivals rather than the cars leaving. The short lane
  keeps its own loop: vehicles stored between the advance loop and the stop
  line must still call and extend their phase (locking calls clear when the
  phase starts; a protected left is called by a turner standing on a loop);
  moving the loop instead starved such lanes (cologne3, ingolstadt1 gridlocked).
  ``DetectorSpec.lane_id`` is the lane the loop sits on. An advance loop on
  an upstream lane has no ``edge_id`` (and is no ``entry``): it counts the
  vehicles the short lane's own loop counts, and the demand and calibration
  code add lane counts up per edge (with its own edge it would count that
  lane twice; with the upstream edge it would make a partly covered edge
  look complete). :func:`stopline_path` recovers the stop-line lane from a
  loop's lane.
  :func:`write_detectors_additional` writes the loops for SUMO with the ids
  ``<controller_id>.<detector_id>`` the field world uses, at their position
  on their own lane.
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from traffic.errors import ScenarioError
from traffic.intersection import (
    Corridor,
    DetectorSpec,
    FindingLevel,
    IntersectionSpec,
    PhaseSpec,
    SignalFinding,
)

log = logging.getLogger(__name__)

DETECTOR_DISTANCE_M = 40.0
#: a lane must be this much longer than DETECTOR_DISTANCE_M to hold the loop itself (else walk upstream)
DETECTOR_MARGIN_M = 5.0
#: most lanes a loop placement walks upstream (geometry nodes), and a bound on the reverse walk
MAX_CHAIN_LANES = 32
_SIGNAL_NODE_TYPES = frozenset({"traffic_light", "traffic_light_unregulated", "traffic_light_right_on_red",
                                "rail_signal", "rail_crossing"})
LOOP_PERIOD_S = 60
MAX_LINK_SEARCH_M = 2000.0
#: values of ``corridor_from_net(pedestrians=...)``: where pedestrian timing applies
PEDESTRIAN_CHOICES = ("auto", "assume", "none")
DEFAULT_LANE_WIDTH_M = 3.2
_GREEN = frozenset("Gg")
_NOT_GREEN_STAGE = frozenset("yYu")  # yellow or red-yellow: a change interval, not a stage
_RANK = {"G": 2, "g": 1, "r": 0}
#: SUMO connection directions of a turning movement (left, partly left, right, partly right, U-turn)
_TURNS = frozenset("lLrRt")
_DETECTOR_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # same rule as traffic.topics.check_id


def sanitize_id(raw: str) -> str:
    """A valid topic level (``traffic.topics.check_id``) derived from a SUMO id.

    Lowercase, anything outside ``[a-z0-9_-]`` becomes ``_``; ids longer than
    64 characters are cut and suffixed with a short hash so they stay unique.
    """
    text = re.sub(r"[^a-z0-9_-]", "_", raw.lower()).strip("_-") or "tls"
    if not text[0].isalnum():
        text = "t" + text
    if len(text) > 64:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        text = text[:55].rstrip("_-") + "_" + digest
    return text


def loop_id(controller_id: str, detector_id: str) -> str:
    """SUMO induction-loop id for a controller's detector (what the field world reads)."""
    return f"{controller_id}.{detector_id}"


@dataclass(frozen=True)
class _Loop:
    sumo_id: str
    lane: str
    pos: float  # from lane start, already resolved for negative values


def _read_loops(additional_files: Iterable[Path], lane_lengths: dict[str, float]) -> list[_Loop]:
    loops: list[_Loop] = []
    for f in additional_files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as exc:
            raise ScenarioError(f"cannot read additional file {f}: {exc}") from exc
        for el in root.iter():
            if el.tag not in ("inductionLoop", "e1Detector"):
                continue
            lane = el.get("lane", "")
            if lane not in lane_lengths:
                continue
            try:
                pos = float(el.get("pos", "0"))
            except ValueError as exc:
                raise ScenarioError(f"{f}: loop {el.get('id')} has bad pos {el.get('pos')!r}") from exc
            length = lane_lengths[lane]
            if pos < 0:
                pos += length
            loops.append(_Loop(el.get("id", ""), lane, min(max(pos, 0.0), length)))
    return loops


def _read_net(net_file: Path):
    import sumolib  # local import: sumolib is heavy and only needed here

    if not Path(net_file).exists():
        raise ScenarioError(f"network {net_file} does not exist")
    try:
        return sumolib.net.readNet(str(net_file), withInternal=True, withPedestrianConnections=True,
                                   withPrograms=True)
    except Exception as exc:  # sumolib raises bare exceptions / SAX errors
        raise ScenarioError(f"cannot read network {net_file}: {exc}") from exc


def _programs(tls) -> list[list[tuple[float, str]]]:
    """The network's own program first (the first static one by programID: netconvert writes "0"), then the
    TLS's other static programs (an external controller may switch between them)."""
    programs = tls.getPrograms()
    if not programs:
        raise ScenarioError(f"TLS {tls.getID()} has no program in the network")
    static = [programs[pid] for pid in sorted(programs) if programs[pid].getType() == "static"]
    chosen = static[0] if static else programs[sorted(programs)[0]]
    others = [prog for prog in static if prog is not chosen]
    return [[(float(p.duration), p.state) for p in prog.getPhases()] for prog in (chosen, *others)]


def stages_over_programs(programs: Sequence[Sequence[tuple[float, str]]], ped_links: frozenset[int],
                         vehicle_links: frozenset[int]) -> tuple[list[tuple[str, float]], int]:
    """Green stages of the signal's design: its own program's, completed from its other programs.

    Some networks run each stage as a program of its own and switch programs
    from outside (one long phase per program, e.g. Braunschweig's
    ``cluster_104171179_...``: four programs of one 1000 s stage). The first
    program alone then leaves movements red for ever, under every control.
    When the first program never releases a vehicle link that another static
    program of the same signal releases, the other programs' distinct stages
    join the design (in programID order); otherwise the first program is the
    design, as before. Returns the stages and how many programs they came from.
    """
    if not programs:
        return [], 0
    stages = green_stages(programs[0], ped_links)
    served = {i for greens, _ in stages for i, c in enumerate(greens) if c in _GREEN}
    if not (vehicle_links - served) or len(programs) < 2:
        return stages, 1
    used = 1
    length = len(programs[0][0][1]) if programs[0] else 0
    for other in programs[1:]:
        if any(len(state) != length for _, state in other):
            continue
        added = False
        for greens, duration in green_stages(other, ped_links):
            if all(greens != g for g, _ in stages):
                stages.append((greens, duration))
                added = True
        used += int(added)
    return stages, used


def all_red_seconds(program: Sequence[tuple[float, str]], vehicle_links: frozenset[int]) -> float:
    """Seconds per program cycle in which every vehicle signal shows red (closure, metering, a scramble).

    Yellow intervals do not count (they are the change into that red).
    """
    total = 0.0
    for duration, state in program:
        signals = [state[i] for i in vehicle_links if i < len(state)]
        if signals and all(c in "rs" for c in signals):
            total += duration
    return total


def _normalise(state: str) -> str:
    return "".join(c if c in _RANK else "r" for c in state)


def green_stages(program: Sequence[tuple[float, str]], ped_links: frozenset[int]) -> list[tuple[str, float]]:
    """Green stages of a SUMO program: (greens, longest green s), crossings-only changes merged.

    A stage is a state with at least one ``G``/``g`` and no yellow. Two
    consecutive stages whose vehicle signals are equal are one stage (SUMO's
    pedestrian clearance split); the merged greens take the stronger signal
    per link. A last stage equal to the first (wrap-around) is dropped.
    """
    stages: list[tuple[str, float]] = []
    for duration, raw in program:
        if not (set(raw) & _GREEN) or set(raw) & _NOT_GREEN_STAGE:
            continue
        state = _normalise(raw)
        if stages:
            prev, prev_d = stages[-1]
            if len(prev) == len(state) and all(a == b for i, (a, b) in enumerate(zip(prev, state, strict=False))
                                               if i not in ped_links):
                merged = "".join(a if _RANK[a] >= _RANK[b] else b for a, b in zip(prev, state, strict=False))
                stages[-1] = (merged, prev_d + duration)
                continue
        stages.append((state, duration))
    if len(stages) > 1 and stages[-1][0] == stages[0][0]:
        stages[0] = (stages[0][0], stages[0][1] + stages[-1][1])
        stages.pop()
    return stages


class _TlsView:
    """Everything about one TLS the mapping needs, read once from sumolib."""

    def __init__(self, tls) -> None:
        self.tls = tls
        self.tls_id: str = tls.getID()
        self.links: dict[int, list] = defaultdict(list)   # tls index -> [Connection]
        self.ped_links: set[int] = set()
        self.nodes: dict[str, object] = {}
        for in_lane, out_lane, index in tls.getConnections():
            conn = next((c for c in in_lane.getOutgoing() if c.getToLane() == out_lane), None)
            if conn is None:
                continue
            self.links[index].append(conn)
            if out_lane.getEdge().getFunction() == "crossing":
                self.ped_links.add(index)
            node = in_lane.getEdge().getToNode()
            self.nodes[node.getID()] = node
        if not self.links:
            raise ScenarioError(f"TLS {self.tls_id} controls no connections")
        self.link_count = max(self.links) + 1
        # junction link index per connection (for <request> foes)
        self.junction_index: dict[int, list[tuple[str, int]]] = defaultdict(list)
        #: per TLS index: (connection, junction id, junction link index), for the per-connection foe analysis
        self.junction_links: dict[int, list[tuple[object, str, int]]] = defaultdict(list)
        for index, conns in self.links.items():
            for conn in conns:
                node = conn.getFromLane().getEdge().getToNode()
                j = node.getLinkIndex(conn)
                if j >= 0:
                    self.junction_index[index].append((node.getID(), j))
                    self.junction_links[index].append((conn, node.getID(), j))

    def vehicle_links(self, index: int) -> list:
        return [] if index in self.ped_links else self.links.get(index, [])

    def foes(self) -> frozenset[tuple[int, int]]:
        pairs: set[tuple[int, int]] = set()
        indices = sorted(self.junction_index)
        for a_pos, a in enumerate(indices):
            for b in indices[a_pos + 1:]:
                if self._are_foes(a, b):
                    pairs.add((a, b))
        return frozenset(pairs)

    def classify_foe(self, a: int, b: int, greens: Sequence[str] = ()) -> str:
        """How the junction resolves foes ``a`` and ``b`` when both show a protected green.

        * ``merge``: a connection of each ends on the same lane: the streams
          converge and do not cross (SUMO zips them by right of way);
        * ``turn-yield``: the junction's right-of-way table
          (``<request response>``) makes one of them give way, and the one
          that gives way turns (SUMO direction ``l``, ``L``, ``r``, ``R``,
          ``t``): a turn on a green ball that yields by law, as a permissive
          turn does, at the stop line or at a waiting point inside the
          junction;
        * ``ped-yield``: one is a pedestrian crossing: the vehicle movement
          gives way to the people on the crosswalk (by law, and in SUMO's
          model whatever the request table says);
        * ``internal-stop``: the vehicles of one of them wait at a point
          inside the junction that has a signal of its own in the same
          program (SUMO ``linkIndex2``), and in every approved stage
          (``greens``) that shows both protected that inner signal is red:
          the conflict is separated by the signal, further in;
        * ``none``: anything else, above all two straight movements whose
          paths cross. The project refuses to time such a signal.
        """
        kinds: list[str] = []
        for ca, node_a, ja in self.junction_links.get(a, []):
            for cb, node_b, jb in self.junction_links.get(b, []):
                if node_a != node_b:
                    continue
                node = self.nodes[node_a]
                try:
                    if not (node.areFoes(ja, jb) or node.areFoes(jb, ja)):
                        continue
                except (KeyError, IndexError):  # a link without a request row
                    continue
                kinds.append(self._resolve(node, ca, ja, cb, jb))
        if not kinds or "none" in kinds:
            return "none"
        inner = {int(k.split(":", 1)[1]) for k in kinds if k.startswith("internal-stop:")}
        if inner:
            # resolved only if that inner signal holds the vehicles (red) whenever both movements are protected
            together = [g for g in greens if a < len(g) and b < len(g) and g[a] == "G" and g[b] == "G"]
            if any(i >= len(g) or g[i] in _GREEN for g in together for i in inner):
                return "none"
            return "internal-stop"
        return next((k for k in ("ped-yield", "turn-yield") if k in kinds), "merge")

    @staticmethod
    def _resolve(node, ca, ja: int, cb, jb: int) -> str:
        """One pair of foe connections of one junction: merge, ped-yield, turn-yield or none."""
        if ca.getToLane() is cb.getToLane():
            return "merge"
        prohibits = getattr(node, "_prohibits", {})

        def gives_way(y: int, x: int) -> bool:  # does junction link y give way to junction link x?
            response = prohibits.get(y, "")
            return bool(response) and 0 <= x < len(response) and response[-(x + 1)] == "1"

        ped_a, ped_b = _is_pedestrian(ca), _is_pedestrian(cb)
        if ped_a != ped_b:
            # a vehicle movement across a crosswalk that shows walk: the driver yields to the people on it,
            # by law and in SUMO's model (vehicles always give way to persons on a crossing)
            return "ped-yield"
        if ped_a:
            return "merge"  # two crosswalks: people share the space
        if gives_way(jb, ja) and cb.getDirection() in _TURNS:
            return "turn-yield"
        if gives_way(ja, jb) and ca.getDirection() in _TURNS:
            return "turn-yield"
        for conn in (ca, cb):  # a waiting point inside the junction with a signal of its own (linkIndex2)
            inner = conn.getTLLinkIndex2() if hasattr(conn, "getTLLinkIndex2") else -1
            if inner is not None and inner >= 0:
                return f"internal-stop:{inner}"
        return "none"

    def movement(self, index: int) -> str:
        """``from-edge -> to-edge`` of a signal group, for findings a traffic engineer can read."""
        conns = [c for c in self.links.get(index, []) if not c.getFromLane().getEdge().getID().startswith(":")]
        if index in self.ped_links:
            return f"signal group {index} (pedestrian crossing)"
        if not conns:
            return f"signal group {index}"
        moves = sorted({f"{c.getFromLane().getEdge().getID()} -> {c.getToLane().getEdge().getID()}" for c in conns})
        return f"signal group {index} ({', '.join(moves)})"

    def is_rail_only(self) -> bool:
        """All controlled connections are for rail vehicles (a rail signal or crossing, not a road signal)."""
        for conns in self.links.values():
            for conn in conns:
                lane = conn.getFromLane()
                if _is_vehicle_lane(lane) or lane.allows("pedestrian") or lane.allows("bicycle"):
                    return False
        return True

    def _are_foes(self, a: int, b: int) -> bool:
        for node_a, ja in self.junction_index[a]:
            for node_b, jb in self.junction_index[b]:
                if node_a != node_b:
                    continue
                node = self.nodes[node_a]
                # sumolib reads <request foes>, whose bit strings are written with link 0 rightmost
                for x, y in ((ja, jb), (jb, ja)):
                    try:
                        if node.areFoes(x, y):
                            return True
                    except (KeyError, IndexError):  # a link without a request row (e.g. uncontrolled)
                        continue
        return False


def _junction_width(nodes: Iterable) -> float:
    xs: list[float] = []
    ys: list[float] = []
    for node in nodes:
        shape = node.getShape() or [node.getCoord()]
        xs += [p[0] for p in shape]
        ys += [p[1] for p in shape]
    if not xs:
        return 15.0
    return round(max(max(xs) - min(xs), max(ys) - min(ys), 5.0), 1)


def _is_pedestrian(conn) -> bool:
    """A connection people walk (onto or off a crossing or walking area)."""
    return any(lane.getEdge().getFunction() in ("crossing", "walkingarea")
               for lane in (conn.getFromLane(), conn.getToLane()))


def _is_vehicle_lane(lane) -> bool:
    allowed = getattr(lane, "_allowed", None)
    if allowed is not None and len(allowed) > 0 and allowed <= {"pedestrian"}:
        return False
    try:
        return lane.allows("passenger") or lane.allows("motorcycle") or lane.allows("bus")
    except Exception:  # older sumolib without allows()
        return True


def _arms(view: _TlsView) -> dict[tuple[str, str], float]:
    """Arms of the TLS's junctions, keyed by (junction, neighbour node): vehicle-lane width in + out."""
    arms: dict[tuple[str, str], float] = defaultdict(float)
    for node in view.nodes.values():
        for edge in node.getIncoming():
            if not edge.getID().startswith(":"):
                arms[(node.getID(), edge.getFromNode().getID())] += sum(
                    lane.getWidth() for lane in edge.getLanes() if _is_vehicle_lane(lane))
        for edge in node.getOutgoing():
            if not edge.getID().startswith(":"):
                arms[(node.getID(), edge.getToNode().getID())] += sum(
                    lane.getWidth() for lane in edge.getLanes() if _is_vehicle_lane(lane))
    return {k: round(v, 1) for k, v in arms.items() if v > 0}


def _estimated_crossings(view: _TlsView, stages: list[tuple[str, float]]) -> dict[int, float]:
    """Phase index -> length of the crosswalk(s) it serves, for networks without modelled crossings.

    Pedestrians walk beside a protected through movement and cross an arm
    whose own traffic is red and into which no protected movement other than
    a right turn (right-turners yield to pedestrians) is driving. Every arm's
    crosswalk is served once per cycle, by the eligible phase with the longest
    green in the approved program (a controller serves a crosswalk once, not in
    every stage it could).
    """
    arms = _arms(view)
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for index, (greens, duration) in enumerate(stages):
        in_green: set[tuple[str, str]] = set()
        into_blocked: set[tuple[str, str]] = set()
        through = False
        for link, ch in enumerate(greens):
            if ch not in _GREEN:
                continue
            for conn in view.vehicle_links(link):
                edge_in = conn.getFromLane().getEdge()
                edge_out = conn.getToLane().getEdge()
                node = edge_in.getToNode().getID()
                in_green.add((node, edge_in.getFromNode().getID()))
                direction = conn.getDirection()
                if ch == "G" and direction == "s":
                    through = True
                if ch == "G" and direction not in ("r", "R"):
                    into_blocked.add((node, edge_out.getToNode().getID()))
        if not through:
            continue
        for arm in arms:
            if arm in in_green or arm in into_blocked:
                continue
            if arm not in best or duration > best[arm][0]:
                best[arm] = (duration, index)
    out: dict[int, float] = defaultdict(float)
    for arm, (_duration, index) in best.items():
        out[index] = max(out[index], arms[arm])
    return dict(out)


def _modelled_crossings(view: _TlsView, stages: list[tuple[str, float]]) -> dict[int, float]:
    """Phase index -> longest modelled crossing whose green ends with this phase (needs clearance then)."""
    out: dict[int, float] = {}
    for index, (greens, _duration) in enumerate(stages):
        following = stages[(index + 1) % len(stages)][0]
        length = 0.0
        for link in view.ped_links:
            if greens[link] in _GREEN and (following[link] not in _GREEN or len(stages) == 1):
                length = max(length, max(c.getToLane().getLength() for c in view.links[link]))
        if length > 0:
            out[index] = round(length, 1)
    return out


def _phases(view: _TlsView, stages: list[tuple[str, float]], clearance_w: float,
            pedestrians: str) -> tuple[PhaseSpec, ...]:
    out: list[PhaseSpec] = []
    if pedestrians == "none":
        crossings: dict[int, float] = {}
    elif view.ped_links:
        crossings = _modelled_crossings(view, stages)
    elif pedestrians == "assume":
        crossings = _estimated_crossings(view, stages)
    else:  # "auto" and nothing modelled: nobody crosses here
        crossings = {}
    all_speeds = [c.getFromLane().getSpeed() for i in view.links for c in view.vehicle_links(i)]
    several_junctions = len(view.nodes) > 1
    for index, (greens, _duration) in enumerate(stages):
        speeds: list[float] = []
        lanes: set[str] = set()
        nodes: dict[str, object] = {}
        for link, ch in enumerate(greens):
            if ch not in _GREEN:
                continue
            for conn in view.vehicle_links(link):
                lane = conn.getFromLane()
                speeds.append(lane.getSpeed())
                lanes.add(lane.getID())
                if not lane.getEdge().getID().startswith(":"):
                    node = lane.getEdge().getToNode()
                    nodes[node.getID()] = node
        if not speeds:  # a pedestrian-only stage (scramble): clear for the fastest approach
            speeds = [max(all_speeds, default=13.89)]
        width = clearance_w
        if several_junctions and nodes:
            # one program over several junctions (netconvert --tls.join): a released vehicle clears the
            # junction it enters, not the whole group, before the next stop line of the same program
            width = max(_junction_width([n]) for n in nodes.values())
        out.append(PhaseSpec(
            phase=index + 1,
            greens=greens,
            approach_speed_mps=round(max(speeds), 2),
            clearance_width_m=width,
            ped_crossing_m=crossings.get(index, 0.0),
            # a modelled crossing has push buttons (SUMO's walking people press them, SumoWorld);
            # an assumed one has none: nobody can call it, so it gets the timed recall
            ped_push_button=bool(view.ped_links) and index in crossings,
            lanes=max(1, len(lanes)),
        ))
    return tuple(out)


def _is_signalised(node) -> bool:
    """A junction with signals of its own: advance loops never reach across one."""
    return bool(node.getTLSID() if hasattr(node, "getTLSID") else None) or node.getType() in _SIGNAL_NODE_TYPES


def _via_length(net, conn) -> float:
    """Length of the internal lane(s) a connection drives through (0 without internal lanes)."""
    total = 0.0
    via = conn.getViaLaneID()
    for _ in range(MAX_CHAIN_LANES):
        if not via:
            break
        try:
            lane = net.getLane(via)
        except (KeyError, ValueError, IndexError):  # network read without internal lanes
            break
        total += lane.getLength()
        nxt = lane.getOutgoing()
        via = nxt[0].getViaLaneID() if len(nxt) == 1 else ""
    return total


def _only_predecessor(net, lane):
    """(upstream lane, internal length between) when ``lane``'s one way in is unambiguous, else None.

    Unambiguous: the lane has exactly one incoming connection from a normal
    lane, that lane is a vehicle lane whose only connection leads here, and
    the junction between is not signalised. Then every vehicle over a loop on
    the upstream lane reaches this lane and every vehicle on this lane passed
    the loop, so the loop measures this lane's queue and counts.
    """
    node = lane.getEdge().getFromNode()
    if _is_signalised(node):
        return None
    incoming = [c for edge, conns in lane.getEdge().getIncoming().items() if not edge.getID().startswith(":")
                for c in conns if c.getToLane() is lane]
    if len(incoming) != 1:
        return None
    up = incoming[0].getFromLane()
    if not _is_vehicle_lane(up) or len(up.getOutgoing()) != 1:
        return None
    return up, _via_length(net, incoming[0])


def _chain(net, lane, wanted_m: float) -> list[tuple[object, float]]:
    """The stop-line lane and its unambiguous predecessors, as (lane, metres from its end to the stop line).

    Walks only while the chain is shorter than ``wanted_m`` + margin, so long
    lanes keep their loop and the walk goes no further than needed.
    """
    chain: list[tuple[object, float]] = [(lane, 0.0)]
    seen = {lane.getID()}
    total = lane.getLength()
    while total <= wanted_m + DETECTOR_MARGIN_M and len(chain) < MAX_CHAIN_LANES:
        step = _only_predecessor(net, chain[-1][0])
        if step is None or step[0].getID() in seen:
            break
        up, via = step
        seen.add(up.getID())
        chain.append((up, total + via))
        total += via + up.getLength()
    return chain


def place_on_chain(chain: Sequence[tuple[str, float, float]],
                   wanted_m: float = DETECTOR_DISTANCE_M) -> tuple[str, float, float]:
    """Where a loop goes on a chain of (lane id, lane length, metres from its end to the stop line).

    The chain is treated as one lane: ``wanted_m`` from the stop line when it
    is longer than that plus the margin, else half-way (the rule a single
    lane always had). Returns (lane id, position from that lane's start,
    distance to the stop line along the chain). A distance that falls on an
    internal junction lane goes to the nearer end of the normal lanes around it.
    """
    if not chain:
        raise ScenarioError("a loop needs at least the stop-line lane")
    _top_id, top_len, top_end = chain[-1]
    total = top_end + top_len
    target = wanted_m if total > wanted_m + DETECTOR_MARGIN_M else total / 2
    candidates = []
    for order, (lane_id, length, end) in enumerate(chain):
        pos = min(max(length - (target - end), 0.0), length)
        distance = end + length - pos
        candidates.append((round(abs(distance - target), 6), order, lane_id, pos, distance))
    _miss, _order, lane_id, pos, distance = min(candidates)  # on a tie the downstream lane
    return lane_id, pos, distance


def stopline_path(net, lane_id: str, stopline_lanes: Iterable[str]) -> list | None:
    """Lanes from ``lane_id`` down its only connections to a stop-line lane, or None.

    The reverse of the placement walk: a loop placed upstream sits on a lane
    whose single connection leads, lane by lane, to the stop-line lane it
    measures. Callers use it to find the signal groups of a detector's lane
    (``app.sim_adaptive.with_detector_links``) and the loop's position
    on its lane (:func:`write_detectors_additional`). A loop already on a
    stop-line lane gives a one-lane path.
    """
    targets = set(stopline_lanes)
    try:
        lane = net.getLane(lane_id)
    except (KeyError, ValueError, IndexError):
        return None
    path = [lane]
    for _ in range(MAX_CHAIN_LANES):
        if lane.getID() in targets:
            return path
        outgoing = lane.getOutgoing()
        if len(outgoing) != 1:
            return None
        lane = outgoing[0].getToLane()
        path.append(lane)
    return None


def _detectors(view: _TlsView, controller_id: str, phases: tuple[PhaseSpec, ...],
               stage_durations: list[float], loops: list[_Loop], net=None) -> tuple[DetectorSpec, ...]:
    lane_phase: dict[str, int] = {}
    lane_obj: dict[str, object] = {}
    for index in sorted(view.links):
        for conn in view.vehicle_links(index):
            lane = conn.getFromLane()
            lane_obj[lane.getID()] = lane
    for lane_id in lane_obj:
        best: tuple[float, int] | None = None
        for phase, duration in zip(phases, stage_durations, strict=False):
            served = any(phase.greens[i] in _GREEN for i in range(view.link_count)
                         for c in view.vehicle_links(i) if c.getFromLane().getID() == lane_id)
            if served and (best is None or duration > best[0]):
                best = (duration, phase.phase)
        lane_phase[lane_id] = best[1] if best else phases[0].phase
    by_lane: dict[str, list[_Loop]] = defaultdict(list)
    for loop in loops:
        by_lane[loop.lane].append(loop)
    prefix = f"{controller_id}."
    used: set[str] = set()
    out: list[DetectorSpec] = []
    counter = 0
    for lane_id in sorted(lane_obj):
        lane = lane_obj[lane_id]
        length = lane.getLength()
        edge = lane.getEdge()
        entry = _starts_at_fringe(edge)
        # (loop, distance to the stop line): the scenario's own loops on the stop-line lane, else placed ones
        placed: list[tuple[_Loop, float]] = [(lp, length - lp.pos) for lp in by_lane.get(lane_id, ())]
        chain = _chain(net, lane, DETECTOR_DISTANCE_M) if net is not None else [(lane, 0.0)]
        # advance loops this controller placed upstream before (read back from the file it wrote)
        placed += [(lp, end + up.getLength() - lp.pos) for up, end in chain[1:] for lp in by_lane.get(up.getID(), ())
                   if lp.sumo_id.startswith(prefix)]
        if not placed:
            # the lane's own loop: DETECTOR_DISTANCE_M back, or mid-lane on a lane too short for that
            own_distance = DETECTOR_DISTANCE_M if length > DETECTOR_DISTANCE_M + DETECTOR_MARGIN_M else length / 2
            placed = [(_Loop("", lane_id, length - own_distance), own_distance)]
            on, pos, distance = place_on_chain([(ln.getID(), ln.getLength(), end) for ln, end in chain])
            # only on an upstream lane: a point on the short lane itself lies within the margin of its start
            if on != lane_id:
                # an advance loop farther up the chain measures the queue and the arrivals; the short lane
                # keeps its own loop for presence near the stop line, because vehicles stored between the
                # advance loop and the stop line must still call and extend their phase (locking calls are
                # cleared when the phase starts; a protected left is called by a turner standing on a loop)
                log.debug("%s: advance loop for %s on %s, %.1f m from the stop line",
                          controller_id, lane_id, on, distance)
                placed.append((_Loop("", on, pos), distance))
        for loop, distance in sorted(placed, key=lambda item: -item[1]):
            own = loop.sumo_id[len(prefix):] if loop.sumo_id.startswith(prefix) else ""
            if own and _DETECTOR_ID.match(own) and own not in used:
                det_id = own
            else:
                counter += 1
                det_id = f"d{counter:02d}"
                while det_id in used or any(lp.sumo_id == prefix + det_id for lp in loops):
                    counter += 1
                    det_id = f"d{counter:02d}"
            used.add(det_id)
            # a loop upstream of the stop-line lane counts the vehicles the lane's own loop counts: no edge,
            # so demand and calibration (which add lanes up per edge) do not count that lane twice
            upstream = loop.lane != lane_id
            out.append(DetectorSpec(detector_id=det_id, lane_id=loop.lane, phase=lane_phase[lane_id],
                                    distance_to_stopline_m=round(distance, 1), entry=entry and not upstream,
                                    edge_id="" if upstream else edge.getID()))
    return tuple(sorted(out, key=lambda d: d.detector_id))


def _starts_at_fringe(edge) -> bool:
    """True when the edge starts at a network boundary (a node with no other way in)."""
    node = edge.getFromNode()
    if node.getType() == "dead_end" or getattr(node, "getFringe", lambda: None)() == "outer":
        return True
    upstream = [e for e in node.getIncoming() if not e.getID().startswith(":")]
    return all(e.getFromNode().getID() == edge.getToNode().getID() for e in upstream)


def _links(views: dict[str, _TlsView], controller_of: dict[str, str]) -> tuple[tuple[str, str, float, float], ...]:
    node_tls: dict[str, str] = {}
    for view in views.values():
        for node_id in view.nodes:
            node_tls[node_id] = view.tls_id
    found: dict[tuple[str, str], tuple[float, float]] = {}
    for view in views.values():
        for node in view.nodes.values():
            for edge in node.getOutgoing():
                if edge.getID().startswith(":"):
                    continue
                # depth-first along edge chains until a signal, the fringe or the search limit;
                # an edge is expanded again only when reached by a shorter path (bounded on city networks)
                stack = [(edge, edge.getLength(), edge.getLength() / max(edge.getSpeed(), 0.1))]
                shortest: dict[str, float] = {}
                while stack:
                    e, dist, tt = stack.pop()
                    if shortest.get(e.getID(), float("inf")) <= dist:
                        continue
                    shortest[e.getID()] = dist
                    to = e.getToNode()
                    owner = node_tls.get(to.getID())
                    if owner is not None:
                        if owner != view.tls_id:
                            key = (view.tls_id, owner)
                            if key not in found or dist < found[key][0]:
                                found[key] = (dist, dist / tt if tt > 0 else e.getSpeed())
                        continue
                    if dist > MAX_LINK_SEARCH_M:
                        continue
                    for nxt in to.getOutgoing():
                        if nxt.getID().startswith(":") or nxt.getToNode().getID() == e.getFromNode().getID():
                            continue
                        stack.append((nxt, dist + nxt.getLength(), tt + nxt.getLength() / max(nxt.getSpeed(), 0.1)))
    return tuple(sorted((controller_of[a], controller_of[b], round(d, 1), round(v, 2))
                        for (a, b), (d, v) in found.items()))


def corridor_from_net(net_file: Path, *, site: str, additional_files: Sequence[Path] = (), name: str = "",
                      pedestrians: str = "auto") -> Corridor:
    """Map every TLS of ``net_file`` to an :class:`IntersectionSpec` (see module docstring).

    ``pedestrians`` says where pedestrian timing applies, because it costs
    every phase walk + clearance of minimum green and must follow who
    actually crosses: ``"auto"`` (default) times the crossings the network
    models and assumes none elsewhere; ``"assume"`` times modelled crossings
    and, on junctions without any, the estimated crosswalks (for generators
    and deployments that know pedestrians cross); ``"none"`` times no
    pedestrians at all.
    """
    if pedestrians not in PEDESTRIAN_CHOICES:
        raise ScenarioError(f"pedestrians must be one of {', '.join(map(repr, PEDESTRIAN_CHOICES))}, "
                            f"got {pedestrians!r}")
    net = _read_net(Path(net_file))
    lane_lengths = {lane.getID(): lane.getLength() for edge in net.getEdges() for lane in edge.getLanes()}
    loops = _read_loops(additional_files, lane_lengths)
    views: dict[str, _TlsView] = {}
    findings: list[SignalFinding] = []
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        try:
            view = _TlsView(tls)
        except ScenarioError as exc:
            findings.append(SignalFinding(tls.getID(), FindingLevel.UNCONTROLLED, "NO_LINKS", str(exc),
                                          "a signal without controlled connections has nothing to time"))
            continue
        if view.is_rail_only() or any(n.getType() in ("rail_signal", "rail_crossing") for n in view.nodes.values()):
            findings.append(SignalFinding(tls.getID(), FindingLevel.UNCONTROLLED, "RAIL_SIGNAL",
                                          "a rail signal or level crossing (SUMO's rail logic drives it)",
                                          "rail signals are the railway's; nothing to do"))
            continue
        views[tls.getID()] = view
    controller_of: dict[str, str] = {}
    taken: set[str] = set()
    for tls_id in views:
        cid = base = sanitize_id(tls_id)
        n = 2
        while cid in taken:
            cid = f"{base[:60]}-{n}"
            n += 1
        taken.add(cid)
        controller_of[tls_id] = cid
    specs: list[IntersectionSpec] = []
    for tls_id, view in views.items():
        spec_or_findings = _map_signal(view, controller_of[tls_id], site, pedestrians, loops, net)
        if isinstance(spec_or_findings, IntersectionSpec):
            specs.append(spec_or_findings)
            findings.extend(_info_findings(view, spec_or_findings))
        else:
            findings.extend(spec_or_findings)
    for f in findings:
        if f.level == FindingLevel.UNCONTROLLED:
            log.warning("TLS %s stays on its own program: %s: %s", f.tls_id, f.rule, f.message)
    if not specs:  # still a network SUMO runs: every signal keeps its own program (site check: unusable)
        reasons = "; ".join(f"{f.tls_id}: {f.rule}" for f in findings if f.level == FindingLevel.UNCONTROLLED)
        log.warning("network %s has no traffic light the project can control%s", net_file,
                    f" ({reasons[:500]})" if reasons else "")
    kept = {s.tls_id for s in specs}
    links = tuple(link for link in _links({k: v for k, v in views.items() if k in kept}, controller_of))
    return Corridor(name=name or Path(net_file).name.split(".")[0], intersections=tuple(specs), links=links,
                    findings=tuple(findings))


#: what a traffic engineer should check when the approved program shows two unresolved foes protected
_UNRESOLVED_ADVICE = ("check the signal program: the two movements cross and no turning movement gives way to the "
                      "other at the junction; one of them should be permissive (g) or they belong in different "
                      "stages")


def _map_signal(view: _TlsView, cid: str, site: str, pedestrians: str, loops: list[_Loop],
                net) -> IntersectionSpec | list[SignalFinding]:
    """One TLS as an :class:`IntersectionSpec`, or the findings that keep it on its own program."""
    tls_id = view.tls_id
    try:
        programs = _programs(view.tls)
        program = programs[0]
    except ScenarioError as exc:
        return [SignalFinding(tls_id, FindingLevel.UNCONTROLLED, "NO_PROGRAM", str(exc),
                              "give the signal a static program in the network")]
    if any(len(state) != view.link_count for _, state in program):
        return [SignalFinding(tls_id, FindingLevel.UNCONTROLLED, "STATE_LENGTH",
                              f"program state length differs from its {view.link_count} links",
                              "rebuild the program with netconvert or netedit")]
    vehicle = frozenset(i for i in view.links if view.vehicle_links(i))
    stages, _used = stages_over_programs(programs, frozenset(view.ped_links), vehicle)
    if not stages:
        return [SignalFinding(tls_id, FindingLevel.UNCONTROLLED, "NO_GREEN_STAGE", "its program has no green stage",
                              "a program that never shows green cannot be timed")]
    if not any(view.vehicle_links(i) for i in view.links):
        return [SignalFinding(tls_id, FindingLevel.UNCONTROLLED, "PEDESTRIAN_ONLY",
                              "controls only pedestrian crossings (no vehicle movement to time)",
                              "a mid-block pedestrian signal stays on its own program")]
    phases = _phases(view, stages, _junction_width(view.nodes.values()), pedestrians)
    foes = view.foes()
    conflicts = frozenset((a, b) for a, b in foes
                          if not any(p.greens[a] in _GREEN and p.greens[b] in _GREEN for p in phases))
    both_protected = sorted((a, b) for a, b in foes if any(p.greens[a] == "G" and p.greens[b] == "G" for p in phases))
    resolved: set[tuple[int, int]] = set()
    unresolved: list[SignalFinding] = []
    for a, b in both_protected:
        kind = view.classify_foe(a, b, [p.greens for p in phases])
        if kind == "none":
            unresolved.append(SignalFinding(
                tls_id, FindingLevel.UNCONTROLLED, "UNRESOLVED_FOES",
                f"the approved program shows {view.movement(a)} and {view.movement(b)} protected green together, "
                "but their paths cross and neither is a turn that gives way to the other", _UNRESOLVED_ADVICE))
        else:
            resolved.add((a, b))
    if unresolved:
        return unresolved
    xs = [n.getCoord()[0] for n in view.nodes.values()]
    ys = [n.getCoord()[1] for n in view.nodes.values()]
    return IntersectionSpec(
        controller_id=cid,
        tls_id=tls_id,
        link_count=view.link_count,
        phases=phases,
        detectors=_detectors(view, cid, phases, [d for _, d in stages], loops, net),
        foes=foes,
        conflicts=conflicts,
        position=(round(sum(xs) / len(xs), 2), round(sum(ys) / len(ys), 2)),
        site=site,
        resolved_foes=frozenset(resolved),
    )


def _info_findings(view: _TlsView, spec: IntersectionSpec) -> list[SignalFinding]:
    """What a controlled signal's mapping decided that an engineer may want to confirm."""
    out: list[SignalFinding] = []
    kinds: dict[str, int] = defaultdict(int)
    examples: list[str] = []
    for a, b in sorted(spec.resolved_foes):
        kind = view.classify_foe(a, b, [p.greens for p in spec.phases])
        kinds[kind] += 1
        if len(examples) < 3:
            examples.append(f"{view.movement(a)} and {view.movement(b)} ({kind})")
    if kinds:
        text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        left = len(spec.resolved_foes) - len(examples)
        more = f"; and {left} more" if left > 0 else ""
        out.append(SignalFinding(spec.tls_id, FindingLevel.WARNING, "RESOLVED_FOES",
                                 f"the approved program shows {len(spec.resolved_foes)} foe pair(s) protected green "
                                 f"together that the junction resolves ({text}): {'; '.join(examples)}{more}. "
                                 "Plans may keep these pairs together, never others",
                                 "confirm each merge is a lane the streams may share and each give-way movement "
                                 "is signed as such"))
    try:
        programs = _programs(view.tls)
    except ScenarioError:
        programs = []
    vehicle = frozenset(i for i in view.links if view.vehicle_links(i))
    _stages, used = stages_over_programs(programs, frozenset(view.ped_links), vehicle)
    stopped = all_red_seconds(programs[0], vehicle) if programs else 0.0
    if len(spec.phases) == 1 and stopped > 0:
        cycle = sum(d for d, _ in programs[0])
        out.append(SignalFinding(spec.tls_id, FindingLevel.WARNING, "ONE_STAGE_HELD_GREEN",
                                 f"the design has one green stage, which the project holds; the network's program "
                                 f"stops every vehicle movement for {stopped:.0f} s of its {cycle:.0f} s cycle "
                                 "(a closure, ramp metering or an unmodelled pedestrian stage)",
                                 "confirm nobody needs that red; if pedestrians cross there, model the crossing"))
    if used > 1:
        out.append(SignalFinding(spec.tls_id, FindingLevel.WARNING, "STAGES_FROM_PROGRAMS",
                                 f"its first program never releases some movements; the design takes the stages "
                                 f"of {used} of its {len(programs)} programs ({len(spec.phases)} phases)",
                                 "confirm the stages: the network switches programs from outside"))
    if len(view.nodes) > 1:
        out.append(SignalFinding(spec.tls_id, FindingLevel.INFO, "JOINED",
                                 f"one program over {len(view.nodes)} junctions "
                                 f"({', '.join(sorted(view.nodes))[:200]})"))
    if not spec.detectors:
        out.append(SignalFinding(spec.tls_id, FindingLevel.WARNING, "NO_DETECTORS",
                                 "no approach lane could hold a loop: demand comes from neighbours only",
                                 "add loops on the approaches"))
    return out


def missing_loops(corridor: Corridor, additional_files: Sequence[Path]) -> int:
    """How many of the corridor's detectors have no SUMO loop named ``<controller>.<detector>`` yet."""
    ids: set[str] = set()
    for f in additional_files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as exc:
            raise ScenarioError(f"cannot read additional file {f}: {exc}") from exc
        ids |= {el.get("id", "") for el in root.iter() if el.tag in ("inductionLoop", "e1Detector")}
    return sum(1 for spec in corridor.intersections for d in spec.detectors
               if loop_id(spec.controller_id, d.detector_id) not in ids)


def write_detectors_additional(corridor: Corridor, path: Path, *, net_file: Path | None = None,
                               period_s: int = LOOP_PERIOD_S) -> Path:
    """Write one E1 loop per detector of the corridor, id ``<controller_id>.<detector_id>``.

    With ``net_file`` (the callers here always give it) every loop is written
    at its position on the lane it sits on, which for a loop walked upstream
    is not ``distance_to_stopline_m`` from that lane's end: the part of the
    chain between the lane's end and the stop line (:func:`stopline_path`) is
    taken off. Without ``net_file`` the position is written from the lane end
    (negative ``pos``), which is right only for loops on stop-line lanes (all
    that a corridor mapped without a network can have). Output goes to
    ``NUL``: the field world reads the loops live, batch runs do not need
    their files.
    """
    net = _read_net(Path(net_file)) if net_file is not None else None
    root = ET.Element("additional")
    for spec in corridor.intersections:
        stoplines: set[str] = set()
        if net is not None:
            try:
                tls = net.getTLS(spec.tls_id)
            except KeyError as exc:
                raise ScenarioError(f"{net_file} has no traffic light {spec.tls_id}") from exc
            stoplines = {in_lane.getID() for in_lane, _out, _i in tls.getConnections()}
        for det in spec.detectors:
            if net is None:
                pos = f"{-det.distance_to_stopline_m:.2f}"
            else:
                pos = f"{_position_on_lane(net, spec.controller_id, det, stoplines):.2f}"
            ET.SubElement(root, "inductionLoop", id=loop_id(spec.controller_id, det.detector_id), lane=det.lane_id,
                          pos=pos, period=str(period_s), file="NUL")
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def _position_on_lane(net, controller_id: str, det: DetectorSpec, stoplines: set[str]) -> float:
    """Position (m from the lane start) of ``det``'s loop on ``det.lane_id``, from its distance to the stop line."""
    path = stopline_path(net, det.lane_id, stoplines)
    if path is None:
        raise ScenarioError(f"detector {det.detector_id} of {controller_id}: lane {det.lane_id} does not lead "
                            f"unambiguously to a stop line of {controller_id} (unknown lane or a branching chain)")
    beyond = 0.0  # metres from the end of the loop's lane to the stop line
    for here, nxt in zip(path, path[1:], strict=False):
        conn = here.getOutgoing()[0]
        beyond += _via_length(net, conn) + nxt.getLength()
    length = path[0].getLength()
    return min(max(length - (det.distance_to_stopline_m - beyond), 0.0), length)
