"""The decode + dead-letter path (sensors.router) and the spool format: pure, in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.records import Batch, CountRow, DeadLetter, EventRow, StatusRow
from sensors.router import MAX_DEAD_LETTER_BYTES, route
from sensors.spool import Spool
from traffic import messages, topics
from traffic.errors import StorageError

NOW = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
SITE = "hn"


def counts_payload(controller: str = "c1", **overrides) -> bytes:
    body = {
        "schema": messages.COUNTS_SCHEMA, "controller_id": controller, "seq": 7,
        "interval_start": "2026-03-01T07:29:00+00:00", "interval_s": 60,
        "records": [{"detector_id": "d1", "count": 12, "occupancy_pct": 9.5, "motorcycle_count": 8},
                    {"detector_id": "d2", "count": 0, "occupancy_pct": 0.0}],
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_counts_become_rows_keyed_by_controller_detector_interval():
    batch = route(topics.topic(SITE, "c1", topics.COUNTS), counts_payload(), NOW, site=SITE)
    assert batch.dead_letters == []
    assert [(r.controller_id, r.detector_id, r.vehicle_count, r.motorcycle_count) for r in batch.counts] == [
        ("c1", "d1", 12, 8), ("c1", "d2", 0, None)]
    assert all(r.interval_start == datetime(2026, 3, 1, 7, 29, tzinfo=UTC) for r in batch.counts)
    assert all(r.received_at == NOW for r in batch.counts)


def test_events_and_status_become_rows():
    ev = messages.EventBatch("c1", 3, ((NOW, 1, 2), (NOW + timedelta(seconds=0.1), 8, 2)))
    batch = route(topics.topic(SITE, "c1", topics.EVENTS), ev.to_json(), NOW, site=SITE)
    assert batch.events == [EventRow("c1", NOW, 1, 2), EventRow("c1", NOW + timedelta(seconds=0.1), 8, 2)]
    status = messages.StatusMessage("c1", messages.ONLINE, messages.MODE_CENTRAL, "p1", 4, NOW, "ok")
    batch = route(topics.topic(SITE, "c1", topics.STATUS), status.to_json(), NOW, site=SITE)
    assert batch.statuses == [StatusRow(SITE, "c1", "online", "central", "p1", 4, NOW, "ok", NOW)]


BAD_COUNTS = [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[1, 2, 3]", "JSON object"),
    (counts_payload(schema="counts/9"), "schema"),
    (counts_payload(interval_s="60"), "interval_s"),
    (counts_payload(records=[{"detector_id": "d1", "count": -1, "occupancy_pct": 1}]), "records[0].count"),
    (counts_payload(records=[{"detector_id": "d1", "count": 1, "occupancy_pct": 101}]), "occupancy_pct"),
    (counts_payload(interval_start="2026-03-01T07:29:00"), "UTC offset"),
    (b'{"schema": "counts/1", "x": NaN}', "non-finite"),
    (b" " * (messages.MAX_PAYLOAD_BYTES + 1), "too large"),
    (counts_payload(controller="c2"), "does not match topic"),
]


@pytest.mark.parametrize(("payload", "why"), BAD_COUNTS, ids=[w for _, w in BAD_COUNTS])
def test_malformed_counts_become_a_dead_letter_with_reason_and_raw_bytes(payload, why):
    topic = topics.topic(SITE, "c1", topics.COUNTS)
    batch = route(topic, payload, NOW, site=SITE)
    assert batch.counts == [] and batch.events == [] and batch.statuses == []
    [letter] = batch.dead_letters
    assert why in letter.reason
    assert letter.payload == payload and letter.topic == topic and letter.received_at == NOW


@pytest.mark.parametrize(("topic", "why"), [
    ("tsc/v1/hn/c1/plan/set", "leaf"),
    ("tsc/v1/other/c1/counts", "site"),
    ("tsc/v2/hn/c1/counts", "not a tsc/v1 topic"),
    ("tsc/v1/hn/C1!/counts", "controller id"),
])
def test_wrong_topics_become_dead_letters(topic, why):
    [letter] = route(topic, counts_payload(), NOW, site=SITE).dead_letters
    assert why in letter.reason


def test_status_values_postgres_would_refuse_are_dead_lettered_not_stored():
    topic = topics.topic(SITE, "c1", topics.STATUS)
    base = json.loads(messages.StatusMessage("c1", messages.ONLINE).to_json())
    for bad in ({"detail": "a\u0000b"}, {"plan_version": 2**40}, {"plan_id": "p" * 500}):
        batch = route(topic, json.dumps({**base, **bad}).encode(), NOW, site=SITE)
        assert batch.statuses == [] and len(batch.dead_letters) == 1, bad


def test_huge_payload_is_kept_up_to_the_cap_and_the_reason_says_so():
    payload = b"x" * (MAX_DEAD_LETTER_BYTES + 10)
    [letter] = route(topics.topic(SITE, "c1", topics.COUNTS), payload, NOW).dead_letters
    assert letter.payload == payload[:MAX_DEAD_LETTER_BYTES]
    assert "truncated" in letter.reason and str(len(payload)) in letter.reason


# ---- fuzz: nothing escapes, whatever arrives ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
# Mostly well-formed shapes with random values, so the fuzz reaches deep into the decoders.
field_names = st.sampled_from(["schema", "controller_id", "seq", "interval_start", "interval_s", "records",
                               "events", "state", "mode", "plan_id", "plan_version", "at", "detail"])
schemas = st.sampled_from([messages.COUNTS_SCHEMA, messages.EVENTS_SCHEMA, messages.STATUS_SCHEMA, "x/1"])
shaped = st.builds(
    lambda schema, extra, cid: {"schema": schema, "controller_id": cid, **extra},
    schemas, st.dictionaries(field_names, json_values, max_size=8), st.sampled_from(["c1", "c2", "", "\u0000"]),
)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
)
fuzz_topics = st.one_of(
    st.sampled_from([topics.topic(SITE, "c1", leaf) for leaf in (topics.COUNTS, topics.EVENTS, topics.STATUS)]),
    st.text(max_size=40),
    st.builds(lambda a, b: f"tsc/v1/{a}/{b}/counts", st.text(max_size=8), st.text(max_size=8)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=fuzz_topics, payload=payloads)
def test_fuzz_route_never_raises_and_loses_nothing(topic, payload):
    batch = route(topic, payload, NOW, site=SITE)
    assert isinstance(batch, Batch)
    if batch.dead_letters:
        [letter] = batch.dead_letters
        assert len(batch) == 1
        assert letter.reason and letter.payload == payload
        assert "\x00" not in letter.topic and "\x00" not in letter.reason
    else:
        parsed = topics.parse(topic)
        for row in [*batch.counts, *batch.statuses]:
            assert row.controller_id == parsed.controller_id
    # Whatever came out can be spooled and read back unchanged.
    assert Batch.from_json(batch.to_json()) == batch


# ---- spool -------------------------------------------------------------------

def sample_batch(n: int) -> Batch:
    return Batch(
        counts=[CountRow("c1", f"d{i}", NOW, 60, i, 1.5, None, NOW) for i in range(n)],
        events=[EventRow("c1", NOW, 1, n)],
        dead_letters=[DeadLetter("t", "why", bytes([0, 255, n % 256]), NOW)],
        statuses=[StatusRow(SITE, "c1", "offline", None, None, None, None, "", NOW)],
    )


def test_spool_keeps_batches_in_order_and_round_trips_them(tmp_path):
    spool = Spool(tmp_path / "spool")
    for n in range(5):
        spool.append(sample_batch(n))
    paths = spool.pending()
    assert [len(spool.load(p).counts) for p in paths] == [0, 1, 2, 3, 4]
    assert spool.load(paths[3]) == sample_batch(3)
    spool.remove(paths[0])
    assert len(spool) == 4
    # A reopened spool (after a restart) sees the same files.
    assert Spool(tmp_path / "spool").pending() == paths[1:]


def test_unreadable_spool_file_is_an_error_and_can_be_quarantined(tmp_path):
    spool = Spool(tmp_path)
    path = spool.append(sample_batch(1))
    path.write_bytes(b'{"format": "something-else"}')
    with pytest.raises(StorageError):
        spool.load(path)
    kept = spool.quarantine(path)
    assert kept.exists() and spool.pending() == []


records = st.lists(
    st.builds(lambda c, o, m: messages.CountRecord("d", c, o, None if m is None else min(m, c)),
              st.integers(0, 10_000), st.floats(0.0, 100.0), st.none() | st.integers(0, 10_000)),
    min_size=1, max_size=20,
).map(lambda rs: tuple(messages.CountRecord(f"d{i}", r.count, r.occupancy_pct, r.motorcycle_count)
                       for i, r in enumerate(rs)))


@settings(max_examples=100, deadline=None)
@given(recs=records, start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                                        timezones=st.just(UTC)),
       interval_s=st.integers(1, 3600))
def test_valid_reports_always_become_rows_that_survive_the_spool(recs, start, interval_s):
    report = messages.CountReport("c1", 1, start, interval_s, recs)
    batch = route(topics.topic(SITE, "c1", topics.COUNTS), report.to_json(), NOW, site=SITE)
    assert batch.dead_letters == []
    assert [(r.detector_id, r.vehicle_count, r.occupancy_pct, r.motorcycle_count) for r in batch.counts] == [
        (r.detector_id, r.count, r.occupancy_pct, r.motorcycle_count) for r in recs]
    assert all(r.interval_start == start and r.interval_s == interval_s for r in batch.counts)
    assert Batch.from_json(batch.to_json()) == batch
