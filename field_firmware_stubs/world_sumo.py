"""A SUMO world for field emulators: loops are SUMO induction loops, heads are SUMO traffic lights.

Each simulation second the world reads every bound E1 detector, hands the
readings to that intersection's :class:`FieldEmulator` and drives the state
it returns with ``trafficlight.setRedYellowGreenState`` (so SUMO's own
program never decides anything). libsumo is used when it is free in this
process (8-11x faster than TraCI); otherwise TraCI with a private label, which
also lets several worlds coexist. :meth:`SumoWorld.close` always ends the
simulation, so no SUMO process outlives the world.

Counting: an E1 reports the vehicles on it during the last step, so a
vehicle standing on a loop for several steps would be counted several times
by summing ``getLastStepVehicleNumber``. The world instead counts vehicle ids
not seen on that loop in the previous step, i.e. vehicles whose front
entered it during the step, and classifies only those (motorcycles by
``vClass``).

Classification reads the vehicle type from the loop's own record
(``inductionloop.getVehicleData``), never from ``vehicle.getTypeID``: a loop
near the network exit reports vehicles that arrived (left the network) in
that same step, which TraCI/libsumo no longer know, and asking about them
ended whole runs (issue 11). A type SUMO cannot classify counts the vehicle
without a class (the interval's motorcycle count becomes unknown) rather
than stopping the world.

Pedestrians: where the scenario models no walking people (the generated
corridors assume their crosswalks), ``ped_calls_per_hour`` presses each
crosswalk's push button at random (Poisson, seeded with the run's seed), so
the programs log calls (Indiana 90/45) and ATSPM's pedestrian actuations and
delay have something to measure. 0 (default): no presses. Where the
network models its crossings (``PhaseSpec.ped_push_button``), the people
SUMO walks press the buttons themselves: a person who stands still on a
walking area with one of the signal's crossings as the next edge calls the
phases that time that crossing, once per person and crossing (Indiana 90).
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from field_firmware_stubs.approach_schedule import ApproachVehicle
from field_firmware_stubs.approach_zones import MIN_BEFORE_SPLIT_M, STANDING_MPS, TurnCounts, Zone, weight_past_split
from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from traffic.errors import ScenarioError, SimulationError

__all__ = ["SumoWorld", "sumo_binary"]

log = logging.getLogger(__name__)

_labels = itertools.count()
#: an approach sensor must see at least this much of every lane feeding its signal (m), or it sees part of the
#: road only and its schedule may lengthen greens past the loops' gap-out, never shorten them
APPROACH_MIN_COVER_M = 60.0
#: vehicle classes whose queues an approach sensor watches; a lane that allows none of them (a tram track
#: through the junction) is no approach. Until session 13 two tram tracks, 0.2 m and 5 m long between their
#: rail signals and drt-osm's joined signal joinedS_2, counted as its approaches, covered too short to see
ROAD_VCLASSES = frozenset({"passenger", "motorcycle", "moped", "bus", "coach", "truck", "trailer", "delivery",
                           "taxi", "evehicle", "emergency"})
MOTORCYCLE = "motorcycle"


def sumo_binary(name: str = "sumo") -> str:
    """Path of a SUMO binary: the one on PATH (venv) or the eclipse-sumo wheel's."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import sumo  # the eclipse-sumo wheel

        candidate = Path(sumo.SUMO_HOME) / "bin" / name
    except ImportError as exc:
        raise SimulationError(f"no {name} binary: install eclipse-sumo") from exc
    if not candidate.exists():
        raise SimulationError(f"no {name} binary at {candidate}")
    return str(candidate)


