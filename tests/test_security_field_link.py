"""Signed plans over the secured broker: genuine ones apply, every attack is refused and reported.

Real Mosquitto with the generated TLS listener and ACL; the emulator logs in
as ``j1`` with its certificate and trusts the PKI's plan-verification key;
the centre is the real :class:`controller.dispatch.Dispatcher` logged in as
``central`` with the signing key, or (for hand-made attacks) a raw client
with the ``central`` certificate: an attacker who got that far still has no
signing key.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.secure_broker import SecureBroker
from controller.dispatch import Dispatcher
from field_firmware_stubs import events as ev
from field_firmware_stubs.emulator import FieldEmulator
from field_firmware_stubs.link import FieldGateway
from field_firmware_stubs.samples import four_leg
from traffic import messages as msg
from traffic import topics
from traffic.config import FieldSettings, MqttSettings
from traffic.errors import UnsafePlanError
from traffic.plan import TimingPlan
from traffic.security.pki import init_pki
from traffic.security.signing import PlanSigner, PlanVerifier, generate_signing_key

SITE = "s1"
ORIGIN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SPLITS = [30.0, 12.0, 26.0, 12.0]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Centre:
    """A raw MQTT client with the ``central`` certificate: sends crafted commands, collects answers."""

    def __init__(self, settings: MqttSettings) -> None:
        self.answers: dict[bytes, list[msg.PlanResult]] = {}
        self.status: list[msg.StatusMessage] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"centre-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        # subscribe on every (re)connection: the session does not outlive a broker restart
        self.client.on_connect = lambda c, *a: c.subscribe([(topics.wildcard(SITE, topics.PLAN_RESULT), 1),
                                                            (topics.wildcard(SITE, topics.STATUS), 1)])
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            if message.topic.endswith(topics.PLAN_RESULT):
                corr = bytes(getattr(message.properties, "CorrelationData", b"") or b"")
                self.answers.setdefault(corr, []).append(msg.decode_result(message.payload))
            else:
                self.status.append(msg.decode_status(message.payload))
            self._cond.notify_all()

    def send(self, cid: str, payload: bytes, timeout: float = 5.0) -> msg.PlanResult:
        """Publish a command to ``cid`` and return the first answer."""
        corr = uuid.uuid4().hex.encode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.topic(SITE, cid, topics.PLAN_RESULT)
        props.CorrelationData = corr
        props.MessageExpiryInterval = 60
        self.client.publish(topics.topic(SITE, cid, topics.PLAN_SET), payload, qos=1,
                            properties=props).wait_for_publish(5)
        with self._cond:
            assert self._cond.wait_for(lambda: corr in self.answers, timeout), "no answer from the field"
            return self.answers[corr][0]

    def wait_status(self, predicate, timeout: float = 15.0) -> msg.StatusMessage:
        with self._cond:
            assert self._cond.wait_for(lambda: any(predicate(s) for s in self.status), timeout), \
                [(s.state, s.mode, s.detail) for s in self.status]
            return next(s for s in self.status if predicate(s))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("fieldlink")
    return init_pki(root / "pki", controllers=["j1", "j2"], site=SITE, gateways=["gw1"]), root


@pytest.fixture(scope="module")
def secure(pki):
    layout, root = pki
    with SecureBroker(layout.root, root / "state") as broker:
        yield broker


@pytest.fixture(scope="module")
def signer(pki) -> PlanSigner:
    return PlanSigner.from_file(pki[0].signing_key)


@pytest.fixture(scope="module")
def verifier(pki) -> PlanVerifier:
    return PlanVerifier.from_files([pki[0].verify_key])


def make_emulator(broker: SecureBroker, verifier: PlanVerifier, **settings) -> FieldEmulator:
    return FieldEmulator(four_leg("j1"), site=SITE, mqtt=broker.settings_for("j1"), clock_origin=ORIGIN,
                         count_interval_s=60, settings=FieldSettings(**settings), expiry_clock=wall_clock,
                         plan_verifier=verifier)


def run_until(emu: FieldEmulator, t: float, mode: str, limit: float = 400.0) -> float:
    end = t + limit
    while emu.mode != mode and t < end:
        t += 1.0
        emu.tick(t, {})
    assert emu.mode == mode, (emu.mode, emu.plan.plan_id)
    return t


def run_until_plan(emu: FieldEmulator, t: float, plan_id: str, limit: float = 400.0) -> float:
    end = t + limit
    while not (emu.plan.plan_id == plan_id and emu.mode == msg.MODE_CENTRAL) and t < end:
        t += 1.0
        emu.tick(t, {})
    assert emu.plan.plan_id == plan_id and emu.mode == msg.MODE_CENTRAL, (emu.mode, emu.plan.plan_id)
    return t


def plan_v(version: int, *, cid: str = "j1", **changes) -> TimingPlan:
    plan = four_leg(cid).plan_from_splits(SPLITS, version=version, created_by="test")
    changes.setdefault("expires_at", (wall_clock() + timedelta(seconds=120)).isoformat())
    return replace(plan, **changes)


def test_signed_plan_through_the_dispatcher_is_applied(secure, signer, verifier):
    emu = make_emulator(secure, verifier)
    emu.start()
    try:
        with Dispatcher(secure.settings_for("central"), SITE, client_id="central-test",
                        plan_signer=signer) as dispatcher:
            plan = four_leg("j1").plan_from_splits(SPLITS, version=2, created_by="optimizer")
            answer = dispatcher.dispatch(plan, four_leg("j1"), expiry_s=60, timeout_s=5)
            assert answer.status == msg.ACCEPTED and signer.key_id in answer.reason
            sent = dispatcher.signed_plan(plan.plan_id)
            assert sent is not None and verifier.verify(sent) == signer.key_id
            run_until(emu, 0.0, msg.MODE_CENTRAL)
            assert dispatcher.await_applied(plan.plan_id, 5).status == msg.APPLIED
            assert emu.plan.plan_id == plan.plan_id
            # the dispatcher never signs, let alone publishes, an unsafe plan
            bad = replace(plan.with_splits(SPLITS, version=3), phases=(
                replace(plan.phases[0], phaseYellowChange=2.0),) + plan.phases[1:])
            with pytest.raises(UnsafePlanError):
                dispatcher.dispatch(bad, four_leg("j1"), expiry_s=60, timeout_s=2)
            assert dispatcher.signed_plan(bad.plan_id) is None
    finally:
        emu.stop(discard_session=True)


def test_a_field_gateway_identity_serves_several_controllers(secure, signer, verifier):
    gateway = FieldGateway(secure.settings_for("gw1"), site=SITE, client_id="gw1-test")
    emus = {cid: FieldEmulator(four_leg(cid), site=SITE, mqtt=secure.settings_for("gw1"), clock_origin=ORIGIN,
                               gateway=gateway, expiry_clock=wall_clock, plan_verifier=verifier)
            for cid in ("j1", "j2")}
    gateway.start()
    try:
        for emu in emus.values():
            emu.start()
        with Dispatcher(secure.settings_for("central"), SITE, client_id="central-gw", plan_signer=signer) as d:
            plan = four_leg("j2").plan_from_splits(SPLITS, version=2)
            assert d.dispatch(plan, four_leg("j2"), expiry_s=60, timeout_s=5).status == msg.ACCEPTED
            run_until_plan(emus["j2"], 0.0, plan.plan_id)
            assert d.await_applied(plan.plan_id, 5).status == msg.APPLIED
        assert emus["j1"].stats.plans_accepted == 0
    finally:
        for emu in emus.values():
            emu.stop()
        gateway.stop(discard_session=True)


def test_forged_replayed_expired_misaddressed_plans_are_refused_and_reported(secure, signer, verifier):
    emu = make_emulator(secure, verifier)
    emu.start()
    centre = Centre(secure.settings_for("central"))
    rogue = PlanSigner(generate_signing_key())
    try:
        emu.tick(0.0, {})
        v2 = signer.sign(plan_v(2))
        assert centre.send("j1", v2.to_json()).status == msg.ACCEPTED
        t = run_until_plan(emu, 0.0, v2.plan_id)
        v3 = signer.sign(plan_v(3))
        assert centre.send("j1", v3.to_json()).status == msg.ACCEPTED
        t = run_until_plan(emu, t, v3.plan_id)

        tampered = json.loads(v3.to_json())
        tampered["phases"][0]["splitTime"] += 5.0  # more green for one approach, cycle kept consistent
        tampered["phases"][1]["splitTime"] -= 5.0
        tampered["version"] = 9
        own_kid_rogue_sig = rogue.sign(plan_v(10)).signature.split(":")[2]
        forged_kid = replace(plan_v(10), signature=f"ed25519-jcs:{signer.key_id}:{own_kid_rogue_sig}")
        attacks = {
            "unsigned": (plan_v(4).to_json(), "SIGNATURE"),
            "rogue key": (rogue.sign(plan_v(5)).to_json(), "SIGNATURE"),
            "rogue signature under the genuine key id": (forged_kid.to_json(), "SIGNATURE"),
            "garbled signature": (replace(plan_v(6), signature="ed25519-jcs:" + signer.key_id + ":AAAA").to_json(),
                                  "SIGNATURE"),
            "tampered after signing": (json.dumps(tampered).encode(), "SIGNATURE"),
            "mis-addressed (signed for j2)": (signer.sign(plan_v(7, cid="j2")).to_json(), "IDENTITY"),
            "expired": (signer.sign(plan_v(8, expires_at=(wall_clock() - timedelta(seconds=1)).isoformat()))
                        .to_json(), "EXPIRED"),
            "replay of the replaced v2": (v2.to_json(), "REPLAY"),
            "older version, new id": (signer.sign(plan_v(2)).to_json(), "STALE_VERSION"),
            "same version, new id": (signer.sign(plan_v(3)).to_json(), "STALE_VERSION"),
        }
        for name, (payload, rule) in attacks.items():
            answer = centre.send("j1", payload)
            assert (answer.status, answer.rule) == (msg.REJECTED, rule), (name, answer)
            assert answer.reason, name
        for _ in range(5):
            t += 1.0
            emu.tick(t, {})
        # nothing unauthenticated, stale or mis-addressed moved the controller: still v3 from the centre
        assert (emu.mode, emu.plan.plan_id, emu.stats.fallbacks) == (msg.MODE_CENTRAL, v3.plan_id, 0)
        assert emu.stats.rejected_rules == [rule for _, rule in attacks.values()]

        # a plan signed with the centre's own key but unsafe: refused by the field's check, and the
        # centre is no longer trusted, so the controller falls back to its time-of-day plan
        unsafe = plan_v(11)
        unsafe = signer.sign(replace(unsafe, phases=(replace(unsafe.phases[0], phaseYellowChange=2.0),)
                                     + unsafe.phases[1:]))
        answer = centre.send("j1", unsafe.to_json())
        assert (answer.status, answer.rule) == (msg.REJECTED, "YELLOW")
        t += 1.0
        emu.tick(t, {})
        assert emu.mode == msg.MODE_TOD and emu.stats.fallbacks == 1 and not emu.monitor.tripped
        # the centre's current plan sent again is taken back (it is not a replay)
        assert centre.send("j1", v3.to_json()).status == msg.ACCEPTED
        run_until_plan(emu, t, v3.plan_id)
    finally:
        centre.close()
        emu.stop(discard_session=True)


def test_link_loss_falls_back_at_once_and_recovers_on_the_secured_broker(pki, signer, verifier):
    layout, root = pki
    broker = SecureBroker(layout.root, root / "state-linkloss").start()
    emu = make_emulator(broker, verifier, central_silence_timeout_s=120.0)
    dispatcher = Dispatcher(broker.settings_for("central"), SITE, client_id="central-linkloss", plan_signer=signer)
    # the broker binds the client id to the certificate (use_username_as_clientid): a second client with the
    # `central` certificate would take the dispatcher's session over, so the status watcher reads as `ingest`
    centre = Centre(broker.settings_for("ingest"))
    try:
        emu.start()
        dispatcher.connect()
        plan = four_leg("j1").plan_from_splits(SPLITS, version=2, created_by="optimizer")
        assert dispatcher.dispatch(plan, four_leg("j1"), expiry_s=60, timeout_s=5).status == msg.ACCEPTED
        t = run_until(emu, 0.0, msg.MODE_CENTRAL)
        # fault: a cable cut under the controller (no DISCONNECT): the broker sends its will through the ACL
        # (shutdown, not close: a closed descriptor does not wake paho's select on a TLS socket)
        emu._mqtt_link._client.socket().shutdown(socket.SHUT_RDWR)  # noqa: SLF001
        centre.wait_status(lambda s: s.state == msg.OFFLINE and s.detail == "connection lost")
        deadline = time.monotonic() + 10
        while emu.connected and time.monotonic() < deadline:  # paho notices on its next loop pass
            time.sleep(0.02)
        t += 1.0
        emu.tick(t, {})
        assert emu.mode == msg.MODE_TOD and emu.stats.fallbacks == 1  # the next tick, not after a timeout
        # fault: the broker itself goes away and comes back on the same port
        deadline = time.monotonic() + 15
        while not emu.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        broker.stop()
        broker = SecureBroker(layout.root, root / "state-linkloss", tls_port=broker.tls_port).start()
        deadline = time.monotonic() + 20
        while not (emu.connected and dispatcher.connected) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert emu.connected and dispatcher.connected
        t += 1.0
        emu.tick(t, {})
        assert emu.mode == msg.MODE_TOD
        # the controller reports the fallback and why in its retained status (readable by the centre)
        centre.wait_status(lambda s: s.state == msg.ONLINE and s.mode == msg.MODE_TOD and "link lost" in s.detail)
        # recovery: the centre sends the plan again (re-signed, new expiry) and the field takes it back
        answer = dispatcher.dispatch(plan, four_leg("j1"), expiry_s=60, timeout_s=5)
        assert answer.status == msg.ACCEPTED, answer
        run_until(emu, t, msg.MODE_CENTRAL)
        assert emu.plan.plan_id == plan.plan_id
    finally:
        centre.close()
        dispatcher.close()
        emu.stop(discard_session=True)
        broker.stop()


def test_silence_past_the_timeout_falls_back_with_event_200_and_recovers(signer, verifier):
    """Offline emulator (commands handed to its MQTT entry point): exact timing of the silence fallback."""
    emu = FieldEmulator(four_leg("j1"), site=SITE, mqtt=MqttSettings(), clock_origin=ORIGIN,
                        settings=FieldSettings(central_silence_timeout_s=30.0), expiry_clock=wall_clock,
                        plan_verifier=verifier)
    emu.tick(0.0, {})
    plan = signer.sign(plan_v(2))

    def heartbeat_until_central(t: float) -> float:
        while emu.mode != msg.MODE_CENTRAL:  # the centre re-sends (its heartbeat) until the plan is in force
            emu._on_plan_message(plan.to_json(), None, b"c")  # noqa: SLF001 - the MQTT thread's entry point
            t += 1.0
            emu.tick(t, {})
            assert t < 800
        return t

    t = last_contact = heartbeat_until_central(0.0)
    while emu.mode == msg.MODE_CENTRAL and t < last_contact + 200:
        t += 1.0
        emu.tick(t, {})
    assert emu.mode == msg.MODE_TOD and emu.stats.fallbacks == 1
    assert t == last_contact + 30.0 + 1.0  # the first tick past 30 s of silence
    codes = [(e.code, e.param) for e in emu._events]  # noqa: SLF001 - offline: events not flushed
    assert (ev.CONTROL_SOURCE, ev.SOURCE_TOD_SILENCE) in codes
    heartbeat_until_central(t)  # the centre speaks again: the same plan is taken back
    assert emu.plan.plan_id == plan.plan_id and emu.stats.fallbacks == 1
