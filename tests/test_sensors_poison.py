"""Poison messages: one bad message never stops, slows or blocks the rest.

Real PostgreSQL and real Mosquitto. Two kinds of poison:

* text PostgreSQL cannot hold (a lone UTF-16 surrogate ``\\ud800`` in a
  status detail, NUL): the decoder knows it is unstorable and dead-letters it;
* a row the database itself refuses (here a CHECK constraint the decoder does
  not know about, a value out of range, or text that bypassed the decoder):
  the store isolates the refused messages by bisection, dead-letters them with
  the database's reason and stores the rest, live and on spool replay.

Every test reconciles exactly: rows stored == rows sent, dead letters == poison sent.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from test_sensors_ingest import (  # noqa: F401 - fixtures used by name
    T0,
    WAIT_S,
    _allow_connections,
    _eventually,
    make_service,
    query,
    report,
    settle,
)

from sensors.records import Batch, CountRow, StatusRow
from sensors.router import route
from sensors.spool import BAD_SUFFIX, SUFFIX, Spool
from sensors.store import CountStore
from traffic import topics
from traffic.config import MqttSettings

SURROGATE_STATUS = (b'{"schema": "status/1", "controller_id": "c1", "state": "online", "mode": "central",'
                    b' "detail": "\\ud800"}')


def status_payload(controller: str, detail: str, minute: int = 0) -> bytes:
    return json.dumps({"schema": "status/1", "controller_id": controller, "state": "online", "mode": "central",
                       "at": (T0 + timedelta(seconds=minute)).isoformat(), "detail": detail}).encode()


def refuse_poison_status(dsn: str) -> None:
    """A rule only the database knows: status detail 'poison' is refused (CHECK)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE controller_status ADD CONSTRAINT no_poison CHECK (detail <> 'poison')")


