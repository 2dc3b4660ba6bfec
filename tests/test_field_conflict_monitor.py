"""Conflict monitor: trips (and latches flash) on corrupted states, never on a correct sequence."""

from __future__ import annotations

from field_firmware_stubs.conflict_monitor import ConflictMonitor
from field_firmware_stubs.program import SignalProgram
from field_firmware_stubs.samples import four_leg

SPEC = four_leg()


def test_conflicting_greens_trip_flash_and_latch():
    monitor = ConflictMonitor(SPEC)
    assert monitor.observe(0.0, "GgrrGgrr") == "GgrrGgrr"
    corrupted = "GgGrGgrr"  # group 2 (east through) green with north-south
    assert monitor.observe(1.0, corrupted) == "r" * 8
    assert monitor.tripped and "0 and 2" in monitor.reason and monitor.tripped_at == 1.0
    # latched: even a correct state is not driven until reset
    assert monitor.observe(2.0, "GgrrGgrr") == "r" * 8
    monitor.reset()
    assert monitor.observe(3.0, "rrrrrrrr") == "rrrrrrrr"


def test_yellow_with_a_conflicting_green_is_a_conflict():
    monitor = ConflictMonitor(SPEC)
    monitor.observe(0.0, "yyrryyrr")
    monitor.observe(0.1, "yyGgyyrr")
    assert monitor.tripped


def test_foes_may_not_both_be_protected_green():
    monitor = ConflictMonitor(SPEC)
    monitor.observe(0.0, "GGrrGgrr")  # left 1 protected against opposing through 4
    assert monitor.tripped and "foe" in monitor.reason


def test_green_to_red_without_yellow_is_a_fault():
    monitor = ConflictMonitor(SPEC)
    monitor.observe(0.0, "GgrrGgrr")
    monitor.observe(1.0, "rgrrGgrr")
    assert monitor.tripped and "without yellow" in monitor.reason


def test_short_yellow_is_a_fault_but_sampling_jitter_is_not():
    short = ConflictMonitor(SPEC)
    short.observe(0.0, "GgrrGgrr")
    short.observe(0.1, "yyrryyrr")
    short.observe(1.0, "rrrrrrrr")
    assert short.tripped and "yellow for 0.9 s" in short.reason
    sampled = ConflictMonitor(SPEC)  # 3.3 s yellow seen by a 1 s sampler: first seen at 11, red seen at 14
    for t, state in [(10.0, "GgrrGgrr"), (11.0, "yyrryyrr"), (12.0, "yyrryyrr"), (13.0, "yyrryyrr"),
                     (14.0, "rrrrrrrr")]:
        sampled.observe(t, state)
    assert not sampled.tripped


def test_malformed_state_is_a_fault():
    monitor = ConflictMonitor(SPEC)
    monitor.observe(0.0, "GgrrGgr")
    assert monitor.tripped and "signal groups" in monitor.reason


def test_a_full_program_run_at_one_second_steps_never_trips():
    program = SignalProgram(SPEC, SPEC.default_plan(97), start_time=0.0)
    monitor = ConflictMonitor(SPEC)
    for t in range(1, 600):
        monitor.observe(float(t), program.step(float(t)))
    assert not monitor.tripped, monitor.reason
