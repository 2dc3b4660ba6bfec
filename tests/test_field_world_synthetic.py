"""Synthetic world: many emulators over one gateway connection, Poisson counts reach the broker."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from test_field_emulator_mqtt import Observer

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.link import FieldGateway
from field_firmware_stubs.samples import four_leg
from field_firmware_stubs.world_synthetic import SyntheticWorld
from traffic import messages as msg
from traffic.config import MqttSettings

ORIGIN = datetime(2026, 3, 2, 7, tzinfo=UTC)


def test_forty_controllers_publish_poisson_counts_through_one_gateway(mqtt_url, site):
    observer = Observer(mqtt_url, site)
    gateway = FieldGateway(MqttSettings(url=mqtt_url), site=site)
    emulators = [FieldEmulator(four_leg(f"c{i:02d}", site=site), site=site, mqtt=MqttSettings(url=mqtt_url),
                               clock_origin=ORIGIN, gateway=gateway) for i in range(40)]
    gateway.start()
    try:
        for emulator in emulators:
            emulator.start()
        world = SyntheticWorld(emulators, seed=7, rates_vph=400.0)
        world.run_until(120)
        assert all(not e.monitor.tripped for e in emulators)
        observer.wait_for(lambda m: m[0].endswith("/counts") and len(
            [x for x in observer.messages if x[0].endswith("/counts")]) >= 80, timeout=10)
        reports = [msg.decode_counts(m[1]) for m in observer.messages if m[0].endswith("/counts")]
        assert len(reports) == 80 and len({(r.controller_id, r.seq) for r in reports}) == 80
        total = sum(r.count for rep in reports for r in rep.records)
        expected = 40 * 6 * 400.0 * 120 / 3600
        assert abs(total - expected) < 5 * math.sqrt(expected)
        assert total == world.vehicles
        motorcycles = sum(r.motorcycle_count for rep in reports for r in rep.records)
        assert 0.8 * total < motorcycles < 0.9 * total
    finally:
        for emulator in emulators:
            emulator.stop()
        gateway.stop(discard_session=True)
        observer.close()


def test_rates_per_detector_are_respected_offline():
    emulators = [FieldEmulator(four_leg("a"), site="s", mqtt=MqttSettings(), clock_origin=ORIGIN)]
    world = SyntheticWorld(emulators, seed=3, rates_vph={("a", "d1"): 3600.0}, default_vph=0.0)
    world.run_until(600)
    assert 480 < world.vehicles < 720  # ~600 arrivals at d1 only, nothing elsewhere
    assert emulators[0].mode == msg.MODE_TOD and not emulators[0].monitor.tripped
