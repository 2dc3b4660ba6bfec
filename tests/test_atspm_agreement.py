"""The project's ATSPM measures agree with ODOT's ``atspm`` package on the real controller data it ships.

``atspm`` (PyPI, MIT, DuckDB inside) carries two hours of hi-res events of
one real controller (device 1136, 37,152 events) and its detector config in
the wheel (``atspm/data/sample_*.parquet``). Both implementations run on
the same events with the same parameters and are compared bin by bin,
measure by measure. Tolerances (stated per measure in ``TOLERANCE``): counts
exactly; ratios and seconds to 1e-6 relative, atspm keeping them as float32,
and split-failure occupancies to 1e-6 absolute.

Measures with no ``atspm`` counterpart (approach delay, split monitor from
begin green/end red clearance, per-cycle PCD rows) are covered by the golden
tests in ``test_atspm_measures.py``. ``atspm``'s ``splits`` and
``communications`` read vendor codes (MAXTIME 300-317, 400-503) the Indiana
set and the emulators do not have; communications is compared through
``has_data``.

Skips with the reason when ``atspm`` (test extra) is not installed.
"""

from __future__ import annotations

from datetime import UTC

import pytest

atspm = pytest.importorskip("atspm", reason="atspm (ODOT, PyPI) not installed: pip install -e '.[test]'")

from sensors.atspm.measures import ADVANCE, PRESENCE, YELLOW_RED, Detector, Event, Params, compute  # noqa: E402

FUNCTION = {"Advance": ADVANCE, "Presence": PRESENCE, "Yellow_Red": YELLOW_RED}
PARAMS = Params(latency_s=0.0, red_time_s=5.0, red_occupancy_threshold=0.80, green_occupancy_threshold=0.80,
                no_data_minutes=5, min_data_points=3)
AGGREGATIONS = [
    {"name": "has_data", "params": {"no_data_min": 5, "min_data_points": 3}},
    {"name": "actuations", "params": {}},
    {"name": "arrival_on_green", "params": {"latency_offset_seconds": 0}},
    {"name": "split_failures", "params": {"red_time": 5, "red_occupancy_threshold": 0.80,
                                          "green_occupancy_threshold": 0.80, "by_approach": True}},
    {"name": "yellow_red", "params": {"latency_offset_seconds": 0}},
    {"name": "terminations", "params": {}},
    {"name": "ped", "params": {}},
    {"name": "timeline", "params": {"min_duration": 0, "cushion_time": 0}},
    {"name": "ped_delay", "params": {}},
]
TOLERANCE = {
    "actuations": "exact",
    "arrival_on_green: total": "exact",
    "arrival_on_green: percent": "1e-6 rel (float32)",
    "split_failures: green time": "1e-6 rel (float32)",
    "split_failures: occupancies": "1e-6 abs",
    "split_failures: count": "exact",
    "terminations": "exact",
    "yellow_red: yellow and red": "exact",
    "ped: services, actuations": "exact",
    "ped_delay: mean, samples": "1e-6 rel (float32), exact",
    "has_data": "exact (same bins)",
}


def _utc(ts):
    return ts.to_pydatetime().replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def both():
    from atspm import SignalDataProcessor, sample_data

    raw = sample_data.data.df()
    config = sample_data.config.df()
    reference = {}
    with SignalDataProcessor(raw_data=raw, detector_config=config, bin_size=15, verbose=0,
                             aggregations=AGGREGATIONS) as proc:
        proc.load()
        proc.aggregate()
        for name in ("has_data", "actuations", "arrival_on_green", "split_failures", "yellow_red", "terminations",
                     "ped", "ped_delay"):
            reference[name] = proc.conn.query(f"SELECT * FROM {name}").df()
    detectors = [Detector(int(r.Parameter), int(r.Phase), frozenset([FUNCTION[r.Function]]))
                 for r in config.itertuples() if r.Function in FUNCTION]
    events = [Event(_utc(t), int(c), int(p)) for t, c, p in zip(raw.TimeStamp, raw.EventId, raw.Parameter, strict=False)
              if 0 <= p <= 32767]
    assert len(events) == 37152 and len({r.DeviceId for r in raw.itertuples()}) == 1
    return reference, compute(events, detectors, PARAMS)


def test_actuations(both):
    ref, mine = both
    df = ref["actuations"]
    assert len(df) == 184
    for r in df.itertuples():
        assert mine.detector[(_utc(r.TimeStamp), r.Detector)].actuations == r.Total
    assert sum(1 for v in mine.detector.values() if v.actuations) == len(df)


def test_arrival_on_green(both):
    ref, mine = both
    df = ref["arrival_on_green"]
    assert len(df) == 32
    for r in df.itertuples():
        b = mine.phase[(_utc(r.TimeStamp), r.Phase)]
        assert b.arrivals == r.Total_Actuations
        assert b.arrivals_on_green / b.arrivals == pytest.approx(r.Percent_AOG, rel=1e-6)


def test_split_failures(both):
    ref, mine = both
    df = ref["split_failures"]
    assert len(df) == 32 and df.Split_Failure.sum() > 0
    for r in df.itertuples():
        b = mine.phase[(_utc(r.TimeStamp), r.Phase)]
        assert b.green_time_s_sum / b.sf_cycles == pytest.approx(r.Green_Time, rel=1e-6)
        assert b.green_occupancy_sum / b.sf_cycles == pytest.approx(r.Green_Occupancy, abs=1e-6)
        assert b.red_occupancy_sum / b.sf_cycles == pytest.approx(r.Red_Occupancy, abs=1e-6)
        assert b.split_failures == r.Split_Failure
    assert sum(1 for b in mine.phase.values() if b.sf_cycles) == len(df)


def test_terminations(both):
    ref, mine = both
    df = ref["terminations"]
    field = {"GapOut": "gap_outs", "MaxOut": "max_outs", "ForceOff": "force_offs"}
    for r in df.itertuples():
        assert getattr(mine.phase[(_utc(r.TimeStamp), r.Phase)], field[r.PerformanceMeasure]) == r.Total
    assert sum(b.gap_outs + b.max_outs + b.force_offs for b in mine.phase.values()) == df.Total.sum()


def test_yellow_and_red_actuations(both):
    ref, mine = both
    df = ref["yellow_red"]
    sums = df.groupby(["TimeStamp", "Phase", "Signal_State"])["Count"].sum()
    for (ts, phase, state), count in sums.items():
        if state in (8, 10):
            b = mine.phase[(_utc(ts), phase)]
            assert (b.yellow_actuations if state == 8 else b.red_actuations) == count
    assert sum(b.yellow_actuations + b.red_actuations for b in mine.phase.values()) == \
        df[df.Signal_State.isin([8, 10])].Count.sum()


def test_pedestrian_services_actuations_and_delay(both):
    ref, mine = both
    for r in ref["ped"].itertuples():
        b = mine.phase[(_utc(r.TimeStamp), r.Phase)]
        assert (b.ped_services, b.ped_actuations) == (r.PedServices, r.PedActuation)
    df = ref["ped_delay"]
    assert len(df) == 2
    for r in df.itertuples():
        b = mine.phase[(_utc(r.TimeStamp), r.Phase)]
        assert b.ped_delay_samples == r.Samples
        assert b.ped_delay_s_sum / b.ped_delay_samples == pytest.approx(r.AvgPedDelay, rel=1e-6)


def test_communications_has_data(both):
    ref, mine = both
    assert sorted(_utc(t) for t in ref["has_data"].TimeStamp) == sorted(b for b, v in mine.device.items() if v.has_data)
