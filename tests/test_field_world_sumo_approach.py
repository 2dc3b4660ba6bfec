"""Approach sensors in the SUMO world (issue #14): zones on the lanes feeding a signal, read every step,
and the free-mode program deciding its greens from them on a real junction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_field_world_sumo import scenario, spec_from  # noqa: F401 - the fixture is used by name

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.world_sumo import SumoWorld
from traffic.config import FieldSettings, MqttSettings

pytestmark = pytest.mark.sumo


def _emulator(tmp_path) -> FieldEmulator:
    spec = spec_from(tmp_path / "net.net.xml")
    return FieldEmulator(spec, site="t", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC),
                         tod_plan=spec.plan_from_splits([24.0, 20.0], mode="free"), settings=FieldSettings())


def test_the_sensor_sees_every_approaching_vehicle_within_range_and_the_program_schedules_on_it(scenario, tmp_path):  # noqa: F811
    emulator = _emulator(tmp_path)
    lanes = {"n_in_0", "s_in_0", "e_in_0", "w_in_0"}
    with SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=200, approach_range_m=100.0) as world:
        seen_most = 0
        arrived = 0
        while world.time < 200:
            world.step()
            arrived += world.api.simulation.getArrivedNumber()
            seen = world._read_approach("C")  # noqa: SLF001 - what the program was given this step
            assert seen is not None
            truth = sum(1 for lane in lanes for v in world.api.lane.getLastStepVehicleIDs(lane)
                        if world.api.lane.getLength(lane) - world.api.vehicle.getLanePosition(v) <= 100.0)
            assert len(seen) == truth
            for v in seen:
                assert v.lane in lanes and 0.0 <= v.distance_m <= 100.0
                assert v.motorcycle == (v.lane in ("s_in_0", "w_in_0"))  # the s and w flows are motorcycles
            seen_most = max(seen_most, len(seen))
        assert seen_most >= 4
        assert arrived > 40
        stats = emulator.program.schedule_stats
        assert stats["hold"] > 0 and stats["end"] > 0  # the greens were decided by the schedule
        assert not emulator.monitor.tripped


def test_without_a_range_the_world_reports_no_sensor_and_the_loops_decide(scenario, tmp_path):  # noqa: F811
    emulator = _emulator(tmp_path)
    with SumoWorld(scenario, emulators={"C": emulator}, seed=1, begin=0, end=120) as world:
        world.run_until(120)
        assert world._read_approach("C") is None  # noqa: SLF001
    assert emulator.program.schedule_stats == {"hold": 0, "end": 0, "next_phase": 0}
