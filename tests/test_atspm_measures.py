"""ATSPM measures: golden values on small hand-made event sequences, and the incremental store on PostgreSQL.

Each sequence is written out so the expected number can be checked by hand
(times are seconds after T0; phase 2 unless said otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sensors.atspm import measures as m
from sensors.atspm import store
from sensors.atspm.measures import Detector, Event, Params, compute

UTC = UTC
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)   # a bin boundary
ALL = frozenset(m.FUNCTIONS)


def ev(s: float, code: int, param: int) -> Event:
    return Event(T0 + timedelta(seconds=s), code, param)


def cycle(start: float, green: float, yellow: float = 4, red: float = 2, phase: int = 2,
          term: int | None = None) -> list[Event]:
    """begin green at start, yellow after green s, red clearance after yellow, end red clearance after red."""
    out = [ev(start, m.BEGIN_GREEN, phase)]
    if term is not None:
        out.append(ev(start + green, term, phase))
    out += [ev(start + green, m.BEGIN_YELLOW, phase), ev(start + green + yellow, m.BEGIN_RED_CLEAR, phase),
            ev(start + green + yellow + red, m.END_RED_CLEAR, phase)]
    return out


def on_off(ch: int, on: float, off: float) -> list[Event]:
    return [ev(on, m.DETECTOR_ON, ch), ev(off, m.DETECTOR_OFF, ch)]


DET = [Detector(1, 2, ALL)]


def test_vehicle_arriving_on_green_counts_toward_aog():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 5, 5.5)          # green 0-20
    b = compute(events, DET).phase[(T0, 2)]
    assert (b.arrivals, b.arrivals_on_green, b.arrivals_on_red) == (1, 1, 0)


def test_arrival_at_the_instant_green_begins_is_on_green_and_at_yellow_is_not():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 60, 60.5) + on_off(1, 20, 20.5)
    b = compute(events, DET).phase[(T0, 2)]
    assert (b.arrivals, b.arrivals_on_green) == (2, 1)   # at 60: green (1 sorts before 82); at 20: yellow


def test_arrival_on_red_waits_for_the_next_green():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 40, 40.5) + on_off(1, 50, 50.4)   # red from 24 to 60
    b = compute(events, DET).phase[(T0, 2)]
    assert (b.arrivals, b.arrivals_on_green, b.arrivals_on_red) == (2, 0, 2)
    assert b.total_delay_s == pytest.approx(20 + 10)       # approach delay: (60-40) + (60-50)


def test_arrivals_before_the_first_green_are_counted_but_never_green():
    events = on_off(1, 1, 1.5) + cycle(10, 20)
    b = compute(events, DET).phase[(T0, 2)]
    assert (b.arrivals, b.arrivals_on_green, b.arrivals_on_red) == (1, 0, 0)


def test_latency_moves_actuations_back():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 21, 21.5)       # logged in yellow, happened in green
    assert compute(events, DET, Params(latency_s=2.0)).phase[(T0, 2)].arrivals_on_green == 1
    assert compute(events, DET).phase[(T0, 2)].arrivals_on_green == 0


def test_terminations_count_per_phase():
    events = (cycle(0, 20, term=m.GAP_OUT) + cycle(60, 30, term=m.MAX_OUT) + cycle(120, 30, term=m.FORCE_OFF)
              + cycle(180, 25, term=m.GAP_OUT))
    out = compute(events, DET)
    b = out.phase[(T0, 2)]
    assert (b.gap_outs, b.max_outs, b.force_offs) == (2, 1, 1)
    assert [c.termination for c in out.cycles] == ["gap_out", "max_out", "force_off", "gap_out"]


def test_split_monitor_measures_green_to_end_of_red_clearance():
    out = compute(cycle(0, 20) + cycle(60, 30) + cycle(130, 10), DET)
    b = out.phase[(T0, 2)]
    assert b.services == 3
    assert b.split_s_sum == pytest.approx(26 + 36 + 16) and b.max_split_s == pytest.approx(36)
    first = out.cycles[0]
    assert (first.green_s, first.split_s, first.next_green) == (20, 26, T0 + timedelta(seconds=60))


def test_split_failure_needs_both_occupancies_over_threshold():
    # cycle 1: occupied through all of green and the first 5 s of red -> failure
    # cycle 2: green half occupied -> not a failure; cycle 3: empty
    events = cycle(0, 20) + cycle(60, 20) + cycle(120, 20)
    events += on_off(1, -1, 30)                   # on before green until 6 s into red (red starts at 24)
    events += on_off(1, 60, 70) + on_off(1, 90, 91)
    out = compute(events, DET)
    sf = [c for c in out.split_failure_cycles]
    assert [round(c.green_occupancy, 3) for c in sf] == [1.0, 0.5, 0.0]
    assert [round(c.red_occupancy, 3) for c in sf] == [1.0, 0.0, 0.0]
    assert [c.failed for c in sf] == [True, False, False]
    assert sf[0].barrier == T0 + timedelta(seconds=29)   # begin red + 5 s: the time atspm bins by
    b = out.phase[(T0, 2)]
    assert (b.sf_cycles, b.split_failures) == (3, 1)


def test_split_failure_skips_cycles_without_detector_state():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 5, 6)          # detector unknown for 5 s of cycle 1
    sf = compute(events, DET).split_failure_cycles
    assert [c.barrier for c in sf] == [T0 + timedelta(seconds=89)]


def test_missing_off_is_imputed_like_atspm():
    # two ons 10 s apart without an off: an off half-way (at 75) is added; green 60-80
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 50, 51) + [
        ev(70, m.DETECTOR_ON, 1), ev(80, m.DETECTOR_ON, 1), ev(82, m.DETECTOR_OFF, 1)]
    [c] = compute(events, DET).split_failure_cycles
    assert c.green_occupancy == pytest.approx((75 - 70) / 20)


def test_yellow_and_red_actuations_binned_by_begin_red():
    events = cycle(890, 5) + cycle(960, 20) + on_off(1, 896, 896.2) + on_off(1, 899.5, 899.7) + on_off(1, 901, 902)
    out = compute(events, DET)      # green 890-895, yellow 895-899, red from 899 (bin 07:00), next green 960
    b = out.phase[(T0, 2)]
    assert (b.yellow_actuations, b.red_actuations) == (1, 2)


def test_pedestrian_services_actuations_and_delay():
    events = [ev(10, m.PED_CALL, 4), ev(12, m.PED_CALL, 4), ev(40, m.PED_BEGIN_WALK, 4), ev(47, m.PED_BEGIN_CLEAR, 4),
              ev(100, m.PED_CALL, 4), ev(130, m.PED_BEGIN_WALK, 4), ev(137, m.PED_BEGIN_CLEAR, 4)]
    b = compute(events, DET).phase[(T0, 4)]
    assert (b.ped_services, b.ped_actuations) == (2, 3)
    # the second call (12) follows another call: only the first of a wait counts
    assert b.ped_delay_samples == 2 and b.ped_delay_s_sum == pytest.approx(30 + 30)


def test_detector_on_time_is_split_over_bins_and_counted():
    events = on_off(3, 890, 910) + on_off(3, 920, 921)
    d = compute(events, DET).detector
    assert d[(T0, 3)] == m.DetectorBin(1, 10.0)
    assert d[(T0 + timedelta(minutes=15), 3)] == m.DetectorBin(1, 11.0)


def test_communications_has_data_needs_every_sub_bin():
    busy = [ev(s, m.DETECTOR_ON, 1) for s in range(0, 900, 20)]
    sparse = [ev(900 + s, m.DETECTOR_ON, 1) for s in (0, 10, 20, 400, 410, 420)]   # nothing in 10-15 min
    dev = compute(busy + sparse, DET).device
    assert dev[T0].has_data and dev[T0].events == 45 and dev[T0].max_gap_s == 20
    late = dev[T0 + timedelta(minutes=15)]
    assert not late.has_data and late.max_gap_s == 380


def test_input_order_does_not_matter():
    events = cycle(0, 20) + cycle(60, 20) + on_off(1, 5, 6) + on_off(1, 40, 41)
    assert compute(list(reversed(events)), DET).phase == compute(events, DET).phase


# ---- the store on PostgreSQL -----------------------------------------------------------

def _insert_events(dsn: str, device: str, events: list[Event]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO controller_events (device_id, ts, event_code, event_param)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [(device, e.ts, e.code, e.param) for e in events])


def _corridor_hour(hours: float = 1.0) -> list[Event]:
    """A pretimed 60 s cycle: phase 2 green 0-24, phase 4 green 30-54; arrivals every 7 s on channel 1 (phase 2)."""
    events: list[Event] = []
    for k in range(int(hours * 60)):
        s = k * 60
        events += cycle(s, 20, phase=2) + cycle(s + 30, 20, phase=4)
    for s in range(0, int(hours * 3600), 7):
        events += on_off(1, s + 0.3, s + 1.0)
    return events


def test_aggregate_is_incremental_and_matches_a_full_computation(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO atspm_detectors (device_id, channel, phase, function) VALUES"
                     " ('c1', 1, 2, 'advance'), ('c1', 1, 2, 'presence'), ('c1', 1, 2, 'yellow_red')")
    events = _corridor_hour(1.0)
    half = [e for e in events if e.ts < T0 + timedelta(minutes=33)]
    _insert_events(pg_dsn, "c1", half)
    first = store.aggregate(pg_dsn, now=T0 + timedelta(hours=2))
    assert first.ranges["c1"] == (T0, T0 + timedelta(minutes=15))      # 33 min - 5 min settle -> 28 -> bin 15
    _insert_events(pg_dsn, "c1", events)
    second = store.aggregate(pg_dsn, now=T0 + timedelta(hours=2))
    assert second.ranges["c1"] == (T0 + timedelta(minutes=15), T0 + timedelta(minutes=45))
    assert store.aggregate(pg_dsn, now=T0 + timedelta(hours=2)).ranges == {}     # nothing new: nothing done

    full = compute(events, store.load_detectors(psycopg.connect(pg_dsn), "c1"))
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT bin, phase, arrivals, arrivals_on_green, total_delay_s, services, avg_split_s"
                            " FROM atspm_phase_15min WHERE device_id = 'c1' ORDER BY bin, phase").fetchall()
        cycles = conn.execute("SELECT count(*) FROM atspm_cycles WHERE device_id = 'c1' AND phase = 2").fetchone()[0]
        progress = conn.execute("SELECT processed_until FROM atspm_progress WHERE device_id = 'c1'").fetchone()[0]
    assert progress == T0 + timedelta(minutes=45)
    assert [r[0] for r in rows if r[1] == 2] == [T0 + timedelta(minutes=15 * i) for i in range(3)]
    for bin_, phase, arrivals, aog, delay, services, split in rows:
        want = full.phase[(bin_, phase)]
        assert (arrivals, aog, services) == (want.arrivals, want.arrivals_on_green, want.services)
        assert delay == pytest.approx(want.total_delay_s)
        assert split == pytest.approx(want.split_s_sum / want.services)
    assert cycles == 45                     # one phase-2 service a minute, 45 minutes written
    b = full.phase[(T0, 2)]
    assert b.arrivals == 129 and 0 < b.arrivals_on_green < b.arrivals


def test_recompute_picks_up_late_events(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO atspm_detectors (device_id, channel, phase, function) VALUES ('c1', 1, 2, 'advance')")
    events = _corridor_hour(1.0)
    late = [e for e in events if e.code == m.DETECTOR_ON and e.ts < T0 + timedelta(minutes=10)]
    _insert_events(pg_dsn, "c1", [e for e in events if e not in late])
    store.aggregate(pg_dsn, now=T0 + timedelta(hours=2))
    _insert_events(pg_dsn, "c1", late)
    store.recompute(pg_dsn, "c1", T0, T0 + timedelta(minutes=10))
    with psycopg.connect(pg_dsn) as conn:
        arrivals = conn.execute("SELECT arrivals FROM atspm_phase_15min WHERE device_id = 'c1' AND bin = %s"
                                " AND phase = 2", (T0,)).fetchone()[0]
    assert arrivals == 129


def test_detector_config_follows_the_spec(pg_dsn):
    from psycopg.types.json import Jsonb

    from controller.examples import four_leg  # tests may build specs with the controller's examples
    spec = four_leg("c9")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO controllers (controller_id, site, spec) VALUES ('c9', 'hn', %s)",
                     (Jsonb(spec.to_dict()),))
        conn.execute("INSERT INTO controllers (controller_id, site, spec) VALUES ('c8', 'hn', %s)",
                     (Jsonb(spec.to_dict()),))
        conn.execute("INSERT INTO atspm_detectors (device_id, channel, phase, function) VALUES ('c8', 7, 2, 'advance')")
    assert store.sync_detectors_from_specs(pg_dsn) == len(store.detectors_from_spec(spec))
    with psycopg.connect(pg_dsn) as conn:
        dets = store.load_detectors(conn, "c9")
        manual = store.load_detectors(conn, "c8")
    assert {d.channel for d in dets} == set(range(1, len(spec.detectors) + 1))
    first = spec.detectors[0]
    assert {d.phase for d in dets if d.channel == 1} == set(spec.detector_phases(first))
    assert all(d.functions == ALL and d.detector_id for d in dets)
    assert manual == [Detector(7, 2, frozenset({m.ADVANCE}), "")]      # an agency's own config wins
