"""Detector health: the pure classifier (unit + property tests) and assess/store_health on PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.health import (
    CHATTERING,
    MISSING,
    OK,
    STATES,
    STUCK_OFF,
    STUCK_ON,
    HealthRules,
    Sample,
    assess,
    classify_controller,
    classify_detector,
    interval_label,
    store_health,
)
from sensors.records import CountRow
from sensors.store import CountStore

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
RULES = HealthRules()


def series(values: list[tuple[int, float]], start: datetime = T0, interval_s: int = 60) -> list[Sample]:
    return [Sample(start + timedelta(seconds=i * interval_s), interval_s, c, o) for i, (c, o) in enumerate(values)]


def now_after(samples: list[Sample]) -> datetime:
    return samples[-1].interval_end + timedelta(seconds=1)


# ---- one reading ---------------------------------------------------------------

@pytest.mark.parametrize(("count", "occ", "peers", "label"), [
    (12, 10.0, [], OK),
    (1, 99.0, [], STUCK_ON),
    (0, 100.0, [], STUCK_ON),
    (0, 0.0, [15, 0], STUCK_OFF),
    (0, 0.0, [1, 2], OK),              # peers quiet too: night, not a fault
    (0, 0.0, [], OK),
    (200, 5.0, [], CHATTERING),        # 12,000 veh/h from one loop
    (40, 1.0, [], CHATTERING),         # 40 actuations in 0.6 s of occupancy: 15 ms each
    (40, 20.0, [], OK),                # 0.3 s each: a stream of motorcycles
])
def test_interval_label(count, occ, peers, label):
    assert interval_label(Sample(T0, 60, count, occ), peers, RULES) == label


# ---- one detector over time ------------------------------------------------------

def test_stuck_on_needs_n_consecutive_intervals_and_since_is_the_run_start():
    good, stuck = (10, 12.0), (0, 100.0)
    short = series([good] * 5 + [stuck] * (RULES.stuck_on_intervals - 1))
    assert classify_detector("c", "d", short, now_after(short)).state == OK
    long = series([good] * 5 + [stuck] * (RULES.stuck_on_intervals + 2))
    h = classify_detector("c", "d", long, now_after(long))
    assert (h.state, h.since) == (STUCK_ON, long[5].interval_start)
    assert "occupancy" in h.detail


def test_recovery_returns_to_ok_since_the_first_good_interval():
    s = series([(0, 100.0)] * 6 + [(8, 10.0)] * 2)
    h = classify_detector("c", "d", s, now_after(s))
    assert (h.state, h.since) == (OK, s[6].interval_start)


def test_stuck_off_only_while_peers_count():
    dead = series([(0, 0.0)] * 8)
    busy = series([(20, 15.0)] * 8)
    quiet = series([(0, 0.0)] * 8)
    now = now_after(dead)
    by_det = {h.detector_id: h for h in classify_controller("c", {"d1": dead, "d2": busy}, now)}
    assert by_det["d1"].state == STUCK_OFF and by_det["d1"].since == dead[0].interval_start
    assert by_det["d2"].state == OK
    assert {h.state for h in classify_controller("c", {"d1": dead, "d2": quiet}, now)} == {OK}


def test_peer_groups_limit_stuck_off_to_the_same_phase():
    dead, busy = series([(0, 0.0)] * 8), series([(20, 15.0)] * 8)
    now = now_after(dead)
    other_phase = classify_controller("c", {"d1": dead, "d2": busy}, now, groups={"d1": 2, "d2": 4})
    assert {h.detector_id: h.state for h in other_phase} == {"d1": OK, "d2": OK}
    same_phase = classify_controller("c", {"d1": dead, "d2": busy}, now, groups={"d1": 2, "d2": 2})
    assert {h.detector_id: h.state for h in same_phase}["d1"] == STUCK_OFF


def test_chattering():
    s = series([(10, 10.0)] * 3 + [(300, 4.0)] * 3)
    h = classify_detector("c", "d", s, now_after(s))
    assert (h.state, h.since) == (CHATTERING, s[3].interval_start)


def test_missing_after_n_silent_intervals_and_for_expected_detectors_without_rows():
    s = series([(10, 10.0)] * 5)
    end = s[-1].interval_end
    assert classify_detector("c", "d", s, end + timedelta(seconds=60 * RULES.missing_intervals - 1)).state == OK
    h = classify_detector("c", "d", s, end + timedelta(seconds=60 * RULES.missing_intervals))
    assert (h.state, h.since) == (MISSING, end)
    [h] = classify_controller("c", {}, end, expected=["d9"], window_start=T0)
    assert (h.detector_id, h.state, h.since) == ("d9", MISSING, T0)


# ---- properties ----------------------------------------------------------------------

readings = st.tuples(st.integers(0, 400), st.floats(0.0, 100.0, allow_nan=False))
detector_series = st.lists(readings, min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["d1", "d2", "d3", "d4"]), detector_series, min_size=1),
       lag_s=st.integers(0, 600), seed=st.integers(0, 2**32 - 1))
def test_classifier_properties(data, lag_s, seed):
    samples = {det: series(vals) for det, vals in data.items()}
    last_end = max(s[-1].interval_end for s in samples.values())
    now = last_end + timedelta(seconds=lag_s)
    result = classify_controller("c", samples, now)

    # One verdict per detector, in order, with a valid state and a since not after now.
    assert [h.detector_id for h in result] == sorted(samples)
    for h in result:
        assert h.state in STATES
        assert h.since is not None and h.since <= now
        first = samples[h.detector_id][0].interval_start
        assert h.since >= first

    # Input order does not matter.
    rng = random.Random(seed)
    shuffled = {det: rng.sample(s, len(s)) for det, s in reversed(list(samples.items()))}
    assert classify_controller("c", shuffled, now) == result

    for h in result:
        s = samples[h.detector_id]
        silent = (now - s[-1].interval_end).total_seconds() >= RULES.missing_intervals * 60
        assert (h.state == MISSING) == silent
        if silent:
            continue
        # A fault state is backed by that many trailing readings with that label.
        if h.state != OK:
            tail = [x for x in s if x.interval_start >= h.since]
            assert len(tail) >= RULES.required(h.state)
        # N trailing always-occupied (and not chattering) readings are stuck on, whatever came before.
        n = RULES.stuck_on_intervals
        if len(s) >= n and all(x.occupancy_pct >= RULES.stuck_on_occupancy_pct and x.count <= 5 for x in s[-n:]):
            assert h.state == STUCK_ON
    # Nobody counting means nobody is stuck off.
    if all(x.count < RULES.peer_min_count for s in samples.values() for x in s):
        assert STUCK_OFF not in {h.state for h in result}


# ---- database ----------------------------------------------------------------------

def test_assess_and_store_health_on_postgres(pg_dsn):
    now = T0 + timedelta(minutes=30)
    rows = []
    for i in range(30):
        start = T0 + timedelta(minutes=i)
        rows.append(CountRow("c1", "d1", start, 60, 15, 12.0, None, now))                 # healthy
        rows.append(CountRow("c1", "d2", start, 60, 0, 100.0, None, now))                 # stuck on
        rows.append(CountRow("c1", "d3", start, 60, 0, 0.0, None, now))                   # stuck off
        if i < 10:
            rows.append(CountRow("c1", "d4", start, 60, 9, 8.0, None, now))               # went silent
        rows.append(CountRow("c2", "d1", start, 60, 7, 5.0, None, now))                   # other controller
    with CountStore(pg_dsn) as store:
        assert store.write_counts(rows) == len(rows)
    spec = {"detectors": [{"detector_id": d, "phase": 2} for d in ("d1", "d2", "d3", "d4", "d5")]}
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO controllers (controller_id, site, spec) VALUES ('c1', 'hn', %s)",
                     (json.dumps(spec),))

    verdicts = assess(pg_dsn, "c1", now, timedelta(hours=1))
    states = {h.detector_id: h.state for h in verdicts}
    assert states == {"d1": OK, "d2": STUCK_ON, "d3": STUCK_OFF, "d4": MISSING, "d5": MISSING}
    assert {h.controller_id for h in assess(pg_dsn, None, now, timedelta(hours=1))} == {"c1", "c2"}

    assert store_health(pg_dsn, verdicts, now) == 5
    # A later run with a shorter window keeps the earlier start of the same fault.
    later = assess(pg_dsn, "c1", now, timedelta(minutes=10))
    store_health(pg_dsn, later, now + timedelta(minutes=1))
    with psycopg.connect(pg_dsn) as conn:
        since, state = conn.execute(
            "SELECT since, state FROM detector_health WHERE controller_id = 'c1' AND detector_id = 'd2'").fetchone()
        total = conn.execute("SELECT count(*) FROM detector_health").fetchone()[0]
    assert state == STUCK_ON and since == T0 and total == 5
