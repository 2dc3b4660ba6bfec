"""Thousands of generated plans through both safety checks: no invalid plan passes, every valid one does.

The oracle is the construction, not a third implementation of the rules:

* a **valid** plan is built from the intersection's design with every
  interval at or above its floor (ITE yellow and red clearance, policy
  minimum green, walk and pedestrian clearance, splits that hold them,
  offset inside the cycle, protected greens only where the design has them);
* an **invalid** plan is a valid one with exactly one deliberate defect from
  :data:`DEFECTS`, each breaking one named rule by at least 0.2 s (four times
  the 0.05 s tolerance) or structurally.

Both the centre's check (``controller.safety``) and the field's
(``field_firmware_stubs.plan_check``) must pass every valid plan and refuse
every invalid one *naming the broken rule*. The counts per defect are
printed at the end of the module (run with ``-s`` to see them).

Speed: hypothesis draws a seed, and each example builds a batch of plans
from ``random.Random(seed)`` in plain Python (a failure names its seed and
plan); drawing every number through hypothesis costs ~15 ms a plan here
(~3 ms through ``st.randoms``), which would make thousands of plans take
minutes.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import examples
from controller import safety as centre
from field_firmware_stubs import plan_check as field
from field_firmware_stubs import samples
from traffic.clearance import MAX_YELLOW_S, MIN_WALK_S, pedestrian_clear_s
from traffic.intersection import IntersectionSpec
from traffic.plan import PhaseTiming, TimingPlan

SPECS: tuple[IntersectionSpec, ...] = (
    samples.four_leg("f4"), samples.two_phase("f2"), examples.four_leg("e4"), examples.three_phase("e3"),
    samples.four_leg("f4n", ped_crossing_m=0.0, max_cycle_s=120.0),
)
COUNTS: Counter[str] = Counter()
EXAMPLES = 150           # hypothesis examples (seeds) per test
VALID_PER_EXAMPLE = 20   # valid plans built and checked per example
DEFECTS_PER_PLAN = 2     # independent defects, one at a time, per valid plan of the invalid test


def tenths(rng: random.Random, lo: int, hi: int) -> float:
    """Seconds at the plans' 0.1 s resolution, between lo and hi tenths."""
    return rng.randint(lo, hi) / 10.0


def _t(x: float) -> float:
    return round(x, 1)


