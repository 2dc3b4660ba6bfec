"""``traffic pki init``: certificates that chain to the CA, an idempotent folder, a least-privilege ACL."""

from __future__ import annotations

import ipaddress
import json

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.cli import main
from traffic import topics
from traffic.config import MqttSettings
from traffic.errors import ConfigError
from traffic.security.mosquitto_config import acl_text
from traffic.security.pki import init_pki, load_manifest, mqtt_settings_for


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _acl(text: str) -> dict[str, list[tuple[str, str]]]:
    """user -> [(access, topic)] from an ACL file (nothing may appear before the first user)."""
    users: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        word, rest = line.split(" ", 1)
        if word == "user":
            current = users.setdefault(rest, [])
        else:
            assert word == "topic" and current is not None, f"rule outside a user block: {line!r}"
            access, topic_name = rest.split(" ", 1)
            current.append((access, topic_name))
    return users


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path):
    layout = init_pki(tmp_path, controllers=["j1", "j2"], site="s1")
    ca = _cert(layout.ca_cert)
    server = _cert(layout.server_cert)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    for identity in ("j1", "j2", "ingest", "central"):
        cert = _cert(layout.client_cert(identity))
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_init_again_keeps_the_ca_and_adds_controllers(tmp_path):
    first = init_pki(tmp_path, controllers=["j1"], site="s1")
    ca, j1 = first.ca_cert.read_bytes(), first.client_cert("j1").read_bytes()
    signing = first.signing_key.read_bytes()
    again = init_pki(tmp_path, controllers=["j3"], site="s1")
    assert again.ca_cert.read_bytes() == ca and again.client_cert("j1").read_bytes() == j1
    assert again.signing_key.read_bytes() == signing
    assert load_manifest(tmp_path)["controllers"] == ["j1", "j3"]
    users = _acl(again.acl_file.read_text())
    assert {"j1", "j3", "ingest", "central"} == set(users)
    _cert(again.client_cert("j3")).verify_directly_issued_by(_cert(again.ca_cert))
    with pytest.raises(ConfigError, match="belongs to site"):
        init_pki(tmp_path, controllers=["j4"], site="other")


@pytest.mark.parametrize("ids, match", [(["central"], "reserved"), (["J1"], "invalid"), (["a/b"], "invalid"),
                                        (["+"], "invalid"), ([], "at least one")])
def test_bad_identities_are_refused(tmp_path, ids, match):
    with pytest.raises(ConfigError, match=match):
        init_pki(tmp_path, controllers=ids, site="s1")


def test_acl_gives_each_identity_only_what_it_needs():
    users = _acl(acl_text("s1", ["j1", "j2"]))
    own = {("write", topics.topic("s1", "j1", leaf)) for leaf in
           (topics.COUNTS, topics.EVENTS, topics.STATUS, topics.PLAN_RESULT, topics.PLAN_ACTIVE)}
    assert set(users["j1"]) == own | {("read", topics.topic("s1", "j1", topics.PLAN_SET))}
    assert all("+" not in t and "#" not in t for _, t in users["j1"])  # no wildcard for a controller
    assert {a for a, _ in users["ingest"]} == {"read"}
    assert {t.split("/")[-1] for _, t in users["ingest"]} == {topics.COUNTS, topics.EVENTS, topics.STATUS}
    assert any(t.startswith("$share/") for _, t in users["ingest"])
    central_writes = {t for a, t in users["central"] if a == "write"}
    assert central_writes == {topics.wildcard("s1", topics.PLAN_SET)}
    central_reads = {t for a, t in users["central"] if a == "read" and not t.startswith("$share/")}
    assert central_reads == {topics.wildcard("s1", leaf) for leaf in
                             (topics.PLAN_RESULT, topics.PLAN_ACTIVE, topics.STATUS)}


def test_a_gateway_acts_for_every_controller_of_its_site_only(tmp_path):
    layout = init_pki(tmp_path, controllers=["j1"], site="s1", gateways=["gw1"])
    users = _acl(layout.acl_file.read_text())
    assert set(users["gw1"]) == {("write", topics.wildcard("s1", leaf)) for leaf in
                                 (topics.COUNTS, topics.EVENTS, topics.STATUS, topics.PLAN_RESULT,
                                  topics.PLAN_ACTIVE)} | {("read", topics.wildcard("s1", topics.PLAN_SET))}
    assert load_manifest(tmp_path)["gateways"] == ["gw1"]
    with pytest.raises(ConfigError, match="both controller and gateway"):
        init_pki(tmp_path, controllers=["gw1"], site="s1")


def test_cli_creates_the_folder_and_reports_errors(tmp_path, capsys):
    assert main(["pki", "init", "--out", str(tmp_path / "p"), "--controllers", "j1,j2", "--site", "s9"]) == 0
    assert "plan signing key" in capsys.readouterr().out
    conf = (tmp_path / "p" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                 f"acl_file {tmp_path / 'p' / 'acl'}"):
        assert line in conf.splitlines()
    assert json.loads((tmp_path / "p" / "pki.json").read_text())["site"] == "s9"
    assert main(["pki", "init", "--out", str(tmp_path / "p"), "--controllers", "central", "--site", "s9"]) == 2
    assert "reserved" in capsys.readouterr().err


def test_mqtt_settings_for_an_identity(tmp_path):
    layout = init_pki(tmp_path, controllers=["j1"], site="s1")
    settings = mqtt_settings_for(MqttSettings(url="mqtt://broker.example:1883", username="u", password="p"),
                                 tmp_path, "j1")
    assert settings.tls and settings.port == 8883 and settings.host == "broker.example"
    assert (settings.cert_file, settings.key_file) == (str(layout.client_cert("j1")), str(layout.client_key("j1")))
    assert settings.username == "" and settings.password == ""  # the certificate is the identity
    with pytest.raises(ConfigError, match="pki init"):
        mqtt_settings_for(MqttSettings(), tmp_path, "j7")
