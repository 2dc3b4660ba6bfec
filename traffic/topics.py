"""MQTT topic names: device-centric, lowercase, versioned.

``tsc/v1/<site>/<controller>/<leaf>``. Topics are built and parsed here and
nowhere else, so no other module holds a magic topic string. See
``docs/asyncapi.yaml`` for payloads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from traffic.errors import MessageError

ROOT = "tsc"
VERSION = "v1"

COUNTS = "counts"          # field -> centre, QoS 1: interval detector counts
EVENTS = "events"          # field -> centre, QoS 1: Indiana hi-res event batches
STATUS = "status"          # field -> centre, QoS 1, retained, last will "offline"
PLAN_SET = "plan/set"      # centre -> field, QoS 1, MQTT 5 response topic + correlation data + expiry
PLAN_RESULT = "plan/result"  # field -> centre, QoS 1: accepted / rejected / applied
PLAN_ACTIVE = "plan/active"  # field -> centre, QoS 1, retained: the plan in force

TELEMETRY_LEAVES = (COUNTS, EVENTS, STATUS, PLAN_RESULT, PLAN_ACTIVE)

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid topic level (lowercase, no wildcards)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise MessageError(f"invalid {what} {value!r}: use 1-64 of [a-z0-9_-]")
    return value


def topic(site: str, controller_id: str, leaf: str) -> str:
    """Topic for one controller's ``leaf`` (one of the constants above)."""
    return f"{ROOT}/{VERSION}/{check_id(site, 'site')}/{check_id(controller_id, 'controller id')}/{leaf}"


def wildcard(site: str | None, leaf: str) -> str:
    """Subscription filter for ``leaf`` of every controller (of one site, or all sites)."""
    return f"{ROOT}/{VERSION}/{site or '+'}/+/{leaf}"


def shared(group: str, topic_filter: str) -> str:
    """MQTT 5 shared subscription so several consumers split the load."""
    return f"$share/{check_id(group, 'share group')}/{topic_filter}"


@dataclass(frozen=True)
class ParsedTopic:
    site: str
    controller_id: str
    leaf: str


def parse(topic_name: str) -> ParsedTopic:
    """Split a concrete topic into site, controller and leaf; raise MessageError if foreign."""
    parts = topic_name.split("/")
    if len(parts) < 5 or parts[0] != ROOT or parts[1] != VERSION:
        raise MessageError(f"not a {ROOT}/{VERSION} topic: {topic_name!r}")
    site, controller_id, leaf = parts[2], parts[3], "/".join(parts[4:])
    check_id(site, "site")
    check_id(controller_id, "controller id")
    if leaf not in TELEMETRY_LEAVES and leaf != PLAN_SET:
        raise MessageError(f"unknown topic leaf {leaf!r} in {topic_name!r}")
    return ParsedTopic(site, controller_id, leaf)
