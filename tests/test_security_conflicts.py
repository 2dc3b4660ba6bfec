"""The conflict matrix covers every movement: exhaustively, on hand-made and SUMO-derived intersections.

For every conflicting pair of signal groups, every phase and every way of
showing both (G/g), both safety checks refuse the plan under CONFLICT and the
conflict monitor trips on the driven state (also with yellow); for every foe
pair, both protected is refused. And the matrix itself is complete: every
pair of geometric foes is either in the conflict matrix or shown together by
the approved design with one of them yielding.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from controller import examples
from controller import safety as centre
from field_firmware_stubs import plan_check as field
from field_firmware_stubs import samples
from field_firmware_stubs.conflict_monitor import ConflictMonitor
from traffic.intersection import IntersectionSpec

HAND_MADE = [samples.four_leg("f4"), samples.two_phase("f2"), examples.four_leg("e4"), examples.three_phase("e3")]


@pytest.fixture(scope="module")
def sumo_spec(tmp_path_factory) -> IntersectionSpec:
    from simulation.corridor import generate_corridor

    scenario = generate_corridor(tmp_path_factory.mktemp("corridor"), n_intersections=2, duration_s=300)
    return scenario.corridor.intersections[0]


def _specs(sumo_spec):
    return [*HAND_MADE, sumo_spec]


def _with_greens(spec: IntersectionSpec, k: int, greens: str):
    plan = spec.default_plan()
    phases = list(plan.phases)
    phases[k] = replace(phases[k], greens=greens)
    return replace(plan, phases=tuple(phases))


def test_every_conflicting_pair_in_every_phase_is_refused_by_both_checks(sumo_spec):
    tried = 0
    for spec in _specs(sumo_spec):
        assert spec.conflicts, spec.controller_id
        for (i, j), k, (a, b) in itertools.product(sorted(spec.conflicts), range(len(spec.phases)),
                                                   itertools.product("Gg", repeat=2)):
            greens = list(spec.phases[k].greens)
            greens[i], greens[j] = a, b
            plan = _with_greens(spec, k, "".join(greens))
            assert "CONFLICT" in {v.rule for v in centre.check_plan(plan, spec)}, (spec.controller_id, i, j, k)
            assert "CONFLICT" in {v.rule for v in field.check_plan(plan, spec)}, (spec.controller_id, i, j, k)
            tried += 1
    assert tried > 500


def test_every_foe_pair_both_protected_is_refused_by_both_checks(sumo_spec):
    for spec in _specs(sumo_spec):
        for (i, j), k in itertools.product(sorted(spec.foes), range(len(spec.phases))):
            greens = list(spec.phases[k].greens)
            greens[i] = greens[j] = "G"
            plan = _with_greens(spec, k, "".join(greens))
            assert "CONFLICT" in {v.rule for v in centre.check_plan(plan, spec)}
            assert "CONFLICT" in {v.rule for v in field.check_plan(plan, spec)}


def test_the_conflict_monitor_trips_on_every_conflicting_pair_it_drives(sumo_spec):
    for spec in _specs(sumo_spec):
        for (i, j), (a, b) in itertools.product(sorted(spec.conflicts), itertools.product("Ggy", repeat=2)):
            state = ["r"] * spec.link_count
            state[i], state[j] = a, b
            monitor = ConflictMonitor(spec)
            assert monitor.observe(0.0, "r" * spec.link_count) == "r" * spec.link_count
            assert monitor.observe(1.0, "".join(state)) == monitor.flash_state
            assert monitor.tripped and f"{min(i, j)} and {max(i, j)}" in monitor.reason


def test_the_matrix_is_complete_and_the_design_obeys_it(sumo_spec):
    for spec in _specs(sumo_spec):
        assert all(0 <= i < j < spec.link_count for i, j in spec.conflicts | spec.foes), spec.controller_id
        for d in spec.phases:
            green = {i for i, c in enumerate(d.greens) if c in "Gg"}
            assert not any(i in green and j in green for i, j in spec.conflicts), (spec.controller_id, d.phase)
            assert not any(d.greens[i] == "G" == d.greens[j] for i, j in spec.foes), (spec.controller_id, d.phase)
        together = {(i, j) for d in spec.phases for i, j in itertools.combinations(range(spec.link_count), 2)
                    if d.greens[i] in "Gg" and d.greens[j] in "Gg"}
        # a foe pair the design never shows together must be in the matrix (else nothing would stop it)
        unguarded = spec.foes - together - spec.conflicts
        assert not unguarded, (spec.controller_id, sorted(unguarded))
        # every design phase passes both checks (the time-of-day fallback is safe)
        assert centre.check_plan(spec.default_plan(), spec) == [] and field.check_plan(spec.default_plan(), spec) == []
