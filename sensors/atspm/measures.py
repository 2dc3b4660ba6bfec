"""ATSPM measures from Indiana hi-resolution events: pure, no I/O.

Every function takes one device's events (any order) and its detector
configuration and returns rows per 15-minute bin (or per cycle). The rules
follow ODOT's ``atspm`` package (its DuckDB SQL templates are the field's
reference) wherever it has the measure, so the agreement test can hold the
two side by side on atspm's own sample; approach delay, splits and the
per-cycle table are the classic UDOT ATSPM definitions, which ``atspm`` does
not aggregate.

Conventions shared by all measures (all as in ``atspm``):

* events are ordered by ``(time, code)``; so at one instant a phase event
  (codes 1, 8, 10 < 81) comes before a detector event, and an actuation at
  the very instant green begins counts as an arrival on green;
* a phase's signal state at time t is the last of its begin-green (1),
  begin-yellow (8) and begin-red-clearance (10) events at or before t;
  before the first begin-green in the data it is unknown (never green);
* a bin is ``[floor_15(t), floor_15(t) + 15 min)`` in UTC, on the time the
  measure names (arrival, red barrier, begin red, walk start ...).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

# Indiana codes used here (same numbers as field_firmware_stubs/events.py; sensors does not import the field).
BEGIN_GREEN = 1
GAP_OUT = 4
MAX_OUT = 5
FORCE_OFF = 6
BEGIN_YELLOW = 8
BEGIN_RED_CLEAR = 10
END_RED_CLEAR = 11
PED_BEGIN_WALK = 21
PED_BEGIN_CLEAR = 22
PED_CALL = 90          # pedestrian detector on (push button)
DETECTOR_OFF = 81
DETECTOR_ON = 82
VENDOR_FIRST = 219     # codes above 218 are vendor specific (not counted for "has data")

ADVANCE = "advance"        # arrivals: AoG, PCD, approach volume and delay
PRESENCE = "presence"      # stop-bar occupancy: split failures
YELLOW_RED = "yellow_red"  # actuations on yellow and red
FUNCTIONS = (ADVANCE, PRESENCE, YELLOW_RED)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)   # bins align to the quarter hour (as detector_counts_15min)


class Event(NamedTuple):
    """One hi-res record: UTC time, Indiana code, parameter (phase or detector channel)."""

    ts: datetime
    code: int
    param: int


@dataclass(frozen=True)
class Detector:
    """One detector channel as ATSPM configures it: the phase it serves and what it is used for."""

    channel: int
    phase: int
    functions: frozenset[str] = frozenset(FUNCTIONS)
    detector_id: str = ""


@dataclass(frozen=True)
class Params:
    """Knobs, with ``atspm``'s defaults."""

    bin_minutes: int = 15
    latency_s: float = 0.0              # detector-to-controller latency: actuations are moved back by it
    red_time_s: float = 5.0             # split failure: first seconds of red whose occupancy counts
    red_occupancy_threshold: float = 0.80
    green_occupancy_threshold: float = 0.80
    no_data_minutes: int = 5            # communications: sub-bin length
    min_data_points: int = 3            # communications: events a sub-bin needs


@dataclass
class PhaseBin:
    """All phase measures of one 15-minute bin (None where the measure had nothing to say)."""

    arrivals: int = 0                   # advance-detector actuations (approach volume)
    arrivals_on_green: int = 0
    arrivals_on_red: int = 0
    total_delay_s: float = 0.0          # sum over arrivals on red of the wait to the next green
    sf_cycles: int = 0
    green_time_s_sum: float = 0.0
    green_occupancy_sum: float = 0.0
    red_occupancy_sum: float = 0.0
    split_failures: int = 0
    services: int = 0                   # cycles whose green began in this bin
    split_s_sum: float = 0.0            # begin green -> end of red clearance
    max_split_s: float | None = None
    gap_outs: int = 0
    max_outs: int = 0
    force_offs: int = 0
    yellow_actuations: int = 0
    red_actuations: int = 0
    ped_services: int = 0
    ped_actuations: int = 0
    ped_delay_s_sum: float = 0.0
    ped_delay_samples: int = 0


