"""Load benchmark: how many emulated controllers one process can run.

``python -m field_firmware_stubs.bench --controllers 300 --seconds 600``
runs a synthetic world offline and reports simulated controller-seconds per
wall second; add ``--mqtt mqtt://127.0.0.1:1883`` to publish everything
through one :class:`FieldGateway`. Results are written as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.link import FieldGateway
from field_firmware_stubs.samples import four_leg
from field_firmware_stubs.world_synthetic import SyntheticWorld
from traffic.config import FieldSettings, MqttSettings


def run(controllers: int, seconds: int, mqtt_url: str = "", seed: int = 1) -> dict[str, float]:
    """Run the benchmark and return its numbers."""
    site = f"bench{uuid.uuid4().hex[:6]}"
    settings = MqttSettings(url=mqtt_url) if mqtt_url else MqttSettings()
    gateway = FieldGateway(settings, site=site) if mqtt_url else None
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    emulators = [FieldEmulator(four_leg(f"c{i:04d}", site=site), site=site, mqtt=settings, clock_origin=origin,
                               gateway=gateway, settings=FieldSettings(), tod_plan=None)
                 for i in range(controllers)]
    if gateway is not None:
        gateway.start()
        for emulator in emulators:
            emulator.start()
    try:
        started = time.perf_counter()
        world = SyntheticWorld(emulators, seed=seed, rates_vph=400.0)
        world.run_until(seconds)
        elapsed = time.perf_counter() - started
    finally:
        for emulator in emulators:
            emulator.stop()
        if gateway is not None:
            gateway.stop(discard_session=True)
    return {
        "controllers": controllers, "simulated_s": seconds, "wall_s": round(elapsed, 3),
        "controller_steps_per_s": round(controllers * seconds / elapsed, 1),
        "realtime_factor": round(seconds / elapsed, 2),
        "us_per_controller_step": round(elapsed / (controllers * seconds) * 1e6, 1),
        "vehicles": world.vehicles,
        "counts_published": sum(e.stats.counts_published for e in emulators),
        "mqtt": bool(mqtt_url),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--mqtt", default="", help="broker URL; empty runs offline")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(args.controllers, args.seconds, args.mqtt)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