def _sumo_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        import traci.exceptions as te

        errors += [te.TraCIException, te.FatalTraCIError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import libsumo

        errors += [libsumo.TraCIException, libsumo.FatalTraCIError]
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(errors) or (RuntimeError,)


class SumoWorld:
    """Runs a SUMO scenario with every listed traffic light driven by its emulator.

    ``emulators`` maps SUMO tls ids to emulators. Detector ``d`` of controller
    ``c`` binds to the E1 named ``c.d`` in the scenario's additional files, or
    failing that to the E1 lying on ``d.lane_id``.
    """

    def __init__(self, scenario_cfg: Path, *, emulators: Mapping[str, FieldEmulator], seed: int, begin: int,
                 end: int, options: Sequence[str] = (), tripinfo: Path | None = None,
                 backend: str = "auto", ped_calls_per_hour: float = 0.0, approach_range_m: float = 0.0) -> None:
        if backend not in ("auto", "libsumo", "traci"):
            raise SimulationError(f"backend must be auto, libsumo or traci, got {backend!r}")
        self.scenario_cfg = Path(scenario_cfg)
        if not self.scenario_cfg.exists():
            raise ScenarioError(f"scenario {self.scenario_cfg} does not exist")
        self.emulators = dict(emulators)
        self.begin, self.end = begin, end
        self._ped_p = max(0.0, float(ped_calls_per_hour)) / 3600.0   # per crosswalk and 1-s step
        self._ped_rng = random.Random(seed)
        self._ped_phases = {tls: tuple(p.phase for p in e.spec.phases if p.ped_crossing_m > 0)
                            for tls, e in self.emulators.items()}
        self._errors = _sumo_errors()
        self.approach_range_m = max(0.0, float(approach_range_m))
        cmd = [sumo_binary(), "-c", str(self.scenario_cfg), "--seed", str(seed), "--begin", str(begin),
               "--end", str(end), "--step-length", "1", "--no-step-log", "true", "--duration-log.disable", "true"]
        if tripinfo is not None:
            cmd += ["--tripinfo-output", str(tripinfo), "--tripinfo-output.write-undeparted", "true"]
        cmd += list(options)
        self.command = cmd
        self._api: Any = None
        self._libsumo = False
        self._closed = False
        self._start(cmd, backend)
        try:
            self._bind()
            self._now = float(self._api.simulation.getTime())
            self._drive({})
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _start(self, cmd: list[str], backend: str) -> None:
        use_libsumo = backend == "libsumo"
        if backend == "auto":
            try:
                import libsumo

                use_libsumo = not libsumo.simulation.isLoaded()
            except ImportError:
                use_libsumo = False
        try:
            if use_libsumo:
                import libsumo

                libsumo.start(cmd)
                self._api, self._libsumo = libsumo, True
            else:
                import traci

                label = f"field-world-{next(_labels)}"
                traci.start(cmd, label=label, stdout=None)
                self._api = traci.getConnection(label)
        except self._errors as exc:
            raise SimulationError(f"SUMO did not start ({' '.join(cmd)}): {exc}") from exc
        except OSError as exc:
            raise SimulationError(f"SUMO did not start ({cmd[0]}): {exc}") from exc
        log.info("SUMO started with %s", "libsumo" if self._libsumo else "TraCI")

    def close(self) -> None:
        """End the simulation (idempotent; tripinfo is complete afterwards)."""
        if self._closed or self._api is None:
            self._closed = True
            return
        self._closed = True
        try:
            self._api.close()
        except (*self._errors, OSError) as exc:
            log.warning("SUMO close reported: %s", exc)
        finally:
            process = None if self._libsumo else getattr(self._api, "_process", None)
            if process is not None and process.poll() is None:  # never leave a SUMO process behind
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> SumoWorld:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ binding
    def _bind(self) -> None:
        api = self._api
        tls_ids = set(api.trafficlight.getIDList())
        loops = list(api.inductionloop.getIDList())
        loop_lane = {loop: api.inductionloop.getLaneID(loop) for loop in loops}
        self._bindings: dict[str, list[tuple[str, str]]] = {}
        self._last_state: dict[str, str] = {}
        self._seen: dict[str, set[str]] = {}
        self._vclass_by_type: dict[str, str] = {}
        for tls, emulator in self.emulators.items():
            if tls not in tls_ids:
                raise ScenarioError(f"traffic light {tls!r} is not in {self.scenario_cfg}")
            links = len(api.trafficlight.getRedYellowGreenState(tls))
            if links != emulator.spec.link_count:
                raise ScenarioError(f"traffic light {tls!r} has {links} signal groups, "
                                    f"{emulator.controller_id} expects {emulator.spec.link_count}")
            bound = []
            for det in emulator.spec.detectors:
                loop_id = f"{emulator.controller_id}.{det.detector_id}"
                if loop_id not in loop_lane:
                    on_lane = [loop for loop, lane in loop_lane.items() if lane == det.lane_id]
                    if not on_lane:
                        raise ScenarioError(f"no induction loop {loop_id!r} and none on lane {det.lane_id!r} "
                                            f"for detector {det.detector_id} of {emulator.controller_id}")
                    loop_id = sorted(on_lane)[0]
                bound.append((det.detector_id, loop_id))
                self._seen[loop_id] = set()
            self._bindings[tls] = bound
        self._bind_push_buttons()
        self._bind_approach_zones()

    def _bind_push_buttons(self) -> None:
        """Crossing edge -> phases its push button calls, and the walking areas people wait on, per signal."""
        api = self._api
        self._buttons: dict[str, dict[str, tuple[int, ...]]] = {}
        self._waiting_areas: dict[str, tuple[str, ...]] = {}
        self._pressed: set[tuple[str, str]] = set()
        for tls, emulator in self.emulators.items():
            phases = [p for p in emulator.spec.phases if p.ped_push_button and p.ped_crossing_m > 0]
            if not phases:
                continue
            crossings: dict[str, tuple[int, ...]] = {}
            for index, links in enumerate(api.trafficlight.getControlledLinks(tls)):
                for _in_lane, out_lane, _via in links:
                    edge = out_lane.rpartition("_")[0]
                    called = tuple(p.phase for p in phases if index < len(p.greens) and p.greens[index] in "Gg")
                    if edge.startswith(":") and "_c" in edge and called:
                        crossings[edge] = tuple(sorted({*crossings.get(edge, ()), *called}))
            if not crossings:
                continue
            nodes = {edge.rpartition("_c")[0] for edge in crossings}
            self._buttons[tls] = crossings
            self._waiting_areas[tls] = tuple(e for e in api.edge.getIDList()
                                             if e.rpartition("_w")[0] in nodes and e.startswith(":"))

    # ------------------------------------------------------------------ stepping
    @property
    def time(self) -> float:
        """Current simulation time (s)."""
        return self._now

    @property
    def backend(self) -> str:
        return "libsumo" if self._libsumo else "traci"

    @property
    def api(self) -> Any:
        """The libsumo module or TraCI connection (for KPIs and tests)."""
        return self._api

    def step(self) -> None:
        """Advance one second: read detectors, tick every emulator, drive the heads."""
        if self._closed:
            raise SimulationError("the SUMO world is closed")
        try:
            self._api.simulationStep()
            self._now = float(self._api.simulation.getTime())
            self._drive(self._read_detectors())
        except self._errors as exc:
            raise SimulationError(f"SUMO failed at {self._now:.0f} s: {exc}") from exc

    def run_until(self, t: float) -> None:
        """Step until simulation time ``t`` (or the scenario's end)."""
        while self._now < min(t, self.end) - 1e-9:
            self.step()

    def _read_detectors(self) -> dict[str, dict[str, DetectorReading]]:
        loops = self._api.inductionloop
        out: dict[str, dict[str, DetectorReading]] = {}
        for tls, bound in self._bindings.items():
            readings = {}
            for det_id, loop_id in bound:
                types = self._loop_types(loop_id)
                ids = loops.getLastStepVehicleIDs(loop_id)
                occupancy = loops.getLastStepOccupancy(loop_id)
                previous = self._seen[loop_id]
                new = [v for v in ids if v not in previous]
                self._seen[loop_id] = set(ids)
                classes = [self._vclass(types.get(v)) for v in new]
                readings[det_id] = DetectorReading(
                    count=len(new), occupancy_pct=max(0.0, min(100.0, occupancy)),
                    presence=bool(ids) or occupancy > 0.0,
                    motorcycles=None if None in classes else sum(1 for c in classes if c == MOTORCYCLE))
            out[tls] = readings
        return out

    def _bind_approach_zones(self) -> None:
        """Approach sensors: each lane feeding a signal, covered ``approach_range_m`` up the road.

        A zone is (lane to watch, approach lane it belongs to, signal groups
        that lane feeds, metres from the watched lane's end to the stop
        line, the lane before the split it lies past if any). Up the road
        a zone follows the road, not SUMO's edge splits: a
        lane whose every successor lies on the approach edge (a segment
        break, a lane added or dropped) is watched too, up to the range,
        never past another signal's stop line or a real junction where the
        road splits. Where that leaves an approach covered for less than
        ``APPROACH_MIN_COVER_M`` (a short segment behind a junction where
        the road splits), the signal's zones go on past the first split and
        what they see there is weighed by turning counts
        (:mod:`field_firmware_stubs.approach_zones`; before session 12 such
        a signal kept its loops: braunschweig 51.4 -> 47.0). Still short
        past the split: the sensor sees part of the road only
        (``FieldEmulator.partial_approach_view``), and its schedule may hold
        a green past the loops' gap-out but never end one before it, since
        its queue may stand out of sight and a schedule deciding alone
        starved it (ingolstadt1 17.2 -> 20.8); until session 13 such a
        signal had no sensor. An inner approach of a
        joined signal (a lane its own stop lines feed, directly or across
        edge splits) counts as covered whatever its length: the zone sees
        the whole link back to the signal's own stop line, so no queue
        stands out of sight. Until session 12 such signals kept their
        loops; scheduling them cut grid-joined's delay by 13-17 % (see
        docs/performance.md). Lanes inside a junction (the walking area
        before a modelled crossing among them) are no approach road: until
        session 12 a modelled crosswalk's walking area, never covered,
        cost its signal the sensor.
        """
        api = self._api
        self._zones: dict[str, list[Zone]] = {}
        self._turns: dict[str, TurnCounts] = {tls: TurnCounts() for tls in self.emulators}
        self._on_split: dict[tuple[str, str], set[str]] = {}
        # per signal sensed past a split: the approach lanes each lane before any split belongs to, and
        # where each approach's split lies (m to the stop line); fixed once the zones are bound
        self._split_lanes: dict[str, dict[str, set[str]]] = {}
        self._split_at: dict[str, dict[str, float]] = {}
        if self.approach_range_m <= 0:
            return
        controlled: set[str] = set()
        for tls in api.trafficlight.getIDList():
            for connections in api.trafficlight.getControlledLinks(tls):
                controlled.update(c[0] for c in connections)
        predecessors: dict[str, list[str]] = {}
        successors: dict[str, list[str]] = {}
        for lane in api.lane.getIDList():
            if lane.startswith(":"):
                continue
            nexts = [str(link[0]) for link in api.lane.getLinks(lane)]
            successors[lane] = nexts
            for nxt in nexts:
                predecessors.setdefault(nxt, []).append(lane)
        for tls in self.emulators:
            feeds: dict[str, set[int]] = {}
            for index, connections in enumerate(api.trafficlight.getControlledLinks(tls)):
                for incoming, _outgoing, _via in connections:
                    if incoming.startswith(":"):
                        continue  # a walking area before a crossing, or a lane inside a junction: no approach road
                    if not self._road_lane(incoming):
                        continue  # a tram or rail track crossing the junction: no road vehicle queues on it
                    feeds.setdefault(incoming, set()).add(index)
            zones, short = self._zones_for(feeds, controlled, predecessors, successors, past_split=False)
            if short:
                zones, still_short = self._zones_for(feeds, controlled, predecessors, successors, past_split=True)
                if still_short:
                    log.info("%s: approach sensing on part of the road only (before %s it covers less than %.0f "
                             "m, past the first split too): the schedule may hold a green past the loops' "
                             "gap-out, never end it before", tls, ", ".join(still_short), APPROACH_MIN_COVER_M)
                    self.emulators[tls].partial_approach_view = True
                else:
                    log.info("%s: approach sensing past the split before %s, weighed by turning counts", tls,
                             ", ".join(short))
                approaches_of: dict[str, set[str]] = {}
                split_at: dict[str, float] = {}
                for z in zones:
                    if z.split is None:
                        approaches_of.setdefault(z.watched, set()).add(z.approach)
                    else:
                        split_at[z.approach] = min(split_at.get(z.approach, self.approach_range_m), z.offset_m)
                self._split_lanes[tls] = approaches_of
                self._split_at[tls] = split_at
            self._zones[tls] = zones

    def _road_lane(self, lane: str) -> bool:
        """Whether a road vehicle may use ``lane`` (a tram track or a railway is no approach road)."""
        allowed = set(self._api.lane.getAllowed(lane))
        if allowed:
            return bool(allowed & ROAD_VCLASSES)
        return not ROAD_VCLASSES <= set(self._api.lane.getDisallowed(lane))

    def _zones_for(self, feeds: Mapping[str, set[int]], controlled: set[str], predecessors: Mapping[str, list[str]],
                   successors: Mapping[str, list[str]], *, past_split: bool) -> tuple[list[Zone], list[str]]:
        """One signal's zones, and the lanes feeding it that they cover for less than ``APPROACH_MIN_COVER_M``.

        ``past_split``: follow the road past the first junction where it
        splits, at least ``MIN_BEFORE_SPLIT_M`` before the stop line, the
        zones beyond it flagged with the lane before the split.
        """
        api, reach = self._api, self.approach_range_m
        zones: list[Zone] = []
        covered: dict[str, float] = {}
        for lane, indices in feeds.items():
            links = frozenset(indices)
            zones.append(Zone(lane, lane, links, 0.0))
            frontier: list[tuple[str, float, str | None]] = [(lane, float(api.lane.getLength(lane)), None)]
            seen = {lane}
            while frontier:
                current, offset, split = frontier.pop()
                covered[lane] = max(covered.get(lane, 0.0), min(offset, reach))
                if offset >= reach:
                    continue
                road = api.lane.getEdgeID(current)
                for up in predecessors.get(current, ()):
                    if up in feeds:
                        covered[lane] = reach  # back to this signal's own stop line: the whole link is seen
                    if up in seen or up in controlled:
                        continue
                    if api.edge.getFromJunction(api.lane.getEdgeID(up)) == api.edge.getToJunction(road):
                        continue  # the other carriageway, turning round
                    up_split = split
                    if not all(api.lane.getEdgeID(n) == road for n in successors[up]):
                        if not past_split or split is not None or offset < MIN_BEFORE_SPLIT_M:
                            continue  # a junction where the road splits: the vehicle may turn away
                        up_split = up
                    seen.add(up)
                    zones.append(Zone(up, lane, links, offset, up_split))
                    frontier.append((up, offset + float(api.lane.getLength(up)), up_split))
        short = sorted(lane for lane, metres in covered.items() if metres < APPROACH_MIN_COVER_M)
        return zones, short

    def _count_turns(self, tls: str, zones: Sequence[Zone]) -> None:
        """Count the turns at each split ``tls``'s zones go past: where each vehicle that left the lane
        before the split went (a vehicle still inside the junction is looked at again next step)."""
        approaches_of = self._split_lanes.get(tls)
        if approaches_of is None:
            return  # no zone past a split
        splits = {z.split for z in zones if z.split is not None}
        vehicle, lanes = self._api.vehicle, self._api.lane
        for split in splits:
            now = set(lanes.getLastStepVehicleIDs(split))
            for vid in self._on_split.get((tls, split), set()) - now:
                try:
                    where = str(vehicle.getLaneID(vid))
                except self._errors:
                    where = ""  # it left the network
                if where.startswith(":"):
                    now.add(vid)
                    continue
                self._turns[tls].record(split, approaches_of.get(where, ()))
            self._on_split[(tls, split)] = now

    def _read_approach(self, tls: str) -> list[ApproachVehicle] | None:
        """What ``tls``'s approach sensors see now (None: it has none)."""
        zones = self._zones.get(tls)
        if zones is None:
            return None
        self._count_turns(tls, zones)
        vehicle, lanes, reach = self._api.vehicle, self._api.lane, self.approach_range_m
        raw: list[tuple[Zone, float, float, bool]] = []
        split_at = self._split_at.get(tls, {})
        tail: dict[str, float] = {}
        for zone in zones:
            length = float(lanes.getLength(zone.watched))
            for vid in lanes.getLastStepVehicleIDs(zone.watched):
                distance = zone.offset_m + length - float(vehicle.getLanePosition(vid))
                if distance > reach:
                    continue
                speed = float(vehicle.getSpeed(vid))
                if zone.split is None and speed < STANDING_MPS:
                    tail[zone.approach] = max(tail.get(zone.approach, 0.0), distance)
                raw.append((zone, distance, speed, self._vclass(str(vehicle.getTypeID(vid))) == MOTORCYCLE))
        seen = []
        for zone, distance, speed, motorcycle in raw:
            weight = 1.0
            if zone.split is not None:
                weight = weight_past_split(self._turns[tls].share(zone.split, zone.approach), speed,
                                           tail.get(zone.approach, 0.0), split_at[zone.approach])
            seen.append(ApproachVehicle(zone.approach, zone.links, distance, speed, motorcycle, weight))
        return seen

    def _loop_types(self, loop_id: str) -> dict[str, str]:
        """Vehicle id -> type id of every vehicle on ``loop_id`` in the last step, from the loop's own data.

        The loop keeps the type of a vehicle that has already left the
        network; ``vehicle.getTypeID`` would raise for it. TraCI returns
        tuples ``(id, length, entry, exit, type)``, libsumo objects with
        ``id`` and ``typeID``.
        """
        out: dict[str, str] = {}
        for entry in self._api.inductionloop.getVehicleData(loop_id):
            if isinstance(entry, tuple):
                out[str(entry[0])] = str(entry[4])
            else:
                out[str(entry.id)] = str(entry.typeID)
        return out

    def _vclass(self, type_id: str | None) -> str | None:
        """SUMO vClass of ``type_id`` (cached); None when the type is unknown (vehicle counted, not classified)."""
        if type_id is None:
            return None
        vclass = self._vclass_by_type.get(type_id)
        if vclass is None:
            try:
                vclass = str(self._api.vehicletype.getVehicleClass(type_id))
            except self._errors as exc:  # a type SUMO no longer knows: count without a class
                log.warning("cannot classify vehicle type %r: %s", type_id, exc)
                return None
            self._vclass_by_type[type_id] = vclass
        return vclass

    def _press_buttons(self, tls: str, emulator: FieldEmulator) -> None:
        """People standing at one of ``tls``'s crossings press its button (once per person and crossing)."""
        api, buttons = self._api, self._buttons[tls]
        for area in self._waiting_areas[tls]:
            for person in api.edge.getLastStepPersonIDs(area):
                crossing = api.person.getNextEdge(person)
                phases = buttons.get(crossing)
                if not phases or (person, crossing) in self._pressed or api.person.getWaitingTime(person) <= 0:
                    continue
                self._pressed.add((person, crossing))
                for phase in phases:
                    emulator.program.place_ped_call(phase)

    def _drive(self, readings: Mapping[str, Mapping[str, DetectorReading]]) -> None:
        for tls, emulator in self.emulators.items():
            if tls in self._buttons and emulator.program is not None:
                self._press_buttons(tls, emulator)
            if self._ped_p > 0 and emulator.program is not None:
                for phase in self._ped_phases[tls]:
                    if self._ped_rng.random() < self._ped_p:
                        emulator.program.place_ped_call(phase)
            approach = self._read_approach(tls)
            state = (emulator.tick(self._now, readings.get(tls, {})) if approach is None else
                     emulator.tick(self._now, readings.get(tls, {}), approach))
            if state != self._last_state.get(tls):
                self._api.trafficlight.setRedYellowGreenState(tls, state)
                self._last_state[tls] = state
