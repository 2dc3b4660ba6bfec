"""A small PKI for the field link: a CA, the broker's certificate, one client certificate per identity.

Why certificates rather than passwords: a cabinet holds its key in a file the
controller never sends over the wire, Mosquitto maps the certificate's common
name to the MQTT username (``use_identity_as_username``) so the ACL can name
each controller, and revoking one cabinet does not touch the others.

Identities are the controller ids (CN = controller id, exactly as in the
topics) and the central services :data:`SERVICES` (``ingest``, ``central``),
plus ``ingest-2`` ... ``ingest-N`` when several ingest workers share the
load (``ingest_workers``): the broker makes each client's MQTT client id its
certificate CN (``use_username_as_clientid``), and workers of one shared
subscription need distinct client ids, so each needs its own certificate.

Revocation: :func:`revoke` adds a certificate's serial number to ``crl.pem``
(signed by the CA; the broker's ``crlfile``), drops the identity from the
ACL and moves its files to ``clients/revoked/``; the broker reads the CRL at
start, so restart it afterwards.
TLS keys are ECDSA P-256 (every OpenSSL that Mosquitto links supports them in
TLS 1.2 and 1.3); the plan-signing key is Ed25519 (``traffic.security.signing``).

:func:`init_pki` is idempotent: an existing CA and signing key are kept
(replacing them would orphan every certificate in the field), certificates
are issued only for identities that have none, and the manifest
(``pki.json``) remembers every controller ever added so the ACL is rewritten
for all of them.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from traffic import topics
from traffic.config import MqttSettings
from traffic.errors import ConfigError, MessageError
from traffic.security import signing

__all__ = ["SERVICES", "INGEST", "CENTRAL", "PkiLayout", "init_pki", "create_ca", "issue_certificate",
           "mqtt_settings_for", "load_manifest", "ingest_identities", "revoke", "write_crl",
           "certificate_identity", "is_reserved"]

log = logging.getLogger(__name__)

INGEST = "ingest"
CENTRAL = "central"
SERVICES = (INGEST, CENTRAL)
MANIFEST = "pki.json"
DEFAULT_TLS_PORT = 8883
DEFAULT_VALID_DAYS = 825  # the longest lifetime clients commonly accept for a leaf certificate
CA_VALID_DAYS = 3650
MAX_INGEST_WORKERS = 64
_INGEST_WORKER = re.compile(r"^ingest-[0-9]+$")


def ingest_identities(workers: int) -> list[str]:
    """Certificate CNs (= MQTT client ids) of ``workers`` ingest workers: ``ingest``, ``ingest-2`` ..."""
    if not 1 <= workers <= MAX_INGEST_WORKERS:
        raise ConfigError(f"ingest workers: 1..{MAX_INGEST_WORKERS}, got {workers}")
    return [INGEST, *(f"{INGEST}-{n}" for n in range(2, workers + 1))]


def is_reserved(identity: str) -> bool:
    """Ids a controller or gateway may not take: the services and every ingest worker's name."""
    return identity in SERVICES or bool(_INGEST_WORKER.match(identity))


