"""The whole loop on real parts: SUMO world, field emulators, Mosquitto,
ingest, PostgreSQL, central service, SUMO validation gate, dispatch, field ack.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.closed_loop import run_loop
from traffic import db
from traffic.config import load_settings
from traffic.plan import TimingPlan
from traffic.signals import cycle_intervals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corridor_scenario(tmp_path_factory):
    from simulation.corridor import generate_corridor

    return generate_corridor(tmp_path_factory.mktemp("corridor"), n_intersections=3, duration_s=900)


def _settings(mqtt_url: str, dsn: str, site: str, tmp_path):
    base = load_settings(None, env={})
    return replace(
        base,
        state_dir=str(tmp_path),
        mqtt=replace(base.mqtt, url=mqtt_url),
        database=replace(base.database, dsn=dsn),
        site=replace(base.site, site=site),
        ingest=replace(base.ingest, spool_dir=str(tmp_path / "spool")),
        # short epochs so a 15-minute window holds two decisions; one seed keeps it quick.
        # The gate's accept/reject judgement itself is tested in test_simulation_gate.
        control=replace(base.control, epoch_s=300, gate_horizon_s=300, gate_seeds=(1,), gate_margin=0.5),
    )


def test_closed_loop_stores_counts_dispatches_and_runs_the_plan_in_sumo(corridor_scenario, pg_dsn, mqtt_url, site,
                                                                        tmp_path):
    settings = _settings(mqtt_url, pg_dsn, site, tmp_path)
    origin = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    in_force: list[tuple[str, str, str, str]] = []

    def observe(world, emulators, result):
        # with the world paused, what SUMO shows must be what the emulator drives, under the plan it holds
        for tls, emulator in emulators.items():
            shown = world.api.trafficlight.getRedYellowGreenState(tls)
            in_force.append((emulator.controller_id, emulator.plan.plan_id, emulator.plan.created_by, shown))
            states = {i.state for i in cycle_intervals(emulator.plan)}
            assert shown in states, (tls, shown, states)

    result = run_loop(settings, corridor_scenario, dsn=pg_dsn, adaptive=True, seed=7, clock_origin=origin,
                      workdir=tmp_path / "runs", label="adaptive", observer=observe)

    specs = corridor_scenario.corridor.by_id()
    detectors = sum(len(s.detectors) for s in specs.values())
    # every detector reported every minute of the 15 simulated minutes, stored exactly once
    assert result.records_stored == detectors * 15
    with db.connect(pg_dsn) as conn:
        dup = conn.execute("SELECT count(*) FROM (SELECT 1 FROM detector_counts GROUP BY controller_id,"
                           " detector_id, interval_start HAVING count(*) > 1) d").fetchone()[0]
        assert dup == 0
        active = conn.execute("SELECT plan_id, controller_id, body FROM plans WHERE state = 'active'"
                              " AND created_by <> 'bootstrap'").fetchall()
        states = {r[0] for r in conn.execute("SELECT DISTINCT state FROM plan_events")}
        signed = conn.execute("SELECT count(DISTINCT plan_id) FROM plan_signatures").fetchone()[0]
    assert result.plans_dispatched >= len(specs)
    assert result.plans_acknowledged == result.plans_dispatched
    assert signed == result.plans_dispatched  # every published plan was signed and its signature audited
    assert result.plans_applied >= len(specs)
    assert {"proposed", "checked", "simulated", "dispatched", "active"} <= states
    # the plans the store calls active are the ones the emulators ran in SUMO at the last pause
    last = {cid: (plan_id, by) for cid, plan_id, by, _ in in_force[-len(specs):]}
    assert active, "no plan became active"
    for _plan_id, cid, body in active:
        plan = TimingPlan.from_dict(body)
        assert plan.controller_id == cid
    active_ids = {r[0] for r in active}
    assert {plan_id for plan_id, _ in last.values()} <= active_ids | {p for p, by in last.values() if by == "field-tod"}
    assert any(by != "field-tod" for _, by in last.values()), "no central plan was in force in SUMO"
    assert result.kpis["vehicles"] > 100 and result.kpis["undeparted"] == 0
