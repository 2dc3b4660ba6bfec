"""MQTT transport for field emulators: one client per controller, or one gateway for many.

Kept apart from the emulator so the emulator's logic does not depend on how
many controllers share a connection. paho-mqtt 2.x with the VERSION2
callback API and MQTT 5:

* ``clean_start=False`` plus a session expiry, so QoS 1 plan commands sent
  while a controller is briefly offline are delivered when it reconnects;
* a retained last will ``offline`` on the controller's status topic (single
  client mode only: a connection has one will, so a :class:`FieldGateway`
  publishes ``offline`` for its controllers on a clean stop but cannot
  announce a crash per controller);
* every callback is wrapped so one exception is logged and cannot stop the
  network loop;
* :meth:`MqttLink.publish_tracked` returns the message id and
  :meth:`MqttLink.take_result` the PUBACK reason code for it: ``0x10`` *No
  matching subscribers* means the broker dropped the message (after a broker
  restart Mosquitto has no shared subscriptions until the consumers
  subscribe again), which the field's telemetry outbox
  (:mod:`field_firmware_stubs.outbox`) turns into a re-send.

Limits: one :class:`MqttLink` is a TCP connection plus a paho network thread
(about 1 thread and ~100 KB each), fine for a demo of a handful of
controllers; for hundreds in one process use :class:`FieldGateway`, which
multiplexes all of them over one connection and one thread (plan commands
are routed by the controller level of the topic).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from traffic import topics
from traffic.config import MqttSettings
from traffic.errors import MessageError, TransportError
from traffic.mqtt_client import disconnect, new_client

__all__ = ["Endpoint", "PlanHandler", "MqttLink", "FieldGateway", "publish_properties", "response_fields",
           "DEFAULT_SESSION_EXPIRY_S"]

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 3600
CONNECT_TIMEOUT_S = 10.0
#: PUBACK results kept for take_result(); older ones (untracked status/plan answers) are forgotten
_RESULTS_KEPT = 8192

# (payload, response_topic, correlation_data)
PlanHandler = Callable[[bytes, "str | None", "bytes | None"], None]


class Endpoint(Protocol):
    """What an emulator needs from its transport.

    One that also has ``publish_tracked`` and ``take_result``
    (:class:`field_firmware_stubs.outbox.TrackedEndpoint`: :class:`MqttLink`
    and a :class:`FieldGateway` port do) gets the telemetry outbox; others
    (an in-process bus) are published to directly.
    """

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> bool: ...


def publish_properties(correlation_data: bytes | None = None) -> Properties | None:
    """PUBLISH properties carrying MQTT 5 correlation data (None when there is none)."""
    if correlation_data is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = correlation_data
    return props


class MqttLink:
    """One paho client: connect, keep the session, subscribe, publish, route callbacks."""

    def __init__(self, settings: MqttSettings, *, client_id: str, subscriptions: tuple[str, ...],
                 on_message: Callable[[str, bytes, Properties | None], None],
                 on_connect: Callable[[], None] | None = None,
                 on_disconnect: Callable[[], None] | None = None,
                 will: tuple[str, bytes] | None = None,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S) -> None:
        self._settings = settings
        self._subscriptions = subscriptions
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._session_expiry_s = session_expiry_s
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._pending_mids: set[int] = set()
        self._connect_error: str = ""
        self._started = False
        self._last_info: mqtt.MQTTMessageInfo | None = None
        self._closing = False
        # PUBACK reason codes by message id, written on the network thread; never held around
        # client.publish (paho calls on_publish holding its own message lock)
        self._results: OrderedDict[int, int] = OrderedDict()
        self._results_lock = threading.Lock()
        client = new_client(settings, client_id)
        client.max_queued_messages_set(0)  # unlimited: QoS 1 telemetry waits out a short outage
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        self._client = client
        self.client_id = client_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and start the network thread; raise TransportError if no CONNACK in time."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        try:
            self._client.connect(self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s,
                                 clean_start=False, properties=props)
        except (OSError, ValueError) as exc:
            raise TransportError(f"{self.client_id}: cannot connect to {self._settings.host}:"
                                 f"{self._settings.port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        # wait for the subscriptions too: a command sent right after start() must not be lost
        if not (self._connected.wait(timeout_s) and self._subscribed.wait(timeout_s)):
            self.stop()
            raise TransportError(f"{self.client_id}: no CONNACK/SUBACK from {self._settings.host}:"
                                 f"{self._settings.port} within {timeout_s} s {self._connect_error}".rstrip())

    def stop(self, *, discard_session: bool = False) -> None:
        """Disconnect cleanly (no last will) and stop the network thread.

        ``discard_session`` asks the broker to drop the persistent session
        (tests and decommissioning); a controller restarting keeps it.
        """
        if not self._started:
            return
        self._closing = True
        last = self._last_info
        if last is not None and self.connected:
            try:  # let queued QoS 1 messages (the final "offline" status) reach the broker first
                last.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                log.warning("%s: last message not acknowledged before disconnect", self.client_id)
        try:
            disconnect(self._client, end_session=discard_session)
        finally:
            self._started = False
            self._connected.clear()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> bool:
        """Queue a message; False if paho refused it (it is then lost, and logged)."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except (ValueError, RuntimeError) as exc:
            log.error("%s: publish to %s failed: %s", self.client_id, topic, exc)
            return False
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.error("%s: publish to %s failed: %s", self.client_id, topic, mqtt.error_string(info.rc))
            return False
        self._last_info = info
        return True  # NO_CONN with QoS 1: paho keeps it queued and sends it after reconnecting

    def publish_tracked(self, topic: str, payload: bytes, *, qos: int = 1) -> int | None:
        """Publish (QoS >= 1) and return the message id whose PUBACK :meth:`take_result` reports; None if refused."""
        try:
            info = self._client.publish(topic, payload, qos=max(1, qos))
        except (ValueError, RuntimeError) as exc:
            log.error("%s: publish to %s failed: %s", self.client_id, topic, exc)
            return None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.error("%s: publish to %s failed: %s", self.client_id, topic, mqtt.error_string(info.rc))
            return None
        self._last_info = info
        return int(info.mid)

    def take_result(self, mid: int) -> int | None:
        """PUBACK reason code of message ``mid`` (0 success, 0x10 no matching subscribers, ...), once; else None."""
        with self._results_lock:
            return self._results.pop(mid, None)

    # ---------------------------------------------------------------- callbacks
    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            if reason_code.is_failure:
                self._connect_error = f"(refused: {reason_code})"
                log.error("%s: connection refused: %s", self.client_id, reason_code)
                return
            if self._subscriptions:
                result, mid = client.subscribe([(f, 1) for f in self._subscriptions])
                if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_mids.add(mid)
            else:
                self._subscribed.set()
            self._connected.set()
            if self._on_connect_cb:
                self._on_connect_cb()
        except Exception:  # noqa: BLE001 - a callback must never kill the network loop
            log.exception("%s: on_connect handler failed", self.client_id)

    def _handle_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        try:
            failed = [str(rc) for rc in reason_codes if rc.is_failure]
            if failed:
                log.error("%s: subscription refused: %s", self.client_id, ", ".join(failed))
                return
            self._pending_mids.discard(mid)
            if not self._pending_mids:
                self._subscribed.set()
        except Exception:  # noqa: BLE001
            log.exception("%s: on_subscribe handler failed", self.client_id)

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        try:
            value = int(getattr(reason_code, "value", 0))
            with self._results_lock:
                self._results[mid] = value
                self._results.move_to_end(mid)
                while len(self._results) > _RESULTS_KEPT:
                    self._results.popitem(last=False)
        except Exception:  # noqa: BLE001
            log.exception("%s: on_publish handler failed", self.client_id)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            # tell the owner first: whoever sees ``connected`` go false must find the link loss already
            # recorded (the emulator's next tick falls back on it; the other order raced that tick)
            if self._on_disconnect_cb:
                self._on_disconnect_cb()
        except Exception:  # noqa: BLE001
            log.exception("%s: on_disconnect handler failed", self.client_id)
        finally:
            self._connected.clear()
        level = logging.INFO if self._closing or not reason_code.is_failure else logging.WARNING
        log.log(level, "%s: disconnected (%s)", self.client_id, reason_code)

    def _handle_message(self, client, userdata, message) -> None:
        try:
            self._on_message_cb(message.topic, bytes(message.payload), getattr(message, "properties", None))
        except Exception:  # noqa: BLE001
            log.exception("%s: message handler failed for %s", self.client_id, message.topic)