@dataclass(frozen=True)
class PkiLayout:
    """Where each file of a PKI folder lives (one place, so the CLI, config and tests agree)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def client_cert(self, identity: str) -> Path:
        return self.root / "clients" / f"{identity}.crt"

    def client_key(self, identity: str) -> Path:
        return self.root / "clients" / f"{identity}.key"

    @property
    def signing_key(self) -> Path:
        return self.root / "plan-signing.key"

    @property
    def verify_key(self) -> Path:
        return self.root / "plan-signing.pub"

    @property
    def acl_file(self) -> Path:
        return self.root / "acl"

    @property
    def mosquitto_conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def revoked_dir(self) -> Path:
        return self.root / "clients" / "revoked"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(common_name: str = "traffic field-link CA", *, org: str = "open-traffic-signal",
              valid_days: int = CA_VALID_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = _name(common_name, org)
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, *,
                      server: bool = False, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                      org: str = "open-traffic-signal", valid_days: int = DEFAULT_VALID_DAYS,
                      ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate for a broker (``server``: SANs, serverAuth) or an MQTT client (clientAuth)."""
    key = _new_key()
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name, org)).issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _dt.timedelta(days=valid_days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False, data_encipherment=False,
                                            key_agreement=True, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        try:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise ConfigError(f"bad server name or address: {exc}") from exc
        if not sans:
            raise ConfigError("a broker certificate needs at least one DNS name or IP address")
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_pair(cert_path: Path, key_path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    signing.write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(layout: PkiLayout) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA in {layout.root}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{layout.ca_key} is not an EC private key")
    return key, cert


def check_identity(identity: str) -> str:
    """An identity must be a valid topic level: it becomes the MQTT username and a topic level."""
    try:
        return topics.check_id(identity, "identity")
    except MessageError as exc:
        raise ConfigError(str(exc)) from exc


def load_manifest(root: str | Path) -> dict[str, Any]:
    """``{"site": ..., "controllers": [...], "services": [...], "port": ...}`` of a PKI folder."""
    path = PkiLayout(Path(root)).manifest
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read PKI manifest {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("controllers"), list):
        raise ConfigError(f"{path} is not a PKI manifest")
    return data


def init_pki(out: str | Path, *, controllers: Iterable[str], site: str, gateways: Iterable[str] = (),
             server_dns: Sequence[str] = ("localhost",), server_ips: Sequence[str] = ("127.0.0.1",),
             port: int = DEFAULT_TLS_PORT, valid_days: int = DEFAULT_VALID_DAYS,
             ingest_workers: int | None = None) -> PkiLayout:
    """Create (or extend) the PKI folder ``out`` and write the Mosquitto configuration and ACL.

    Returns the layout. Raises ConfigError on a bad identity, a controller id
    that collides with a service name, or an unreadable existing CA.
    """
    from traffic.security.mosquitto_config import write_broker_files  # circular at import time otherwise

    layout = PkiLayout(Path(out).resolve())
    site = check_identity(site)
    wanted = [check_identity(c) for c in controllers]
    wanted_gw = [check_identity(g) for g in gateways]
    clash = sorted(i for i in set(wanted) | set(wanted_gw) if is_reserved(i))
    if clash:
        raise ConfigError(f"ids {clash} are reserved for the central services")
    if set(wanted) & set(wanted_gw):
        raise ConfigError(f"ids {sorted(set(wanted) & set(wanted_gw))} named both controller and gateway")
    if not wanted:
        raise ConfigError("name at least one controller")
    layout.root.mkdir(parents=True, exist_ok=True)
    known: list[str] = []
    known_gw: list[str] = []
    revoked: list[dict[str, Any]] = []
    worker_count = 1
    if layout.manifest.exists():
        manifest = load_manifest(layout.root)
        if manifest.get("site") != site:
            raise ConfigError(f"{layout.root} belongs to site {manifest.get('site')!r}, not {site!r}")
        known = [check_identity(c) for c in manifest["controllers"]]
        known_gw = [check_identity(g) for g in manifest.get("gateways", [])]
        revoked = list(manifest.get("revoked", []))
        worker_count = int(manifest.get("ingest_workers", 1))
    workers = ingest_identities(ingest_workers if ingest_workers is not None else worker_count)
    if layout.ca_key.exists() and layout.ca_cert.exists():
        ca_key, ca_cert = _load_ca(layout)
        log.info("re-using the CA in %s", layout.root)
    else:
        ca_key, ca_cert = create_ca()
        _write_pair(layout.ca_cert, layout.ca_key, ca_key, ca_cert)
    if not layout.server_cert.exists():
        key, cert = issue_certificate(ca_key, ca_cert, server_dns[0] if server_dns else server_ips[0], server=True,
                                      dns_names=server_dns, ip_addresses=server_ips, valid_days=valid_days)
        _write_pair(layout.server_cert, layout.server_key, key, cert)
    all_controllers = list(dict.fromkeys(known + wanted))
    all_gateways = list(dict.fromkeys(known_gw + wanted_gw))
    if set(all_controllers) & set(all_gateways):
        raise ConfigError(f"ids {sorted(set(all_controllers) & set(all_gateways))} named both controller and gateway")
    for identity in [*workers, CENTRAL, *all_controllers, *all_gateways]:
        if not layout.client_cert(identity).exists():
            key, cert = issue_certificate(ca_key, ca_cert, identity, valid_days=valid_days)
            _write_pair(layout.client_cert(identity), layout.client_key(identity), key, cert)
    if not layout.signing_key.exists():
        sk = signing.generate_signing_key()
        signing.write_signing_key(layout.signing_key, sk)
        signing.write_verify_key(layout.verify_key, sk.public_key())
    manifest = {"site": site, "controllers": all_controllers, "gateways": all_gateways,
                "services": list(SERVICES), "ingest_workers": len(workers), "port": port, "revoked": revoked}
    _write_manifest(layout, manifest)
    write_crl(layout, ca_key, ca_cert, revoked)
    write_broker_files(layout, site=site, controllers=all_controllers, port=port, gateways=all_gateways,
                       ingest=workers)
    return layout


def _write_manifest(layout: PkiLayout, manifest: dict[str, Any]) -> None:
    layout.manifest.write_text(json.dumps(manifest, indent=1) + "\n")


def write_crl(layout: PkiLayout, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
              revoked: Sequence[dict[str, Any]]) -> Path:
    """(Re)write ``crl.pem``: every revoked serial, signed by the CA, valid as long as the CA.

    Why ``nextUpdate`` is the CA's own expiry rather than days ahead: the
    broker rejects *every* client once its CRL has expired, and nothing here
    republishes a CRL on a schedule; a lapsed CRL must never lock the whole
    field out. A CRL is rewritten on every ``init`` and ``revoke``.
    """
    now = _now()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca_cert.subject)
               .last_update(now - _dt.timedelta(minutes=5))
               .next_update(max(ca_cert.not_valid_after_utc, now + _dt.timedelta(days=1))))
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(entry["serial"]))
            .revocation_date(_dt.datetime.fromisoformat(entry["revoked_at"])).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    layout.crl.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return layout.crl