@dataclass(frozen=True)
class Cycle:
    """One service of one phase (begin green to the next begin green): the PCD and split monitor row."""

    phase: int
    green_start: datetime
    yellow_start: datetime | None
    red_start: datetime | None
    red_clear_end: datetime | None
    next_green: datetime | None
    termination: str | None            # gap_out / max_out / force_off / None (pretimed or unknown)
    arrivals: int
    arrivals_on_green: int

    @property
    def split_s(self) -> float | None:
        end = self.red_clear_end or self.next_green
        return None if end is None else (end - self.green_start).total_seconds()

    @property
    def green_s(self) -> float | None:
        return None if self.yellow_start is None else (self.yellow_start - self.green_start).total_seconds()


@dataclass(frozen=True)
class DetectorBin:
    """One detector channel over one bin: actuations and seconds occupied."""

    actuations: int
    on_time_s: float


@dataclass(frozen=True)
class DeviceBin:
    """Communications: events received and whether every sub-bin had enough of them."""

    events: int
    has_data: bool
    max_gap_s: float


@dataclass
class Measures:
    """Everything :func:`compute` found for one device."""

    phase: dict[tuple[datetime, int], PhaseBin] = field(default_factory=dict)
    detector: dict[tuple[datetime, int], DetectorBin] = field(default_factory=dict)
    device: dict[datetime, DeviceBin] = field(default_factory=dict)
    cycles: list[Cycle] = field(default_factory=list)
    split_failure_cycles: list[SplitFailureCycle] = field(default_factory=list)

    def bin(self, at: datetime, phase: int) -> PhaseBin:
        return self.phase.setdefault((at, phase), PhaseBin())


@dataclass(frozen=True)
class SplitFailureCycle:
    phase: int
    barrier: datetime          # begin red + red_time_s: the time atspm bins the cycle by
    green_time_s: float
    green_occupancy: float
    red_occupancy: float
    failed: bool


# ---------------------------------------------------------------------------
# helpers

def floor_bin(ts: datetime, minutes: int = 15) -> datetime:
    width = timedelta(minutes=minutes)
    return EPOCH + ((ts - EPOCH) // width) * width


def _sorted(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.ts, e.code, e.param))


class _PhaseTimeline:
    """Begin green / yellow / red clearance of one phase, for state-at-time lookups."""

    def __init__(self, marks: Sequence[tuple[datetime, int]]) -> None:
        self.keys = [(t, c) for t, c in marks]
        self.greens = [t for t, c in marks if c == BEGIN_GREEN]

    def state(self, ts: datetime, code: int = DETECTOR_ON) -> int | None:
        """State (1, 8, 10) at ``ts`` for an event with ``code``; None before the first green."""
        i = bisect.bisect_right(self.keys, (ts, code)) - 1
        if i < 0 or not self.greens or ts < self.greens[0]:
            return None
        # atspm: running max of the codes within the cycle (begin green .. next begin green)
        j = i
        best = 0
        while j >= 0:
            t, c = self.keys[j]
            best = max(best, c)
            if c == BEGIN_GREEN:
                break
            j -= 1
        return best if self.keys[j][1] == BEGIN_GREEN else None

    def next_green(self, ts: datetime) -> datetime | None:
        i = bisect.bisect_right(self.greens, ts)
        return self.greens[i] if i < len(self.greens) else None


def _phase_marks(events: Sequence[Event]) -> dict[int, list[tuple[datetime, int]]]:
    marks: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for e in events:
        if e.code in (BEGIN_GREEN, BEGIN_YELLOW, BEGIN_RED_CLEAR):
            marks[e.param].append((e.ts, e.code))
    for m in marks.values():
        m.sort()
    return marks


def _by_function(detectors: Iterable[Detector], function: str) -> dict[int, list[int]]:
    """channel -> phases it serves for ``function`` (a channel may serve several phases)."""
    out: dict[int, list[int]] = defaultdict(list)
    for d in detectors:
        if function in d.functions and d.phase not in out[d.channel]:
            out[d.channel].append(d.phase)
    return out


# ---------------------------------------------------------------------------
# measures