def response_fields(properties: Properties | None) -> tuple[str | None, bytes | None]:
    """MQTT 5 response topic and correlation data of a received message, if any."""
    if properties is None:
        return None, None
    response = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    return (response or None), (bytes(correlation) if correlation is not None else None)


class _GatewayPort:
    """An emulator's view of a shared gateway connection."""

    def __init__(self, gateway: FieldGateway) -> None:
        self._gateway = gateway

    @property
    def connected(self) -> bool:
        return self._gateway.connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> bool:
        return self._gateway.link.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def publish_tracked(self, topic: str, payload: bytes, *, qos: int = 1) -> int | None:
        return self._gateway.link.publish_tracked(topic, payload, qos=qos)

    def take_result(self, mid: int) -> int | None:
        return self._gateway.link.take_result(mid)


class FieldGateway:
    """One MQTT connection shared by many emulators of one site (load tests, big demos).

    Subscribes once to ``tsc/v1/<site>/+/plan/set`` and routes each command
    to the registered controller. Register emulators (``FieldEmulator(...,
    gateway=gw)`` does it in ``start()``) before or after :meth:`start`.
    """

    def __init__(self, mqtt_settings: MqttSettings, *, site: str, client_id: str | None = None,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S) -> None:
        self.site = topics.check_id(site, "site")
        self._handlers: dict[str, tuple[PlanHandler, Callable[[], None], Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self.link = MqttLink(mqtt_settings, client_id=client_id or f"field-gw-{site}-{uuid.uuid4().hex[:8]}",
                             subscriptions=(topics.wildcard(site, topics.PLAN_SET),),
                             on_message=self._route, on_connect=self._connected_all,
                             on_disconnect=self._disconnected_all, session_expiry_s=session_expiry_s)

    @property
    def connected(self) -> bool:
        return self.link.connected

    def register(self, controller_id: str, on_plan: PlanHandler, on_connect: Callable[[], None],
                 on_disconnect: Callable[[], None]) -> Endpoint:
        """Attach one controller; returns the endpoint it publishes through."""
        with self._lock:
            self._handlers[controller_id] = (on_plan, on_connect, on_disconnect)
        if self.connected:
            on_connect()
        return _GatewayPort(self)

    def unregister(self, controller_id: str) -> None:
        with self._lock:
            self._handlers.pop(controller_id, None)

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.link.start(timeout_s)

    def stop(self, *, discard_session: bool = False) -> None:
        self.link.stop(discard_session=discard_session)

    def _route(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        try:
            parsed = topics.parse(topic)
        except MessageError as exc:
            log.warning("gateway %s: ignoring message on %s: %s", self.site, topic, exc)
            return
        with self._lock:
            handlers = self._handlers.get(parsed.controller_id)
        if handlers is None:
            log.warning("gateway %s: plan for unknown controller %s", self.site, parsed.controller_id)
            return
        response, correlation = response_fields(properties)
        handlers[0](payload, response, correlation)

    def _connected_all(self) -> None:
        with self._lock:
            callbacks = [h[1] for h in self._handlers.values()]
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001
                log.exception("gateway %s: on_connect of a controller failed", self.site)

    def _disconnected_all(self) -> None:
        with self._lock:
            callbacks = [h[2] for h in self._handlers.values()]
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001
                log.exception("gateway %s: on_disconnect of a controller failed", self.site)
