"""Count reports across a broker restart reach PostgreSQL exactly once (issue 13).

The loss this guards against: Mosquitto keeps persistent sessions and their
queued messages over a restart, but not *shared* subscriptions (the ingest
workers' ``$share/<group>/.../counts``). Until a worker has subscribed again,
a field that reconnected first gets PUBACK ``0x10`` *No matching subscribers*
for its reports and the broker drops them; without the field's outbox they
were gone (2 of j1's reports in a run of ``tests/test_services_e2e.py``).

Here the order is forced: a real private Mosquitto and a real ingest worker;
the worker is stopped (session kept), the broker restarted (SIGTERM: it saves
its database), the field reconnects and publishes, one report while the
broker is still down, and only then does the worker come back. Every report
the field produced must be stored, each once.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.services import PrivateBroker
from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from field_firmware_stubs.outbox import RC_NO_MATCHING_SUBSCRIBERS
from field_firmware_stubs.samples import four_leg
from sensors.ingest import IngestService
from traffic.config import MqttSettings, Settings

ORIGIN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
INTERVAL_S = 10


def readings(spec, t: int) -> dict[str, DetectorReading]:
    return {d.detector_id: DetectorReading(count=1 if (t + i) % 3 == 0 else 0, occupancy_pct=20.0)
            for i, d in enumerate(spec.detectors)}


class Field:
    """One emulator stepped by hand; a tick every few milliseconds lets PUBACKs come in between steps."""

    def __init__(self, emu: FieldEmulator) -> None:
        self.emu, self.t = emu, 0

    def run(self, seconds: int, pause_s: float = 0.005) -> None:
        for _ in range(seconds):
            self.t += 1
            self.emu.tick(float(self.t), readings(self.emu.spec, self.t))
            time.sleep(pause_s)

    def idle(self, until, timeout_s: float = 20.0) -> None:
        """Keep the emulator's clock still but let it pump its outbox until ``until()``."""
        deadline = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < deadline, "timed out"
            self.emu.outbox.pump(self.emu._link)  # noqa: SLF001 - the tick thread's pump, without a step
            time.sleep(0.02)


def stored(dsn: str, cid: str) -> dict[datetime, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT interval_start, count(*) FROM detector_counts WHERE controller_id = %s"
                            " GROUP BY 1 ORDER BY 1", (cid,)).fetchall()
    return {start: int(n) for start, n in rows}


@pytest.mark.mqtt
def test_count_reports_survive_a_broker_restart_before_the_ingest_resubscribes(tmp_path, pg_dsn, site):
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    port = broker.port
    settings = Settings(state_dir=str(tmp_path / "state"), mqtt=MqttSettings(url=broker.url))
    settings = replace(settings, ingest=replace(settings.ingest, batch_max_rows=500, batch_max_delay_s=0.05))
    spec = four_leg()
    detectors = len(spec.detectors)

    def ingest() -> IngestService:
        svc = IngestService(settings, dsn=pg_dsn, site=site, client_id=f"ingest-{site}", session_expiry_s=600,
                            db_timeout_s=2.0)
        svc.start()
        return svc

    svc = ingest()
    emu = FieldEmulator(spec, site=site, mqtt=MqttSettings(url=broker.url, keepalive_s=5),
                        count_interval_s=INTERVAL_S, clock_origin=ORIGIN, state_dir=tmp_path / "field")
    field = Field(emu)
    try:
        emu.start()
        field.run(3 * INTERVAL_S)            # 3 reports, stored
        field.idle(lambda: len(emu.outbox) == 0)
        assert emu.stats.counts_published == 3

        # the worker goes away (its session and shared subscription stay) and the broker restarts
        svc.stop(timeout=5.0)
        broker.stop()
        deadline = time.monotonic() + 10
        while emu.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        field.run(INTERVAL_S)                # 1 report while the broker is down: paho queues it
        broker = PrivateBroker(tmp_path / "broker", port=port)
        broker.start()
        deadline = time.monotonic() + 20
        while not emu.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.connected, "the field link did not come back"
        field.run(2 * INTERVAL_S)            # 2 more while no worker has subscribed again
        def counts_waiting() -> list[str]:
            return [k for k in emu.outbox.keys() if k.startswith("counts/")]

        field.idle(lambda: len(counts_waiting()) == 3 and emu.outbox.waiting == len(emu.outbox))
        assert emu.outbox.stats.no_subscriber >= 3, "the restarted broker should have had no subscriber"
        assert counts_waiting() == [f"counts/{(ORIGIN + timedelta(seconds=k * INTERVAL_S)).isoformat()}"
                                    for k in (3, 4, 5)]  # kept, not lost

        # the worker returns to its session and subscribes again; the next report shows a subscriber is back
        svc = ingest()
        field.run(2 * INTERVAL_S)
        field.idle(lambda: len(emu.outbox) == 0)
        emu.stop()
        produced = emu.stats.counts_published
        assert produced == 8
        expected = {ORIGIN + timedelta(seconds=k * INTERVAL_S): detectors for k in range(produced)}
        deadline = time.monotonic() + 20
        while stored(pg_dsn, spec.controller_id) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        got = stored(pg_dsn, spec.controller_id)
        missing = sorted(set(expected) - set(got))
        assert got == expected, f"missing interval starts {[m.isoformat() for m in missing]}; stored {got}"
        assert sum(got.values()) == emu.stats.count_records
        assert emu.outbox.stats.resent >= 3 and emu.outbox.stats.dropped == 0
        assert RC_NO_MATCHING_SUBSCRIBERS == 0x10
    finally:
        emu.stop()
        svc.stop(retire=True, timeout=5.0)
        broker.stop()


def test_outbox_keeps_refused_reports_and_resends_them_when_a_subscriber_is_back(tmp_path):
    """The outbox alone, on a fake link: 0x10 keeps a report; a later success re-sends the backlog."""
    from field_firmware_stubs.outbox import Outbox

    class Link:
        connected = True

        def __init__(self) -> None:
            self.sent: list[tuple[int, bytes]] = []
            self.answer = RC_NO_MATCHING_SUBSCRIBERS
            self.results: dict[int, int] = {}

        def publish_tracked(self, topic: str, payload: bytes, *, qos: int = 1) -> int | None:
            mid = len(self.sent) + 1
            self.sent.append((mid, payload))
            self.results[mid] = self.answer
            return mid

        def take_result(self, mid: int) -> int | None:
            return self.results.pop(mid, None)

    now = [0.0]
    path = tmp_path / "outbox.json"
    box = Outbox("j1", capacity=3, path=path, clock=lambda: now[0])
    link = Link()
    for k in range(3):
        box.add(f"counts/{k}", "t/counts", f"r{k}".encode())
        box.pump(link)
    box.pump(link)
    assert len(box) == 3 and box.stats.no_subscriber == 3
    sent = len(link.sent)
    box.pump(link)
    assert len(link.sent) == sent, "no re-send storm while nobody subscribes"
    now[0] += 5.0                             # past the back-off (1, 2, 4 s after 3 refusals)
    box.pump(link)
    box.pump(link)
    assert len(link.sent) == sent + 1, "one probe per back-off period"
    box.save()
    assert path.exists()
    # a restart: the next run loads what was unconfirmed
    box = Outbox("j1", capacity=3, path=path, clock=lambda: now[0])
    assert len(box) == 3
    link.answer = 0
    box.add("counts/3", "t/counts", b"r3")   # full: the oldest goes
    assert box.stats.dropped == 1
    box.pump(link)
    box.pump(link)
    assert len(box) == 0 and box.stats.confirmed == 3
    box.save()
    assert not path.exists()
