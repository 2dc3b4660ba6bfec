"""The wire contract of the field link, in one place: one msgspec Struct per message type.

Both sides come from these Structs:

* the decoders: :mod:`traffic.messages` (``decode_counts`` ... ``decode_result``)
  and :meth:`traffic.plan.TimingPlan.from_dict` finish with :func:`conform`,
  so nothing they accept breaks the published schema;
* the documentation: ``docs/asyncapi.yaml`` is generated from them by
  :mod:`traffic.contract` (``python -m traffic.contract``), and a test keeps the
  committed file equal to the generated one.

Bounds are the code's own (``messages.MAX_*``, ``plan.MAX_VERSION``). What a
JSON schema cannot say (``motorcycle_count <= count``, unique detectors,
``patternCycleTime`` = sum of ``splitTime``, identifiers printable, times with
a UTC offset) the decoders check by hand and the descriptions state.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from traffic.errors import MessageError

__all__ = ["Ident", "CountRecordV1", "CountsV1", "EventsV1", "StatusV1", "PlanResultV1", "PhaseV1", "PlanV1",
           "MESSAGES", "conform", "MAX_PAYLOAD_BYTES", "MAX_RECORDS", "MAX_EVENTS"]

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_RECORDS = 256
MAX_EVENTS = 10_000
MAX_VERSION = 2**63 - 1

Ident = Annotated[str, Meta(min_length=1, max_length=64,
                            description="1-64 printable characters (no control or separator characters)")]
TopicId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                              description="topic level: 1-64 of [a-z0-9_-], starting with a letter or digit")]
Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"},
                           description="ISO-8601 with a UTC offset")]
Seconds = Annotated[float, Meta(description="seconds (integers and decimals are the same number)")]
Seq = Annotated[int, Meta(ge=0, description="increases by one per message of this controller")]


class CountRecordV1(msgspec.Struct, kw_only=True):
    """Counts of one detector over one interval."""

    detector_id: Ident
    count: Annotated[int, Meta(ge=0, le=10_000, description="vehicles of all classes")]
    occupancy_pct: Annotated[float, Meta(ge=0.0, le=100.0)]
    motorcycle_count: Annotated[int, Meta(ge=0, description="classifying detectors only; <= count")] | None = None


class CountsV1(msgspec.Struct, kw_only=True):
    """counts/1: every detector of one controller for one interval. Key: (controller, detector, interval_start)."""

    schema: Literal["counts/1"]
    controller_id: Ident
    seq: Seq
    interval_start: Time
    interval_s: Annotated[int, Meta(ge=1, le=3600)]
    records: Annotated[list[CountRecordV1], Meta(min_length=1, max_length=MAX_RECORDS,
                                                 description="detector ids unique within a report")]


Event = tuple[Time, Annotated[int, Meta(ge=0, le=255, description="Indiana hi-res event code")],
              Annotated[int, Meta(ge=0, le=65535, description="event parameter")]]


class EventsV1(msgspec.Struct, kw_only=True):
    """events/1: Indiana hi-resolution controller events [time, code, param] at 0.1 s."""

    schema: Literal["events/1"]
    controller_id: Ident
    seq: Annotated[int, Meta(description="batch sequence number")]
    events: Annotated[list[Event], Meta(max_length=MAX_EVENTS)]


class StatusV1(msgspec.Struct, kw_only=True):
    """status/1: retained controller status; the broker publishes state=offline as the last will."""

    schema: Literal["status/1"]
    controller_id: Ident
    state: Literal["online", "offline"]
    mode: Literal["central", "tod", "flash"] = "tod"
    plan_id: str | None = None
    plan_version: int | None = None
    at: Time | None = None
    detail: str = ""


class PlanResultV1(msgspec.Struct, kw_only=True):
    """plan-result/1: the field's answer to a plan command (with the command's CorrelationData)."""

    schema: Literal["plan-result/1"]
    controller_id: Ident
    plan_id: str
    status: Literal["accepted", "rejected", "applied"]
    rule: Annotated[str, Meta(description="rule id when rejected (SIGNATURE, EXPIRED, YELLOW, ...)")] | None = None
    reason: str = ""
    at: Annotated[str, Meta(extra_json_schema={"format": "date-time"},
                            description="for applied: the cycle boundary it took effect")] | None = None


class PhaseV1(msgspec.Struct, kw_only=True):
    """One phase (stage) of a plan: NTCIP 1202 names, seconds."""

    phase: int
    greens: Annotated[str, Meta(pattern="^[Ggr]+$",
                                description="per signal group: G protected, g permissive, r red")]
    splitTime: Annotated[Seconds, Meta(description="s: green + yellow change + red clearance")]
    phaseMinimumGreen: Seconds
    phaseMaximum1: Seconds
    phasePassage: Seconds
    phaseYellowChange: Seconds
    phaseRedClear: Seconds
    phaseWalk: Seconds = 0.0
    phasePedestrianClear: Seconds = 0.0


class PlanV1(msgspec.Struct, kw_only=True):
    """plan/1: a timing plan for one controller (centre -> field; the retained copy on plan/active)."""

    schema: Literal["plan/1"] = "plan/1"
    plan_id: Annotated[str, Meta(min_length=1)]
    controller_id: Annotated[str, Meta(min_length=1, description="must equal the topic's controller level")]
    version: Annotated[int, Meta(ge=0, le=MAX_VERSION, description=(
        "above the last central plan's version; a signed plan's version is at most 2**53 - 1 (RFC 8785 numbers)"))]
    phases: Annotated[list[PhaseV1], Meta(min_length=1)]
    patternCycleTime: Annotated[Seconds, Meta(description="s, equals the sum of splitTime")]
    patternOffsetTime: Seconds = 0.0
    splitCoordPhase: int = 1
    mode: Literal["pretimed", "actuated", "free"] = "pretimed"
    created_by: str = "unknown"
    reason: str = ""
    created_at: Time = ""
    expires_at: Annotated[Time, Meta(description="required by the field: it refuses a plan without one")] | None = None
    signature: Annotated[str, Meta(pattern="^ed25519-jcs:[0-9a-f]{16}:[A-Za-z0-9_-]{86}$", description=(
        "ed25519-jcs:<key id>:<base64url Ed25519 signature> over the RFC 8785 canonical JSON of the object "
        "without this member; see docs/signing-test-vectors.json"))] | None = None


#: schema name -> Struct: the message types of the field link
MESSAGES: dict[str, type[msgspec.Struct]] = {
    "counts/1": CountsV1, "events/1": EventsV1, "status/1": StatusV1, "plan-result/1": PlanResultV1,
    "plan/1": PlanV1,
}


def conform(data: Any, struct: type[msgspec.Struct]) -> None:
    """Raise MessageError unless ``data`` (a decoded JSON object) satisfies ``struct``'s schema."""
    try:
        msgspec.convert(data, struct)
    except msgspec.ValidationError as exc:
        raise MessageError(f"does not conform to the published schema: {exc}") from None
