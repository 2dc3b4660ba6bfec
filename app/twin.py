"""The SUMO twin: one process owns the site's SUMO world and serves each controller's loops and heads.

Why one process: a SUMO network is one simulation (vehicles leave one
junction and arrive at the next), so it cannot be split between the field
agents; yet each agent must stay a real, separate process running the real
field code (``FieldEmulator``: MQTT link, plan check, monitors, fallback),
as a cabinet is. So the twin is the *world* and nothing else: it steps SUMO
(libsumo, 1 s steps), reads every E1 loop, and serves each controller's
readings to its agent over a local TCP socket; the agent answers with the
state its emulator drives, and the twin puts it on SUMO's heads.

Lock step, paced by the site clock (``--speed``: 1 real time, 10 ten times
faster): for every step the twin sends ``{"t", "d"}`` to every connected
agent and waits up to ``answer_timeout_s`` for ``{"t", "s"}``. A controller
with no agent connected, or whose answer is late, shows a dark cabinet: all
red (traffic stops, nothing conflicts), as a real intersection whose
controller is down goes to flash. An agent may connect, leave and come back
at any time (its emulator starts with the start-up all-red).

Wire (one JSON object per line): agent -> ``{"hello": <controller id>}``;
twin -> ``{"ok": true, "origin": <ISO time of simulation second 0>, "t": <s>}``
or ``{"ok": false, "error": ...}``; then per step twin -> ``{"t": <s>,
"d": {<detector id>: [count, occupancy %, presence, motorcycles|null]}}``,
agent -> ``{"t": <s>, "s": <state string>}``; at the end twin -> ``{"end": true}``.
Only 127.0.0.1 by default: the socket is the cabinet's wiring, not a network service.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.runtime import ServiceEndpoint, SiteClock, run_dir, write_json_atomic
from field_firmware_stubs.emulator import DetectorReading
from field_firmware_stubs.world_sumo import SumoWorld
from traffic.errors import TrafficError
from traffic.intersection import IntersectionSpec

log = logging.getLogger(__name__)

DARK = "r"


class _Agent:
    """One connected field agent (socket + reader thread)."""

    def __init__(self, controller_id: str, sock: socket.socket, reader: Any, server: TwinServer) -> None:
        self.controller_id = controller_id
        self.sock = sock
        self.reader = reader
        self.server = server
        self.alive = True
        self._send_lock = threading.Lock()
        threading.Thread(target=self._read_loop, name=f"twin-{controller_id}", daemon=True).start()

    def send(self, data: dict[str, Any]) -> bool:
        line = (json.dumps(data, separators=(",", ":")) + "\n").encode()
        try:
            with self._send_lock:
                self.sock.sendall(line)
            return True
        except OSError:
            self.close()
            return False

    def _read_loop(self) -> None:
        try:
            for raw in self.reader:
                try:
                    msg = json.loads(raw)
                    self.server._answer(self, float(msg["t"]), str(msg["s"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("twin: bad answer from %s: %r", self.controller_id, raw[:100])
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.alive:
            self.alive = False
            try:
                self.sock.close()
            except OSError:
                pass
            self.server._gone(self)


class _Head:
    """SumoWorld's view of one controller: answers ``tick`` with what its agent drives (or dark)."""

    def __init__(self, spec: IntersectionSpec) -> None:
        self.spec = spec
        self.controller_id = spec.controller_id

    def tick(self, now_s: float, readings: Mapping[str, DetectorReading]) -> str:  # not used (see _drive)
        return DARK * self.spec.link_count


class _LockstepWorld(SumoWorld):
    """SumoWorld whose heads are driven by remote agents, all asked at once each step."""

    server: TwinServer

    def _drive(self, readings: Mapping[str, Mapping[str, DetectorReading]]) -> None:
        states = self.server._exchange(self._now, readings)
        for tls, head in self.emulators.items():
            state = states.get(head.controller_id) or DARK * head.spec.link_count
            if state != self._last_state.get(tls):
                self._api.trafficlight.setRedYellowGreenState(tls, state)
                self._last_state[tls] = state


