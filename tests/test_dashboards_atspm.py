"""ATSPM, corridor and operations dashboards: JSON, every panel's SQL on PostgreSQL, the read-only role,
and end to end from the field program's hi-res events through ingest into the measures and the panels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import psycopg
import pytest
from psycopg.types.json import Jsonb

from dashboards import boards, build
from dashboards.macros import expand
from dashboards.queries import ATSPM_QUERIES, CORRIDOR_QUERIES, OPS_QUERIES, QUERIES
from field_firmware_stubs.program import SignalProgram
from field_firmware_stubs.samples import four_leg
from sensors.atspm import store as atspm_store
from sensors.records import CountRow
from sensors.router import route
from sensors.store import CountStore
from traffic import messages, topics

UTC = UTC
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
SPEC = four_leg("c1")


def _run(dsn: str, name: str, variables=None) -> list[tuple]:
    text = expand(QUERIES[name], T0, T1, variables or {"controller": ["c1"], "device": ["c1"]})
    with psycopg.connect(dsn) as conn:
        return conn.execute(text).fetchall()  # type: ignore[arg-type]


def _field_events(minutes: int = 40) -> list[tuple[datetime, int, int]]:
    """The field program (what the emulators and the SUMO twin run) on a pretimed plan, loops pulsing."""
    plan = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=0.0)
    program = SignalProgram(SPEC, plan, start_time=0.0)
    out = []
    for k in range(minutes * 600 + 1):
        t = round(k * 0.1, 1)
        presence = {d.detector_id: (k + 37 * i) % 45 < 6 for i, d in enumerate(SPEC.detectors)}  # ~every 4.5 s
        program.step(t, presence)
    for e in program.drain_events():
        out.append((T0 + timedelta(seconds=e.time), e.code, e.param))
    return out


@pytest.fixture
def twin_dsn(pg_dsn):
    """Events through the ingest router and store (as a worker writes them), then the aggregator."""
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO controllers (controller_id, site, spec, state, mode) VALUES"
                     " ('c1', 'hanoi', %s, 'online', 'central')", (Jsonb(SPEC.to_dict()),))
    events = _field_events()
    topic = topics.topic("hanoi", "c1", topics.EVENTS)
    with CountStore(pg_dsn) as store:
        for seq, i in enumerate(range(0, len(events), 2000)):
            payload = messages.EventBatch("c1", seq, tuple(events[i:i + 2000])).to_json()
            batch = route(topic, payload, T1)
            assert not batch.dead_letters, batch.dead_letters
            store.write_batch(batch)
        rows = [CountRow("c1", d.detector_id, T0 + timedelta(minutes=i), 60, 12, 20.0, 8, T0 + timedelta(minutes=i + 1))
                for i in range(40) for d in SPEC.detectors]
        store.write_counts(rows)
    report = atspm_store.aggregate(pg_dsn, now=T1)
    assert report.ranges["c1"] == (T0, T0 + timedelta(minutes=30))     # 40 min of events - 5 min settle
    return pg_dsn


def test_boards_are_valid_grafana_json():
    for uid, make in boards.BOARDS.items():
        board = make()
        json.dumps(board)
        assert board["uid"] == uid
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == build.DATASOURCE_UID
            for target in panel["targets"]:
                assert target["rawSql"] in QUERIES.values()
    titles = {p["title"] for p in boards.atspm_intersection()["panels"]}
    assert {"Purdue Coordination Diagram", "Split monitor", "Split failures", "Arrivals on green",
            "Approach delay", "Pedestrians"} <= titles
    corridor = boards.corridor()
    assert corridor["annotations"]["list"][-1]["target"]["rawSql"] == QUERIES["corridor_plan_annotations"]
    assert "LIMIT 10" in QUERIES["corridor_worst_approaches"]      # top-N, not every detector


def test_field_events_reach_every_atspm_panel(twin_dsn):
    pcd = _run(twin_dsn, "atspm_pcd_arrivals")
    assert pcd and all(0 <= r[2] < 200 for r in pcd)
    lines = _run(twin_dsn, "atspm_pcd_lines")
    assert {r[1].split(" ", 2)[2] for r in lines} == {"begin yellow", "cycle end"}
    cycle_ends = {round(r[2], 1) for r in lines if r[1].endswith("cycle end")}
    assert cycle_ends == {80.0}                                       # the plan's cycle, every cycle
    splits = _run(twin_dsn, "atspm_split_monitor")
    assert {r[1] for r in splits} == {"phase 1", "phase 2", "phase 3", "phase 4"}
    terms = _run(twin_dsn, "atspm_terminations")
    assert [r[0] for r in terms] == [1, 2, 3, 4] and all(r[4] > 0 for r in terms)
    assert _run(twin_dsn, "atspm_split_failures") and _run(twin_dsn, "atspm_occupancy")
    aog = _run(twin_dsn, "atspm_aog")
    assert aog and all(0 <= r[2] <= 100 for r in aog)
    delay = _run(twin_dsn, "atspm_approach_delay")
    assert delay and all(r[2] >= 0 for r in delay)
    volume = _run(twin_dsn, "atspm_approach_volume")
    assert sum(r[2] for r in volume) > 0
    assert _run(twin_dsn, "atspm_yellow_red")
    ped = _run(twin_dsn, "atspm_ped")
    assert ped and all(r[1] > 0 for r in ped)                         # walks served (no push-button events)
    assert _run(twin_dsn, "atspm_device_variable", {}) == [("c1", "c1")]


def test_corridor_and_operations_panels(twin_dsn):
    flow = _run(twin_dsn, "corridor_flow")
    by_metric = {}
    for _t, metric, value in flow:
        by_metric.setdefault(metric, []).append(value)
    n = len(SPEC.detectors)
    assert by_metric["veh/h"][0] == pytest.approx(n * 12 * 60)                   # 12 vehicles a minute per loop
    assert by_metric["pcu/h"][0] == pytest.approx(n * (8 * 0.3 + 4) * 60)        # 8 motorcycles of 12
    share = _run(twin_dsn, "corridor_motorcycle_share")
    assert share and all(r[2] == pytest.approx(100 * 8 / 12) for r in share)
    worst = _run(twin_dsn, "corridor_worst_approaches")
    assert 0 < len(worst) <= 10
    assert [r[3] for r in worst] == sorted((r[3] for r in worst), reverse=True)
    with psycopg.connect(twin_dsn) as conn:
        conn.execute("INSERT INTO plans (plan_id, controller_id, version, state, created_by, body)"
                     " VALUES ('p1', 'c1', 2, 'active', 'optimizer', '{}')")
        conn.execute("INSERT INTO plan_events (plan_id, controller_id, at, state, actor, detail) VALUES"
                     " ('p1', 'c1', %s, 'simulated', 'gate', '{}'), ('p1', 'c1', %s, 'active', 'field', '{}')",
                     (T0 + timedelta(minutes=5), T0 + timedelta(minutes=6)))
        conn.execute("INSERT INTO detector_health (controller_id, detector_id, state, since)"
                     " VALUES ('c1', 'd2', 'stuck_on', %s)", (T0,))
        conn.execute("INSERT INTO dead_letters (received_at, topic, reason, payload)"
                     " VALUES (%s, 't', 'schema: bad', 'x')", (T0 + timedelta(minutes=1),))
    assert _run(twin_dsn, "corridor_plan_annotations") == [(T0 + timedelta(minutes=6), "c1: plan v2 active", "c1")]
    assert _run(twin_dsn, "ops_controllers_by_mode") == [("central", "online", 1)]
    assert _run(twin_dsn, "ops_dead_letters") == [(T0, "schema", 1)]
    lag = _run(twin_dsn, "ops_ingest_lag")
    assert lag and all(r[2] == pytest.approx(0.0) for r in lag)       # received as each minute ended
    assert [r[:3] for r in _run(twin_dsn, "ops_detector_health")] == [("c1", "d2", "stuck_on")]
    assert [r[3] for r in _run(twin_dsn, "ops_gate_verdicts")] == ["simulated"]
    comms = _run(twin_dsn, "ops_communications")
    assert comms[0][0] == "c1" and comms[0][1] == 0


def test_read_only_role_reads_every_panel_and_writes_nothing(twin_dsn):
    parsed = urlparse(twin_dsn)
    ro = parsed._replace(netloc=f"{build.READ_ONLY_ROLE}@{parsed.hostname}:{parsed.port or 5432}").geturl()
    try:
        conn = psycopg.connect(ro)
    except psycopg.OperationalError as exc:
        pytest.skip(f"cannot log in as {build.READ_ONLY_ROLE} here (pg_hba): {exc}")
    with conn:
        for name in (*ATSPM_QUERIES, *CORRIDOR_QUERIES, *OPS_QUERIES):
            conn.execute(expand(QUERIES[name], T0, T1, {"controller": ["c1"], "device": ["c1"]})).fetchall()  # type: ignore[arg-type]
        conn.rollback()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):      # the role's sessions are read-only
            conn.execute("DELETE FROM atspm_phase_15min")
        conn.rollback()
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):       # and has no write grant anyway
            conn.execute("DELETE FROM atspm_phase_15min")
