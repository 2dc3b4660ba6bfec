"""The Mosquitto configuration and ACL the field link needs in production.

Least privilege, written out per identity (the certificate's CN is the MQTT
username, ``use_identity_as_username``):

* a controller may **write** only its own ``counts``, ``events``, ``status``
  (and its last will there), ``plan/result`` and ``plan/active``, and **read**
  only its own ``plan/set``;
* ``ingest`` may only **read** telemetry (``counts``, ``events``, ``status``)
  of the site, directly or through a shared subscription;
* ``central`` may **write** ``plan/set`` and **read** ``plan/result``,
  ``plan/active`` and ``status``.

What Mosquitto 2.0.11 (the version here) does, measured by the tests: it
grants every SUBSCRIBE (SUBACK "Granted QoS 1" even for another controller's
plan topic) and enforces ``read`` on each *delivery*, so a controller
subscribed to ``tsc/v1/<site>/+/plan/set`` still receives only its own plans;
an unauthorised PUBLISH is dropped without telling the client. Brokers that
also check the SUBSCRIBE filter itself see a shared subscription with its
``$share/<group>/`` prefix, so every topic a service may read gets a second
``topic read $share/+/...`` line (harmless where it is not needed).

Identity binding: ``use_username_as_clientid true`` on the TLS listener
makes the MQTT client id the username, which ``use_identity_as_username``
made the certificate's CN. Whatever client id a client sends, its session is
the one named after its own certificate: one cabinet's key can never resume,
wipe or take over another client's session (Mosquitto has no option to
*refuse* a mismatching id; it replaces it. The dynamic-security plugin's
client-id binding only applies to password logins, which a certificate login
with ``use_identity_as_username`` skips).

Sizes: every packet, payload and per-client queue is bounded
(:data:`LIMITS`), so a client cannot grow the broker's memory with big or
many messages; see docs/security.md.

Topic strings are built with :mod:`traffic.topics`, never by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from traffic import messages, topics

if TYPE_CHECKING:  # pki imports this module (lazily) to write the broker files
    from traffic.security.pki import PkiLayout

__all__ = ["LIMITS", "BrokerLimits", "limit_lines", "OVERSIZE_LOG", "count_oversize", "CONTROLLER_WRITES",
           "CONTROLLER_READS", "INGEST_READS", "CENTRAL_WRITES", "CENTRAL_READS", "acl_text", "tls_listener_lines",
           "extra_listener_lines", "broker_config_text", "write_broker_files"]

CONTROLLER_WRITES = (topics.COUNTS, topics.EVENTS, topics.STATUS, topics.PLAN_RESULT, topics.PLAN_ACTIVE)
CONTROLLER_READS = (topics.PLAN_SET,)
INGEST_READS = (topics.COUNTS, topics.EVENTS, topics.STATUS)
CENTRAL_WRITES = (topics.PLAN_SET,)
CENTRAL_READS = (topics.PLAN_RESULT, topics.PLAN_ACTIVE, topics.STATUS)
_SHARE_ANY_GROUP = "$share/+/"


@dataclass(frozen=True)
class BrokerLimits:
    """Size bounds written into every generated broker configuration (bytes and message counts).

    * ``max_packet_size``: the largest MQTT packet of any kind, equal to the
      decoders' payload bound (``traffic.messages.MAX_PAYLOAD_BYTES``,
      256 KiB), so every PUBLISH the broker takes fits every decoder. A
      client sending a bigger packet is disconnected and the broker logs
      ``Client <id> disconnected due to oversize packet.`` (:data:`OVERSIZE_LOG`,
      counted by :func:`count_oversize`). MQTT 5 clients are told the bound in
      CONNACK (Maximum Packet Size).
    * ``max_queued_messages`` / ``max_queued_bytes``: per client, QoS 1
      messages held beyond those in flight (offline sessions, slow
      consumers); beyond either bound new messages for that client are
      dropped, so one slow or absent consumer costs at most 16 MiB.
    * ``max_inflight_messages``: unacknowledged QoS 1 messages per client.

    Why not ``message_size_limit`` as well: Mosquitto 2.0 deprecates it for
    ``max_packet_size``, and the PUBACK 0x83 it sends for a refused payload is
    not parsed by paho-mqtt 2.2 (the client drops its connection with
    "Protocol error" and re-sends the message after reconnecting, forever).
    """

    max_packet_size: int = messages.MAX_PAYLOAD_BYTES
    max_queued_messages: int = 1000
    max_queued_bytes: int = 16 * 1024 * 1024
    max_inflight_messages: int = 20


LIMITS = BrokerLimits()
#: what Mosquitto (2.0) logs when it disconnects a client for a packet over ``max_packet_size``
OVERSIZE_LOG = "disconnected due to oversize packet"


def limit_lines(limits: BrokerLimits = LIMITS) -> list[str]:
    """Global (not per-listener) size bounds, valid anywhere in a mosquitto.conf."""
    return [
        f"max_packet_size {limits.max_packet_size}",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_queued_bytes {limits.max_queued_bytes}",
        f"max_inflight_messages {limits.max_inflight_messages}",
    ]


def count_oversize(log_text: str) -> dict[str, int]:
    """Clients disconnected for an oversized packet, counted from a broker log: ``{client id: n}``."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        if OVERSIZE_LOG in line and "Client " in line:
            client = line.split("Client ", 1)[1].split(" ", 1)[0]
            counts[client] = counts.get(client, 0) + 1
    return counts


