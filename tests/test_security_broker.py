"""The generated broker configuration on a real Mosquitto: who may connect, publish and read what.

One broker for the module (TLS listener, certificates and ACL from
``traffic pki init``) on free ports, started and stopped here. Mosquitto
drops an unauthorised PUBLISH silently, so every "cannot publish" test
watches with a privileged subscriber and also sends an authorised message
afterwards on the same connection: it must arrive (so silence is the ACL at
work, not a dead link).
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from app.secure_broker import SecureBroker
from traffic import topics
from traffic.config import MqttSettings
from traffic.security.pki import PkiLayout, create_ca, init_pki, issue_certificate

SITE = "s1"
CONTROLLERS = ("j1", "j2")


class Peer:
    """A paho MQTT 5 client that records what it receives and the SUBACK codes."""

    def __init__(self, settings: MqttSettings, name: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.suback: dict[int, list[str]] = {}
        self._cond = threading.Condition()
        self.connack: str | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        if settings.tls:
            self.client.tls_set(ca_certs=settings.ca_file or None, certfile=settings.cert_file or None,
                                keyfile=settings.key_file or None)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.settings = settings

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        with self._cond:
            self.connack = str(rc)
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, rcs, props) -> None:
        with self._cond:
            self.suback[mid] = [str(r) for r in rcs]
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.got.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def connect(self) -> Peer:
        self.client.connect(self.settings.host, self.settings.port, keepalive=10)
        self.client.loop_start()
        with self._cond:
            assert self._cond.wait_for(lambda: self.connack is not None, 5), "no CONNACK"
        assert self.connack == "Success", self.connack
        return self

    def subscribe(self, topic_filter: str) -> list[str]:
        _, mid = self.client.subscribe(topic_filter, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.suback, 5), "no SUBACK"
            return self.suback[mid]

    def publish(self, topic_name: str, payload: bytes) -> None:
        self.client.publish(topic_name, payload, qos=1).wait_for_publish(5)

    def wait_for(self, topic_name: str, payload: bytes, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: (topic_name, payload) in self.got, timeout)

    def received(self, topic_name: str) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.got if t == topic_name]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    root = tmp_path_factory.mktemp("secbroker")
    init_pki(root / "pki", controllers=CONTROLLERS, site=SITE)
    broker = SecureBroker(root / "pki", root / "state")
    try:
        broker.start()
    except FileNotFoundError as exc:  # pragma: no cover - no mosquitto installed
        pytest.skip(f"mosquitto not available: {exc}")
    yield broker
    broker.stop()


@pytest.fixture
def peers(secure):
    made: list[Peer] = []

    def make(identity: str) -> Peer:
        peer = Peer(secure.settings_for(identity), identity).connect()
        made.append(peer)
        return peer

    yield make
    for p in made:
        p.close()


def t(cid: str, leaf: str) -> str:
    return topics.topic(SITE, cid, leaf)


def _refused(settings: MqttSettings, *, tls: dict | None) -> str:
    """Try to connect; return how it failed ('' if it got in)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"intruder-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5)
    result: dict[str, str] = {}
    done = threading.Event()

    def on_connect(c, u, f, rc, p):
        result["rc"] = str(rc)
        done.set()

    def on_disconnect(c, u, f, rc, p):
        result.setdefault("rc", f"disconnected: {rc}")
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    if tls is not None:
        client.tls_set(**tls)
    try:
        client.connect(settings.host, settings.port, keepalive=5)
    except (ssl.SSLError, OSError) as exc:
        return f"handshake: {exc}"
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    rc = result.get("rc", "no answer")
    return "" if rc == "Success" else rc