def publish_many(mqtt_url: str, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, in order, waiting for every PUBACK at the end (fast for thousands)."""
    mq = MqttSettings(url=mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect(mq.host, mq.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def counts_rows(dsn: str) -> int:
    return query(dsn, "SELECT count(*) FROM detector_counts")[0][0]


def letters(dsn: str) -> list[tuple[str, str, bytes]]:
    return [(t, r, bytes(p)) for t, r, p in query(dsn, "SELECT topic, reason, payload FROM dead_letters ORDER BY id")]


# ---------------------------------------------------------------------------
# the store alone: every kind of row-level refusal, one batch

def test_store_isolates_every_refused_row_and_stores_the_rest(pg_dsn):
    refuse_poison_status(pg_dsn)
    now = datetime.now(UTC)
    batch = Batch()
    good = 0
    refused: list[bytes] = []

    def add(topic: str, payload: bytes, rows: Batch, bad: bool) -> None:
        nonlocal good
        batch.add_message(topic, payload, now, rows)
        if bad:
            refused.append(payload)
        else:
            good += len(rows.counts)

    def status(detail: str, mode: str = "central") -> Batch:
        return Batch(statuses=[StatusRow("s", "c1", "online", mode, None, None, T0, detail, now)])

    for minute in range(30):
        add("tsc/v1/s/c1/counts", b"ok%d" % minute,
            Batch(counts=[CountRow("c1", f"d{j}", T0 + timedelta(minutes=minute), 60, j, 1.0, None, now)
                          for j in range(3)]), False)
        if minute == 3:   # bypassed the decoder: lone surrogate (refused client side, UnicodeEncodeError)
            add("tsc/v1/s/c1/status", b"surrogate", status("\ud800"), True)
        if minute == 7:   # NUL in text (PostgreSQL refuses it)
            add("tsc/v1/s/c1/status", b"nul", status("ok", mode="a\x00b"), True)
        if minute == 11:  # integer out of range for the int4 column
            add("tsc/v1/s/c1/counts", b"range",
                Batch(counts=[CountRow("c1", "d9", T0, 60, 2**40, 1.0, None, now)]), True)
        if minute == 19:  # CHECK constraint
            add("tsc/v1/s/c1/status", b"check", status("poison"), True)
    with CountStore(pg_dsn) as store:
        t = time.monotonic()
        result = store.write_batch(batch)
        elapsed = time.monotonic() - t
    assert (result.counts_stored, result.refused, result.dead_letters) == (good, 4, 4) == (90, 4, 4)
    assert counts_rows(pg_dsn) == 90
    stored = letters(pg_dsn)
    assert [p for _, _, p in stored] == refused
    reasons = [r for _, r, _ in stored]
    assert all(r.startswith("rejected by the database: ") for r in reasons), reasons
    assert "surrogates not allowed" in reasons[0] and "\\ud800" in reasons[0]
    assert "22021" in reasons[1] or "0x00" in reasons[1], reasons[1]
    assert "22003" in reasons[2] and "out of range" in reasons[2], reasons[2]
    assert "no_poison" in reasons[3], reasons[3]
    assert elapsed < 5.0


def test_refused_dead_letter_text_is_made_storable(pg_dsn):
    # The dead letter of a poison message carries text from the poison (topic,
    # reason): it must not fail the same way.
    now = datetime.now(UTC)
    batch = route("tsc/v1/s/c1/\ud800\x00", b"x", now)
    with CountStore(pg_dsn) as store:
        assert store.write_batch(batch).dead_letters == 1
    [(topic, reason, payload)] = letters(pg_dsn)
    assert "\\ud800" in topic and "\\x00" in topic and payload == b"x"


# ---------------------------------------------------------------------------
# live, through the broker

@pytest.mark.parametrize("kind", ["surrogate", "refused-by-database"])
def test_one_poison_status_among_40_counts(settings, pg_dsn, site, mqtt_url, kind):
    if kind == "refused-by-database":
        refuse_poison_status(pg_dsn)
    poison = SURROGATE_STATUS if kind == "surrogate" else status_payload("c1", "poison")
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    messages = [(counts_topic, report("c1", m, 2).to_json()) for m in range(20)]
    messages.append((topics.topic(site, "c1", topics.STATUS), poison))
    messages += [(counts_topic, report("c1", m, 2).to_json()) for m in range(20, 40)]
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        publish_many(mqtt_url, messages)
        assert settle(svc, 41) and svc.drain(WAIT_S)
        stats = svc.stats
    finally:
        svc.stop(retire=True)
    assert counts_rows(pg_dsn) == 80                                          # 40 reports x 2 detectors
    assert query(pg_dsn, "SELECT count(DISTINCT interval_start) FROM detector_counts") == [(40,)]
    [(topic, reason, payload)] = letters(pg_dsn)
    assert payload == poison and topic.endswith("/c1/status")
    if kind == "surrogate":
        assert reason.startswith("detail: not storable as UTF-8") and "\\ud800" in reason
        assert stats.refused == 0                        # the decoder caught it
    else:
        assert "rejected by the database" in reason and "no_poison" in reason
        assert stats.refused == 1                        # the writer isolated it
    assert (stats.received, stats.stored, stats.dead_lettered) == (41, 80, 1)


@pytest.mark.parametrize("kind", ["surrogate", "refused-by-database"])
def test_1000_poison_messages_from_one_controller_then_10_valid(settings, pg_dsn, site, mqtt_url, kind):
    if kind == "refused-by-database":
        refuse_poison_status(pg_dsn)
    status_topic = topics.topic(site, "c1", topics.STATUS)
    poison = [SURROGATE_STATUS if kind == "surrogate" else status_payload("c1", "poison", i) for i in range(1000)]
    messages = [(status_topic, p) for p in poison]
    messages += [(topics.topic(site, "c1", topics.COUNTS), report("c1", m, 3).to_json()) for m in range(10)]
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        t = time.monotonic()
        publish_many(mqtt_url, messages)
        assert settle(svc, 1010) and svc.drain(WAIT_S)
        elapsed = time.monotonic() - t
        stats = svc.stats
    finally:
        svc.stop(retire=True)
    assert counts_rows(pg_dsn) == 30
    assert query(pg_dsn, "SELECT count(DISTINCT interval_start) FROM detector_counts") == [(10,)]
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT payload) FROM dead_letters") == [
        (1000, 1 if kind == "surrogate" else 1000)]
    assert query(pg_dsn, "SELECT count(*) FROM controller_status") == [(0,)]
    assert (stats.received, stats.stored, stats.dead_lettered) == (1010, 30, 1000)
    assert elapsed < 20.0, elapsed


def test_poison_during_a_database_outage_is_dead_lettered_on_replay(settings, pg_dsn, site, mqtt_url):
    """150 valid reports and 2 poison messages spooled while PostgreSQL refuses connections."""
    refuse_poison_status(pg_dsn)
    name = pg_dsn.rsplit("/", 1)[1]
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    status_topic = topics.topic(site, "c1", topics.STATUS)
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        _allow_connections(name, False)
        try:
            messages = [(counts_topic, report("c1", m, 2).to_json()) for m in range(75)]
            messages += [(status_topic, SURROGATE_STATUS), (status_topic, status_payload("c1", "poison"))]
            messages += [(counts_topic, report("c1", m, 2).to_json()) for m in range(75, 150)]
            publish_many(mqtt_url, messages)
            assert settle(svc, 152)                    # durable in the spool, acknowledged
            assert svc.stats.spooled >= 1 and list(svc.spool_dir.glob(f"*{SUFFIX}"))
        finally:
            _allow_connections(name, True)
        assert svc.wait_replayed(20.0)
        stats = svc.stats
    finally:
        svc.stop(retire=True)
    assert not list(svc.spool_dir.glob(f"*{SUFFIX}")) and not list(svc.spool_dir.glob(f"*{BAD_SUFFIX}"))
    assert counts_rows(pg_dsn) == 300
    assert query(pg_dsn, "SELECT count(DISTINCT interval_start) FROM detector_counts") == [(150,)]
    found = letters(pg_dsn)
    assert sorted(p for _, _, p in found) == sorted([SURROGATE_STATUS, status_payload("c1", "poison")])
    assert any("no_poison" in r and r.startswith("rejected by the database") for _, r, _ in found)
    assert (stats.stored, stats.dead_lettered, stats.refused, stats.quarantined) == (300, 2, 1, 0)


def test_a_spool_file_with_poison_from_an_older_version_drains(settings, pg_dsn, site):
    """A spool file written before batches recorded their messages, holding an unstorable row.

    This is the file the old code wrote when the surrogate poison arrived during
    an outage, and then failed to replay forever. Now the replay pins the
    refusal on the row, dead-letters it (payload: the row) and stores the rest.
    """
    now = datetime.now(UTC)
    rows = [CountRow("c1", f"d{j}", T0 + timedelta(minutes=m), 60, j, 1.0, None, now)
            for m in range(150) for j in range(2)]
    poison = StatusRow(site, "c1", "online", "central", None, None, T0, "\ud800", now)
    legacy = json.loads(Batch(counts=rows[:150], statuses=[poison]).to_json())
    del legacy["sources"]
    spool = Spool(Path(settings.state_dir) / "spool")
    first = spool.directory / f"{1:020d}-1{SUFFIX}"
    first.write_bytes(json.dumps(legacy).encode())
    spool.append(Batch(counts=rows[150:]))
    svc = make_service(settings, pg_dsn, site)
    svc.start()
    try:
        assert svc.wait_replayed(WAIT_S)
        stats = svc.stats
    finally:
        svc.stop(retire=True)
    assert counts_rows(pg_dsn) == 300 and stats.replayed == 2 and stats.quarantined == 0
    [(topic, reason, payload)] = letters(pg_dsn)
    assert topic == "spool/statuses" and "surrogates not allowed" in reason
    assert Batch.from_json(payload).statuses == [poison]


def test_poison_then_restart_under_the_same_client_id(settings, pg_dsn, site, mqtt_url):
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    status_topic = topics.topic(site, "c1", topics.STATUS)
    svc = make_service(settings, pg_dsn, site, client_id=f"same-{site}")
    svc.start()
    try:
        publish_many(mqtt_url, [(status_topic, SURROGATE_STATUS)]
                     + [(counts_topic, report("c1", m, 2).to_json()) for m in range(20)])
        assert settle(svc, 21) and svc.drain(WAIT_S)
    finally:
        svc.stop()                 # session (and its share) kept for the restart
    # Published while the worker is down; the poison again, too.
    publish_many(mqtt_url, [(counts_topic, report("c1", m, 2).to_json()) for m in range(20, 30)]
                 + [(status_topic, SURROGATE_STATUS)]
                 + [(counts_topic, report("c1", m, 2).to_json()) for m in range(30, 40)])
    svc = make_service(settings, pg_dsn, site, client_id=f"same-{site}")
    svc.start()
    try:
        assert _eventually(lambda: svc.stats.received >= 21) and svc.drain(WAIT_S)
        stats = svc.stats
    finally:
        svc.stop(retire=True)
    assert stats.received == 21            # the first poison was acknowledged: not redelivered
    assert counts_rows(pg_dsn) == 80
    assert query(pg_dsn, "SELECT count(*) FROM dead_letters") == [(2,)]
