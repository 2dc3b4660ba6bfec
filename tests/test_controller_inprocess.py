"""The central loop on in-process adapters: the bus carries the real payloads; the loop beats the fixed plan."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.sim_adaptive import CLOCK_ORIGIN, SimClock, run_adaptive
from controller.inprocess import InProcessBus, InProcessCounts, InProcessSender, MemoryLedger
from controller.service import CentralService
from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from field_firmware_stubs.samples import four_leg
from traffic import messages, topics
from traffic.config import MqttSettings, Settings
from traffic.intersection import Corridor

SPEC = four_leg("c0")


def _emulator(bus: InProcessBus) -> FieldEmulator:
    emulator = FieldEmulator(SPEC, site=bus.site, mqtt=MqttSettings(), count_interval_s=60,
                             clock_origin=CLOCK_ORIGIN, gateway=bus)  # type: ignore[arg-type]
    emulator.start()
    return emulator


def test_bus_sums_the_emulators_counts_per_detector():
    bus = InProcessBus("sim")
    emulator = _emulator(bus)
    busy = {d.detector_id: DetectorReading(count=1 if d.detector_id == "d1" else 0, motorcycles=1) for d in
            SPEC.detectors}
    for t in range(0, 181):
        emulator.tick(float(t), busy if t % 4 == 0 else {})
    totals = bus.totals("c0", CLOCK_ORIGIN, CLOCK_ORIGIN + timedelta(seconds=180))
    assert totals["d1"].covered_s == 180 and totals["d1"].motorcycles == totals["d1"].classified_vehicles == 45
    assert totals["d2"].classified_vehicles == 0
    assert bus.totals("c0", CLOCK_ORIGIN + timedelta(hours=1), CLOCK_ORIGIN + timedelta(hours=2)) == {}


def test_bus_counts_a_bad_payload_instead_of_raising():
    bus = InProcessBus("sim")
    bus.deliver(topics.topic("sim", "c0", topics.COUNTS), b"{not json")
    assert bus.bad_messages == 1 and bus.counts == {}


def test_central_sends_checked_plans_and_then_heartbeats_the_same_plan():
    bus = InProcessBus("sim")
    emulator = _emulator(bus)
    emulator.tick(0.0, {})
    corridor = Corridor("one", (SPEC,))
    clock = SimClock()
    ledger = MemoryLedger(clock)
    central = CentralService(Settings(), corridor, counts=InProcessCounts(bus), sender=InProcessSender(bus, clock),
                             ledger=ledger, gate=None, apply_timeout_s=0.0)
    clock.sim_s = 600.0
    first = central.run_epoch(clock(), 600)
    assert first.dispatched == 1 and first.outcome == {"c0": "accepted"} and first.errors == []
    plan = first.plans["c0"]
    assert plan.mode == "free" and [r.status for r in bus.results[plan.plan_id]] == [messages.ACCEPTED]
    assert [e.state for e in ledger.history("c0")[0].events] == ["proposed", "checked", "dispatched", "accepted"]
    # same (empty) demand again: nothing new; the plan (applied meanwhile) is re-sent as the heartbeat
    emulator.tick(1200.0, {})  # the field's clock keeps up with the centre's (it judges the plan's expiry on it)
    clock.sim_s = 1200.0
    second = central.run_epoch(clock(), 600)
    assert second.unchanged == ("c0",) and second.proposed == 0 and second.heartbeats == 1
    assert ledger.active_plan("c0") == plan  # reconciled from the field's late "applied"
    assert emulator.stats.plans_accepted == 1 and emulator.stats.plans_rejected == 0


def test_memory_ledger_refuses_the_moves_the_store_refuses():
    from controller.lifecycle import PlanState
    from traffic.errors import PlanError

    ledger = MemoryLedger()
    plan = SPEC.default_plan(version=3)
    ledger.record_proposed(plan, "optimizer", "test")
    with pytest.raises(PlanError, match="versions must increase"):
        ledger.record_proposed(SPEC.default_plan(version=2), "optimizer", "older")
    with pytest.raises(PlanError, match="cannot go from proposed to active"):
        ledger.record_state(plan.plan_id, PlanState.ACTIVE, "central")
    ledger.record_state(plan.plan_id, PlanState.CHECKED, "central")
    ledger.record_state(plan.plan_id, PlanState.REJECTED, "central")
    with pytest.raises(PlanError, match="final state"):
        ledger.record_state(plan.plan_id, PlanState.CHECKED, "central")
    assert ledger.next_version("c0") == 4


@pytest.mark.slow
def test_adaptive_loop_beats_the_fixed_plan_on_a_generated_corridor(tmp_path):
    from simulation.corridor import generate_corridor
    from simulation.runner import run

    scenario = generate_corridor(tmp_path / "net", n_intersections=2, duration_s=1200, demand_scale=0.8)
    static = run(scenario, seed=3)
    report: dict = {}
    adaptive = run_adaptive(scenario, seed=3, workdir=tmp_path / "run", report=report)
    assert adaptive.vehicles == static.vehicles > 0
    assert adaptive.undeparted <= static.undeparted
    assert adaptive.mean_delay_s < static.mean_delay_s
    assert report["fallbacks"] == 0 and report["plans_rejected"] == 0 and report["plans_applied"] >= 2
    assert report["flashed"] == []  # the conflict monitor never saw an unsafe state


def test_bus_estimates_unclassified_loops_from_occupancy_as_the_sql_does():
    """A loop without classes: pulses, occupied seconds and the lightly occupied share, as demand's SQL sums them.

    Two 60 s intervals of one non-classifying loop: 10 vehicles at 12 %
    occupancy (light: they calibrate the loop's seconds per vehicle) and 14
    vehicles at 40 % (heavy: side-by-side motorcycles merge into fewer
    pulses). The benchmark path must see what production sees.
    """
    from controller.demand import seen_vehicles

    bus = InProcessBus("sim")
    for n, (count, occupancy) in enumerate(((10, 12.0), (14, 40.0))):
        start = CLOCK_ORIGIN + timedelta(seconds=60 * n)
        report = messages.CountReport("c0", n, start, 60, (messages.CountRecord("d1", count, occupancy),))
        bus.deliver(topics.topic("sim", "c0", topics.COUNTS), report.to_json())
    totals = bus.totals("c0", CLOCK_ORIGIN, CLOCK_ORIGIN + timedelta(seconds=120))["d1"]
    assert totals.unclassified_vehicles == 24 and totals.classified_vehicles == 0
    assert totals.unclassified_occupied_s == pytest.approx(7.2 + 24.0)
    assert totals.light_occupied_s == pytest.approx(7.2) and totals.light_vehicles == 10
    assert seen_vehicles(totals, 2.0) >= 24  # occupancy never lowers what the pulses already show


class _Gate:
    """A validation gate that passes or refuses every candidate, as the test says."""

    def __init__(self) -> None:
        self.accept = True

    def __call__(self, candidates, incumbents, context):
        from dataclasses import dataclass

        @dataclass
        class Verdict:
            accepted: bool
            reason: str

            def to_dict(self):
                return {"accepted": self.accepted, "reason": self.reason}

        return Verdict(self.accept, "better" if self.accept else "worse than incumbent")


def test_after_a_fallback_the_heartbeat_restores_the_newest_plan_the_field_accepted():
    """Seen in the services test: a new plan (v2) is accepted, the link drops before it applies, the field falls
    back to its day plan (which the store knows, superseded, so it cannot be made active again); the next
    proposals fail the gate. The store still lists v1 as active, and re-sending v1 as the heartbeat is a
    replay the field refuses for ever (it took v2 since). The heartbeat must re-send v2, which the field
    readmits."""
    bus = InProcessBus("sim")
    emulator = _emulator(bus)
    clock, gate = SimClock(), _Gate()
    ledger = MemoryLedger(clock)
    central = CentralService(Settings(), Corridor("one", (SPEC,)), counts=InProcessCounts(bus),
                             sender=InProcessSender(bus, clock), ledger=ledger, gate=gate, apply_timeout_s=0.0)
    t = 0.0

    def run_field(until: float, busy: str | None = None) -> None:
        nonlocal t
        while t < until:
            t += 1.0
            readings = {busy: DetectorReading(count=1, motorcycles=0)} if busy and t % 2 == 0 else {}
            emulator.tick(t, readings)

    def epoch():
        clock.sim_s = t
        return central.run_epoch(clock(), 600)

    # the centre starts while the field runs its day plan and reports it: the store adopts it (bootstrap)
    bus.deliver(topics.topic("sim", "c0", topics.PLAN_ACTIVE), emulator.tod_plan.to_json())
    run_field(600.0)
    v1 = epoch().plans["c0"]
    run_field(1200.0)                        # v1 applied; heavy demand on d1 follows: a new timing
    assert epoch().unchanged == ("c0",)
    assert ledger.active_plan("c0").plan_id == v1.plan_id
    run_field(1800.0, busy="d1")
    second = epoch()
    v2 = second.plans["c0"]
    assert second.outcome == {"c0": "accepted"} and v2.version > v1.version
    emulator._on_disconnect()                # the broker goes away before v2 applies
    run_field(1801.0)
    emulator._on_connect()
    assert emulator.mode == "tod"
    gate.accept = False                      # the next proposals are refused: only the heartbeat goes out
    run_field(2400.0, busy="d2")
    third = epoch()
    assert third.outcome == {"c0": "rejected"}
    assert third.heartbeats == 1
    assert [r.status for r in bus.results[v2.plan_id]][-1] == messages.ACCEPTED  # readmitted
    run_field(2500.0)
    assert emulator.mode == "central" and emulator.plan.plan_id == v2.plan_id
