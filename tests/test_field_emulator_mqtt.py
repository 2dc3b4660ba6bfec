"""Field emulator against the real Mosquitto broker: telemetry, plan commands, fallback."""

from __future__ import annotations

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

from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from field_firmware_stubs.link import FieldGateway
from field_firmware_stubs.samples import four_leg
from traffic import messages as msg
from traffic import topics
from traffic.config import FieldSettings, MqttSettings
from traffic.plan import TimingPlan

ORIGIN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


class Observer:
    """A plain paho client standing in for the centre: records everything under the site."""

    def __init__(self, url: str, site: str) -> None:
        self.messages: list[tuple[str, bytes, Properties | None, bool]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        settings = MqttSettings(url=url)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        self.client.subscribe([(f"tsc/v1/{site}/#", 1), (f"replies/{site}/#", 1)])
        assert subscribed.wait(5)

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), message.properties, message.retain))
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching message in {timeout} s; got {[m[0] for m in self.messages]}")
                self._cond.wait(remaining)

    def on(self, topic: str) -> list[tuple[str, bytes, Properties | None, bool]]:
        with self._cond:
            return [m for m in self.messages if m[0] == topic]

    def send_plan(self, topic: str, payload: bytes, *, response: str, correlation: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response
        props.CorrelationData = correlation
        props.MessageExpiryInterval = 60
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(url: str, topic: str, timeout: float = 5.0) -> bytes:
    """The retained message on ``topic``, as a new subscriber sees it."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ret-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)

    def on_message(c, u, m):
        if m.retain:
            got.append(bytes(m.payload))
            done.set()
    client.on_message = on_message
    settings = MqttSettings(url=url)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert done.wait(timeout), f"nothing retained on {topic}"
        return got[0]
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def observer(mqtt_url, site):
    obs = Observer(mqtt_url, site)
    yield obs
    obs.close()


def make_emulator(mqtt_url: str, site: str, **kw) -> FieldEmulator:
    settings = kw.pop("settings", FieldSettings(central_silence_timeout_s=300.0, transition_max_step_s=10.0))
    return FieldEmulator(four_leg(), site=site, mqtt=MqttSettings(url=mqtt_url), clock_origin=ORIGIN,
                         count_interval_s=10, settings=settings, **kw)


def expiring(plan: TimingPlan, t: float = 0.0, ahead_s: float = 800.0) -> TimingPlan:
    """``plan`` valid for ``ahead_s`` from simulation second ``t`` (the emulator judges expiry on its clock;
    every plan must carry an expiry no more than its bound, 900 s by default, ahead)."""
    return replace(plan, expires_at=(ORIGIN + timedelta(seconds=t + ahead_s)).isoformat())


def readings(t: float) -> dict[str, DetectorReading]:
    """d1 sees one motorcycle every 2 s, d3 one car every 5 s, the others nothing."""
    out = {d: DetectorReading() for d in ("d1", "d2", "d3", "d4", "d5", "d6")}
    if int(t) % 2 == 0:
        out["d1"] = DetectorReading(count=1, occupancy_pct=40.0, motorcycles=1)
    if int(t) % 5 == 0:
        out["d3"] = DetectorReading(count=1, occupancy_pct=50.0, motorcycles=0)
    return out


def result_on(observer: Observer, topic: str, status: str, plan_id: str):
    def match(m):
        if m[0] != topic:
            return False
        r = msg.decode_result(m[1])
        return r.status == status and r.plan_id == plan_id
    return observer.wait_for(match)


def test_emulator_publishes_status_counts_events_and_applies_a_valid_plan(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        status_topic = topics.topic(site, "c1", topics.STATUS)
        first = observer.wait_for(lambda m: m[0] == status_topic)
        assert msg.decode_status(first[1]).state == msg.ONLINE and msg.decode_status(first[1]).mode == msg.MODE_TOD
        for t in range(1, 31):
            emu.tick(float(t), readings(t))
        counts_topic = topics.topic(site, "c1", topics.COUNTS)
        observer.wait_for(lambda m: m[0] == counts_topic and msg.decode_counts(m[1]).seq == 2)
        reports = [msg.decode_counts(m[1]) for m in observer.on(counts_topic)]
        assert [r.seq for r in reports] == [0, 1, 2]
        assert [r.interval_start for r in reports] == [ORIGIN + timedelta(seconds=s) for s in (0, 10, 20)]
        d1 = [next(x for x in r.records if x.detector_id == "d1") for r in reports]
        assert [x.count for x in d1] == [5, 5, 5] and [x.motorcycle_count for x in d1] == [5, 5, 5]
        assert d1[0].occupancy_pct == pytest.approx(20.0)
        d3 = [next(x for x in r.records if x.detector_id == "d3") for r in reports]
        assert [x.count for x in d3] == [2, 2, 2]
        events_topic = topics.topic(site, "c1", topics.EVENTS)
        observer.wait_for(lambda m: m[0] == events_topic)
        batches = [msg.decode_events(m[1]) for m in observer.on(events_topic)]
        assert [b.seq for b in batches] == list(range(len(batches)))
        assert any(code == 82 for b in batches for _, code, _ in b.events)  # detector on

        # a valid plan with MQTT 5 response topic and correlation data
        spec = four_leg()
        plan = expiring(spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], offset_s=5.0, version=2, created_by="test"))
        # the command asks for answers elsewhere: the field answers on its own plan/result only
        foreign = f"replies/{site}/plans"
        reply = topics.topic(site, "c1", topics.PLAN_RESULT)
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), plan.to_json(), response=foreign,
                           correlation=b"corr-1")
        accepted = result_on(observer, reply, msg.ACCEPTED, plan.plan_id)
        assert accepted[2].CorrelationData == b"corr-1"
        t = 30
        while emu.plan.plan_id != plan.plan_id and t < 300:
            t += 1
            emu.tick(float(t), readings(t))
        assert emu.plan.plan_id == plan.plan_id and emu.mode == msg.MODE_CENTRAL
        applied = result_on(observer, reply, msg.APPLIED, plan.plan_id)
        assert applied[2].CorrelationData == b"corr-1"
        assert msg.decode_result(applied[1]).at == ORIGIN + timedelta(seconds=emu.program.cycle_start)
        active_topic = topics.topic(site, "c1", topics.PLAN_ACTIVE)
        observer.wait_for(lambda m: m[0] == active_topic and TimingPlan.from_json(m[1]).version == 2)
        retained_plan = TimingPlan.from_json(retained(mqtt_url, active_topic))
        assert retained_plan == plan  # a late subscriber gets the plan in force
        emu.tick(float(t + 1), readings(t + 1))
        observer.wait_for(lambda m: m[0] == status_topic and msg.decode_status(m[1]).mode == msg.MODE_CENTRAL)
        assert emu.stats.plans_accepted == 1 and emu.stats.plans_applied == 1
        # the centre's heartbeat: re-sending the plan in force is answered "applied" and changes nothing
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), plan.to_json(), response=reply,
                           correlation=b"corr-hb")
        again = observer.wait_for(lambda m: m[0] == reply and m[2].CorrelationData == b"corr-hb")
        assert msg.decode_result(again[1]).status == msg.APPLIED
        assert msg.decode_result(again[1]).at == msg.decode_result(applied[1]).at
        assert emu.stats.plans_accepted == 1

        # an unsafe plan (short yellow) is rejected with its rule; the centre is no longer trusted
        bad = plan.with_splits(plan.splits, version=3)
        bad = replace(bad, phases=(replace(bad.phases[0], phaseYellowChange=2.0),) + bad.phases[1:])
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), bad.to_json(), response=reply,
                           correlation=b"corr-2")
        rejected = result_on(observer, reply, msg.REJECTED, bad.plan_id)
        decoded = msg.decode_result(rejected[1])
        assert decoded.rule == "YELLOW" and "yellow" in decoded.reason and rejected[2].CorrelationData == b"corr-2"
        # garbage is answered too
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), b"{not json", response=reply,
                           correlation=b"corr-3")
        garbage = observer.wait_for(lambda m: m[0] == reply and m[2].CorrelationData == b"corr-3")
        assert msg.decode_result(garbage[1]).rule == "MALFORMED"
        assert observer.on(foreign) == []
        for k in range(1, 200):
            emu.tick(float(t + 1 + k), readings(t + 1 + k))
        assert emu.mode == msg.MODE_TOD and emu.plan.plan_id == emu.tod_plan.plan_id
        assert emu.stats.plans_rejected == 2
    finally:
        emu.stop(discard_session=True)
    observer.wait_for(lambda m: m[0] == status_topic and msg.decode_status(m[1]).state == msg.OFFLINE)
    assert msg.decode_status(retained(mqtt_url, status_topic)).detail == "stopped"


def test_silence_timeout_falls_back_to_tod_and_a_new_plan_recovers(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site, settings=FieldSettings(central_silence_timeout_s=120.0))
    emu.start()
    try:
        spec = four_leg()
        plan_topic = topics.topic(site, "c1", topics.PLAN_SET)
        reply = topics.topic(site, "c1", topics.PLAN_RESULT)
        plan = expiring(spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=5))
        observer.send_plan(plan_topic, plan.to_json(), response=reply, correlation=b"a")
        result_on(observer, reply, msg.ACCEPTED, plan.plan_id)
        t = 0
        while emu.mode != msg.MODE_CENTRAL and t < 300:
            t += 1
            emu.tick(float(t), {})
        assert emu.mode == msg.MODE_CENTRAL
        last_contact = 1
        while emu.mode == msg.MODE_CENTRAL and t < 600:
            t += 1
            if t == 100:  # a heartbeat (re-send of the plan in force) restarts the silence timer
                observer.send_plan(plan_topic, plan.to_json(), response=reply, correlation=b"hb")
                observer.wait_for(lambda m: m[0] == reply and m[2].CorrelationData == b"hb")
                last_contact = t
            emu.tick(float(t), {})
        assert emu.mode == msg.MODE_TOD and 120 < t - last_contact <= 122
        assert emu.stats.fallbacks == 1
        status_topic = topics.topic(site, "c1", topics.STATUS)
        observer.wait_for(lambda m: m[0] == status_topic and "silent" in msg.decode_status(m[1]).detail)
        # the TOD plan takes over at the next boundary
        while emu.plan.plan_id != emu.tod_plan.plan_id and t < 800:
            t += 1
            emu.tick(float(t), {})
        assert emu.plan.plan_id == emu.tod_plan.plan_id
        # an older version is refused, a newer one brings central control back
        stale = expiring(spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=4), t)
        observer.send_plan(plan_topic, stale.to_json(), response=reply, correlation=b"b")
        assert msg.decode_result(result_on(observer, reply, msg.REJECTED, stale.plan_id)[1]).rule == "STALE_VERSION"
        fresh = expiring(spec.plan_from_splits([28.0, 14.0, 26.0, 12.0], version=6), t)
        observer.send_plan(plan_topic, fresh.to_json(), response=reply, correlation=b"c")
        result_on(observer, reply, msg.ACCEPTED, fresh.plan_id)
        while emu.mode != msg.MODE_CENTRAL and t < 1200:
            t += 1
            emu.tick(float(t), {})
        assert emu.mode == msg.MODE_CENTRAL and emu.plan.plan_id == fresh.plan_id
        emu.stop(discard_session=True)  # flushes the pending event batch
        events_topic = topics.topic(site, "c1", topics.EVENTS)
        fallback = observer.wait_for(lambda m: m[0] == events_topic and any(
            code == 200 and param == 1 for _, code, param in msg.decode_events(m[1]).events))
        assert fallback
    finally:
        emu.stop(discard_session=True)


def test_expired_and_misaddressed_plans_are_rejected(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        emu.tick(1.0, {})
        spec = four_leg()
        reply = topics.topic(site, "c1", topics.PLAN_RESULT)
        expired = replace(spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2),
                          expires_at=(ORIGIN - timedelta(seconds=1)).isoformat())
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), expired.to_json(), response=reply,
                           correlation=b"x")
        assert msg.decode_result(result_on(observer, reply, msg.REJECTED, expired.plan_id)[1]).rule == "EXPIRED"
        other = expiring(four_leg("c2").plan_from_splits([30.0, 12.0, 26.0, 12.0], version=3))
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), other.to_json(), response=reply,
                           correlation=b"y")
        assert msg.decode_result(result_on(observer, reply, msg.REJECTED, other.plan_id)[1]).rule == "IDENTITY"
        assert emu.mode == msg.MODE_TOD and emu.stats.plans_accepted == 0
    finally:
        emu.stop(discard_session=True)


def test_gateway_serves_several_controllers_over_one_connection(mqtt_url, site, observer):
    gateway = FieldGateway(MqttSettings(url=mqtt_url), site=site)
    emus = [FieldEmulator(four_leg(f"c{i}"), site=site, mqtt=MqttSettings(url=mqtt_url), clock_origin=ORIGIN,
                          count_interval_s=10, gateway=gateway) for i in range(3)]
    gateway.start()
    try:
        for e in emus:
            e.start()
        for t in range(1, 11):
            for e in emus:
                e.tick(float(t), readings(t))
        for i in range(3):
            observer.wait_for(lambda m, i=i: m[0] == topics.topic(site, f"c{i}", topics.COUNTS))
            observer.wait_for(lambda m, i=i: m[0] == topics.topic(site, f"c{i}", topics.STATUS))
        plan = expiring(four_leg("c1").plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2))
        reply = topics.topic(site, "c1", topics.PLAN_RESULT)
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), plan.to_json(), response=reply,
                           correlation=b"g")
        result_on(observer, reply, msg.ACCEPTED, plan.plan_id)
        assert [e.stats.plans_accepted for e in emus] == [0, 1, 0]
    finally:
        for e in emus:
            e.stop()
        gateway.stop(discard_session=True)


def test_link_loss_publishes_the_will_falls_back_and_recovers(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        spec = four_leg()
        reply = topics.topic(site, "c1", topics.PLAN_RESULT)
        plan = expiring(spec.plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2))
        observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), plan.to_json(), response=reply,
                           correlation=b"l")
        result_on(observer, reply, msg.ACCEPTED, plan.plan_id)
        t = 0
        while emu.mode != msg.MODE_CENTRAL and t < 300:
            t += 1
            emu.tick(float(t), {})
        assert emu.mode == msg.MODE_CENTRAL
        # fault injection: cut the TCP connection under paho (no DISCONNECT packet, as in a cable cut)
        # (shutdown rather than close: closing the descriptor under paho's select may go unnoticed
        # until the keepalive, which made this test flaky on a loaded machine)
        emu._mqtt_link._client.socket().shutdown(socket.SHUT_RDWR)  # noqa: SLF001
        status_topic = topics.topic(site, "c1", topics.STATUS)
        observer.wait_for(lambda m: m[0] == status_topic and msg.decode_status(m[1]).state == msg.OFFLINE
                          and msg.decode_status(m[1]).detail == "connection lost", timeout=10)
        deadline = time.monotonic() + 10
        while emu.connected and time.monotonic() < deadline:  # paho's own view of the link
            time.sleep(0.02)
        t += 1
        emu.tick(float(t), {})
        assert emu.stats.fallbacks == 1 and emu.mode == msg.MODE_TOD
        # paho reconnects by itself and the controller announces itself again
        n_online = len([m for m in observer.on(status_topic) if msg.decode_status(m[1]).state == msg.ONLINE])
        observer.wait_for(lambda m: len([x for x in observer.on(status_topic)
                                         if msg.decode_status(x[1]).state == msg.ONLINE]) > n_online, timeout=15)
    finally:
        emu.stop(discard_session=True)


def test_a_plan_sent_while_the_controller_is_offline_is_delivered_on_reconnect(mqtt_url, site, observer):
    first = make_emulator(mqtt_url, site)
    first.start()
    first.stop()  # clean stop, session kept by the broker
    plan = expiring(four_leg().plan_from_splits([30.0, 12.0, 26.0, 12.0], version=2))
    reply = topics.topic(site, "c1", topics.PLAN_RESULT)
    observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), plan.to_json(), response=reply,
                       correlation=b"queued")
    second = make_emulator(mqtt_url, site)  # same controller, same client id: resumes the session
    second.start()
    try:
        accepted = result_on(observer, reply, msg.ACCEPTED, plan.plan_id)
        assert accepted[2].CorrelationData == b"queued"
    finally:
        second.stop(discard_session=True)


def test_conflict_in_the_driven_state_forces_flash_and_reports_it(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        emu.tick(1.0, {})
        real_step = emu.program.step
        emu.program.step = lambda now, presence=None: "GgGgGgGg"  # fault injection: a corrupted output
        assert emu.tick(2.0, {}) == "r" * 8
        emu.program.step = real_step
        assert emu.tick(3.0, {}) == "r" * 8  # latched
        assert emu.mode == msg.MODE_FLASH
        status_topic = topics.topic(site, "c1", topics.STATUS)
        flash = observer.wait_for(lambda m: m[0] == status_topic and msg.decode_status(m[1]).mode == msg.MODE_FLASH)
        assert "conflict" in msg.decode_status(flash[1]).detail
        events_topic = topics.topic(site, "c1", topics.EVENTS)
        observer.wait_for(lambda m: m[0] == events_topic and any(
            code == 173 for _, code, _ in msg.decode_events(m[1]).events))
    finally:
        emu.stop(discard_session=True)