def compute(events: Iterable[Event], detectors: Iterable[Detector], params: Params = Params()) -> Measures:
    """Every measure of one device from its events."""
    evs = _sorted(events)
    dets = list(detectors)
    out = Measures()
    marks = _phase_marks(evs)
    timelines = {p: _PhaseTimeline(m) for p, m in marks.items()}
    arrivals_on_green(evs, dets, timelines, out, params)
    out.cycles = cycles(evs, dets, marks, timelines, params)
    for c in out.cycles:
        if c.red_clear_end is not None or c.next_green is not None:
            b = out.bin(floor_bin(c.green_start, params.bin_minutes), c.phase)
            b.services += 1
            split = c.split_s or 0.0
            b.split_s_sum += split
            b.max_split_s = split if b.max_split_s is None else max(b.max_split_s, split)
    terminations(evs, out, params)
    out.split_failure_cycles = split_failure_cycles(evs, dets, params)
    for sf in out.split_failure_cycles:
        b = out.bin(floor_bin(sf.barrier, params.bin_minutes), sf.phase)
        b.sf_cycles += 1
        b.green_time_s_sum += sf.green_time_s
        b.green_occupancy_sum += sf.green_occupancy
        b.red_occupancy_sum += sf.red_occupancy
        b.split_failures += int(sf.failed)
    yellow_red(evs, dets, marks, out, params)
    pedestrians(evs, out, params)
    out.detector = detector_bins(evs, params)
    out.device = communications(evs, params)
    return out


def arrivals_on_green(evs: Sequence[Event], dets: Sequence[Detector], timelines: Mapping[int, _PhaseTimeline],
                      out: Measures, params: Params) -> None:
    """Arrivals (advance actuations, moved back by the latency), on green, on red and their delay.

    Approach delay (UDOT ATSPM): a vehicle arriving on red waits until the
    next begin green; the bin's delay is the sum over its arrivals.
    """
    channels = _by_function(dets, ADVANCE)
    lat = timedelta(seconds=params.latency_s)
    for e in evs:
        if e.code != DETECTOR_ON or e.param not in channels:
            continue
        t = e.ts - lat
        for phase in channels[e.param]:
            tl = timelines.get(phase)
            if tl is None:
                continue   # atspm joins phases that have events: no phase events, no arrivals row
            b = out.bin(floor_bin(t, params.bin_minutes), phase)
            b.arrivals += 1
            state = tl.state(t)
            if state == BEGIN_GREEN:
                b.arrivals_on_green += 1
            elif state == BEGIN_RED_CLEAR:
                b.arrivals_on_red += 1
                nxt = tl.next_green(t)
                if nxt is not None:
                    b.total_delay_s += (nxt - t).total_seconds()


def cycles(evs: Sequence[Event], dets: Sequence[Detector], marks: Mapping[int, list[tuple[datetime, int]]],
           timelines: Mapping[int, _PhaseTimeline], params: Params) -> list[Cycle]:
    """One row per service of each phase: the data of the PCD and of the split monitor."""
    ends: dict[int, list[datetime]] = defaultdict(list)
    terms: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for e in evs:
        if e.code == END_RED_CLEAR:
            ends[e.param].append(e.ts)
        elif e.code in (GAP_OUT, MAX_OUT, FORCE_OFF):
            terms[e.param].append((e.ts, e.code))
    arrivals: dict[int, list[datetime]] = defaultdict(list)
    channels = _by_function(dets, ADVANCE)
    lat = timedelta(seconds=params.latency_s)
    for e in evs:
        if e.code == DETECTOR_ON and e.param in channels:
            for phase in channels[e.param]:
                arrivals[phase].append(e.ts - lat)
    names = {GAP_OUT: "gap_out", MAX_OUT: "max_out", FORCE_OFF: "force_off"}
    result: list[Cycle] = []
    for phase, m in sorted(marks.items()):
        greens = [i for i, (_, c) in enumerate(m) if c == BEGIN_GREEN]
        for k, gi in enumerate(greens):
            start = m[gi][0]
            stop = greens[k + 1] if k + 1 < len(greens) else len(m)
            nxt = m[greens[k + 1]][0] if k + 1 < len(greens) else None
            yellow = next((t for t, c in m[gi + 1:stop] if c == BEGIN_YELLOW), None)
            red = next((t for t, c in m[gi + 1:stop] if c == BEGIN_RED_CLEAR), None)
            red_end = None
            if red is not None:
                red_end = next((t for t in ends[phase] if t >= red and (nxt is None or t <= nxt)), None)
            term = None
            if yellow is not None:
                cand = [c for t, c in terms[phase] if start <= t <= yellow]
                term = names[cand[-1]] if cand else None
            upto = nxt if nxt is not None else (red_end or red or yellow or start)
            arr = [t for t in arrivals.get(phase, ()) if start <= t < upto] if nxt is not None else []
            on_green = sum(1 for t in arr if yellow is None or t < yellow)
            result.append(Cycle(phase, start, yellow, red, red_end, nxt, term, len(arr), on_green))
    return result


