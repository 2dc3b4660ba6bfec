"""From one MQTT message to rows, or to a dead letter. Pure, never raises.

This is the I/O-free half of ingest: given a topic and the raw payload it
decides what to store. Anything that cannot be used becomes a
:class:`~sensors.records.DeadLetter` carrying the reason and the raw bytes, so
a bad controller firmware or a fuzzing attacker costs one row in
``dead_letters`` and never a stopped consumer. Kept apart from the MQTT client
so it is unit- and fuzz-tested in-process.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sensors.fastpath import decode_count_rows
from sensors.records import Batch, DeadLetter, EventRow, StatusRow, safe_text
from traffic import messages, topics
from traffic.errors import MessageError

log = logging.getLogger(__name__)

# Payloads are kept whole in dead_letters up to this size; beyond it (the
# broker allows up to 256 MB) only the head is kept, and the reason says so,
# so one hostile message cannot bloat the database.
MAX_DEAD_LETTER_BYTES = 1024 * 1024
MAX_REASON_CHARS = 500
MAX_SHORT_TEXT = 128
MAX_DETAIL_TEXT = 2000
INT32_MAX = 2**31 - 1

ACCEPTED_LEAVES = (topics.COUNTS, topics.EVENTS, topics.STATUS)


def dead_letter(topic: str, reason: str, payload: bytes, received_at: datetime) -> Batch:
    """A batch holding one dead letter (payload capped at MAX_DEAD_LETTER_BYTES)."""
    raw = bytes(payload)
    if len(raw) > MAX_DEAD_LETTER_BYTES:
        reason = f"{reason} [payload truncated to {MAX_DEAD_LETTER_BYTES} of {len(raw)} bytes]"
        raw = raw[:MAX_DEAD_LETTER_BYTES]
    # PostgreSQL text holds neither NUL nor lone surrogates, and both topic
    # and reason can carry text from the network.
    safe_topic = safe_text(topic)[:1024]
    safe_reason = safe_text(reason)[:MAX_REASON_CHARS]
    return Batch(dead_letters=[DeadLetter(safe_topic, safe_reason, raw, received_at)])


def route(topic: str, payload: bytes, received_at: datetime, *, site: str | None = None) -> Batch:
    """Decode one message into the rows to store; malformed input becomes a dead letter.

    ``site``, when given, is the only site accepted (a message for another
    site on a shared broker is a routing error worth keeping). The
    controller id inside the payload must equal the topic's, otherwise one
    controller could write another's counts.
    """
    try:
        return _route(topic, payload, received_at, site)
    except MessageError as exc:
        return dead_letter(topic, str(exc), payload, received_at)
    except RecursionError:
        # json.loads gives up on deeply nested arrays this way; expected from
        # hostile input, so no traceback in the log for each one.
        return dead_letter(topic, "payload is not JSON: nested too deeply", payload, received_at)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"; keep the evidence
        log.exception("unexpected error decoding message on %r", topic)
        return dead_letter(topic, f"internal error: {type(exc).__name__}: {exc}", payload, received_at)


# Topics repeat (one per controller and leaf): parse each once. Only valid
# topics are cached, and the cache is bounded so a flood of distinct bogus
# topics cannot grow it.
_PARSED: dict[str, topics.ParsedTopic] = {}
_PARSED_MAX = 1 << 17


def _parse(topic: str) -> topics.ParsedTopic:
    parsed = _PARSED.get(topic)
    if parsed is None:
        parsed = topics.parse(topic)
        if len(_PARSED) < _PARSED_MAX:
            _PARSED[topic] = parsed
    return parsed


def _route(topic: str, payload: bytes, received_at: datetime, site: str | None) -> Batch:
    parsed = _parse(topic)
    if site is not None and parsed.site != site:
        raise MessageError(f"topic site {parsed.site!r} is not this service's site {site!r}")
    if parsed.leaf not in ACCEPTED_LEAVES:
        raise MessageError(f"ingest does not accept topic leaf {parsed.leaf!r}")

    if parsed.leaf == topics.COUNTS:
        controller_id, rows = decode_count_rows(payload, received_at)
        _same_controller(controller_id, parsed.controller_id)
        return Batch(counts=rows)
    if parsed.leaf == topics.EVENTS:
        batch = messages.decode_events(payload)
        _same_controller(batch.controller_id, parsed.controller_id)
        return Batch(events=[EventRow(batch.controller_id, ts, code, param) for ts, code, param in batch.events])
    status = messages.decode_status(payload)
    _same_controller(status.controller_id, parsed.controller_id)
    _storable_status(status)
    return Batch(statuses=[StatusRow(
        parsed.site, status.controller_id, status.state, status.mode, status.plan_id,
        status.plan_version, status.at, status.detail, received_at,
    )])


def _storable_status(status: messages.StatusMessage) -> None:
    """Reject what the schema lets through but PostgreSQL would refuse.

    A value the database refuses would fail the whole batch and, worse, make
    the spooled copy fail on every replay; catching it here turns it into an
    ordinary dead letter.
    """
    for name, value, limit in (("mode", status.mode, MAX_SHORT_TEXT), ("plan_id", status.plan_id, MAX_SHORT_TEXT),
                               ("detail", status.detail, MAX_DETAIL_TEXT)):
        if value is None:
            continue
        if len(value) > limit:
            raise MessageError(f"longer than {limit} characters", field=name)
        storable_text(value, name)
    if status.plan_version is not None and not 0 <= status.plan_version <= INT32_MAX:
        raise MessageError(f"must be 0..{INT32_MAX}", field="plan_version")


def storable_text(value: str, name: str) -> None:
    """MessageError unless PostgreSQL ``text`` can hold ``value``.

    JSON can carry what PostgreSQL text cannot: ``\\u0000`` (NUL) and lone
    UTF-16 surrogates such as ``\\ud800`` (valid JSON escapes, decoded by
    ``json.loads`` into a ``str`` that has no UTF-8 form). Identifiers are
    already refused by the printable rule; free text (status mode, plan id,
    detail) is checked here, so such a message is a dead letter with a clear
    reason instead of a refused database write.
    """
    if "\x00" in value:
        raise MessageError("contains NUL (PostgreSQL text cannot hold it)", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageError(
            f"not storable as UTF-8: {exc.reason} at position {exc.start} ({value[exc.start:exc.end]!a})",
            field=name) from None


def _same_controller(in_payload: str, in_topic: str) -> None:
    if in_payload != in_topic:
        raise MessageError(
            f"payload controller_id {in_payload!r} does not match topic controller {in_topic!r}",
            field="controller_id",
        )
