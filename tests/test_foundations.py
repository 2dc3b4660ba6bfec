"""Unit and property tests of the shared contracts in ``traffic/``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic import messages, topics
from traffic.clearance import pedestrian_clear_s, red_clearance_s, yellow_change_s
from traffic.config import load_settings
from traffic.errors import ConfigError, MessageError, PlanError
from traffic.intersection import IntersectionSpec, PhaseSpec
from traffic.plan import TimingPlan
from traffic.signals import cycle_intervals, cycle_start_offset, red_clear_state, yellow_state

SPEC = IntersectionSpec(
    controller_id="j1", tls_id="J1", link_count=4,
    phases=(PhaseSpec(1, "GGrr", 13.9, clearance_width_m=20.0, ped_crossing_m=10.0),
            PhaseSpec(2, "rrGg", 11.1, clearance_width_m=14.0)),
    conflicts=frozenset({(0, 2), (1, 2), (0, 3), (1, 3)}),
)


# --- ITE formulas ---------------------------------------------------------

def test_yellow_matches_ite_formula_for_50_kmh_level_approach():
    # Y = 1.0 + 13.89 / (2 * 3.05) = 3.277 -> 3.3 s (rounded up to 0.1 s)
    assert yellow_change_s(50 / 3.6) == pytest.approx(3.3)


def test_yellow_is_longer_downhill_and_clamped():
    assert yellow_change_s(16.7, grade=-0.05) > yellow_change_s(16.7, grade=0.0)
    assert yellow_change_s(5.0) == 3.0          # policy floor
    assert yellow_change_s(40.0) == 6.0         # policy ceiling


def test_red_clearance_and_pedestrian_clearance():
    # R = (20 + 6.1) / 13.9 = 1.878 -> 1.9 s
    assert red_clearance_s(13.9, 20.0) == pytest.approx(1.9)
    # 10 m at 1.07 m/s = 9.35 -> 9.4 s
    assert pedestrian_clear_s(10.0) == pytest.approx(9.4)
    assert pedestrian_clear_s(0.0) == 0.0


@given(st.floats(1.0, 30.0), st.floats(-0.08, 0.08))
def test_yellow_never_below_formula(speed, grade):
    raw = 1.0 + speed / (2 * 3.05 + 2 * grade * 9.81)
    assert yellow_change_s(speed, grade) >= min(6.0, raw) - 1e-9


# --- plan model ------------------------------------------------------------

def test_plan_round_trips_through_json():
    plan = SPEC.default_plan(90.0, offset_s=12.0)
    again = TimingPlan.from_json(plan.to_json())
    assert again == plan
    assert again.patternCycleTime == pytest.approx(sum(again.splits))


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("phases"), "phases"),
    (lambda d: d["phases"][0].update(splitTime="30"), "splitTime"),
    (lambda d: d["phases"][0].update(greens="GXrr"), "greens"),
    (lambda d: d.update(patternCycleTime=float("nan")), "patternCycleTime"),
    (lambda d: d.update(mode="chaos"), "mode"),
    (lambda d: d.update(expires_at="tomorrow"), "expires_at"),
])
def test_plan_parsing_names_the_bad_field(mutate, field):
    data = SPEC.default_plan(90.0).to_dict()
    mutate(data)
    with pytest.raises(PlanError, match=field):
        TimingPlan.from_dict(data)


def test_plan_expiry():
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    plan = SPEC.default_plan(90.0)
    assert TimingPlan.from_dict({**plan.to_dict(), "expires_at": past}).is_expired()
    assert not TimingPlan.from_dict({**plan.to_dict(), "expires_at": future}).is_expired()


@given(st.lists(st.floats(25.0, 80.0), min_size=2, max_size=2))
def test_plan_from_splits_keeps_cycle_equal_to_sum(splits):
    plan = SPEC.plan_from_splits(splits)
    assert plan.patternCycleTime == pytest.approx(sum(p.splitTime for p in plan.phases), abs=0.051)
    for phase, spec in zip(plan.phases, SPEC.phases, strict=False):
        assert phase.phaseYellowChange == spec.yellow_s
        assert phase.phaseRedClear == spec.red_clear_s


# --- signal sequences ------------------------------------------------------

def test_change_states_keep_overlaps_and_clear_the_rest():
    assert yellow_state("GGrg", "rGGr") == "yGry"
    assert red_clear_state("GGrg", "rGGr") == "rGrr"


@given(st.lists(st.floats(25.0, 80.0), min_size=2, max_size=2), st.floats(0, 200))
def test_cycle_intervals_sum_to_cycle(splits, offset):
    plan = SPEC.plan_from_splits(splits, offset_s=offset)
    intervals = cycle_intervals(plan)
    assert sum(i.duration for i in intervals) == pytest.approx(plan.patternCycleTime, abs=0.05 * len(intervals))
    assert 0 <= cycle_start_offset(plan) < plan.patternCycleTime
    # every change from green goes through yellow
    for a, b in zip(intervals, intervals[1:] + intervals[:1], strict=False):
        for x, y in zip(a.state, b.state, strict=False):
            assert not (x in "Gg" and y == "r"), (a, b)


# --- topics ----------------------------------------------------------------

def test_topics_build_and_parse():
    t = topics.topic("hanoi", "j1", topics.COUNTS)
    assert t == "tsc/v1/hanoi/j1/counts"
    parsed = topics.parse(t)
    assert (parsed.site, parsed.controller_id, parsed.leaf) == ("hanoi", "j1", "counts")
    assert topics.parse("tsc/v1/hanoi/j1/plan/result").leaf == topics.PLAN_RESULT
    assert topics.shared("ingest", topics.wildcard("hanoi", topics.COUNTS)) == "$share/ingest/tsc/v1/hanoi/+/counts"


@pytest.mark.parametrize("bad", ["tsc/v2/hanoi/j1/counts", "tsc/v1/Hanoi/j1/counts", "tsc/v1/hanoi/+/counts",
                                 "tsc/v1/hanoi/j1/unknown", "x"])
def test_foreign_topics_are_refused(bad):
    with pytest.raises(MessageError):
        topics.parse(bad)


# --- messages --------------------------------------------------------------

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def _report() -> messages.CountReport:
    return messages.CountReport("j1", 7, NOW, 60, (messages.CountRecord("d01", 12, 8.5, 10),
                                                    messages.CountRecord("d02", 0, 0.0)))


def test_counts_round_trip():
    assert messages.decode_counts(_report().to_json()) == _report()


@pytest.mark.parametrize("payload, needle", [
    (b"\xff\xfe", "UTF-8"),
    (b"{not json", "not JSON"),
    (b"[]", "object"),
    (b'{"schema":"counts/9"}', "schema"),
    (json.dumps({**json.loads(_report().to_json()), "seq": "7"}).encode(), "seq"),
    (json.dumps({**json.loads(_report().to_json()), "records": []}).encode(), "records"),
    (json.dumps({**json.loads(_report().to_json()), "interval_start": "2026-11-23T07:00:00"}).encode(), "UTC"),
    (b'{"schema":"counts/1","x":NaN}', "non-finite"),
    (b"{" + b" " * (messages.MAX_PAYLOAD_BYTES + 1) + b"}", "too large"),
])
def test_bad_counts_raise_message_error_with_reason(payload, needle):
    with pytest.raises(MessageError, match=needle):
        messages.decode_counts(payload)


def test_counts_reject_motorcycles_above_total_and_duplicates():
    data = json.loads(_report().to_json())
    data["records"][0]["motorcycle_count"] = 99
    with pytest.raises(MessageError, match="motorcycle_count"):
        messages.decode_counts(json.dumps(data).encode())
    data = json.loads(_report().to_json())
    data["records"][1]["detector_id"] = "d01"
    with pytest.raises(MessageError, match="duplicate"):
        messages.decode_counts(json.dumps(data).encode())


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_anything_but_message_error(blob):
    for decode in (messages.decode_counts, messages.decode_events, messages.decode_status, messages.decode_result):
        try:
            decode(blob)
        except MessageError:
            pass


def test_status_events_and_results_round_trip():
    status = messages.StatusMessage("j1", messages.ONLINE, messages.MODE_CENTRAL, "p1", 3, NOW, "ok")
    assert messages.decode_status(status.to_json()) == status
    batch = messages.EventBatch("j1", 1, ((NOW, 1, 2), (NOW + timedelta(seconds=0.1), 8, 2)))
    assert messages.decode_events(batch.to_json()) == batch
    result = messages.PlanResult("j1", "p1", messages.REJECTED, "YELLOW", "too short", NOW)
    assert messages.decode_result(result.to_json()) == result


# --- config ----------------------------------------------------------------

def test_config_file_and_environment(tmp_path):
    path = tmp_path / "traffic.toml"
    path.write_text('[mqtt]\nurl = "mqtt://10.0.0.1:1883"\n[control]\nepoch_s = 300\n')
    s = load_settings(path, env={"TRAFFIC_CONTROL_EPOCH_S": "120", "TRAFFIC_DATABASE_DSN": "dbname=x"})
    assert s.mqtt.port == 1883 and s.mqtt.host == "10.0.0.1"
    assert s.control.epoch_s == 120          # environment wins over the file
    assert s.database.dsn == "dbname=x"


def test_config_errors_are_clear(tmp_path):
    path = tmp_path / "traffic.toml"
    path.write_text("[mqtt]\nurll = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'urll'"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="epoch_s"):
        load_settings(None, env={"TRAFFIC_CONTROL_EPOCH_S": "soon", "TRAFFIC_CONFIG": ""})