def certificate_identity(cert_file: str | Path) -> str:
    """The common name of a PEM certificate: the MQTT username and client id the broker gives it."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificate {cert_file}: {exc}") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(f"certificate {cert_file} has no common name")
    return str(names[0].value)


def revoke(root: str | Path, *, identity: str | None = None, cert_path: str | Path | None = None) -> dict[str, Any]:
    """Revoke one client certificate (by identity, or by its file); return the CRL entry.

    The serial goes into ``crl.pem``; a revoked controller or gateway leaves
    the manifest and the ACL, and its certificate and key move to
    ``clients/revoked/<id>-<serial hex>.*`` so that a later ``init`` naming
    it again issues a fresh certificate. Restart the broker to apply.
    Raises ConfigError for an unknown identity or a certificate not issued by
    this CA.
    """
    layout = PkiLayout(Path(root).resolve())
    manifest = load_manifest(layout.root)
    ca_key, ca_cert = _load_ca(layout)
    if (identity is None) == (cert_path is None):
        raise ConfigError("name exactly one of a controller id or a certificate file to revoke")
    if identity is not None:
        check_identity(identity)
        cert_path = layout.client_cert(identity)
        if not cert_path.exists():
            raise ConfigError(f"{identity!r} has no certificate in {layout.root}")
    elif cert_path is None:  # excluded by the check above; narrows the type
        raise ConfigError("name exactly one of a controller id or a certificate file to revoke")
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificate {cert_path}: {exc}") from exc
    if cert.issuer != ca_cert.subject:
        raise ConfigError(f"{cert_path} was not issued by the CA in {layout.root}")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:  # another CA with the same name
        raise ConfigError(f"{cert_path} was not issued by the CA in {layout.root}: {exc}") from exc
    cn = certificate_identity(cert_path)
    revoked = list(manifest.get("revoked", []))
    entry = next((e for e in revoked if int(e["serial"]) == cert.serial_number), None)
    if entry is None:
        entry = {"serial": str(cert.serial_number), "identity": cn, "revoked_at": _now().isoformat()}
        revoked.append(entry)
    manifest["revoked"] = revoked
    current = layout.client_cert(cn)
    if current.exists() and x509.load_pem_x509_certificate(current.read_bytes()).serial_number == cert.serial_number:
        layout.revoked_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{cn}-{cert.serial_number:x}"
        current.replace(layout.revoked_dir / f"{stem}.crt")
        if layout.client_key(cn).exists():
            layout.client_key(cn).replace(layout.revoked_dir / f"{stem}.key")
        manifest["controllers"] = [c for c in manifest["controllers"] if c != cn]
        manifest["gateways"] = [g for g in manifest.get("gateways", []) if g != cn]
    _write_manifest(layout, manifest)
    write_crl(layout, ca_key, ca_cert, revoked)
    from traffic.security.mosquitto_config import write_broker_files

    write_broker_files(layout, site=manifest["site"], controllers=manifest["controllers"],
                       port=int(manifest.get("port", DEFAULT_TLS_PORT)), gateways=manifest.get("gateways", []),
                       ingest=ingest_identities(int(manifest.get("ingest_workers", 1))))
    return entry


def mqtt_settings_for(base: MqttSettings, pki_dir: str | Path, identity: str, *,
                      host: str | None = None, port: int | None = None) -> MqttSettings:
    """``base`` turned into a TLS client login as ``identity`` (a controller id or a service name)."""
    layout = PkiLayout(Path(pki_dir))
    check_identity(identity)
    for path in (layout.ca_cert, layout.client_cert(identity), layout.client_key(identity)):
        if not path.exists():
            raise ConfigError(f"{path} does not exist: run 'traffic pki init' for {identity!r}")
    url = f"mqtts://{host or base.host}:{port or (base.port if base.tls else DEFAULT_TLS_PORT)}"
    return replace(base, url=url, ca_file=str(layout.ca_cert), cert_file=str(layout.client_cert(identity)),
                   key_file=str(layout.client_key(identity)), username="", password="")