def _reads(filters: Iterable[str]) -> list[str]:
    out = []
    for f in filters:
        out.append(f"topic read {f}")
        out.append(f"topic read {_SHARE_ANY_GROUP}{f}")
    return out


def acl_text(site: str, controllers: Sequence[str], *, gateways: Sequence[str] = (),
             ingest: str | Sequence[str] = "ingest", central: str = "central") -> str:
    """The ACL file: one ``user`` block per controller, per field gateway and per central service.

    A gateway (``field_firmware_stubs.link.FieldGateway``: many emulated
    controllers over one connection, for load tests and big demos) gets a
    controller's rights for every controller of the site: grant it only
    where that is what the hardware really is.
    """
    lines = ["# written by 'traffic pki init' (traffic.security.mosquitto_config); regenerate, do not edit",
             "# no lines before the first 'user': anonymous clients get nothing"]
    for cid in controllers:
        lines += ["", f"user {topics.check_id(cid, 'controller id')}"]
        lines += [f"topic write {topics.topic(site, cid, leaf)}" for leaf in CONTROLLER_WRITES]
        lines += [f"topic read {topics.topic(site, cid, leaf)}" for leaf in CONTROLLER_READS]
    for gw in gateways:
        lines += ["", f"user {topics.check_id(gw, 'gateway')}"]
        lines += [f"topic write {topics.wildcard(site, leaf)}" for leaf in CONTROLLER_WRITES]
        lines += [f"topic read {topics.wildcard(site, leaf)}" for leaf in CONTROLLER_READS]
    for worker in ([ingest] if isinstance(ingest, str) else ingest):  # one identity per ingest worker
        lines += ["", f"user {topics.check_id(worker, 'service')}"]
        lines += _reads(topics.wildcard(site, leaf) for leaf in INGEST_READS)
    lines += ["", f"user {topics.check_id(central, 'service')}"]
    lines += [f"topic write {topics.wildcard(site, leaf)}" for leaf in CENTRAL_WRITES]
    lines += _reads(topics.wildcard(site, leaf) for leaf in CENTRAL_READS)
    return "\n".join(lines) + "\n"


def tls_listener_lines(layout: PkiLayout) -> list[str]:
    """Settings of a TLS listener that admits only clients with a certificate from our CA.

    Append them right after the ``listener`` line they belong to (Mosquitto
    applies listener options to the most recent ``listener``).
    """
    return [
        f"cafile {layout.ca_cert}",
        f"certfile {layout.server_cert}",
        f"keyfile {layout.server_key}",
        f"crlfile {layout.crl}",
        "require_certificate true",
        "use_identity_as_username true",
        # the client id becomes the username (= certificate CN): no client can take another's session
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        f"acl_file {layout.acl_file}",
    ]


def extra_listener_lines(layout: PkiLayout, port: int, bind: str = "127.0.0.1") -> list[str]:
    """A second, TLS-only listener (and the global size bounds) to append to another configuration.

    Used by ``SecureBroker`` on top of ``PrivateBroker``'s configuration.
    """
    return [*limit_lines(), f"listener {port} {bind}".rstrip(), *tls_listener_lines(layout)]


def broker_config_text(layout: PkiLayout, *, port: int, bind: str = "") -> str:
    """A complete mosquitto.conf for production: one TLS listener, no anonymous access."""
    listener = f"listener {port} {bind}".rstrip()
    lines = [
        "# written by 'traffic pki init' (traffic.security.mosquitto_config)",
        "# keys must be readable by the user mosquitto runs as (chown mosquitto the *.key files it uses)",
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence true",
        # Mosquitto saves sessions and queued messages on SIGTERM and then only every
        # autosave_interval seconds (default 1800): a crash loses what changed since
        "autosave_on_changes false",
        "autosave_interval 10",
        "set_tcp_nodelay true",
        *limit_lines(),
        listener,
        *tls_listener_lines(layout),
    ]
    return "\n".join(lines) + "\n"


def write_broker_files(layout: PkiLayout, *, site: str, controllers: Sequence[str],
                       port: int, gateways: Sequence[str] = (), ingest: Sequence[str] = ("ingest",),
                       ) -> tuple[Path, Path]:
    """Write ``acl`` and ``mosquitto.conf`` into the PKI folder; return their paths."""
    layout.acl_file.write_text(acl_text(site, controllers, gateways=gateways, ingest=ingest))
    layout.mosquitto_conf.write_text(broker_config_text(layout, port=port))
    return layout.acl_file, layout.mosquitto_conf