def _broker_says(secure: SecureBroker, text: str, timeout: float = 3.0) -> bool:
    """True once the broker's log holds ``text`` (its own reason for a refusal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in secure.log_path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def test_client_without_certificate_is_refused(secure):
    ca_only = {"ca_certs": str(secure.layout.ca_cert)}
    assert _refused(secure.settings_for("j1"), tls=ca_only)  # TLS, but no client certificate
    assert _broker_says(secure, "peer did not return a certificate")


def test_plain_mqtt_without_credentials_is_refused(secure):
    plain = MqttSettings(url=f"mqtt://127.0.0.1:{secure.plain_port}")
    assert _refused(plain, tls=None) == "Not authorized"  # the plain listener admits nobody
    tls_port_plain = MqttSettings(url=f"mqtt://127.0.0.1:{secure.tls_port}")
    assert _refused(tls_port_plain, tls=None)  # plain MQTT against the TLS port
    assert _broker_says(secure, "wrong version number")


def test_certificate_from_another_ca_is_refused(secure, tmp_path):
    ca_key, ca_cert = create_ca("rogue CA")
    key, cert = issue_certificate(ca_key, ca_cert, "j1")  # same CN as a real controller
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    tls = {"ca_certs": str(secure.layout.ca_cert), "certfile": str(tmp_path / "rogue.crt"),
           "keyfile": str(tmp_path / "rogue.key")}
    assert _refused(secure.settings_for("j1"), tls=tls)
    assert _broker_says(secure, "certificate verify failed")
    # and the genuine certificate gets in through the same path (the refusal is the CA, not the test)
    genuine = {"ca_certs": str(secure.layout.ca_cert), "certfile": str(secure.layout.client_cert("j1")),
               "keyfile": str(secure.layout.client_key("j1"))}
    assert _refused(secure.settings_for("j1"), tls=genuine) == ""


def test_client_refuses_a_broker_with_a_foreign_certificate(secure, tmp_path):
    """The other direction: a controller must not talk to an impostor broker (its CA file decides)."""
    rogue = init_pki(tmp_path / "rogue", controllers=["j1"], site=SITE)
    tls = {"ca_certs": str(rogue.ca_cert), "certfile": str(rogue.client_cert("j1")),
           "keyfile": str(rogue.client_key("j1"))}
    assert _refused(secure.settings_for("j1"), tls=tls).startswith("handshake")


def test_controller_cannot_publish_another_controllers_counts(peers):
    ingest = peers("ingest")
    assert ingest.subscribe(topics.wildcard(SITE, topics.COUNTS)) == ["Granted QoS 1"]
    j1 = peers("j1")
    j1.publish(t("j2", topics.COUNTS), b"forged j2 counts")
    j1.publish(t("j1", topics.COUNTS), b"own counts")
    assert ingest.wait_for(t("j1", topics.COUNTS), b"own counts")
    time.sleep(0.2)
    assert ingest.received(t("j2", topics.COUNTS)) == []


def test_controller_cannot_read_another_controllers_plans(peers):
    j1 = peers("j1")
    # Mosquitto 2.0.11 grants the SUBACK and enforces read on each delivery; either way nothing may arrive
    codes = j1.subscribe(t("j2", topics.PLAN_SET)) + j1.subscribe(topics.wildcard(SITE, topics.PLAN_SET))
    assert all(c in ("Granted QoS 1", "Not authorized") for c in codes), codes
    central = peers("central")
    central.publish(t("j2", topics.PLAN_SET), b"plan for j2")
    central.publish(t("j1", topics.PLAN_SET), b"plan for j1")
    assert j1.wait_for(t("j1", topics.PLAN_SET), b"plan for j1")
    time.sleep(0.2)
    assert j1.received(t("j2", topics.PLAN_SET)) == []


def test_controllers_and_ingest_cannot_write_plans(peers):
    j2 = peers("j2")
    j2.subscribe(t("j2", topics.PLAN_SET))
    peers("j1").publish(t("j2", topics.PLAN_SET), b"plan from j1")
    j2.publish(t("j2", topics.PLAN_SET), b"plan from itself")
    peers("ingest").publish(t("j2", topics.PLAN_SET), b"plan from ingest")
    peers("central").publish(t("j2", topics.PLAN_SET), b"plan from central")
    assert j2.wait_for(t("j2", topics.PLAN_SET), b"plan from central")
    time.sleep(0.2)
    assert j2.received(t("j2", topics.PLAN_SET)) == [b"plan from central"]


def test_central_reads_results_and_status_but_not_counts(peers):
    central = peers("central")
    central.subscribe(f"tsc/v1/{SITE}/#")
    j1 = peers("j1")
    j1.publish(t("j1", topics.COUNTS), b"counts")
    j1.publish(t("j1", topics.PLAN_RESULT), b"result")
    j1.publish(t("j1", topics.STATUS), b"status")
    assert central.wait_for(t("j1", topics.STATUS), b"status")
    assert central.wait_for(t("j1", topics.PLAN_RESULT), b"result")
    time.sleep(0.2)
    assert central.received(t("j1", topics.COUNTS)) == []


def test_ingest_shared_subscription_gets_telemetry_only(peers):
    ingest = peers("ingest")
    ingest.subscribe(topics.shared("ingest", topics.wildcard(SITE, "#")))
    j2 = peers("j2")
    j2.publish(t("j2", topics.PLAN_RESULT), b"result")
    j2.publish(t("j2", topics.EVENTS), b"events")
    assert ingest.wait_for(t("j2", topics.EVENTS), b"events")
    time.sleep(0.2)
    assert ingest.received(t("j2", topics.PLAN_RESULT)) == []


def test_layout_files_are_private(secure):
    layout: PkiLayout = secure.layout
    for key in (layout.ca_key, layout.server_key, layout.signing_key, layout.client_key("j1")):
        assert Path(key).stat().st_mode & 0o077 == 0, key
