"""``traffic field run``: one cabinet's agent, a real separate process running the real field code.

It takes the MQTT link (TLS with the controller's own certificate when the
broker URL is ``mqtts://``), the independent plan check, the conflict and
clearance monitors and the time-of-day fallback of
:class:`field_firmware_stubs.emulator.FieldEmulator`, with its day plan
(``schedules/<id>.json``: the fallback follows the local time of day) and a
persistent replay memory (``<state_dir>/field``), and drives a
:class:`field_firmware_stubs.world.World`:

* ``--world sumo-twin``: the site's SUMO twin (``traffic field twin``), found
  through ``<state_dir>/run/twin-address.json`` or ``--twin HOST:PORT``;
* ``--world synthetic``: Poisson arrivals on the site clock, no SUMO;
* a real controller: the documented boundary in ``field_firmware_stubs/world.py``.

Exit codes: 0 stopped (SIGTERM/SIGINT, or the world ended), 3 the world or
the broker could not be reached (a supervisor restarts it), 2 bad input.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from app.runtime import ServiceEndpoint, SiteClock, read_json, run_dir
from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from traffic import messages as msg
from traffic.config import Settings
from traffic.errors import TransportError

log = logging.getLogger(__name__)

#: how long an agent waits for its world's next step before it gives up (wall seconds)
STEP_TIMEOUT_S = 30.0


class WorldLost(TransportError):
    """The world stopped answering (twin gone)."""


class TwinClientWorld:
    """The SUMO twin as one controller's :class:`~field_firmware_stubs.world.World` (see ``app.twin``)."""

    def __init__(self, host: str, port: int, controller_id: str, *, connect_timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + connect_timeout_s
        last = ""
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=5.0)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall((json.dumps({"hello": controller_id}) + "\n").encode())
                reader = sock.makefile("r", encoding="utf-8", newline="\n")
                reply = json.loads(reader.readline() or "{}")
                if reply.get("ok"):
                    break
                last = reply.get("error", "refused")
                sock.close()
                if "not in site" in last:
                    raise WorldLost(f"twin {host}:{port}: {last}")
            except (OSError, ValueError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise WorldLost(f"cannot reach the SUMO twin at {host}:{port}: {last}")
            time.sleep(0.5)
        sock.settimeout(STEP_TIMEOUT_S)
        self._sock, self._reader = sock, reader
        self.clock_origin = datetime.fromisoformat(reply["origin"])
        self._t = float(reply["t"])
        self.tls_id = reply.get("tls_id", "")

    def now(self) -> float:
        return self._t

    def read_detectors(self) -> Mapping[str, DetectorReading] | None:
        try:
            line = self._reader.readline()
        except (OSError, ValueError) as exc:
            raise WorldLost(f"SUMO twin silent for {STEP_TIMEOUT_S:.0f} s: {exc}") from exc
        if not line:
            raise WorldLost("the SUMO twin closed the connection")
        data = json.loads(line)
        if data.get("end"):
            return None
        self._t = float(data["t"])
        return {d: DetectorReading(int(v[0]), float(v[1]), bool(v[2]), None if v[3] is None else int(v[3]))
                for d, v in data.get("d", {}).items()}

    def drive_signals(self, state: str) -> None:
        try:
            self._sock.sendall((json.dumps({"t": self._t, "s": state}, separators=(",", ":")) + "\n").encode())
        except OSError as exc:
            raise WorldLost(f"cannot answer the SUMO twin: {exc}") from exc

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class SyntheticAgentWorld:
    """Poisson arrivals at every detector, one step per site-clock second (no SUMO)."""

    def __init__(self, detectors: list[str], *, clock: SiteClock, rate_vph: float = 400.0, seed: int = 1,
                 motorcycle_share: float = 0.85) -> None:
        import numpy as np

        self._rng = np.random.default_rng(seed)
        self._detectors = detectors
        self._clock = clock
        self._rate = rate_vph / 3600.0
        self._moto = motorcycle_share
        now = clock.now()
        self.clock_origin = now - timedelta(seconds=now.timestamp() % 60)
        self._t = math.floor((now - self.clock_origin).total_seconds())
        self._stop = threading.Event()

    def now(self) -> float:
        return float(self._t)

    def read_detectors(self) -> Mapping[str, DetectorReading] | None:
        target = self._t + 1
        while (self._clock.now() - self.clock_origin).total_seconds() < target:
            if self._stop.wait(0.02):
                return None
        self._t = target
        counts = self._rng.poisson(self._rate, len(self._detectors))
        return {d: DetectorReading(int(c), min(100.0, 35.0 * int(c)), None,
                                   int(self._rng.binomial(int(c), self._moto)))
                for d, c in zip(self._detectors, counts, strict=False)}

    def drive_signals(self, state: str) -> None:
        return None

    def close(self) -> None:
        self._stop.set()


def _twin_address(site: Any, given: str, wait_s: float) -> tuple[str, int]:
    if given:
        host, _, port = given.rpartition(":")
        return host or "127.0.0.1", int(port)
    path = run_dir(site.state_dir) / "twin-address.json"
    deadline = time.monotonic() + wait_s
    while True:
        data = read_json(path)
        if data and "port" in data:
            return str(data.get("host", "127.0.0.1")), int(data["port"])
        if time.monotonic() > deadline:
            raise WorldLost(f"no SUMO twin address in {path}: start 'traffic field twin --site {site.root}' "
                            "or pass --twin HOST:PORT")
        time.sleep(0.5)


def tls_for(settings: Settings, identity: str) -> Settings:
    """``settings`` with this identity's client certificate from the site PKI (``[security] pki_dir``),
    when the broker is ``mqtts://`` and no certificate is configured explicitly."""
    m = settings.mqtt
    if not m.tls or m.cert_file or not settings.security.pki_dir:
        return settings
    from traffic.security.pki import PkiLayout

    layout = PkiLayout(Path(settings.security.pki_dir))
    return replace(settings, mqtt=replace(m, ca_file=m.ca_file or str(layout.ca_cert),
                                          cert_file=str(layout.client_cert(identity)),
                                          key_file=str(layout.client_key(identity))))


def plan_verifier(settings: Settings) -> Any:
    """The keys the cabinet trusts: ``[security] plan_verify_keys``, else the site's development key."""
    from traffic.security import signing

    verifier = signing.verifier_from_settings(settings.security)
    if verifier is not None:
        return verifier
    dev = Path(settings.state_dir) / "keys" / "plan-verify.pem"
    if dev.exists():
        return signing.PlanVerifier.from_files([dev])
    log.warning("no plan verify key configured: unsigned plans are accepted (development mode)")
    return None


class FieldAgent:
    """One controller's agent: emulator + world + day plan (see the module docstring)."""

    def __init__(self, site: Any, controller_id: str, *, world: Any, endpoint: ServiceEndpoint | None = None,
                 state_dir: Path | None = None) -> None:
        self.site = site
        self.settings = tls_for(site.settings, controller_id)
        self.spec = site.spec(controller_id)
        self.schedule = site.schedules[controller_id]
        self.world = world
        self.endpoint = endpoint
        self.tz = ZoneInfo(self.settings.site.timezone)
        field_cfg = self.settings.field_
        extra: dict[str, Any] = {}
        for name in ("max_plan_expiry_s", "startup_all_red_s"):  # newer settings, when this version has them
            value = getattr(field_cfg, name, None)
            if value:
                extra[name] = value
        self.emulator = FieldEmulator(
            self.spec, site=site.name, mqtt=self.settings.mqtt, tod_plan=self._tod_plan(world.now()),
            count_interval_s=self.settings.control.count_interval_s, clock_origin=world.clock_origin,
            settings=field_cfg, expiry_clock=lambda: datetime.now(UTC),
            plan_verifier=plan_verifier(self.settings),
            state_dir=state_dir or Path(getattr(field_cfg, "state_dir", "") or site.state_dir / "field"), **extra)
        self._metrics()

    def _local(self, sim_s: float) -> Any:
        return (self.world.clock_origin + timedelta(seconds=sim_s)).astimezone(self.tz).time()

    def _tod_plan(self, sim_s: float) -> Any:
        return self.schedule.plan_at(self._local(sim_s))

    def _metrics(self) -> None:
        if self.endpoint is None:
            return
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        agent = self

        class Collector:
            def collect(self):
                st = agent.emulator.stats
                for name, value, text in (
                        ("counts_published", st.counts_published, "count reports published"),
                        ("count_records", st.count_records, "detector records published"),
                        ("plans_accepted", st.plans_accepted, "central plans accepted"),
                        ("plans_rejected", st.plans_rejected, "central plans refused"),
                        ("plans_applied", st.plans_applied, "plans put in force (central and day plan)"),
                        ("fallbacks", st.fallbacks, "falls back to the day plan"),
                        ("publish_failures", st.publish_failures, "messages the link refused"),
                        ("outbox_resent", agent.emulator.outbox.stats.resent,
                         "telemetry re-sent (no subscriber took it, or no PUBACK)"),
                        ("outbox_dropped", agent.emulator.outbox.stats.dropped,
                         "unconfirmed telemetry dropped because the outbox was full")):
                    yield CounterMetricFamily(f"traffic_field_{name}", text, value=value)
                pending = GaugeMetricFamily("traffic_field_outbox_pending",
                                            "count reports and event batches not yet taken by a subscriber")
                pending.add_metric([], len(agent.emulator.outbox))
                yield pending
                mode = GaugeMetricFamily("traffic_field_mode", "1 for the mode the controller is in", labels=["mode"])
                for m in (msg.MODE_CENTRAL, msg.MODE_TOD, msg.MODE_FLASH):
                    mode.add_metric([m], 1.0 if agent.emulator.mode == m else 0.0)
                yield mode
                link = GaugeMetricFamily("traffic_field_link_up", "MQTT link connected")
                link.add_metric([], 1.0 if agent.emulator.connected else 0.0)
                yield link
                version = GaugeMetricFamily("traffic_field_plan_version", "version of the plan in force")
                version.add_metric([], agent.emulator.plan.version)
                yield version

        self.endpoint.registry.register(Collector())

    def health(self) -> tuple[bool, dict[str, Any]]:
        e = self.emulator
        return (e.mode != msg.MODE_FLASH and e.connected), {
            "controller_id": e.controller_id, "mode": e.mode, "link": e.connected, "plan_id": e.plan.plan_id,
            "plan_version": e.plan.version, "plan_by": e.plan.created_by, "sim_time_s": self.world.now(),
            "stats": {"count_records": e.stats.count_records, "counts_published": e.stats.counts_published,
                      "plans_applied": e.stats.plans_applied, "plans_rejected": e.stats.plans_rejected,
                      "fallbacks": e.stats.fallbacks, "outbox_pending": len(e.outbox),
                      "outbox_resent": e.outbox.stats.resent, "outbox_dropped": e.outbox.stats.dropped}}

    def start_link(self, stop: threading.Event, timeout_s: float = 60.0) -> None:
        """Connect to the broker, retrying while it is not up yet (a supervisor starts things in parallel)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.emulator.start()
                return
            except TransportError as exc:
                if stop.is_set() or time.monotonic() > deadline:
                    raise
                log.warning("%s: broker not reachable yet (%s); retrying", self.spec.controller_id, exc)
                stop.wait(1.0)

    def run(self, stop: threading.Event) -> int:
        """Step until ``stop`` or the world ends; always leaves cleanly (offline status, session kept)."""
        self.start_link(stop)
        next_schedule = self.world.now()
        last_state = 0.0
        try:
            while not stop.is_set():
                readings = self.world.read_detectors()
                if readings is None:
                    log.info("%s: the world ended", self.spec.controller_id)
                    break
                now = self.world.now()
                if now >= next_schedule:  # the day plan: the fallback follows the time of day
                    if self.emulator.set_tod_plan(self._tod_plan(now)):
                        log.info("%s: day plan period %s", self.spec.controller_id,
                                 self.schedule.period_at(self._local(now)).name)
                    next_schedule = now + 30.0
                self.world.drive_signals(self.emulator.tick(now, readings))
                if self.endpoint is not None and time.monotonic() - last_state > 2.0:
                    self.endpoint.write_state()
                    last_state = time.monotonic()
        finally:
            try:
                self.emulator.stop()
            finally:
                self.world.close()
                if self.endpoint is not None:
                    self.endpoint.write_state(stopped=True)
        return 0


def make_world(kind: str, site: Any, controller_id: str, *, clock: SiteClock, twin: str = "",
               connect_timeout_s: float = 60.0) -> Any:
    if kind == "sumo-twin":
        host, port = _twin_address(site, twin, connect_timeout_s)
        return TwinClientWorld(host, port, controller_id, connect_timeout_s=connect_timeout_s)
    if kind == "synthetic":
        spec = site.spec(controller_id)
        return SyntheticAgentWorld([d.detector_id for d in spec.detectors], clock=clock)
    raise ValueError(f"unknown world {kind!r} (sumo-twin, synthetic; a real controller: see "
                     "field_firmware_stubs/world.py)")
