"""Ed25519 signatures on timing plans: the centre signs, the field verifies.

Why sign when the broker already authenticates clients: the ACL stops a
stolen *controller* certificate from writing plans, but not a compromised
broker, a mis-configured ACL or a bridge; a signature made with a key only the
central dispatcher holds lets the cabinet check, by itself, that a plan comes
from the centre and was not altered on the way.

What is signed: the RFC 8785 (JCS) canonical bytes (:mod:`traffic.security.jcs`)
of the plan's wire object **without** its ``signature`` member. The verifier
canonicalises the *received* JSON object, not a re-serialised
:class:`~traffic.plan.TimingPlan`, so a number written ``7`` on one side and
``7.0`` on the other can never make a genuine plan fail, and the plan the
field then uses is decoded from the very object whose signature was checked.
JCS is what a second implementation (firmware in C, a verifier in another
language) can rebuild byte for byte; ``docs/signing-test-vectors.json`` holds
plans, their canonical bytes and signatures under a published test key.

Signature text: ``ed25519-jcs:<key id>:<base64url signature>``. The first
field names the scheme (algorithm + canonicalisation), so a change of either
is a new name and an old signature is refused by name, never misread: the
retired ``ed25519:`` scheme signed Python's ``json.dumps(sort_keys=True)``
bytes, which no other language reproduces. The key id is the first 16 hex
digits of SHA-256 over the raw public key, so a controller can trust several
keys (rotation) and the audit trail says which one signed.

Received plan JSON is parsed with :func:`parse_plan_json`: duplicate member
names are refused, since parsers disagree on which duplicate wins (a signed
object could otherwise mean one plan to the verifier and another to firmware).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from traffic.config import SecuritySettings
from traffic.errors import ConfigError, PlanError
from traffic.plan import TimingPlan
from traffic.security import jcs

__all__ = ["SCHEME", "RETIRED_SCHEMES", "PlanSignatureError", "parse_plan_json", "PlanSigner", "PlanVerifier",
           "signed_bytes", "key_id", "signature_fingerprint", "parse_signature", "generate_signing_key",
           "write_signing_key", "write_verify_key", "load_signing_key", "load_verify_key", "signer_from_settings",
           "verifier_from_settings"]

log = logging.getLogger(__name__)

SCHEME = "ed25519-jcs"
RETIRED_SCHEMES = {"ed25519": "Ed25519 over Python json.dumps(sort_keys=True) bytes, retired for RFC 8785 JCS"}
SIGNATURE_FIELD = "signature"
_KEY_ID_HEX = 16


class PlanSignatureError(PlanError):
    """Raised when a plan's signature is missing, malformed, from an unknown key or does not verify."""


def signed_bytes(data: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers: RFC 8785 canonical JSON of ``data`` minus ``signature`` (UTF-8)."""
    body = {k: v for k, v in data.items() if k != SIGNATURE_FIELD}
    try:
        return jcs.canonicalize(body)
    except jcs.CanonicalisationError as exc:
        raise PlanSignatureError(f"plan cannot be canonicalised for signing (RFC 8785): {exc}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def parse_plan_json(payload: bytes | str) -> Any:
    """Parse received plan JSON strictly (UTF-8, no duplicate member names, no NaN/Infinity).

    Raises ValueError (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are ValueErrors).
    """
    text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key (hex of SHA-256 over its 32 raw bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_HEX]


def signature_fingerprint(signature: str) -> str:
    """SHA-256 hex of the signature text: what the audit trail indexes."""
    return hashlib.sha256(signature.encode("ascii", "replace")).hexdigest()


def parse_signature(signature: Any) -> tuple[str, bytes]:
    """Split ``ed25519-jcs:<key id>:<b64>`` into key id and raw signature; raise PlanSignatureError."""
    if not isinstance(signature, str) or not signature:
        raise PlanSignatureError("plan is not signed")
    parts = signature.split(":")
    if parts[0] in RETIRED_SCHEMES:
        raise PlanSignatureError(f"signature scheme {parts[0]!r} is no longer accepted "
                                 f"({RETIRED_SCHEMES[parts[0]]}); the centre must sign with {SCHEME!r}")
    if len(parts) != 3 or parts[0] != SCHEME:
        raise PlanSignatureError(f"signature must read '{SCHEME}:<key id>:<base64>'")
    kid, text = parts[1], parts[2]
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PlanSignatureError(f"signature is not base64url: {exc}") from exc
    if len(raw) != 64:
        raise PlanSignatureError(f"an Ed25519 signature has 64 bytes, got {len(raw)}")
    return kid, raw


class PlanSigner:
    """Signs plans with the centre's Ed25519 private key (held by the dispatcher only)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError("plan signing needs an Ed25519 private key")
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: str | Path) -> PlanSigner:
        return cls(load_signing_key(path))

    def sign(self, plan: TimingPlan) -> TimingPlan:
        """``plan`` with its ``signature`` set (any earlier signature is replaced)."""
        data = plan.to_dict()
        raw = self._key.sign(signed_bytes(data))
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        return replace(plan, signature=f"{SCHEME}:{self.key_id}:{text}")

    def verifier(self) -> PlanVerifier:
        """A verifier trusting this signer's key (tests, single-host demos)."""
        return PlanVerifier([self.public_key])


class PlanVerifier:
    """Checks plan signatures against the public keys a controller trusts."""

    def __init__(self, public_keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in public_keys:
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError("plan verification needs Ed25519 public keys")
            self._keys[key_id(key)] = key
        if not self._keys:
            raise ConfigError("a plan verifier needs at least one public key")

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> PlanVerifier:
        return cls(load_verify_key(p) for p in paths)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def verify_dict(self, data: Mapping[str, Any]) -> str:
        """Verify the signature carried by a decoded plan object; return the key id that made it."""
        if not isinstance(data, Mapping):
            raise PlanSignatureError("plan must be a JSON object")
        kid, raw = parse_signature(data.get(SIGNATURE_FIELD))
        key = self._keys.get(kid)
        if key is None:
            raise PlanSignatureError(f"signed with unknown key {kid!r} (trusted: {', '.join(self._keys)})")
        try:
            key.verify(raw, signed_bytes(data))
        except InvalidSignature as exc:
            raise PlanSignatureError(f"signature by key {kid} does not match the plan") from exc
        return kid

    def verify(self, plan: TimingPlan) -> str:
        """Verify a plan object (its wire form is what is checked); return the key id."""
        return self.verify_dict(plan.to_dict())


# ---------------------------------------------------------------- key files
def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_signing_key(path: str | Path, key: Ed25519PrivateKey) -> Path:
    """Write the private key as unencrypted PKCS#8 PEM, readable by its owner only."""
    path = Path(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private(path, pem)
    return path


def write_verify_key(path: str | Path, key: Ed25519PublicKey) -> Path:
    path = Path(path)
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read plan signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_verify_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read plan verification key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window where others could read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


# ---------------------------------------------------------------- from settings
def signer_from_settings(security: SecuritySettings) -> PlanSigner | None:
    """The centre's signer from ``[security] plan_signing_key``; None when unset (development mode)."""
    return PlanSigner.from_file(security.plan_signing_key) if security.plan_signing_key else None


def verifier_from_settings(security: SecuritySettings) -> PlanVerifier | None:
    """A controller's verifier from ``[security] plan_verify_keys`` (comma separated); None when unset."""
    paths = [p.strip() for p in security.plan_verify_keys.split(",") if p.strip()]
    return PlanVerifier.from_files(paths) if paths else None
