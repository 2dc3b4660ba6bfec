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

Topic strings are built with :mod:`traffic.topics`, never by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from traffic import topics

__all__ = ["CONTROLLER_WRITES", "CONTROLLER_READS", "INGEST_READS", "CENTRAL_WRITES", "CENTRAL_READS",
           "acl_text", "tls_listener_lines", "extra_listener_lines", "broker_config_text", "write_broker_files"]

CONTROLLER_WRITES = (topics.COUNTS, topics.EVENTS, topics.STATUS, topics.PLAN_RESULT, topics.PLAN_ACTIVE)
CONTROLLER_READS = (topics.PLAN_SET,)
INGEST_READS = (topics.COUNTS, topics.EVENTS, topics.STATUS)
CENTRAL_WRITES = (topics.PLAN_SET,)
CENTRAL_READS = (topics.PLAN_RESULT, topics.PLAN_ACTIVE, topics.STATUS)
_SHARE_ANY_GROUP = "$share/+/"


def _reads(filters: Iterable[str]) -> list[str]:
    out = []
    for f in filters:
        out.append(f"topic read {f}")
        out.append(f"topic read {_SHARE_ANY_GROUP}{f}")
    return out


def acl_text(site: str, controllers: Sequence[str], *, gateways: Sequence[str] = (), ingest: str = "ingest",
             central: str = "central") -> str:
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
    lines += ["", f"user {topics.check_id(ingest, 'service')}"]
    lines += _reads(topics.wildcard(site, leaf) for leaf in INGEST_READS)
    lines += ["", f"user {topics.check_id(central, 'service')}"]
    lines += [f"topic write {topics.wildcard(site, leaf)}" for leaf in CENTRAL_WRITES]
    lines += _reads(topics.wildcard(site, leaf) for leaf in CENTRAL_READS)
    return "\n".join(lines) + "\n"


def tls_listener_lines(layout: "PkiLayout") -> list[str]:  # noqa: F821 - type only
    """Settings of a TLS listener that admits only clients with a certificate from our CA.

    Append them right after the ``listener`` line they belong to (Mosquitto
    applies listener options to the most recent ``listener``).
    """
    return [
        f"cafile {layout.ca_cert}",
        f"certfile {layout.server_cert}",
        f"keyfile {layout.server_key}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        f"acl_file {layout.acl_file}",
    ]


def extra_listener_lines(layout: "PkiLayout", port: int, bind: str = "127.0.0.1") -> list[str]:  # noqa: F821
    """A second, TLS-only listener to append to another configuration (tests, ``PrivateBroker``)."""
    return [f"listener {port} {bind}".rstrip(), *tls_listener_lines(layout)]


def broker_config_text(layout: "PkiLayout", *, port: int, bind: str = "") -> str:  # noqa: F821
    """A complete mosquitto.conf for production: one TLS listener, no anonymous access."""
    listener = f"listener {port} {bind}".rstrip()
    lines = [
        "# written by 'traffic pki init' (traffic.security.mosquitto_config)",
        "# keys must be readable by the user mosquitto runs as (chown mosquitto the *.key files it uses)",
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence true",
        "set_tcp_nodelay true",
        listener,
        *tls_listener_lines(layout),
    ]
    return "\n".join(lines) + "\n"


def write_broker_files(layout: "PkiLayout", *, site: str, controllers: Sequence[str],  # noqa: F821
                       port: int, gateways: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write ``acl`` and ``mosquitto.conf`` into the PKI folder; return their paths."""
    layout.acl_file.write_text(acl_text(site, controllers, gateways=gateways))
    layout.mosquitto_conf.write_text(broker_config_text(layout, port=port))
    return layout.acl_file, layout.mosquitto_conf
