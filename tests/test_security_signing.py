"""Ed25519 plan signatures: what is signed, what breaks a signature, key handling."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from field_firmware_stubs.samples import four_leg
from traffic.errors import ConfigError, PlanError
from traffic.plan import PhaseTiming, TimingPlan
from traffic.security.jcs import canonicalize
from traffic.security.signing import (
    PlanSignatureError,
    PlanSigner,
    PlanVerifier,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    signed_bytes,
    write_signing_key,
    write_verify_key,
)

SIGNER = PlanSigner(generate_signing_key())
VERIFIER = SIGNER.verifier()
BASE = four_leg("j1").plan_from_splits([30.0, 12.0, 26.0, 12.0], version=4, created_by="optimizer",
                                       reason="peak")
BASE = replace(BASE, expires_at="2026-03-02T07:02:00+00:00")


def test_sign_then_verify_names_the_key():
    signed = SIGNER.sign(BASE)
    assert signed.signature.startswith(f"ed25519-jcs:{SIGNER.key_id}:")
    assert VERIFIER.verify(signed) == SIGNER.key_id
    wire = json.loads(signed.to_json())
    assert VERIFIER.verify_dict(wire) == SIGNER.key_id
    assert TimingPlan.from_dict(wire).signature == signed.signature


def test_unsigned_wire_form_is_unchanged_and_equality_ignores_the_signature():
    assert "signature" not in BASE.to_dict()
    signed = SIGNER.sign(BASE)
    assert signed == BASE  # the same plan; the signature is an envelope
    assert signed_bytes(signed.to_dict()) == signed_bytes(BASE.to_dict())


def test_new_splits_drop_the_old_signature():
    signed = SIGNER.sign(BASE)
    assert signed.with_splits([28.0, 14.0, 26.0, 12.0]).signature is None


def test_integer_seconds_survive_the_trip():
    """A plan built with ints (7 rather than 7.0) must verify after any JSON round trip."""
    phases = tuple(PhaseTiming(p.phase, p.greens, int(p.splitTime), int(p.phaseMinimumGreen), int(p.phaseMaximum1),
                               2, p.phaseYellowChange, p.phaseRedClear, p.phaseWalk, p.phasePedestrianClear)
                   for p in BASE.phases)
    plan = replace(BASE, phases=phases, patternCycleTime=int(BASE.patternCycleTime))
    signed = SIGNER.sign(plan)
    wire = json.loads(json.dumps(json.loads(signed.to_json()), indent=2))  # re-formatted in transit
    assert VERIFIER.verify_dict(wire) == SIGNER.key_id


_TOP = ["controller_id", "patternCycleTime", "patternOffsetTime", "splitCoordPhase", "mode", "version", "plan_id",
        "created_by", "reason", "created_at", "expires_at"]
_PHASE = ["phase", "greens", "splitTime", "phaseMinimumGreen", "phaseMaximum1", "phasePassage",
          "phaseYellowChange", "phaseRedClear", "phaseWalk", "phasePedestrianClear"]
_values = st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), st.none(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_change_to_a_signed_plan_breaks_the_signature(data):
    wire = json.loads(SIGNER.sign(BASE).to_json())
    if data.draw(st.booleans()):
        target, key = wire, data.draw(st.sampled_from(_TOP))
    else:
        target = wire["phases"][data.draw(st.integers(0, len(wire["phases"]) - 1))]
        key = data.draw(st.sampled_from(_PHASE))
    action = data.draw(st.sampled_from(["set", "delete", "add"]))
    if action == "set":
        # a different JSON value: 0 and 0.0 are one number on the wire and in RFC 8785 (that is the point)
        value = data.draw(_values.filter(lambda v: canonicalize(v) != canonicalize(target[key])))
        target[key] = value
    elif action == "delete":
        del target[key]
    else:
        target["x_" + key] = data.draw(_values)
    with pytest.raises(PlanSignatureError):
        VERIFIER.verify_dict(wire)


@pytest.mark.parametrize("signature, why", [
    (None, "not signed"),
    ("", "not signed"),
    ("rsa:abc:def", "must read"),
    ("ed25519-jcs:onlytwo", "must read"),
    ("ed25519-jcs:k:###", "base64"),
    ("ed25519-jcs:k:AAAA", "64 bytes"),
])
def test_malformed_signatures_are_refused_with_a_reason(signature, why):
    wire = BASE.to_dict()
    wire["signature"] = signature
    with pytest.raises(PlanSignatureError, match=why):
        VERIFIER.verify_dict(wire)


def test_unknown_key_and_rotation():
    other = PlanSigner(generate_signing_key())
    with pytest.raises(PlanSignatureError, match="unknown key"):
        VERIFIER.verify(other.sign(BASE))
    both = PlanVerifier([SIGNER.public_key, other.public_key])  # rotation: old and new trusted together
    assert both.verify(other.sign(BASE)) == other.key_id
    assert both.verify(SIGNER.sign(BASE)) == SIGNER.key_id
    with pytest.raises(ConfigError):
        PlanVerifier([])


def test_signature_text_must_be_a_string_in_a_plan():
    wire = BASE.to_dict()
    wire["signature"] = 5
    with pytest.raises(PlanError, match="signature"):
        TimingPlan.from_dict(wire)


def test_key_files_round_trip_and_wrong_files_are_config_errors(tmp_path):
    key = generate_signing_key()
    write_signing_key(tmp_path / "k.pem", key)
    write_verify_key(tmp_path / "k.pub", key.public_key())
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0
    signer = PlanSigner(load_signing_key(tmp_path / "k.pem"))
    assert PlanVerifier([load_verify_key(tmp_path / "k.pub")]).verify(signer.sign(BASE)) == signer.key_id
    with pytest.raises(ConfigError):
        load_signing_key(tmp_path / "k.pub")
    with pytest.raises(ConfigError):
        load_verify_key(tmp_path / "missing.pub")


def test_keys_from_settings(tmp_path):
    from traffic.config import SecuritySettings
    from traffic.security.signing import signer_from_settings, verifier_from_settings

    assert signer_from_settings(SecuritySettings()) is None and verifier_from_settings(SecuritySettings()) is None
    old, new = generate_signing_key(), generate_signing_key()
    write_signing_key(tmp_path / "new.key", new)
    write_verify_key(tmp_path / "old.pub", old.public_key())
    write_verify_key(tmp_path / "new.pub", new.public_key())
    security = SecuritySettings(plan_signing_key=str(tmp_path / "new.key"),
                                plan_verify_keys=f"{tmp_path / 'old.pub'}, {tmp_path / 'new.pub'}")
    signer, verifier = signer_from_settings(security), verifier_from_settings(security)
    assert verifier.verify(signer.sign(BASE)) == signer.key_id
    assert verifier.verify(PlanSigner(old).sign(BASE)) == PlanSigner(old).key_id