class TwinServer:
    """Runs the site's SUMO model on the site clock and serves it to field agents (see module docstring)."""

    def __init__(self, site: Any, *, clock: SiteClock, host: str = "127.0.0.1", port: int = 0, seed: int = 42,
                 answer_timeout_s: float = 1.0, endpoint: ServiceEndpoint | None = None,
                 tripinfo: Path | None = None) -> None:
        self.site = site
        self.clock = clock
        self.seed = seed
        self.answer_timeout_s = answer_timeout_s
        self.endpoint = endpoint
        self.tripinfo = tripinfo
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._agents: dict[str, _Agent] = {}
        self._cond = threading.Condition()
        self._answers: dict[str, str] = {}
        self._step_t: float | None = None
        self.specs = {s.tls_id: s for s in site.corridor.intersections}
        self.by_cid = {s.controller_id: s for s in site.corridor.intersections}
        self.steps = 0
        self.late = 0
        self.lag_s = 0.0
        self.origin: datetime | None = None
        self.world: _LockstepWorld | None = None
        self._metrics()

    # ------------------------------------------------------------------ metrics
    def _metrics(self) -> None:
        if self.endpoint is None:
            return
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        twin = self

        class Collector:
            def collect(self):  # noqa: D401 - prometheus_client interface
                yield CounterMetricFamily("traffic_twin_steps", "SUMO steps run", value=twin.steps)
                yield CounterMetricFamily("traffic_twin_late_answers", "agent answers that came too late",
                                          value=twin.late)
                g = GaugeMetricFamily("traffic_twin_sim_time_seconds", "SUMO simulation time")
                g.add_metric([], twin.world.time if twin.world else 0.0)
                yield g
                lag = GaugeMetricFamily("traffic_twin_lag_seconds", "site-clock seconds the twin runs behind")
                lag.add_metric([], twin.lag_s)
                yield lag
                agents = GaugeMetricFamily("traffic_twin_agents_connected", "field agents connected")
                agents.add_metric([], len(twin._agents))
                yield agents

        self.endpoint.registry.register(Collector())

    def health(self) -> tuple[bool, dict[str, Any]]:
        ok = self.world is not None and self.lag_s < 30 * max(1.0, self.clock.speed)
        return ok, {"sim_time_s": self.world.time if self.world else None, "agents": sorted(self._agents),
                    "lag_s": round(self.lag_s, 1), "port": self.port}

    # ------------------------------------------------------------------ agents
    def _accept_loop(self, stop: threading.Event) -> None:
        self._listener.settimeout(0.5)
        while not stop.is_set():
            try:
                sock, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._hello, args=(sock,), daemon=True).start()

    def _hello(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10.0)
        reader = sock.makefile("r", encoding="utf-8", newline="\n")
        try:
            hello = json.loads(reader.readline() or "{}")
            cid = str(hello.get("hello", ""))
        except (OSError, ValueError):
            sock.close()
            return
        reply: dict[str, Any]
        if cid not in self.by_cid:
            reply = {"ok": False, "error": f"controller {cid!r} is not in site {self.site.name}"}
        elif self.origin is None:
            reply = {"ok": False, "error": "the twin is starting; retry"}
        else:
            reply = {"ok": True, "origin": self.origin.isoformat(), "t": self.world.time if self.world else 0.0,
                     "tls_id": self.by_cid[cid].tls_id, "speed": self.clock.speed}
        try:
            sock.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            sock.close()
            return
        if not reply["ok"]:
            sock.close()
            return
        sock.settimeout(None)
        agent = _Agent(cid, sock, reader, self)
        with self._cond:
            old = self._agents.get(cid)
            self._agents[cid] = agent
        if old is not None:
            log.warning("twin: %s connected again; the older agent is dropped", cid)
            old.close()
        log.info("twin: agent %s connected", cid)

    def _gone(self, agent: _Agent) -> None:
        with self._cond:
            if self._agents.get(agent.controller_id) is agent:
                del self._agents[agent.controller_id]
                log.warning("twin: agent %s left; its cabinet goes dark (all red)", agent.controller_id)
            self._cond.notify_all()

    def _answer(self, agent: _Agent, t: float, state: str) -> None:
        with self._cond:
            if self._step_t is not None and abs(t - self._step_t) < 1e-6:
                spec = self.by_cid[agent.controller_id]
                if len(state) == spec.link_count and set(state) <= set("GgyrYuoO"):
                    self._answers[agent.controller_id] = state
                    self._cond.notify_all()
                else:
                    log.error("twin: %s drove %r (%d groups expected): dark", agent.controller_id, state[:40],
                              spec.link_count)
            else:
                self.late += 1

    def _exchange(self, now: float, readings: Mapping[str, Mapping[str, DetectorReading]]) -> dict[str, str]:
        with self._cond:
            self._step_t = now
            self._answers = {}
            agents = list(self._agents.values())
        for agent in agents:
            spec = self.by_cid[agent.controller_id]
            det = {d: [r.count, round(r.occupancy_pct, 2), bool(r.presence), r.motorcycles]
                   for d, r in readings.get(spec.tls_id, {}).items()}
            agent.send({"t": now, "d": det})
        deadline = time.monotonic() + self.answer_timeout_s
        with self._cond:
            while True:
                waiting = [a for a in agents if a.alive and a.controller_id not in self._answers]
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    break
                self._cond.wait(left)
            answers, self._step_t = dict(self._answers), None
        return answers

    # ------------------------------------------------------------------ run
    def run(self, stop: threading.Event) -> int:
        scenario = self.site.scenario()
        begin, end = scenario.begin, scenario.end
        heads = {tls: _Head(spec) for tls, spec in self.specs.items()}
        world = _LockstepWorld.__new__(_LockstepWorld)
        world.server = self
        interval = max(1, self.site.settings.control.count_interval_s)
        now = self.clock.now()
        start = now - timedelta(seconds=now.timestamp() % interval)  # intervals on whole minutes
        self.origin = start - timedelta(seconds=begin)
        options = (*scenario.sumo_options, "--no-warnings", "true")
        SumoWorld.__init__(world, scenario.sumocfg, emulators=heads, seed=self.seed, begin=begin, end=end,
                           options=options, tripinfo=self.tripinfo)
        self.world = world
        write_json_atomic(run_dir(self.site.state_dir) / "twin-address.json",
                          {"host": self.host, "port": self.port, "origin": self.origin.isoformat()})
        acceptor = threading.Thread(target=self._accept_loop, args=(stop,), name="twin-accept", daemon=True)
        acceptor.start()
        log.info("twin: %s on %s:%d, speed %g, simulation %d-%d s, origin %s", self.site.name, self.host,
                 self.port, self.clock.speed, begin, end, self.origin.isoformat())
        last_state = 0.0
        try:
            while not stop.is_set() and world.time < end:
                target = (self.clock.now() - self.origin).total_seconds()
                self.lag_s = max(0.0, target - world.time - 1.0)
                if world.time + 1.0 > target:
                    stop.wait(min(0.5, self.clock.wall_seconds(world.time + 1.0 - target)))
                    continue
                world.step()
                self.steps += 1
                if self.endpoint is not None and time.monotonic() - last_state > 2.0:
                    self.endpoint.write_state()
                    last_state = time.monotonic()
        except TrafficError:
            log.exception("twin: SUMO failed")
            return 1
        finally:
            for agent in list(self._agents.values()):
                agent.send({"end": True})
                agent.close()
            self._listener.close()
            world.close()
        log.info("twin: stopped at %.0f s (%d steps)", world.time, self.steps)
        return 0