def terminations(evs: Sequence[Event], out: Measures, params: Params) -> None:
    for e in evs:
        if e.code in (GAP_OUT, MAX_OUT, FORCE_OFF):
            b = out.bin(floor_bin(e.ts, params.bin_minutes), e.param)
            if e.code == GAP_OUT:
                b.gap_outs += 1
            elif e.code == MAX_OUT:
                b.max_outs += 1
            else:
                b.force_offs += 1


def _impute(series: list[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """atspm's repair of a detector's on/off sequence (missing offs and ons), then an on before a leading off."""
    added: list[tuple[datetime, int]] = []
    for (pt, pc), (t, c) in zip(series, series[1:], strict=False):
        diff = t - pt
        if c == DETECTOR_ON and pc == DETECTOR_ON:
            if diff <= timedelta(milliseconds=2000):
                added.append((t, DETECTOR_OFF))
            else:
                added.append((t - timedelta(milliseconds=(diff // timedelta(milliseconds=1)) // 2), DETECTOR_OFF))
        elif c == DETECTOR_OFF and pc == DETECTOR_OFF:
            added.append((t - timedelta(milliseconds=(diff // timedelta(milliseconds=1)) // 2), DETECTOR_ON))
    combined = series + added
    if combined:
        first = min(combined, key=lambda x: x[0])
        if first[1] == DETECTOR_OFF:
            combined.append((first[0] - timedelta(milliseconds=1), DETECTOR_ON))
    return combined


def split_failure_cycles(evs: Sequence[Event], dets: Sequence[Detector], params: Params) -> list[SplitFailureCycle]:
    """Green and red occupancy per cycle over all presence detectors of the phase (atspm ``by_approach``).

    A cycle (begin green to next begin green) counts when it has one begin
    yellow, one red barrier (begin red + ``red_time_s``) and a known detector
    state throughout; green occupancy is the share of green with any presence
    detector on, red occupancy that of the first ``red_time_s`` of red. It is
    a split failure when both reach their thresholds.
    """
    channels = _by_function(dets, PRESENCE)
    if not channels or not evs:
        return []
    per_det: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for e in evs:
        if e.code in (DETECTOR_ON, DETECTOR_OFF) and e.param in channels:
            per_det[e.param].append((e.ts, e.code))
    phases = sorted({p for ps in channels.values() for p in ps})
    cutoff = floor_bin(evs[-1].ts, params.bin_minutes) + timedelta(minutes=params.bin_minutes)
    red_time = timedelta(seconds=params.red_time_s)
    result: list[SplitFailureCycle] = []
    for phase in phases:
        # 1. combine the phase's detectors: on while any is on (cumulative sum, ties together)
        changes: dict[datetime, int] = defaultdict(int)
        for ch, ps in channels.items():
            if phase not in ps:
                continue
            for t, c in _impute(sorted(per_det.get(ch, []), key=lambda x: x[0])):
                changes[t] += 1 if c == DETECTOR_ON else -1
        if not changes:
            continue
        rows: list[tuple[datetime, int]] = []      # (time, code): 81/82 states and 1/8/10/11 phase marks
        level = 0
        for t in sorted(changes):
            level += changes[t]
            rows.append((t, DETECTOR_ON if level > 0 else DETECTOR_OFF))
        for e in evs:
            if e.param == phase and e.code in (BEGIN_GREEN, BEGIN_YELLOW, BEGIN_RED_CLEAR):
                rows.append((e.ts, e.code))
                if e.code == BEGIN_RED_CLEAR and e.ts + red_time < cutoff:
                    rows.append((e.ts + red_time, END_RED_CLEAR))   # the red barrier
        rows.sort()
        # 2. walk the rows: cycle number, signal state, detector state, time to the next row
        cyc: dict[int, dict] = {}
        n = 0
        sig = 0
        det: bool | None = None
        for i, (t, c) in enumerate(rows):
            if c == BEGIN_GREEN:
                n += 1
                sig = 0
            if c < DETECTOR_OFF:
                sig = max(sig, c)
            else:
                det = c == DETECTOR_ON
            if n == 0:
                continue
            info = cyc.setdefault(n, {"yellow": 0, "barrier": 0, "null": False, "g_on": 0.0, "g_off": 0.0,
                                      "r_on": 0.0, "ts": None})
            if c == BEGIN_YELLOW:
                info["yellow"] += 1
            if c == END_RED_CLEAR:
                info["barrier"] += 1
                info["ts"] = t if info["ts"] is None else max(info["ts"], t)
            if det is None:
                info["null"] = True
            nxt = rows[i + 1][0] if i + 1 < len(rows) else None
            if nxt is None:
                continue
            dt = (nxt - t) / timedelta(milliseconds=1)
            if sig == BEGIN_GREEN:
                info["g_on" if det else "g_off"] += dt
                info["ts"] = t if info["ts"] is None else max(info["ts"], t)
            elif sig == BEGIN_RED_CLEAR:
                if det:
                    info["r_on"] += dt
                info["ts"] = t if info["ts"] is None else max(info["ts"], t)
        for info in cyc.values():
            if info["yellow"] != 1 or info["barrier"] != 1 or info["null"]:
                continue
            green_ms = info["g_on"] + info["g_off"]
            if green_ms <= 0:
                continue
            g_occ = info["g_on"] / green_ms
            r_occ = info["r_on"] / (params.red_time_s * 1000.0)
            failed = r_occ >= params.red_occupancy_threshold and g_occ >= params.green_occupancy_threshold
            result.append(SplitFailureCycle(phase, info["ts"], green_ms / 1000.0, g_occ, r_occ, failed))
    return result


def yellow_red(evs: Sequence[Event], dets: Sequence[Detector], marks: Mapping[int, list[tuple[datetime, int]]],
               out: Measures, params: Params) -> None:
    """Actuations on yellow and on red per cycle, binned by the cycle's begin red (atspm ``yellow_red``).

    Only cycles with exactly one begin green, yellow and red count (a cycle
    with missing phase events would misplace its actuations).
    """
    channels = _by_function(dets, YELLOW_RED)
    lat = timedelta(seconds=params.latency_s)
    acts: dict[int, list[datetime]] = defaultdict(list)
    for e in evs:
        if e.code == DETECTOR_ON and e.param in channels:
            for phase in channels[e.param]:
                acts[phase].append(e.ts - lat)
    for phase, times in acts.items():
        m = marks.get(phase)
        if not m:
            continue
        greens = [t for t, c in m if c == BEGIN_GREEN]
        for k, g in enumerate(greens):
            nxt = greens[k + 1] if k + 1 < len(greens) else None
            inside = [(t, c) for t, c in m if t >= g and (nxt is None or t < nxt)]
            yellows = [t for t, c in inside if c == BEGIN_YELLOW]
            reds = [t for t, c in inside if c == BEGIN_RED_CLEAR]
            if len(yellows) != 1 or len(reds) != 1:
                continue
            y, r = yellows[0], reds[0]
            b = None
            for t in times:
                if t < g or (nxt is not None and t >= nxt):
                    continue
                if b is None:
                    b = out.bin(floor_bin(r, params.bin_minutes), phase)
                if y <= t < r:
                    b.yellow_actuations += 1
                elif t >= r:
                    b.red_actuations += 1


def pedestrians(evs: Sequence[Event], out: Measures, params: Params) -> None:
    """Ped services (begin walk) and actuations (ped call), and ped delay from call to walk (atspm timeline).

    A call counts for delay when it is the first since the last walk (the
    event before it is a begin clearance, or nothing); its delay ends at the
    next begin walk or begin clearance, and is binned by that time.
    """
    per_phase: dict[int, list[Event]] = defaultdict(list)
    for e in evs:
        if e.code == PED_BEGIN_WALK:
            out.bin(floor_bin(e.ts, params.bin_minutes), e.param).ped_services += 1
        elif e.code == PED_CALL:
            out.bin(floor_bin(e.ts, params.bin_minutes), e.param).ped_actuations += 1
        if e.code in (PED_CALL, PED_BEGIN_WALK, PED_BEGIN_CLEAR):
            per_phase[e.param].append(e)
    for phase, seq in per_phase.items():
        seq.sort(key=lambda e: e.ts)
        for i, e in enumerate(seq):
            if e.code != PED_CALL:
                continue
            prev = seq[i - 1].code if i > 0 else None
            if prev not in (PED_BEGIN_CLEAR, None):
                continue
            walk = next((x.ts for x in seq[i + 1:] if x.code in (PED_BEGIN_WALK, PED_BEGIN_CLEAR)), None)
            if walk is None:
                continue
            b = out.bin(floor_bin(walk, params.bin_minutes), phase)
            b.ped_delay_s_sum += (walk - e.ts).total_seconds()
            b.ped_delay_samples += 1


def detector_bins(evs: Sequence[Event], params: Params) -> dict[tuple[datetime, int], DetectorBin]:
    """Actuations (detector on events) and on-time per channel and bin, every channel that reported."""
    acts: dict[tuple[datetime, int], int] = defaultdict(int)
    on_time: dict[tuple[datetime, int], float] = defaultdict(float)
    since: dict[int, datetime] = {}
    width = timedelta(minutes=params.bin_minutes)
    for e in evs:
        if e.code == DETECTOR_ON:
            acts[(floor_bin(e.ts, params.bin_minutes), e.param)] += 1
            since.setdefault(e.param, e.ts)
        elif e.code == DETECTOR_OFF and e.param in since:
            t0 = since.pop(e.param)
            while t0 < e.ts:   # split the on-time over the bins it spans
                b = floor_bin(t0, params.bin_minutes)
                t1 = min(e.ts, b + width)
                on_time[(b, e.param)] += (t1 - t0).total_seconds()
                t0 = t1
    return {k: DetectorBin(acts.get(k, 0), round(on_time.get(k, 0.0), 3)) for k in set(acts) | set(on_time)}


def communications(evs: Sequence[Event], params: Params) -> dict[datetime, DeviceBin]:
    """Events per bin, whether every ``no_data_minutes`` sub-bin had ``min_data_points`` (atspm ``has_data``),
    and the longest silence between two events inside the bin."""
    sub = defaultdict(int)
    count = defaultdict(int)
    gap: dict[datetime, float] = defaultdict(float)
    prev: datetime | None = None
    for e in evs:
        b = floor_bin(e.ts, params.bin_minutes)
        count[b] += 1
        if e.code < VENDOR_FIRST:
            sub[floor_bin(e.ts, params.no_data_minutes)] += 1
        if prev is not None and floor_bin(prev, params.bin_minutes) == b:
            gap[b] = max(gap[b], (e.ts - prev).total_seconds())
        prev = e.ts
    per = params.bin_minutes // params.no_data_minutes
    out: dict[datetime, DeviceBin] = {}
    for b, n in count.items():
        ok = all(sub.get(b + timedelta(minutes=i * params.no_data_minutes), 0) >= params.min_data_points
                 for i in range(per))
        out[b] = DeviceBin(n, ok, round(gap.get(b, 0.0), 3))
    return out


def percent(part: float, whole: float) -> float | None:
    return None if whole <= 0 or math.isnan(whole) else part / whole
