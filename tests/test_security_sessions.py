"""One cabinet's certificate reaches only its own session; sizes are bounded; revoked certificates are refused.

Issue #12 items 2, 3 and 6 (CRL), against a real Mosquitto started here with
the configuration ``traffic pki init`` generates (``SecureBroker``). The
probes that broke the field before the fix, each asserting the refusal *and*
that the victim's data survives:

* j1's certificate connecting with the client id of j2, of the dispatcher or
  of an ingest worker used to take the victim's session over (link drops,
  the dispatcher knocked off) or to resume/wipe its offline session (queued
  plan 0 of 1, queued counts 0 of 5 afterwards);
* 10 MB messages on a cabinet's own counts topic were accepted and queued;
* a retired cabinet's certificate still got in.

Clients are built with the project's factory (``traffic.mqtt_client.new_client``)
except the attacker, who is a bare paho client choosing its own client id.
"""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.secure_broker import SecureBroker
from traffic import topics
from traffic.config import MqttSettings
from traffic.mqtt_client import effective_client_id, new_client
from traffic.security.mosquitto_config import LIMITS, OVERSIZE_LOG, count_oversize
from traffic.security.pki import init_pki, revoke

SITE = "s1"
CONTROLLERS = ("j1", "j2")


class Client:
    """An MQTT 5 client recording CONNACKs, disconnects and messages."""

    def __init__(self, settings: MqttSettings, client_id: str, *, factory: bool = True) -> None:
        self.settings = settings
        if factory:
            self.client = new_client(settings, client_id)
        else:  # the attacker: a bare paho client that sends whatever client id it likes
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
            self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        self.client.reconnect_delay_set(1, 1)
        self.cond = threading.Condition()
        self.connacks: list[tuple[str, bool]] = []
        self.disconnects: list[str] = []
        self.got: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, c, u, flags, rc, props) -> None:
        with self.cond:
            self.connacks.append((str(rc), bool(flags.session_present)))
            self.cond.notify_all()

    def _on_disconnect(self, c, u, flags, rc, props) -> None:
        with self.cond:
            self.disconnects.append(str(rc))
            self.cond.notify_all()

    def _on_message(self, c, u, message) -> None:
        with self.cond:
            self.got.append((message.topic, bytes(message.payload)))
            self.cond.notify_all()

    def connect(self, *, clean_start: bool = True, session_expiry_s: int = 0) -> Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect(self.settings.host, self.settings.port, keepalive=10, clean_start=clean_start,
                            properties=props)
        self.client.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.connacks, 5), "no CONNACK"
        assert self.connacks[-1][0] == "Success", self.connacks
        return self

    @property
    def session_present(self) -> bool:
        return self.connacks[-1][1]

    def subscribe(self, topic_filter: str) -> None:
        self.client.subscribe(topic_filter, qos=1)
        time.sleep(0.2)

    def publish(self, topic_name: str, payload: bytes) -> None:
        self.client.publish(topic_name, payload, qos=1).wait_for_publish(5)

    def received(self, topic_name: str | None = None) -> list[bytes]:
        with self.cond:
            return [p for t, p in self.got if topic_name is None or t == topic_name]

    def wait_count(self, n: int, timeout: float = 5.0) -> int:
        with self.cond:
            self.cond.wait_for(lambda: len(self.got) >= n, timeout)
            return len(self.got)

    def close(self, *, end_session: bool = False) -> None:
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    init_pki(root / "pki", controllers=CONTROLLERS, site=SITE, ingest_workers=2)
    broker = SecureBroker(root / "pki", root / "state")
    try:
        broker.start()
    except FileNotFoundError as exc:  # pragma: no cover - no mosquitto installed
        pytest.skip(f"mosquitto not available: {exc}")
    yield broker
    broker.stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def track(c: Client) -> Client:
        made.append(c)
        return c

    yield track
    for c in made:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


