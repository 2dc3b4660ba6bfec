"""Red clearance on the driven states: the gap the plain conflict monitor left open, now closed."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.examples import three_phase
from field_firmware_stubs.clearance_monitor import ClearanceMonitor
from field_firmware_stubs.conflict_monitor import ConflictMonitor
from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from field_firmware_stubs.samples import four_leg
from traffic.config import MqttSettings

SPEC = four_leg("c1")  # phase 1 "GgrrGgrr" (red clearance 1.8 s) then phase 3 "rrGgrrGg" conflicts with it
P1, Y1, RED, P3 = "GgrrGgrr", "yyrryyrr", "rrrrrrrr", "rrGgrrGg"


def drive(monitor: ConflictMonitor, red_s: float, dt: float = 0.1) -> bool:
    """Phase 1 green, 4 s yellow, ``red_s`` all red, then the conflicting phase 3; True if it tripped."""
    t = 0.0
    for state, duration in ((P1, 10.0), (Y1, 4.0), (RED, red_s), (P3, 5.0)):
        end = t + duration
        while t < end - 1e-9:
            monitor.observe(round(t, 3), state)
            t += dt
    return monitor.tripped


@pytest.mark.parametrize("red_s", [0.0, 0.5, 1.5])
def test_a_conflicting_green_before_the_red_clearance_trips_flash(red_s):
    assert SPEC.phases[0].red_clear_s == pytest.approx(1.8)
    assert not drive(ConflictMonitor(SPEC), red_s)  # what the plain monitor let through
    monitor = ClearanceMonitor(SPEC)
    assert drive(monitor, red_s)
    assert "red clearance" in monitor.reason and monitor.observe(99.0, P1) == monitor.flash_state


@pytest.mark.parametrize("red_s", [1.8, 2.0, 5.0])
def test_full_red_clearance_passes(red_s):
    assert not drive(ClearanceMonitor(SPEC), red_s)


def test_coarse_sampling_is_allowed_its_step():
    # sampled every second, a 1.8 s red can only be seen as 1 or 2 s
    assert not drive(ClearanceMonitor(SPEC), 1.0, dt=1.0)
    assert drive(ClearanceMonitor(SPEC), 0.0, dt=1.0)


def test_reset_clears_the_red_timers():
    monitor = ClearanceMonitor(SPEC)
    assert drive(monitor, 0.0)
    monitor.reset()
    assert monitor.observe(100.0, P3) == P3 and not monitor.tripped


@pytest.mark.parametrize("spec", [four_leg("c1"), three_phase("c3")], ids=["four_leg", "three_phase"])
@pytest.mark.parametrize("dt", [0.1, 1.0])
def test_the_emulator_program_always_honours_red_clearance(spec, dt):
    """The real signal program, random plans (pretimed, actuated, free) and demand: the monitor never trips."""
    emu = FieldEmulator(spec, site="s", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(emu.monitor, ClearanceMonitor)
    rng = random.Random(7)
    t, version, next_plan = 0.0, 1, 50.0
    while t < 1800:
        t = round(t + dt, 1)
        if t >= next_plan:  # a new plan every few minutes; silence past 900 s also exercises the fallback
            next_plan += rng.randint(100, 300)
            version += 1
            splits = [p.min_split_s + rng.randint(0, 20) for p in spec.phases]
            plan = spec.plan_from_splits(splits, version=version, mode=rng.choice(["pretimed", "actuated", "free"]),
                                         offset_s=rng.randint(0, 100))
            plan = replace(plan, expires_at=(emu.clock(t) + timedelta(seconds=300)).isoformat())
            emu._on_plan_message(plan.to_json(), None, None)  # noqa: SLF001 - the MQTT thread's entry point
        readings = {d.detector_id: DetectorReading(count=int(rng.random() < 0.3)) for d in spec.detectors}
        emu.tick(t, readings)
    assert emu.stats.plans_applied >= 3
    assert not emu.monitor.tripped, emu.monitor.reason
