"""An emulator that trusts a key: arbitrary input never changes what it does, a signed plan does."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs.emulator import MALFORMED, SIGNATURE, FieldEmulator
from field_firmware_stubs.samples import four_leg
from traffic import messages as msg
from traffic.config import MqttSettings
from traffic.security.signing import PlanSigner, generate_signing_key

SIGNER = PlanSigner(generate_signing_key())
SPEC = four_leg("c1")
PLAN = SPEC.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2)


def good():
    """The genuine signed plan, valid for 10 minutes from now (within the field's 900 s bound).

    Signed at each use, not at import: a suite that reaches these tests more
    than 10 minutes after collection would otherwise send an expired plan.
    """
    return SIGNER.sign(replace(PLAN, expires_at=(datetime.now(UTC) + timedelta(minutes=10)).isoformat()))

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)


def emulator() -> FieldEmulator:
    emu = FieldEmulator(SPEC, site="s", mqtt=MqttSettings(), clock_origin=datetime(2026, 1, 1, tzinfo=UTC),
                        expiry_clock=lambda: datetime.now(UTC), plan_verifier=SIGNER.verifier())
    emu.tick(1.0, {})
    return emu


@st.composite
def altered(draw) -> bytes:
    """The genuine signed plan with one field replaced, removed or added (signature kept)."""
    data = json.loads(good().to_json())
    target = data if draw(st.booleans()) else data["phases"][draw(st.integers(0, 3))]
    key = draw(st.sampled_from(sorted(target)))
    action = draw(st.sampled_from(["set", "del", "add"]))
    if action == "set":
        target[key] = draw(json_values.filter(lambda v: v != target[key] or type(v) is not type(target[key])))
    elif action == "del" and key != "signature":
        del target[key]
    else:
        target[f"{key}_x"] = draw(json_values)
    return json.dumps(data).encode()


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), altered()))
def test_nothing_but_the_signed_plan_is_taken_and_nothing_forces_a_fallback(payload):
    emu = emulator()
    emu._on_plan_message(payload, None, b"c")  # noqa: SLF001 - the MQTT thread's entry point
    state = emu.tick(2.0, {})
    assert (emu.stats.plans_accepted, emu.stats.plans_rejected) == (0, 1)
    assert emu.stats.rejected_rules[0] in (MALFORMED, SIGNATURE)
    assert emu.stats.fallbacks == 0 and not emu.monitor.tripped and state == emu.program.state
    # and the genuine plan still goes through afterwards
    emu._on_plan_message(good().to_json(), None, b"c")  # noqa: SLF001
    assert emu.stats.plans_accepted == 1


def test_the_genuine_signed_plan_is_applied():
    emu = emulator()
    genuine = good()
    emu._on_plan_message(genuine.to_json(), None, b"c")  # noqa: SLF001
    t = 1.0
    while emu.mode != msg.MODE_CENTRAL and t < 400:
        t += 1.0
        emu.tick(t, {})
    assert emu.plan.plan_id == genuine.plan_id and emu.plan.signature == genuine.signature
