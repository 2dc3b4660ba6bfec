"""Issue 12 item 5: a controller that starts mid-interval must not flash, nor show a partial interval.

Before the fix the emulator started its program *in step* with the offset,
i.e. in the middle of whatever interval fell at the start time: started in
the last seconds of a yellow, its own monitor saw a short yellow and latched
flash (5 of 60 start seconds on ``four_leg``). Now every start goes through
an all-red start-up interval of at least the longest red clearance, then a
full green; the monitors judge everything from the first tick, so a real
fault injected afterwards still trips flash.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.examples import three_phase
from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.program import SignalProgram
from field_firmware_stubs.samples import four_leg, two_phase
from traffic import messages as msg
from traffic.config import FieldSettings, MqttSettings
from traffic.errors import ConfigError
from traffic.intersection import IntersectionSpec

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)
SPECS = {"four_leg": four_leg("c1"), "two_phase": two_phase("c2"), "three_phase": three_phase("c3")}


def emulator(spec: IntersectionSpec, mode: str = "pretimed", offset_s: float = 0.0, **kw) -> FieldEmulator:
    plan = spec.default_plan()
    plan = spec.plan_from_splits(list(plan.splits), mode=mode, offset_s=offset_s)
    return FieldEmulator(spec, site="s", mqtt=MqttSettings(), clock_origin=ORIGIN, tod_plan=plan, **kw)


def run(emu: FieldEmulator, start: float, seconds: float, dt: float = 1.0) -> list[tuple[float, str]]:
    driven = []
    steps = int(round(seconds / dt))
    for k in range(steps + 1):
        t = round(start + k * dt, 1)
        driven.append((t, emu.tick(t, {})))
    return driven


def longest_red(spec: IntersectionSpec, emu: FieldEmulator) -> float:
    return max([p.red_clear_s for p in spec.phases] + [p.phaseRedClear for p in emu.tod_plan.phases])


@pytest.mark.parametrize("mode", ["pretimed", "actuated", "free"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_no_start_second_of_the_cycle_flashes(name, mode):
    """Every start offset 0..cycle-1 (a plan with yellow and red clearance): no flash, all-red first."""
    spec = SPECS[name]
    probe = emulator(spec, mode, offset_s=7.0)
    cycle = int(probe.tod_plan.patternCycleTime)
    assert all(p.phaseYellowChange > 0 and p.phaseRedClear > 0 for p in probe.tod_plan.phases)
    flashed = []
    for start in range(cycle):
        emu = emulator(spec, mode, offset_s=7.0)
        driven = run(emu, float(start), 3 * cycle)
        if emu.monitor.tripped or emu.mode == msg.MODE_FLASH:
            flashed.append((start, emu.monitor.reason))
            continue
        # start-up: all-red for at least the longest red clearance before any head turns green
        first_green = next(t for t, s in driven if set(s) & set("Gg"))
        assert all(set(s) == {"r"} for t, s in driven if t < first_green)
        assert first_green - start >= longest_red(spec, emu) - 1e-9
        # and no head ever shows a yellow it did not enter from green (no partial interval at the start)
        for (_, before), (_, after) in zip(driven, driven[1:], strict=False):
            for b, a in zip(before, after, strict=False):
                assert not (a == "y" and b == "r"), (start, before, after)
    assert flashed == []


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fractional_start_times_with_fine_steps_never_flash(name):
    """Tenth-of-a-second starts and steps (a monitor sampling at 0.1 s is the strictest)."""
    spec = SPECS[name]
    cycle = emulator(spec).tod_plan.patternCycleTime
    for k in range(0, int(cycle * 10), 7):  # every 0.7 s of the cycle
        emu = emulator(spec, offset_s=3.0)
        run(emu, k / 10.0, cycle * 1.5, dt=0.1)
        assert not emu.monitor.tripped, (k / 10.0, emu.monitor.reason)


def test_a_real_fault_after_start_still_flashes():
    """The start-up sequence does not blind the monitors: a bad state injected later trips flash."""
    spec = SPECS["four_leg"]
    for start, fault_after in ((0.0, 1.0), (16.0, 5.0), (17.0, 30.0), (47.0, 61.0)):
        emu = emulator(spec)
        run(emu, start, fault_after)
        real_step = emu.program.step
        emu.program.step = lambda now, presence=None: "GgGgGgGg"  # fault injection: conflicting greens
        t = start + fault_after + 1.0
        assert emu.tick(t, {}) == "r" * 8 and emu.mode == msg.MODE_FLASH
        emu.program.step = real_step
        assert emu.tick(t + 1.0, {}) == "r" * 8  # latched
        # a yellow cut short after the start-up is caught as well
        emu = emulator(spec)
        driven = run(emu, start, 60.0)
        last = driven[-1][0]
        while "y" not in emu.program.state:
            last += 1.0
            emu.tick(last, {})
        emu.program.step = lambda now, presence=None: "r" * 8
        emu.tick(last + 1.0, {})
        assert emu.monitor.tripped and "yellow" in emu.monitor.reason and emu.mode == msg.MODE_FLASH


def test_coordinated_plan_comes_back_in_step_after_the_start_up():
    """The start-up breaks the offset for a few cycles; the bounded transition restores it."""
    spec = SPECS["four_leg"]
    emu = emulator(spec, offset_s=7.0, settings=FieldSettings(transition_max_step_s=10.0))
    run(emu, 23.0, 600.0)
    program = emu.program
    plan = program.plan
    coord = plan.phase(plan.splitCoordPhase)
    boundary = (plan.patternOffsetTime + coord.splitTime) % plan.patternCycleTime
    assert not program.in_transition
    assert program.cycle_start % plan.patternCycleTime == pytest.approx(boundary)
    assert program.transitions  # it got there by transitions, not by starting mid-interval


def test_start_up_all_red_below_the_red_clearance_is_refused():
    spec = SPECS["four_leg"]
    with pytest.raises(ConfigError):
        emulator(spec, startup_all_red_s=0.5)
    emu = emulator(spec, startup_all_red_s=5.0)
    driven = run(emu, 10.0, 10.0)
    assert [s for t, s in driven if t < 15.0] == ["r" * 8] * 5 and set(driven[5][1]) & set("Gg")


def test_program_without_start_up_keeps_starting_in_step():
    """The engine alone (no start-up) still fast-forwards in step: what the emulator no longer uses."""
    spec = SPECS["four_leg"]
    plan = spec.default_plan()
    program = SignalProgram(spec, plan, start_time=17.0)
    assert "y" in program.state  # mid-yellow: why the emulator needs the start-up interval
    started = SignalProgram(spec, replace(plan), start_time=17.0, startup_all_red_s=2.0)
    assert started.state == "r" * 8 and started.starting_up
    assert set(started.step(19.0)) & set("Gg") and not started.starting_up
