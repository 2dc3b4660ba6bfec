"""Plan commands of any shape are answered, never crash the controller, never change what it drives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.plan_check import RULES
from field_firmware_stubs.samples import four_leg
from traffic import messages as msg
from traffic.config import MqttSettings

SPEC = four_leg()
GOOD = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2).to_dict()

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)


def offline_emulator() -> FieldEmulator:
    emu = FieldEmulator(SPEC, site="s", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC))
    emu.tick(1.0, {})
    return emu


@st.composite
def mutated(draw) -> bytes:
    """A valid plan with one field replaced by an arbitrary JSON value (or removed)."""
    plan = json.loads(json.dumps(GOOD))
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(plan)))
        target = plan
    else:
        target = plan["phases"][draw(st.integers(0, 3))]
        key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        del target[key]
    else:
        target[key] = draw(json_values)
    return json.dumps(plan).encode()


@settings(max_examples=120, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), mutated()))
def test_any_payload_is_answered_and_the_heads_stay_safe(payload):
    emu = offline_emulator()
    before = emu.plan.plan_id
    emu._on_plan_message(payload, None, b"c")  # noqa: SLF001 - the MQTT thread's entry point
    state = emu.tick(2.0, {})
    accepted, rejected = emu.stats.plans_accepted, emu.stats.plans_rejected
    assert accepted + rejected == 1
    if rejected:
        assert emu.stats.rejected_rules[0] in {*RULES, "MALFORMED", "EXPIRED", "STALE_VERSION"}
    assert emu.plan.plan_id == before  # nothing takes effect before a cycle boundary
    assert not emu.monitor.tripped and state == emu.program.state


def test_oversized_payload_is_rejected_without_parsing():
    emu = offline_emulator()
    emu._on_plan_message(b" " * (msg.MAX_PAYLOAD_BYTES + 1), None, None)  # noqa: SLF001
    assert emu.stats.rejected_rules == ["MALFORMED"]