def t(cid: str, leaf: str) -> str:
    return topics.topic(SITE, cid, leaf)


def _log_lines_since(secure: SecureBroker, start: int) -> str:
    return secure.log_path.read_text(errors="replace")[start:]


def _log_mark(secure: SecureBroker) -> int:
    return len(secure.log_path.read_text(errors="replace"))


def _wait_log(secure: SecureBroker, start: int, text: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in _log_lines_since(secure, start):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- client id bound to the certificate

def test_project_clients_take_their_certificate_cn_as_client_id(secure):
    for identity in ("j2", "central", "ingest", "ingest-2"):
        settings = secure.settings_for(identity)
        assert effective_client_id(settings, f"field-{SITE}-{identity}-{uuid.uuid4().hex[:4]}") == identity
    assert effective_client_id(MqttSettings(url="mqtt://127.0.0.1:1883"), "plain-id") == "plain-id"


@pytest.mark.parametrize("victim_id", [f"field-{SITE}-j2", "j2", "central", "ingest"])
def test_another_certificate_cannot_take_over_an_online_session(secure, clients, victim_id):
    """j1's certificate asking for the victim's client id gets j1's session; the victim stays connected."""
    victim_identity = "j2" if "j2" in victim_id else victim_id
    victim = clients(Client(secure.settings_for(victim_identity), victim_id)).connect()
    mark = _log_mark(secure)
    for _ in range(5):  # the probe repeated: before the fix, every one of these dropped the victim's link
        attacker = Client(secure.settings_for("j1"), victim_id, factory=False).connect()
        time.sleep(0.3)
        attacker.close()
    assert _wait_log(secure, mark, "as j1 (")
    assert f"as {victim_identity} (" not in _log_lines_since(secure, mark)  # never under the victim's id
    time.sleep(0.5)
    assert victim.disconnects == [], victim.disconnects
    # and the victim's link still works end to end
    if victim_identity == "j2":
        central = clients(Client(secure.settings_for("central"), "central-probe")).connect()
        victim.subscribe(t("j2", topics.PLAN_SET))
        central.publish(t("j2", topics.PLAN_SET), b"plan after the probes")
        assert victim.wait_count(1) == 1


def _offline_session(secure, clients, identity: str, topic_filter: str) -> Client:
    """Connect ``identity`` with a persistent session, subscribe, and go offline (session kept 300 s)."""
    c = clients(Client(secure.settings_for(identity), identity))
    c.connect(clean_start=True, session_expiry_s=300)
    c.subscribe(topic_filter)
    c.close()
    return c


@pytest.mark.parametrize("mode", ["resume", "wipe"])
def test_controllers_queued_plan_survives_another_certificate(secure, clients, mode):
    _offline_session(secure, clients, "j2", t("j2", topics.PLAN_SET))
    central = clients(Client(secure.settings_for("central"), "central")).connect()
    plan = f"plan {uuid.uuid4().hex}".encode()
    central.publish(t("j2", topics.PLAN_SET), plan)
    attacker = clients(Client(secure.settings_for("j1"), "j2", factory=False))
    if mode == "resume":
        attacker.connect(clean_start=False, session_expiry_s=300)
        assert not attacker.session_present  # not j2's session
        time.sleep(0.5)
        assert attacker.received() == []    # j2's queued plan is not delivered to j1's certificate
    else:
        attacker.connect(clean_start=True, session_expiry_s=0)  # would wipe the session it got
    attacker.close(end_session=True)
    j2 = clients(Client(secure.settings_for("j2"), "j2")).connect(clean_start=False, session_expiry_s=300)
    assert j2.session_present
    assert j2.wait_count(1) == 1
    assert j2.received(t("j2", topics.PLAN_SET)) == [plan]  # 1 of 1 delivered
    j2.close(end_session=True)


@pytest.mark.parametrize("mode", ["resume", "wipe"])
@pytest.mark.parametrize("worker", ["ingest", "ingest-2"])
def test_ingest_workers_queued_counts_survive_another_certificate(secure, clients, mode, worker):
    shared = topics.shared("ingest", topics.wildcard(SITE, topics.COUNTS))
    _offline_session(secure, clients, worker, shared)
    j1 = clients(Client(secure.settings_for("j1"), "j1")).connect()
    sent = [f"counts {i} {uuid.uuid4().hex}".encode() for i in range(5)]
    for payload in sent:
        j1.publish(t("j1", topics.COUNTS), payload)
    # the attacker: j1's own certificate, and also the *other* ingest worker's certificate
    for identity in ("j1", "ingest-2" if worker == "ingest" else "ingest"):
        attacker = Client(secure.settings_for(identity), worker, factory=False)
        attacker.connect(clean_start=(mode == "wipe"), session_expiry_s=0 if mode == "wipe" else 300)
        time.sleep(0.4)
        if mode == "resume":
            assert not attacker.session_present or identity != "j1"
            assert not any(p in sent for p in attacker.received())
        attacker.close(end_session=True)
    victim = clients(Client(secure.settings_for(worker), worker)).connect(clean_start=False, session_expiry_s=300)
    assert victim.session_present
    victim.wait_count(5)
    assert sorted(victim.received()) == sorted(sent)  # 5 of 5
    victim.close(end_session=True)


# ---------------------------------------------------------------- sizes

def test_oversized_message_is_refused_at_the_broker_and_counted(secure, clients):
    ingest = clients(Client(secure.settings_for("ingest"), "ingest")).connect()
    ingest.subscribe(topics.wildcard(SITE, topics.COUNTS))
    mark = _log_mark(secure)
    for size in (10 * 1024 * 1024, LIMITS.max_packet_size + 1, LIMITS.max_packet_size - 20):
        # the last one: the payload fits, the topic and header push the packet over
        sender = Client(secure.settings_for("j1"), "j1").connect()
        sender.client.publish(t("j1", topics.COUNTS), b"x" * size, qos=1)
        with sender.cond:
            assert sender.cond.wait_for(lambda s=sender: s.disconnects, 5), f"{size} bytes: not disconnected"
        sender.client.disconnect()
        sender.client.loop_stop()
    assert _wait_log(secure, mark, OVERSIZE_LOG)
    assert count_oversize(_log_lines_since(secure, mark)) == {"j1": 3}
    time.sleep(0.3)
    assert ingest.received() == []
    # a message within the bound still passes, on a fresh connection of the same cabinet
    ok = clients(Client(secure.settings_for("j1"), "j1")).connect()
    ok.publish(t("j1", topics.COUNTS), b"y" * 1000)
    assert ingest.wait_count(1) == 1
    assert [len(p) for p in ingest.received()] == [1000]


def test_offline_queue_is_bounded_in_bytes(secure, clients):
    """64 KiB messages for an offline consumer: the broker keeps at most max_queued_bytes for it."""
    _offline_session(secure, clients, "ingest-2", topics.wildcard(SITE, topics.EVENTS))
    j1 = clients(Client(secure.settings_for("j1"), "j1")).connect()
    size = 64 * 1024
    n = LIMITS.max_queued_bytes // size + 60
    for i in range(n):
        j1.client.publish(t("j1", topics.EVENTS), i.to_bytes(4, "big") + b"e" * (size - 4), qos=1)
    j1.client.publish(t("j1", topics.EVENTS), b"last", qos=1).wait_for_publish(30)
    worker = clients(Client(secure.settings_for("ingest-2"), "ingest-2"))
    worker.connect(clean_start=False, session_expiry_s=300)
    time.sleep(1.5)
    got = worker.wait_count(n + 1, timeout=2)
    worker.close(end_session=True)
    limit = LIMITS.max_queued_bytes // size + LIMITS.max_inflight_messages
    assert 0 < got <= limit + 1, (got, limit)
    assert got < n


# ---------------------------------------------------------------- revocation

def _connects(settings: MqttSettings) -> bool:
    """True when a TLS client with ``settings`` gets a successful CONNACK."""
    c = Client(settings, "probe", factory=False)
    try:
        c.client.connect(settings.host, settings.port, keepalive=5)
    except OSError:  # handshake refused (ssl.SSLError is an OSError)
        return False
    c.client.loop_start()
    with c.cond:
        c.cond.wait_for(lambda: c.connacks or c.disconnects, 3)
    ok = bool(c.connacks) and c.connacks[-1][0] == "Success"
    c.client.disconnect()
    c.client.loop_stop()
    return ok


def test_revoked_cabinet_certificate_is_refused_by_the_broker(tmp_path):
    from cryptography import x509

    pki = tmp_path / "pki"
    layout = init_pki(pki, controllers=["j1", "j2", "j3"], site=SITE)
    saved = tmp_path / "j2-stolen"
    saved.mkdir()
    (saved / "j2.crt").write_bytes(layout.client_cert("j2").read_bytes())
    (saved / "j2.key").write_bytes(layout.client_key("j2").read_bytes())

    def stolen(broker: SecureBroker) -> MqttSettings:
        return MqttSettings(url=broker.url, ca_file=str(layout.ca_cert), cert_file=str(saved / "j2.crt"),
                            key_file=str(saved / "j2.key"))

    broker = SecureBroker(pki, tmp_path / "state")
    broker.start()
    try:
        assert _connects(stolen(broker))  # control: before revocation the same files get in
    finally:
        broker.stop()
    entry = revoke(pki, identity="j2")
    entry3 = revoke(pki, cert_path=layout.client_cert("j3"))
    crl = x509.load_pem_x509_crl(layout.crl.read_bytes())
    assert {r.serial_number for r in crl} == {int(entry["serial"]), int(entry3["serial"])}
    assert crl.is_signature_valid(x509.load_pem_x509_certificate(layout.ca_cert.read_bytes()).public_key())
    acl = layout.acl_file.read_text()
    assert "user j2" not in acl and "user j3" not in acl and "user j1" in acl
    assert f"crlfile {layout.crl}" in layout.mosquitto_conf.read_text()
    assert not layout.client_cert("j2").exists() and list(layout.revoked_dir.glob("j2-*.crt"))
    broker = SecureBroker(pki, tmp_path / "state")
    broker.start()
    try:
        mark = _log_mark(broker)
        assert not _connects(stolen(broker))
        assert _wait_log(broker, mark, "certificate verify failed")  # Mosquitto 2.0.11 does not say "revoked"
        assert _connects(broker.settings_for("j1"))  # the other cabinets are unaffected
    finally:
        broker.stop()
    # a replacement certificate for j2 (init again) gets in after the broker restarts
    init_pki(pki, controllers=["j2"], site=SITE)
    assert "user j2" in layout.acl_file.read_text()
    assert x509.load_pem_x509_certificate(layout.client_cert("j2").read_bytes()).serial_number != int(
        entry["serial"])
    broker = SecureBroker(pki, tmp_path / "state")
    broker.start()
    try:
        assert _connects(broker.settings_for("j2"))
        assert not _connects(stolen(broker))
    finally:
        broker.stop()


def test_pki_revoke_command(tmp_path, capsys):
    from app.cli import main

    pki = tmp_path / "pki"
    init_pki(pki, controllers=["j1", "j2"], site=SITE)
    assert main(["pki", "revoke", "--out", str(pki), "--controller", "j2"]) == 0
    assert "revoked j2" in capsys.readouterr().out
    assert main(["pki", "revoke", "--out", str(pki), "--controller", "nobody"]) != 0
    assert main(["pki", "revoke", "--out", str(tmp_path / "none"), "--controller", "j1"]) != 0
