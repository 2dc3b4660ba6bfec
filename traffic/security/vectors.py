"""Test vectors for the plan signature scheme (``docs/signing-test-vectors.json``).

A second implementation of the field side (firmware in C, a verifier in
another language) checks itself against these: for each plan, the JSON as
the centre sends it, the RFC 8785 canonical bytes the signature covers, and
the ``ed25519-jcs`` signature made with a **published test key** (never use
it for anything else). The plans are chosen to hit what breaks naive
re-serialisation: whole seconds sent as ``40.0``, non-ASCII and control
characters in free text, binary fractions (0.1 + 0.2), tiny and huge
numbers, and member order.

Regenerate with ``python -m traffic.security.vectors > docs/signing-test-vectors.json``;
``tests/test_security_jcs.py`` checks that the committed file is what this
module produces and that every vector verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from traffic.plan import PhaseTiming, TimingPlan
from traffic.security import jcs
from traffic.security.signing import SCHEME, PlanSigner, signed_bytes

__all__ = ["TEST_KEY_SEED", "test_key", "vectors", "document"]

#: the published test key's 32-byte Ed25519 seed (RFC 8032 private key), for test vectors only
TEST_KEY_SEED = hashlib.sha256(b"open-traffic-signal plan signing test vector key").digest()


def test_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(TEST_KEY_SEED)


def _phases(split: float, extra: dict[str, float] | None = None) -> tuple[PhaseTiming, ...]:
    extra = extra or {}
    return (
        PhaseTiming(1, "GGrr", split, 7.0, 50.0, 2.0, 3.6, 2.0, extra.get("walk", 7.0), extra.get("ped", 9.0)),
        PhaseTiming(2, "rrGG", 30.0, 7.0, 40.0, 2.0, 3.6, 2.0),
    )


def _plans() -> list[tuple[str, TimingPlan]]:
    base: dict[str, Any] = dict(controller_id="j1", patternOffsetTime=0.0, splitCoordPhase=1, version=7,
                created_at="2026-03-01T07:00:00+00:00", expires_at="2026-03-01T07:02:00+00:00",
                created_by="optimizer")
    return [
        ("whole seconds sent as floats (40.0 must sign as 40)",
         TimingPlan(phases=_phases(40.0), patternCycleTime=70.0, plan_id="a" * 32, reason="morning peak",
                    **base)),
        ("non-ASCII, quotes, backslash and a newline in free text",
         TimingPlan(phases=_phases(45.0), patternCycleTime=75.0, plan_id="b" * 32, mode="actuated",
                    reason='Giờ cao điểm — "tắc đường"\\ngã tư\nline 2 €', **base)),
        ("binary fractions and extreme magnitudes",
         TimingPlan(phases=_phases(0.1 + 0.2 + 39.7, {"walk": 1e-7, "ped": 1e21}), patternCycleTime=70.0,
                    patternOffsetTime=12.345678901234567, plan_id="c" * 32, reason="numbers",
                    **{k: v for k, v in base.items() if k != "patternOffsetTime"})),
        ("mode free and an empty reason",
         TimingPlan(phases=_phases(40.0), patternCycleTime=70.0, plan_id="d" * 32, mode="free",
                    reason="", **base)),
    ]


def vectors() -> list[dict[str, Any]]:
    signer = PlanSigner(test_key())
    out = []
    for what, plan in _plans():
        signed = signer.sign(plan)
        wire = signed.to_json().decode()
        canonical = signed_bytes(json.loads(wire))
        out.append({
            "description": what,
            "plan_json": wire,
            "canonical_utf8": canonical.decode("utf-8"),
            "canonical_sha256": hashlib.sha256(canonical).hexdigest(),
            "signature": signed.signature,
        })
    return out


def document() -> dict[str, Any]:
    key = test_key()
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signer = PlanSigner(key)
    return {
        "scheme": SCHEME,
        "description": ("Plan signatures: Ed25519 (RFC 8032) over the RFC 8785 (JCS) canonical UTF-8 bytes of the "
                        "plan's JSON object without its 'signature' member. signature = "
                        "'ed25519-jcs:<key id>:<base64url signature, no padding>'; key id = first 16 hex digits of "
                        "SHA-256 over the 32-byte public key. THE KEY BELOW IS PUBLIC: test vectors only."),
        "test_key": {
            "private_seed_hex": TEST_KEY_SEED.hex(),
            "public_key_hex": public_raw.hex(),
            "public_key_b64url": base64.urlsafe_b64encode(public_raw).decode().rstrip("="),
            "key_id": signer.key_id,
        },
        "vectors": vectors(),
        "must_refuse": [
            {"description": "retired scheme 'ed25519' (Python json.dumps(sort_keys=True) bytes)",
             "signature_prefix": "ed25519:"},
            {"description": "integer outside +-(2**53 - 1): no exact canonical form",
             "json": json.dumps({"version": 2**53})},
            {"description": "duplicate member names", "json": '{"version":1,"version":2}'},
        ],
        "jcs_numbers": [[x, jcs.number_to_string(x)] for x in
                        (40.0, 0.30000000000000004, 1e21, 1e-7, 1e-6, 5e-324, -0.0, 333333333.3333333)],
    }


if __name__ == "__main__":  # pragma: no cover - regeneration entry point
    print(json.dumps(document(), indent=1, ensure_ascii=False))
