"""Dispatcher against the real broker and a tiny fake field written here."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.dispatch import Dispatcher
from controller.examples import four_leg
from traffic import messages, topics
from traffic.config import MqttSettings
from traffic.errors import DispatchError, TransportError, UnsafePlanError
from traffic.plan import TimingPlan

SPEC = four_leg("c1")


class FakeField:
    """Subscribes to plan/set and answers on the response topic with the correlation data.

    ``mode``: "accept" (accepted, then applied + retained plan/active), "slow"
    (the same, applied a second later), "reject" (rejected with a rule) or
    "silent" (never answers). Records every plan received.
    """

    def __init__(self, url: str, site: str, controller_id: str, mode: str) -> None:
        self.site, self.cid, self.mode = site, controller_id, mode
        self.received: list[tuple[TimingPlan, Properties]] = []
        self.ready = threading.Event()
        settings = MqttSettings(url=url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"field-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.topic(site, controller_id, topics.PLAN_SET),
                                                                     qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self.ready.wait(5), "fake field could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        plan = TimingPlan.from_json(msg.payload)
        self.received.append((plan, msg.properties))
        if self.mode == "silent":
            return
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        reply_to = msg.properties.ResponseTopic
        if self.mode == "reject":
            result = messages.PlanResult(self.cid, plan.plan_id, messages.REJECTED, rule="YELLOW", reason="too short")
            client.publish(reply_to, result.to_json(), qos=1, properties=props)
            return
        client.publish(reply_to, messages.PlanResult(self.cid, plan.plan_id, messages.ACCEPTED).to_json(),
                       qos=1, properties=props)

        def apply() -> None:  # "next cycle boundary", from another thread so "accepted" leaves at once
            client.publish(reply_to, messages.PlanResult(self.cid, plan.plan_id, messages.APPLIED).to_json(),
                           qos=1, properties=props)
            client.publish(topics.topic(self.site, self.cid, topics.PLAN_ACTIVE), plan.to_json(), qos=1, retain=True)

        timer = threading.Timer(1.0 if self.mode == "slow" else 0.2, apply)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        active = topics.topic(self.site, self.cid, topics.PLAN_ACTIVE)
        self.client.publish(active, b"", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def dispatcher(mqtt_url, site):
    with Dispatcher(MqttSettings(url=mqtt_url), site, client_id=f"central-{uuid.uuid4().hex[:8]}") as d:
        yield d


@pytest.fixture
def field(mqtt_url, site, request):
    f = FakeField(mqtt_url, site, "c1", request.param)
    yield f
    f.close()


@pytest.mark.parametrize("field", ["accept"], indirect=True)
def test_accepted_then_applied(dispatcher, field, site):
    plan = SPEC.plan_from_splits([40.0, 30.0], version=2)
    result = dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=5)
    assert result.status == messages.ACCEPTED and result.plan_id == plan.plan_id
    applied = dispatcher.await_applied(plan.plan_id, 5)
    assert applied.status == messages.APPLIED
    # what the field got: the same plan, with MQTT 5 request/response properties
    got, props = field.received[0]
    assert got.plan_id == plan.plan_id and got.phases == plan.phases and got.expires_at is not None
    assert props.CorrelationData == plan.plan_id.encode()
    assert props.ResponseTopic == topics.topic(site, "c1", topics.PLAN_RESULT)
    assert 0 < props.MessageExpiryInterval <= 60
    # the dispatcher's view of the field follows the retained plan/active
    deadline = time.monotonic() + 5
    while dispatcher.field_active("c1") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dispatcher.field_active("c1").plan_id == plan.plan_id
    assert [r.status for r in dispatcher.results(plan.plan_id)] == ["accepted", "applied"]


@pytest.mark.parametrize("field", ["accept"], indirect=True)
def test_a_resend_waits_for_its_own_answer_not_the_first_sends(dispatcher, field):
    """Re-sending a plan (after a field fallback) must not return the answers to the first send."""
    plan = SPEC.plan_from_splits([40.0, 30.0], version=2)
    assert dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=5).status == messages.ACCEPTED
    assert dispatcher.await_applied(plan.plan_id, 5).status == messages.APPLIED
    # the field falls back to its own plan (and says so on plan/active) ...
    tod = SPEC.plan_from_splits([35.0, 35.0], version=1, created_by="field-tod")
    field.client.publish(topics.topic(field.site, field.cid, topics.PLAN_ACTIVE), tod.to_json(), qos=1,
                         retain=True).wait_for_publish(2)
    deadline = time.monotonic() + 5
    while dispatcher.field_active("c1").plan_id != tod.plan_id and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dispatcher.field_active("c1").plan_id == tod.plan_id
    field.mode = "silent"  # ... then takes the re-send but has not answered it yet
    with pytest.raises(DispatchError, match="no answer"):
        dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=0.8)
    assert len(field.received) == 2
    field.mode = "reject"  # this time it answers: the re-send gets that answer
    assert dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=5).status == messages.REJECTED


@pytest.mark.parametrize("field", ["reject"], indirect=True)
def test_rejected_with_rule(dispatcher, field):
    plan = SPEC.plan_from_splits([40.0, 30.0], version=2)
    result = dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=5)
    assert result.status == messages.REJECTED and result.rule == "YELLOW"
    assert dispatcher.await_applied(plan.plan_id, 1).status == messages.REJECTED


@pytest.mark.parametrize("field", ["silent"], indirect=True)
def test_timeout_when_field_does_not_answer(dispatcher, field):
    plan = SPEC.plan_from_splits([40.0, 30.0], version=2)
    started = time.monotonic()
    with pytest.raises(DispatchError, match="no answer"):
        dispatcher.dispatch(plan, SPEC, expiry_s=60, timeout_s=0.8)
    assert time.monotonic() - started >= 0.8
    assert len(field.received) == 1  # it was delivered, just not answered
    with pytest.raises(DispatchError):
        dispatcher.await_applied(plan.plan_id, 0.2)


@pytest.mark.parametrize("field", ["silent"], indirect=True)
def test_unsafe_plan_is_never_published(dispatcher, field):
    safe = SPEC.plan_from_splits([40.0, 30.0], version=2)
    phases = list(safe.phases)
    phases[1] = replace(phases[1], phaseYellowChange=2.0)
    unsafe = replace(safe, phases=tuple(phases), plan_id=uuid.uuid4().hex)
    with pytest.raises(UnsafePlanError) as info:
        dispatcher.dispatch(unsafe, SPEC, expiry_s=60, timeout_s=0.5)
    assert info.value.rules == ["YELLOW"]
    # the listener works: a safe plan sent afterwards arrives, the unsafe one never did
    with pytest.raises(DispatchError):
        dispatcher.dispatch(safe, SPEC, expiry_s=60, timeout_s=0.5)
    assert [p.plan_id for p, _ in field.received] == [safe.plan_id]


def test_bad_messages_are_ignored_not_fatal(dispatcher, mqtt_url, site):
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    settings = MqttSettings(url=mqtt_url)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        for leaf in (topics.PLAN_RESULT, topics.PLAN_ACTIVE, topics.STATUS):
            client.publish(topics.topic(site, "c9", leaf), b"\xff not json", qos=1).wait_for_publish(2)
        status = messages.StatusMessage("c9", messages.ONLINE, mode=messages.MODE_TOD)
        client.publish(topics.topic(site, "c9", topics.STATUS), status.to_json(), qos=1).wait_for_publish(2)
        deadline = time.monotonic() + 5
        while dispatcher.field_status("c9") is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    assert dispatcher.bad_messages == 3
    assert dispatcher.field_status("c9").state == messages.ONLINE


def test_unreachable_broker_is_a_transport_error(site):
    d = Dispatcher(MqttSettings(url="mqtt://127.0.0.1:1"), site, client_id="central-x", connect_timeout_s=1)
    with pytest.raises(TransportError):
        d.connect()