def valid_plan(rng: random.Random) -> tuple[IntersectionSpec, TimingPlan]:
    spec = rng.choice(SPECS)
    floors = []
    for d in spec.phases:
        yellow = min(MAX_YELLOW_S, _t(d.yellow_s + tenths(rng, 0, 15)))
        red = _t(d.red_clear_s + tenths(rng, 0, 20))
        min_green = _t(d.min_green_s + tenths(rng, 0, 30))
        walk = clear = 0.0
        if d.ped_crossing_m > 0:
            walk = _t(max(MIN_WALK_S, d.walk_s) + tenths(rng, 0, 30))
            clear = _t(d.ped_clear_s + tenths(rng, 0, 30))
        floors.append((d, yellow, red, min_green, walk, clear, _t(max(min_green, walk + clear))))
    # spare green shared out without exceeding the intersection's maximum cycle
    slack = int(round((spec.max_cycle_s - sum(f[1] + f[2] + f[6] for f in floors)) * 10))
    assert slack >= 0, "a sample intersection cannot hold its own minimum splits"
    phases = []
    for d, yellow, red, min_green, walk, clear, floor in floors:
        spare = tenths(rng, 0, slack // len(floors))
        greens = d.greens
        protected = [i for i, c in enumerate(greens) if c == "G"]
        if len(protected) > 1 and rng.random() < 0.5:  # a protected movement may run permissive: still safe
            i = rng.choice(protected)
            greens = greens[:i] + "g" + greens[i + 1:]
        phases.append(PhaseTiming(
            phase=d.phase, greens=greens, splitTime=_t(floor + spare + yellow + red), phaseMinimumGreen=min_green,
            phaseMaximum1=_t(min_green + tenths(rng, 0, 400)), phasePassage=tenths(rng, 1, 60),
            phaseYellowChange=yellow, phaseRedClear=red, phaseWalk=walk, phasePedestrianClear=clear))
    cycle = _t(sum(p.splitTime for p in phases))
    plan = TimingPlan(controller_id=spec.controller_id, phases=tuple(phases), patternCycleTime=cycle,
                      patternOffsetTime=tenths(rng, 0, int(round(cycle * 10)) - 1),
                      splitCoordPhase=rng.choice([p.phase for p in phases]),
                      mode=rng.choice(["pretimed", "actuated", "free"]), version=rng.randint(1, 10**6),
                      created_by="hypothesis")
    return spec, plan


def _replace_phase(plan: TimingPlan, k: int, **changes) -> TimingPlan:
    phases = list(plan.phases)
    phases[k] = replace(phases[k], **changes)
    return replace(plan, phases=tuple(phases))


def _resum(plan: TimingPlan) -> TimingPlan:
    return replace(plan, patternCycleTime=_t(sum(p.splitTime for p in plan.phases)),
                   patternOffsetTime=0.0)


class _NotApplicable(Exception):
    """The drawn defect cannot be made on this intersection (e.g. no pedestrian phase)."""


# Each defect: (rule it must be refused under, function(spec, plan, rng) -> invalid plan).
def d_yellow_short(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    ite = spec.phases[k].yellow_s
    return _replace_phase(plan, k, phaseYellowChange=_t(ite - tenths(rng, 2, int(ite * 10))))


def d_yellow_long(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    p = plan.phases[k]
    extra = _t(MAX_YELLOW_S + tenths(rng, 2, 30) - p.phaseYellowChange)
    return _resum(_replace_phase(plan, k, phaseYellowChange=_t(p.phaseYellowChange + extra),
                                 splitTime=_t(p.splitTime + extra)))


def d_red_short(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    ite = spec.phases[k].red_clear_s
    if ite < 0.2:
        raise _NotApplicable
    return _replace_phase(plan, k, phaseRedClear=_t(ite - tenths(rng, 2, int(ite * 10))))


def d_min_green_policy(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    return _replace_phase(plan, k, phaseMinimumGreen=_t(spec.phases[k].min_green_s - tenths(rng, 2, 40)))


def d_green_too_short(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    p = plan.phases[k]
    split = _t(p.phaseMinimumGreen + p.phaseYellowChange + p.phaseRedClear - tenths(rng, 2, 40))
    return _resum(_replace_phase(plan, k, splitTime=split))


def d_max_below_min(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    p = plan.phases[k]
    return _replace_phase(plan, k, phaseMaximum1=_t(p.phaseMinimumGreen - tenths(rng, 2, 40)))


def d_no_passage(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    return _replace_phase(plan, k, phasePassage=0.0)


def _ped_phase(spec, rng) -> int:
    ped = [k for k, d in enumerate(spec.phases) if d.ped_crossing_m > 0]
    if not ped:
        raise _NotApplicable
    return rng.choice(ped)


def d_walk_short(spec, plan, rng):
    k = _ped_phase(spec, rng)
    return _replace_phase(plan, k, phaseWalk=_t(MIN_WALK_S - tenths(rng, 2, 70)))


def d_ped_clear_short(spec, plan, rng):
    k = _ped_phase(spec, rng)
    p = plan.phases[k]  # the buffer (yellow + red) the plan shows after the green may cover part of the crossing
    need = pedestrian_clear_s(spec.phases[k].ped_crossing_m, p.phaseYellowChange + p.phaseRedClear)
    return _replace_phase(plan, k, phasePedestrianClear=_t(need - tenths(rng, 2, int(need * 10))))


def d_ped_exceeds_green(spec, plan, rng):
    k = _ped_phase(spec, rng)
    p = plan.phases[k]
    return _replace_phase(plan, k, phaseWalk=_t(p.green - p.phasePedestrianClear + tenths(rng, 2, 40)))


def d_conflict(spec, plan, rng):
    i, j = rng.choice(sorted(spec.conflicts))
    k = rng.randrange(len(plan.phases))
    greens = list(plan.phases[k].greens)
    greens[i], greens[j] = rng.choice("Gg"), rng.choice("Gg")
    return _replace_phase(plan, k, greens="".join(greens))


def d_foes_protected(spec, plan, rng):
    if not spec.foes:
        raise _NotApplicable
    i, j = rng.choice(sorted(spec.foes))
    k = rng.randrange(len(plan.phases))
    greens = list(plan.phases[k].greens)
    greens[i] = greens[j] = "G"
    return _replace_phase(plan, k, greens="".join(greens))


def d_movement_dropped(spec, plan, rng):
    required = sorted({i for d in spec.phases for i, c in enumerate(d.greens) if c in "Gg"})
    i = rng.choice(required)
    phases = tuple(replace(p, greens=p.greens[:i] + "r" + p.greens[i + 1:]) for p in plan.phases)
    return replace(plan, phases=phases)


def d_cycle_sum(spec, plan, rng):
    delta = tenths(rng, 2, 300) * rng.choice([-1, 1])
    cycle = _t(plan.patternCycleTime + delta)
    return replace(plan, patternCycleTime=cycle, patternOffsetTime=0.0)


def d_cycle_too_long(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    extra = _t(spec.max_cycle_s - plan.patternCycleTime + tenths(rng, 2, 300))
    p = plan.phases[k]
    return _resum(_replace_phase(plan, k, splitTime=_t(p.splitTime + extra), phaseMaximum1=_t(p.phaseMaximum1 + extra)))


def d_offset(spec, plan, rng):
    if rng.random() < 0.5:
        offset = _t(plan.patternCycleTime + tenths(rng, 0, 3000))  # at or past the cycle
    else:
        offset = -tenths(rng, 1, 3000)
    return replace(plan, patternOffsetTime=offset)


def d_coord_phase(spec, plan, rng):
    numbers = {p.phase for p in plan.phases}
    return replace(plan, splitCoordPhase=rng.choice([n for n in range(-5, 51) if n not in numbers]))


def d_phase_duplicated(spec, plan, rng):
    k = rng.randrange(1, len(plan.phases))
    return _replace_phase(plan, k, phase=plan.phases[0].phase)


def d_phase_unknown(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    numbers = {d.phase for d in spec.phases}
    return _replace_phase(plan, k, phase=rng.choice([n for n in range(-5, 51) if n not in numbers]))


def d_greens_length(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    g = plan.phases[k].greens
    return _replace_phase(plan, k, greens=rng.choice([g[:-1], g + "r"]))


def d_negative_time(spec, plan, rng):
    k = rng.randrange(len(plan.phases))
    name = rng.choice(["phaseMaximum1", "phasePassage", "phaseWalk", "phasePedestrianClear"])
    return _replace_phase(plan, k, **{name: -tenths(rng, 1, 100)})


def d_identity(spec, plan, rng):
    other = rng.choice([s.controller_id for s in SPECS if s.controller_id != spec.controller_id])
    return replace(plan, controller_id=other)


DEFECTS = {
    "YELLOW": (d_yellow_short, d_yellow_long),
    "RED_CLEAR": (d_red_short,),
    "MIN_GREEN": (d_min_green_policy, d_green_too_short),
    "MAX_GREEN": (d_max_below_min, d_no_passage),
    "PED_WALK": (d_walk_short,),
    "PED_CLEAR": (d_ped_clear_short, d_ped_exceeds_green),
    "CONFLICT": (d_conflict, d_foes_protected),
    "SERVES_ALL": (d_movement_dropped,),
    "CYCLE_SUM": (d_cycle_sum,),
    "CYCLE_RANGE": (d_cycle_too_long,),
    "OFFSET": (d_offset,),
    "COORD_PHASE": (d_coord_phase,),
    "PHASES": (d_phase_duplicated, d_phase_unknown, d_greens_length, d_negative_time),
    "IDENTITY": (d_identity,),
}
_CASES = [(rule, f) for rule, fs in DEFECTS.items() for f in fs]


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if COUNTS:
        lines = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
        print(f"\nplan property tests: {lines}")  # noqa: T201 - test report (visible with -s)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_every_valid_plan_passes_both_checks(seed):
    rng = random.Random(seed)
    for _ in range(VALID_PER_EXAMPLE):
        spec, plan = valid_plan(rng)
        assert centre.check_plan(plan, spec) == [], plan
        assert field.check_plan(plan, spec) == [], plan
        COUNTS["valid accepted by both"] += 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_no_invalid_plan_passes_either_check(seed):
    rng = random.Random(seed)
    for _ in range(VALID_PER_EXAMPLE):
        spec, plan = valid_plan(rng)
        for _ in range(DEFECTS_PER_PLAN):
            rule, make = rng.choice(_CASES)
            try:
                bad = make(spec, plan, rng)
            except _NotApplicable:
                continue
            centre_rules = {v.rule for v in centre.check_plan(bad, spec)}
            field_rules = {v.rule for v in field.check_plan(bad, spec)}
            assert rule in centre_rules, (make.__name__, centre_rules, bad)
            assert rule in field_rules, (make.__name__, field_rules, bad)
            COUNTS["invalid refused by both"] += 1
            COUNTS[f"invalid {rule}"] += 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_field_emulator_takes_exactly_the_valid_signed_plans(seed):
    """The whole acceptance path of a controller (signature, identity, version, check) on the same plans."""
    from datetime import datetime, timedelta

    from field_firmware_stubs.emulator import FieldEmulator
    from traffic.config import MqttSettings
    from traffic.security.signing import PlanSigner, generate_signing_key

    rng = random.Random(seed)
    signer = PlanSigner(generate_signing_key())
    emulators = {s.controller_id: FieldEmulator(s, site="s", mqtt=MqttSettings(), plan_verifier=signer.verifier(),
                                                clock_origin=datetime(2026, 1, 1, tzinfo=UTC))
                 for s in SPECS}
    version = 1
    for _ in range(10):
        spec, plan = valid_plan(rng)
        emu = emulators[spec.controller_id]
        rule, make = rng.choice(_CASES)
        try:
            bad = make(spec, plan, rng)
        except _NotApplicable:
            bad = None
        for candidate, ok in ((bad, False), (plan, True)):
            if candidate is None:
                continue
            version += 1
            accepted, rejected = emu.stats.plans_accepted, emu.stats.plans_rejected
            expires = (emu.clock(0.0) + timedelta(seconds=600)).isoformat()  # every plan must expire (900 s bound)
            emu._on_plan_message(signer.sign(replace(candidate, version=version, expires_at=expires)).to_json(),  # noqa: SLF001
                                 None, None)
            if ok:
                assert emu.stats.plans_accepted == accepted + 1, emu.stats.rejected_rules[-1:]
                COUNTS["emulator accepted valid"] += 1
            else:
                # refused and answered (the answer names the first broken rule; which rules, the tests above check)
                assert (emu.stats.plans_accepted, emu.stats.plans_rejected) == (accepted, rejected + 1), \
                    (rule, make.__name__)
                COUNTS["emulator refused invalid"] += 1
