"""RFC 8785 canonical JSON and the ``ed25519-jcs`` plan signature scheme (issue #12 item 8).

The RFC's own examples (section 3.2.3, appendix B number table), the
committed test vectors (``docs/signing-test-vectors.json``: a second
implementation checks itself against the same file), and the refusals that
keep one signature meaning one plan: the retired Python-JSON scheme,
integers that are not exact as doubles, duplicate member names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from traffic.security import jcs, vectors
from traffic.security.signing import PlanSignatureError, PlanSigner, PlanVerifier, parse_plan_json, signed_bytes

VECTORS = Path(__file__).resolve().parents[1] / "docs" / "signing-test-vectors.json"

# RFC 8785 appendix B: IEEE 754 bits -> ECMAScript string
RFC_NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits, expected", RFC_NUMBERS)
def test_numbers_as_ecmascript_prints_them(bits, expected):
    assert jcs.number_to_string(struct.unpack(">d", bytes.fromhex(bits))[0]) == expected


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_have_no_canonical_form(bits):
    with pytest.raises(jcs.CanonicalisationError):
        jcs.canonicalize([struct.unpack(">d", bytes.fromhex(bits))[0]])


def test_rfc_8785_section_3_2_3_example():
    text = ('{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
            r' "string": "\u20ac$\u000F\u000aA' + "'" + r'\u0042\u0022\u005c\\\"\/",'
            ' "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert jcs.canonicalize(json.loads(text)) == expected.encode("utf-8")


def test_rfc_8785_member_order_by_utf16_code_units():
    data = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"}
    keys = list(json.loads(jcs.canonicalize(data)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]  # 😀 (D83D) before FB33


def test_integers_floats_and_refusals():
    assert (jcs.canonicalize({"a": 40.0, "b": 40, "c": -0.0, "d": 2**53 - 1})
            == b'{"a":40,"b":40,"c":0,"d":9007199254740991}')
    for bad in (2**53, -(2**53), "\ud800", {1: "x"}, {"x": object()}, [float("nan")]):
        with pytest.raises(jcs.CanonicalisationError):
            jcs.canonicalize(bad)


def test_committed_vectors_are_what_the_code_produces():
    assert json.loads(VECTORS.read_text(encoding="utf-8")) == json.loads(
        json.dumps(vectors.document(), ensure_ascii=False))


def test_every_vector_verifies_from_the_published_key_alone():
    """What a second implementation does: raw public key, plan JSON -> canonical bytes -> verify."""
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["test_key"]["public_key_hex"]))
    public_raw = bytes.fromhex(doc["test_key"]["public_key_hex"])
    assert hashlib.sha256(public_raw).hexdigest()[:16] == doc["test_key"]["key_id"]
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["test_key"]["private_seed_hex"]))
    verifier = PlanVerifier([public])
    assert len(doc["vectors"]) >= 4
    for v in doc["vectors"]:
        received = parse_plan_json(v["plan_json"].encode())
        canonical = signed_bytes(received)
        assert canonical == v["canonical_utf8"].encode("utf-8"), v["description"]
        assert hashlib.sha256(canonical).hexdigest() == v["canonical_sha256"]
        scheme, kid, sig = v["signature"].split(":")
        assert (scheme, kid) == ("ed25519-jcs", doc["test_key"]["key_id"])
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        public.verify(raw, canonical)  # raises InvalidSignature if not
        assert private.sign(canonical) == raw  # Ed25519 is deterministic: the vector is reproducible
        assert verifier.verify_dict(received) == kid
        # the same object re-serialised another way (as C firmware might) verifies the same
        assert verifier.verify_dict(json.loads(json.dumps(received, indent=3, sort_keys=False))) == kid
    first = doc["vectors"][0]["canonical_utf8"]
    assert "40.0" not in first and '"splitTime":40}' in first


def test_old_scheme_signatures_are_refused_by_name():
    plan = json.loads(json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"][0]["plan_json"])
    key = vectors.test_key()
    body = {k: v for k, v in plan.items() if k != "signature"}
    legacy_bytes = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    legacy = base64.urlsafe_b64encode(key.sign(legacy_bytes)).decode().rstrip("=")
    plan["signature"] = f"ed25519:{PlanSigner(key).key_id}:{legacy}"
    with pytest.raises(PlanSignatureError, match="no longer accepted"):
        PlanVerifier([key.public_key()]).verify_dict(plan)


def test_one_signature_means_one_plan():
    signer = PlanSigner(vectors.test_key())
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    plan = parse_plan_json(doc["vectors"][0]["plan_json"])
    # duplicate member names: parsers disagree on which wins, so the field refuses the payload
    dup = doc["vectors"][0]["plan_json"].replace('"version":7', '"version":7,"version":8')
    with pytest.raises(ValueError, match="duplicate"):
        parse_plan_json(dup)
    # a version beyond 2**53 would share its canonical form with its neighbours: not signable
    from traffic.plan import TimingPlan

    with pytest.raises(PlanSignatureError, match="2\\*\\*53"):
        signer.sign(replace(TimingPlan.from_dict(plan), version=2**53 + 1))
