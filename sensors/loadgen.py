"""A light load generator: thousands of controllers' count reports from one process.

Why not the field emulator: at city scale the point is the pipeline (broker,
ingest, database), not signal timing, and a full emulator per controller
costs far more CPU than the report it sends. This publishes the very same
``counts/1`` payloads (built by :class:`traffic.messages.CountReport`) for
``controllers`` x ``detectors``, over a few MQTT connections (many
controllers per connection, as a :class:`FieldGateway` does), QoS 1.

Content is a pure function of (controller, interval, detector), so a test or
benchmark can reconcile what is stored against what was published without
keeping the messages: :func:`expected_total` gives the vehicle total of any
set of intervals. Each message's publish wall time is recorded
(``publish_times[interval, controller]``) for end-to-end latency.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from traffic import topics
from traffic.config import MqttSettings
from traffic.errors import TransportError
from traffic.messages import CountRecord, CountReport

log = logging.getLogger(__name__)

__all__ = ["LoadGenerator", "LoadResult", "controller_id", "detector_id", "vehicle_count", "expected_total"]

DEFAULT_ORIGIN = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
# The exact bytes CountReport.to_json() writes (compact separators, same key order).
_HEAD = '{"schema":"counts/1","controller_id":"%s","seq":%d,"interval_start":"%s","interval_s":%d,"records":['
_RECORD = '{"detector_id":"%s","count":%%d,"occupancy_pct":%%r,"motorcycle_count":%%d}'


def controller_id(index: int) -> str:
    return f"c{index:05d}"


def detector_id(index: int) -> str:
    return f"d{index:02d}"


def vehicle_count(controller: int, interval: int, detector: int) -> int:
    """Deterministic count 0..9 (cheap, varied, reproducible in SQL-free reconciliation)."""
    return (controller * 7 + interval * 3 + detector * 5) % 10


def expected_total(controllers: int, detectors: int, intervals: range) -> int:
    """Sum of vehicle counts the generator publishes for these intervals."""
    return sum(vehicle_count(c, k, d) for c in range(controllers) for k in intervals for d in range(detectors))


@dataclass
class LoadResult:
    """What was published (and acknowledged by the broker)."""

    messages: int
    records: int
    acked: int
    seconds: float
    behind_s: float                 # worst lag behind the real-time schedule
    publish_times: np.ndarray       # [interval, controller] wall-clock seconds (NaN: not published)


class LoadGenerator:
    """Publish count reports for ``controllers`` x ``detectors`` every ``interval_s`` seconds."""

    def __init__(self, mqtt_settings: MqttSettings, *, site: str, controllers: int, detectors: int = 16,
                 interval_s: int = 1, connections: int = 2, origin: datetime = DEFAULT_ORIGIN,
                 max_inflight: int = 1000, first_controller: int = 0, session_expiry_s: int = 0) -> None:
        if controllers < 1 or detectors < 1 or interval_s < 1 or connections < 1:
            raise ValueError("controllers, detectors, interval_s and connections must be >= 1")
        self.site = topics.check_id(site, "site")
        self.controllers = controllers
        self.detectors = detectors
        self.interval_s = interval_s
        self.origin = origin
        self.first_controller = first_controller
        self._settings = mqtt_settings
        self._session_expiry_s = session_expiry_s
        self._acked = 0
        self._lock = threading.Lock()
        self._topics = [topics.topic(site, controller_id(first_controller + c), topics.COUNTS)
                        for c in range(controllers)]
        self._record_formats = [_RECORD % detector_id(d) for d in range(detectors)]
        self._clients: list[mqtt.Client] = []
        tag = uuid.uuid4().hex[:6]
        for i in range(connections):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{site}-{tag}-{i}",
                                 protocol=mqtt.MQTTv5)
            client.max_inflight_messages_set(max_inflight)
            client.max_queued_messages_set(0)
            client.on_publish = self._on_publish
            self._clients.append(client)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: object,
                    properties: object) -> None:
        with self._lock:
            self._acked += 1

    def report(self, controller: int, interval: int) -> CountReport:
        """The report of one controller (index in this generator) for one interval."""
        c = self.first_controller + controller
        return CountReport(
            controller_id(c), interval, self.origin + timedelta(seconds=interval * self.interval_s),
            self.interval_s,
            tuple(CountRecord(detector_id(d), n := vehicle_count(c, interval, d), float(n * 3 % 100), n * 3 // 4)
                  for d in range(self.detectors)),
        )

    def payload(self, controller: int, interval: int) -> bytes:
        """``report(controller, interval).to_json()``, byte for byte, about ten times cheaper.

        Building the dataclasses and running ``json.dumps`` cost a few hundred
        microseconds per report, which made the generator, not the pipeline,
        the bottleneck of a city-scale run. The equality is unit-tested.
        """
        c = self.first_controller + controller
        start = (self.origin + timedelta(seconds=interval * self.interval_s)).isoformat()
        head = _HEAD % (controller_id(c), interval, start, self.interval_s)
        base = c * 7 + interval * 3
        records = ",".join([fmt % (n, float(n * 3 % 100), n * 3 // 4)
                            for d, fmt in enumerate(self._record_formats)
                            for n in ((base + d * 5) % 10,)])
        return (head + records + "]}").encode()

    def start(self, timeout_s: float = 10.0) -> None:
        try:
            for client in self._clients:
                # A session that outlives the connection lets paho re-send
                # unacknowledged publishes after a broker restart.
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self._session_expiry_s
                client.reconnect_delay_set(min_delay=1, max_delay=2)
                client.connect(self._settings.host, self._settings.port, keepalive=60, clean_start=False,
                               properties=props)
                client.loop_start()
        except OSError as exc:
            self.stop()
            raise TransportError(f"load generator cannot connect to {self._settings.url}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while not all(c.is_connected() for c in self._clients):
            if time.monotonic() > deadline:
                self.stop()
                raise TransportError(f"load generator not connected to {self._settings.url} in {timeout_s} s")
            time.sleep(0.01)

    def stop(self) -> None:
        for client in self._clients:
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return all(c.is_connected() for c in self._clients)

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def run(self, intervals: int, *, real_time: bool = True, first_interval: int = 0,
            stop: threading.Event | None = None, wait_acks_s: float = 60.0) -> LoadResult:
        """Publish ``intervals`` rounds (all controllers each); paced to the wall clock when ``real_time``.

        Real-time pacing spreads one round over its ``interval_s`` in 20
        slices a second (as unsynchronised controllers do) instead of
        bursting it. ``stop`` ends
        the run early (the result says what was published).
        """
        times = np.full((intervals, self.controllers), np.nan)
        acked_before = self.acked
        started = time.monotonic()
        behind = 0.0
        sent = 0
        n_clients = len(self._clients)
        # Pace in slices (20 a second) rather than per message: a sleep and a
        # thread wake-up per message cost more CPU than building the message.
        slices = max(1, min(self.controllers, 20 * self.interval_s)) if real_time else 1
        bounds = [round(i * self.controllers / slices) for i in range(slices + 1)]
        for k in range(intervals):
            if stop is not None and stop.is_set():
                break
            for s in range(slices):
                if stop is not None and stop.is_set():
                    break
                if real_time:
                    due = started + (k + s / slices) * self.interval_s
                    lag = time.monotonic() - due
                    if lag < 0:
                        time.sleep(-lag)
                    else:
                        behind = max(behind, lag)
                for c in range(bounds[s], bounds[s + 1]):
                    payload = self.payload(c, first_interval + k)
                    times[k, c] = time.time()
                    self._clients[c % n_clients].publish(self._topics[c], payload, qos=1)
                    sent += 1
        deadline = time.monotonic() + wait_acks_s
        while self.acked - acked_before < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return LoadResult(messages=sent, records=sent * self.detectors, acked=self.acked - acked_before,
                          seconds=time.monotonic() - started, behind_s=behind, publish_times=times)
