"""IngestService end to end: real Mosquitto, real PostgreSQL, real outage."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import ADMIN_DSN
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from sensors.ingest import IngestService
from sensors.spool import SUFFIX
from traffic import topics
from traffic.config import MqttSettings, Settings
from traffic.messages import (
    MODE_CENTRAL,
    ONLINE,
    CountRecord,
    CountReport,
    EventBatch,
    StatusMessage,
)

T0 = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
WAIT_S = 10.0

Publish = Callable[..., None]


def report(controller: str, minute: int, detectors: int = 4) -> CountReport:
    return CountReport(controller, minute, T0 + timedelta(minutes=minute), 60,
                       tuple(CountRecord(f"d{j}", 10 + j + minute, 7.5, j) for j in range(detectors)))


def query(dsn: str, text: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(text, params).fetchall()


@pytest.fixture
def publish(mqtt_url: str) -> Iterator[Publish]:
    mq = MqttSettings(url=mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.connect(mq.host, mq.port)
    client.loop_start()

    def send(topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published()

    yield send
    client.disconnect()
    client.loop_stop()


def make_service(settings: Settings, dsn: str, site: str, client_id: str | None = None) -> IngestService:
    return IngestService(settings, dsn=dsn, site=site, client_id=client_id or f"ingest-{site}",
                         session_expiry_s=60, db_timeout_s=1.0, replay_interval_s=0.3)


@pytest.fixture
def service(settings: Settings, pg_dsn: str, site: str) -> Iterator[IngestService]:
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    yield svc
    svc.stop(end_session=True)


def test_counts_are_stored_once_and_survive_a_restart(settings, pg_dsn, site, publish):
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        counts_topic = topics.topic(site, "c1", topics.COUNTS)
        for minute in range(3):
            publish(counts_topic, report("c1", minute).to_json())
        publish(counts_topic, report("c1", 0).to_json())          # redelivery / duplicate
        publish(topics.topic(site, "c2", topics.COUNTS), report("c2", 0).to_json())
        assert settle(svc, 5)
        stats = svc.stats
        assert (stats.received, stats.stored, stats.duplicates, stats.dead_lettered) == (5, 16, 4, 0)
    finally:
        svc.stop()

    # Published while the service is down: the persistent session keeps it for us.
    publish(topics.topic(site, "c1", topics.COUNTS), report("c1", 3).to_json())
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        assert _eventually(lambda: svc.stats.stored == 4 and svc.wait_idle(0.1))
    finally:
        svc.stop()
    rows = query(pg_dsn, "SELECT controller_id, detector_id, interval_start, vehicle_count, motorcycle_count"
                         " FROM detector_counts ORDER BY 1, 3, 2")
    assert len(rows) == 20
    assert rows[0] == ("c1", "d0", T0, 10, 0)
    assert ("c1", "d3", T0 + timedelta(minutes=3), 16, 3) in rows


def test_malformed_messages_go_to_dead_letters_and_ingest_goes_on(service, pg_dsn, site, publish):
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    good = json.loads(report("c1", 0).to_json())
    bad = {
        "bad json": b'{"schema": "counts/1", ',
        "bad utf-8": b"\xc3\x28\xa0\xa1",
        "wrong schema": json.dumps({**good, "schema": "counts/2"}).encode(),
        "wrong types": json.dumps({**good, "records": [{"detector_id": "d0", "count": "12",
                                                        "occupancy_pct": 1}]}).encode(),
        "huge": b'{"pad": "' + b"x" * 300_000 + b'"}',
        "other controller": report("c9", 0).to_json(),
    }
    for payload in bad.values():
        publish(counts_topic, payload)
    publish(topics.topic(site, "c1", topics.EVENTS), b'{"schema": "events/1", "controller_id": "c1"}')
    publish(counts_topic, report("c1", 1).to_json())
    assert settle(service, len(bad) + 2)

    letters = query(pg_dsn, "SELECT topic, reason, payload FROM dead_letters ORDER BY id")
    assert [bytes(p) for _, _, p in letters[:len(bad)]] == list(bad.values())
    reasons = [r for _, r, _ in letters]
    for fragment in ("not JSON", "not UTF-8", "schema", "count: expected int", "too large", "does not match topic",
                     "seq: missing"):
        assert any(fragment in r for r in reasons), (fragment, reasons)
    assert service.stats.dead_lettered == len(bad) + 1
    assert query(pg_dsn, "SELECT count(*) FROM detector_counts WHERE interval_start = %s",
                 (T0 + timedelta(minutes=1),)) == [(4,)]


def test_events_and_status(settings, pg_dsn, site, publish):
    status_topic = topics.topic(site, "c1", topics.STATUS)
    # Retained before the service exists: the (non-shared) status subscription still gets it.
    publish(status_topic, StatusMessage("c1", ONLINE, MODE_CENTRAL, "p1", 2, T0).to_json(), retain=True)
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        events = EventBatch("c1", 1, tuple((T0 + timedelta(seconds=i / 10), 82, i % 8) for i in range(100)))
        publish(topics.topic(site, "c1", topics.EVENTS), events.to_json())
        publish(topics.topic(site, "c1", topics.EVENTS), events.to_json())
        assert _eventually(lambda: svc.stats.statuses == 1 and svc.wait_idle(0.1))
        assert svc.stats.stored == 100 and svc.stats.duplicates == 100
    finally:
        svc.stop()
        publish(status_topic, b"", retain=True)  # clear the retained message
    assert query(pg_dsn, "SELECT site, state, mode, active_plan_id, active_version, last_seen FROM controllers") == [
        (site, ONLINE, MODE_CENTRAL, "p1", 2, T0)]
    assert query(pg_dsn, "SELECT count(*) FROM controller_status") == [(1,)]
    assert query(pg_dsn, "SELECT count(*), min(event_code) FROM controller_events") == [(100, 82)]


def test_database_outage_spools_then_replays_in_order(service, pg_dsn, site, publish):
    name = pg_dsn.rsplit("/", 1)[1]
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    publish(counts_topic, report("c1", 0).to_json())
    assert settle(service, 1) and service.stats.stored == 4

    _allow_connections(name, False)
    try:
        for minute in range(1, 4):
            publish(counts_topic, report("c1", minute).to_json())
        publish(counts_topic, b"not json during the outage")
        assert settle(service, 5)                  # durable in the spool, acknowledged
        assert service.stats.spooled >= 1
        assert list(service.spool_dir.glob(f"*{SUFFIX}"))
        publish(counts_topic, report("c1", 4).to_json())
        assert settle(service, 6)
    finally:
        _allow_connections(name, True)

    assert service.wait_replayed(15.0)
    assert not list(service.spool_dir.glob(f"*{SUFFIX}"))
    stats = service.stats
    assert stats.replayed >= 1 and stats.stored == 20 and stats.dead_lettered == 1
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT interval_start) FROM detector_counts") == [(20, 5)]
    assert query(pg_dsn, "SELECT reason FROM dead_letters")[0][0].startswith("payload is not JSON")


def test_a_message_the_database_refuses_becomes_a_dead_letter_and_the_rest_is_stored(service, pg_dsn, site,
                                                                                     publish):
    # A rule the decoder does not know about: the database refuses detector "d2".
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("ALTER TABLE detector_counts ADD CONSTRAINT no_d2 CHECK (detector_id <> 'd2')")
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    ok = CountReport("c1", 0, T0, 60, (CountRecord("d0", 5, 4.0), CountRecord("d1", 6, 4.0)))
    refused = report("c1", 1, detectors=3)
    for r in (ok, refused, report("c1", 2, detectors=2)):
        publish(counts_topic, r.to_json())
    assert service.drain(WAIT_S)
    assert service.stats.received == 3
    assert query(pg_dsn, "SELECT count(*) FROM detector_counts") == [(4,)]
    [(reason, payload)] = query(pg_dsn, "SELECT reason, payload FROM dead_letters")
    assert "rejected by the database" in reason and "no_d2" in reason and bytes(payload) == refused.to_json()


def test_spool_left_by_a_previous_run_is_replayed_on_start(settings, pg_dsn, site):
    from sensors.records import Batch, CountRow
    from sensors.spool import Spool

    leftover = Batch(counts=[CountRow("c7", "d1", T0, 60, 3, 2.0, None, T0)])
    Spool(Path(settings.state_dir) / "spool").append(leftover)
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        assert svc.wait_replayed(WAIT_S)
        assert svc.stats.replayed == 1 and svc.stats.stored == 1
    finally:
        svc.stop()
    assert query(pg_dsn, "SELECT controller_id, vehicle_count FROM detector_counts") == [("c7", 3)]


def test_unreachable_broker_fails_start_with_transport_error(tmp_path, pg_dsn, site):
    from traffic.errors import TransportError

    settings = Settings(state_dir=str(tmp_path), mqtt=MqttSettings(url="mqtt://127.0.0.1:1"))
    svc = IngestService(settings, dsn=pg_dsn, site=site, connect_timeout_s=0.5)
    with pytest.raises(TransportError, match="not subscribed"):
        svc.start()
    assert not svc.connected


def settle(svc: IngestService, received: int) -> bool:
    """Wait until ``received`` messages reached the service, then until they are durable.

    The publisher's PUBACK comes from the broker, not from us, so a message
    can still be on its way to the service when ``publish`` returns.
    """
    return _eventually(lambda: svc.stats.received >= received) and svc.flush(WAIT_S)


def _allow_connections(database: str, allow: bool) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allow else "false")))
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s AND pid <> pg_backend_pid()", (database,))


def _eventually(check: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_end_session_on_stop_leaves_nothing_queued_for_the_old_session(settings, pg_dsn, site, publish):
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    svc.stop(end_session=True)
    # Published with no session left: nobody keeps it, so a restart under the same client id stores nothing.
    publish(topics.topic(site, "c1", topics.COUNTS), report("c1", 0).to_json())
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        assert not _eventually(lambda: svc.stats.received > 0, timeout=1.0)
    finally:
        svc.stop(end_session=True)
