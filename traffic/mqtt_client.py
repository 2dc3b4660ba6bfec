"""One place that builds paho-mqtt clients the way the project needs them.

Every MQTT user (field link, ingest, dispatcher) needs the same things:
paho-mqtt 2.x callbacks (``CallbackAPIVersion.VERSION2``), MQTT 5,
credentials and TLS client certificates from :class:`MqttSettings`, a bounded
reconnect back-off, and TLS errors mapped into the project's exception tree.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from traffic.config import MqttSettings
from traffic.errors import TransportError


def new_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False,
               max_reconnect_delay_s: int = 10) -> mqtt.Client:
    """A configured (not yet connected) MQTT 5 client; raises TransportError on bad TLS material."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    client.reconnect_delay_set(min_delay=1, max_delay=max_reconnect_delay_s)
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_file or None, certfile=settings.cert_file or None,
                           keyfile=settings.key_file or None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise TransportError(f"cannot set up TLS for {client_id}: {exc}") from exc
    return client


def disconnect(client: mqtt.Client, *, end_session: bool = False) -> None:
    """Disconnect cleanly and stop the network loop.

    ``end_session`` sends SessionExpiryInterval 0 with the DISCONNECT so the
    broker drops the persistent session (and stops queueing for it); without
    it the session survives for the next connection under the same id.
    """
    props = None
    if end_session:
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
    try:
        client.disconnect(properties=props)
    finally:
        client.loop_stop()
