"""Generate ``docs/asyncapi.yaml`` from the wire Structs (:mod:`traffic.wire`) and the topic names.

``python -m traffic.contract > docs/asyncapi.yaml`` rewrites it;
``tests/test_wire_contract.py`` fails when the committed file differs from
what this produces, and validates real messages of every type against the
generated schemas. Payload schemas are JSON Schema draft 2020-12
(``schemaFormat`` on each message), produced by ``msgspec.json.schema_components``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from traffic import topics, wire
from traffic.security.mosquitto_config import LIMITS

__all__ = ["document", "render", "SCHEMA_FORMAT"]

SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
_REF = "#/components/schemas/{name}"

# channel id -> (topic leaf, message id, struct, description, retained)
_CHANNELS: list[tuple[str, str, str, type[msgspec.Struct], str]] = [
    ("counts", topics.COUNTS, "countReport", wire.CountsV1,
     "Interval detector counts, one message per controller per interval (field -> centre, QoS 1)."),
    ("events", topics.EVENTS, "eventBatch", wire.EventsV1,
     "Indiana hi-resolution controller events (field -> centre, QoS 1)."),
    ("status", topics.STATUS, "status", wire.StatusV1,
     "Retained controller status (field -> centre, QoS 1, retained). The broker publishes state=offline as the "
     "client's last will."),
    ("planSet", topics.PLAN_SET, "timingPlan", wire.PlanV1,
     "A signed timing plan for one controller (centre -> field, QoS 1). MQTT 5 properties: CorrelationData (the "
     "plan_id as bytes), MessageExpiryInterval (s). ResponseTopic is set to .../plan/result, but the field "
     "always answers on its own plan/result topic whatever it says. The plan passed the central safety check "
     "(and the simulation gate) before it was signed; the field verifies the signature and checks it again."),
    ("planResult", topics.PLAN_RESULT, "planResult", wire.PlanResultV1,
     "The field's answer (field -> centre, QoS 1) with the command's CorrelationData."),
    ("planActive", topics.PLAN_ACTIVE, "activePlan", wire.PlanV1,
     "Retained copy of the plan in force (field -> centre), same payload as plan/set."),
]
_CENTRE_SENDS = {"planSet"}

_DESCRIPTION = f"""\
Device-centric, versioned MQTT 5 topics between field controllers (or their
emulators in field_firmware_stubs/) and the central system, generated from
traffic/wire.py by traffic/contract.py (do not edit by hand).

Every payload is a UTF-8 JSON object carrying a `schema` field `<name>/<major>`.
Times are ISO-8601 with a UTC offset; durations are seconds (a number: 40 and
40.0 are the same value). QoS 1 everywhere; handlers are idempotent (counts
keyed by controller, detector, interval start; event batches by sequence
number; plans by plan_id and version). Topics are built only in traffic/topics.py.

Limits (the code's, enforced by the decoders and the broker):
* payload at most {wire.MAX_PAYLOAD_BYTES} bytes (256 KiB); the broker's max_packet_size is
  {LIMITS.max_packet_size} bytes, so a larger PUBLISH disconnects its sender;
* counts: at most {wire.MAX_RECORDS} records, count 0..10000, occupancy 0..100 %;
* events: at most {wire.MAX_EVENTS} per batch, code 0..255, parameter 0..65535;
* identifiers (controller_id, detector_id) 1-64 printable characters; topic levels
  (site, controller) 1-64 of [a-z0-9_-];
* broker queues per client: {LIMITS.max_queued_messages} messages and {LIMITS.max_queued_bytes} bytes.

Plans: `signature` is `ed25519-jcs:<key id>:<base64url>`, an Ed25519 signature over
the RFC 8785 (JCS) canonical JSON of the plan object without `signature`
(docs/security.md, test vectors in docs/signing-test-vectors.json). The field
refuses a plan that is unsigned (when it trusts a key), expired, without
`expires_at`, for another controller, replayed or of an older version.
`created_at` is informative (when the plan was made).

Security: production brokers listen only on mqtts (TLS, port 8883) and require a
client certificate from the site's CA; the certificate's CN is the MQTT username
and the client id, and the ACL lets a controller write only its own telemetry and
read only its own plan/set (docs/security.md).
"""


def _payload_schemas() -> tuple[dict[type[msgspec.Struct], dict[str, Any]], dict[str, Any]]:
    structs = [c[3] for c in _CHANNELS]
    refs, components = msgspec.json.schema_components(list(dict.fromkeys(structs)), ref_template=_REF)
    by_struct = dict(zip(dict.fromkeys(structs), refs, strict=True))  # one schema per struct
    return by_struct, components


def document() -> dict[str, Any]:
    by_struct, schemas = _payload_schemas()
    params = {"site": {"description": "site id (topic level)"},
              "controller": {"description": "controller id (topic level) = the controller's certificate CN"}}
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for cid, leaf, mid, struct, description in _CHANNELS:
        if mid not in messages:
            messages[mid] = {"name": mid, "title": struct.__doc__.split(":")[0] if struct.__doc__ else mid,
                             "summary": (struct.__doc__ or "").strip(), "contentType": "application/json",
                             "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": by_struct[struct]}}
        channels[cid] = {"address": f"{topics.ROOT}/{topics.VERSION}/{{site}}/{{controller}}/{leaf}",
                         "description": description, "parameters": params,
                         "messages": {mid: {"$ref": f"#/components/messages/{mid}"}}}
        action = "send" if cid in _CENTRE_SENDS else "receive"
        operations[f"{action}{cid[0].upper()}{cid[1:]}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"the centre {'publishes' if action == 'send' else 'subscribes to'} {leaf}",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Open traffic signal control — field link", "version": "1.1.0",
                 "description": _DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "production": {"host": "mqtt.example.org:8883", "protocol": "secure-mqtt", "protocolVersion": "5",
                           "description": "TLS 1.2+, client certificate required (mutual TLS)",
                           "security": [{"$ref": "#/components/securitySchemes/mtls"}]},
            "development": {"host": "127.0.0.1:1883", "protocol": "mqtt", "protocolVersion": "5",
                            "description": "local plaintext broker for development and tests only"},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {"mtls": {"type": "X509", "description": (
                "Client certificate issued by the site's CA ('traffic pki init'); CN = controller id or service "
                "name (central, ingest, ingest-N) = MQTT username = client id; revoked certificates are in the "
                "broker's crlfile.")}},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (readable descriptions)."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    """The YAML text of :func:`document` (stable: keys in the order built, wide lines)."""
    header = "# generated by 'python -m traffic.contract' from traffic/wire.py; do not edit\n"
    return header + yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
