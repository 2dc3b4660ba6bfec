"""The timing plan: the contract between the centre and the field.

Field names are NTCIP 1202 object names (``phaseMinimumGreen``,
``patternCycleTime``, ``splitTime`` ...) so an engineer who knows a real
controller's database reads a plan without a glossary. **All durations are
seconds** (NTCIP stores tenths for some objects; we use float seconds on the
wire and round to 0.1 s where the field needs it).

A phase here is a *stage* in the ring-free sense used by most Asian and
European controllers and by SUMO: ``greens`` says what every signal group
(SUMO link index) shows during the phase's green interval, with ``G``
(protected green), ``g`` (permissive green, must yield) or ``r`` (red).
``splitTime`` covers green + yellow change + red clearance, as an NTCIP split
does, so the cycle is the sum of the splits.

This module only models and (de)serialises plans; whether a plan is *safe* is
judged by ``controller.safety`` on the centre and independently by
``field_firmware_stubs`` in the field.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from traffic import wire
from traffic.errors import MessageError, PlanError

PLAN_SCHEMA = "plan/1"
SIGNAL_CHARS = frozenset("Ggr")


class PlanMode(StrEnum):
    """How the field runs a plan (``TimingPlan.mode``, ``optimizer.plan_mode``)."""

    PRETIMED = "pretimed"     # fixed splits
    ACTUATED = "actuated"     # coordinated-actuated: coordinated phase on the cycle, others gap out
    FREE = "free"             # fully actuated: no common cycle, no offset


MODES = tuple(m.value for m in PlanMode)


@dataclass(frozen=True)
class Violation:
    """One broken safety rule: ``rule`` is a stable identifier, ``detail`` the numbers."""

    rule: str
    detail: str
    phase: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "detail": self.detail, "phase": self.phase}


@dataclass(frozen=True)
class PhaseTiming:
    """Timing of one phase (stage). Seconds throughout."""

    phase: int                      # phase number, 1-based, unique within the plan
    greens: str                     # per signal group during green: G / g / r
    splitTime: float                # s: green + yellow change + red clearance
    phaseMinimumGreen: float        # s
    phaseMaximum1: float            # s: max green when run actuated
    phasePassage: float             # s: gap (vehicle extension) when run actuated
    phaseYellowChange: float        # s
    phaseRedClear: float            # s
    phaseWalk: float = 0.0          # s: 0 when the phase serves no pedestrian crossing
    phasePedestrianClear: float = 0.0  # s: flashing don't-walk

    @property
    def green(self) -> float:
        """Green interval of the split (split minus yellow and red clearance)."""
        return self.splitTime - self.phaseYellowChange - self.phaseRedClear

    @property
    def serves_pedestrians(self) -> bool:
        return self.phaseWalk > 0 or self.phasePedestrianClear > 0


@dataclass(frozen=True)
class TimingPlan:
    """A complete signal timing plan for one controller (one NTCIP pattern)."""

    controller_id: str
    phases: tuple[PhaseTiming, ...]
    patternCycleTime: float         # s: must equal the sum of splitTime
    patternOffsetTime: float = 0.0  # s: start of the coordinated phase's green after the cycle reference
    splitCoordPhase: int = 1        # phase number that is coordinated (offset reference)
    mode: str = PlanMode.PRETIMED   # a PlanMode value: "pretimed", "actuated" or "free"
    version: int = 1                # monotonically increasing per controller
    plan_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_by: str = "unknown"
    reason: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    expires_at: str | None = None   # ISO-8601 UTC; the field refuses an expired plan
    # "ed25519-jcs:<key id>:<base64url>" over the RFC 8785 canonical JSON of every other field
    # (traffic.security.signing); not part of equality, absent from the wire when None
    signature: str | None = field(default=None, compare=False)

    # ---- convenience -------------------------------------------------
    def phase(self, number: int) -> PhaseTiming:
        for p in self.phases:
            if p.phase == number:
                return p
        raise PlanError(f"plan {self.plan_id} has no phase {number}")

    @property
    def splits(self) -> tuple[float, ...]:
        return tuple(p.splitTime for p in self.phases)

    def with_splits(self, splits: Iterable[float], **changes: Any) -> TimingPlan:
        """A new plan (new id) with other splits; the cycle becomes their sum."""
        splits = tuple(float(s) for s in splits)
        if len(splits) != len(self.phases):
            raise PlanError(f"{len(splits)} splits for {len(self.phases)} phases")
        phases = tuple(replace(p, splitTime=round(s, 1)) for p, s in zip(self.phases, splits, strict=False))
        cycle = round(sum(p.splitTime for p in phases), 1)
        changes.setdefault("plan_id", uuid.uuid4().hex)
        changes.setdefault("created_at", datetime.now(UTC).isoformat())
        changes.setdefault("signature", None)  # a signature covers the old splits, never the new ones
        return replace(self, phases=phases, patternCycleTime=cycle, **changes)

    # ---- wire format -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phases"] = [asdict(p) for p in self.phases]
        data["schema"] = PLAN_SCHEMA
        if data.get("signature") is None:
            data.pop("signature", None)  # unsigned plans keep their pre-signature wire form
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimingPlan:
        """Strictly parse a plan; raise PlanError naming the first bad field."""
        if not isinstance(data, Mapping):
            raise PlanError("plan must be a JSON object")
        if data.get("schema", PLAN_SCHEMA) != PLAN_SCHEMA:
            raise PlanError(f"unsupported plan schema {data.get('schema')!r}")
        phases_raw = data.get("phases")
        if not isinstance(phases_raw, list) or not phases_raw:
            raise PlanError("phases: must be a non-empty list")
        phases = tuple(_phase_from_dict(p, i) for i, p in enumerate(phases_raw))
        mode = data.get("mode", PlanMode.PRETIMED)
        if mode not in MODES:
            raise PlanError(f"mode: must be one of {MODES}, got {mode!r}")
        expires = data.get("expires_at")
        if expires is not None:
            _parse_time(expires, "expires_at")
        signature = data.get("signature")
        if signature is not None and not isinstance(signature, str):
            raise PlanError(f"signature: must be a string, got {type(signature).__name__}")
        plan = cls(
            controller_id=_str(data, "controller_id"),
            phases=phases,
            patternCycleTime=_num(data, "patternCycleTime"),
            patternOffsetTime=_num(data, "patternOffsetTime", 0.0),
            splitCoordPhase=_int(data, "splitCoordPhase", 1),
            mode=mode,
            version=_version(data),
            plan_id=_str(data, "plan_id"),
            created_by=str(data.get("created_by", "unknown")),
            reason=str(data.get("reason", "")),
            created_at=str(data.get("created_at", "")),
            expires_at=expires,
            signature=signature,
        )
        try:  # last: the published contract (traffic.wire.PlanV1, docs/asyncapi.yaml) holds as well
            wire.conform(data, wire.PlanV1)
        except MessageError as exc:
            raise PlanError(str(exc)) from None
        return plan

    @classmethod
    def from_json(cls, payload: bytes | bytearray | str) -> TimingPlan:
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def is_expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        now = now or datetime.now(UTC)
        return _parse_time(self.expires_at, "expires_at") <= now


def _parse_time(value: Any, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise PlanError(f"{name}: not an ISO-8601 time: {value!r}") from exc
    if ts.tzinfo is None:
        raise PlanError(f"{name}: must carry a UTC offset")
    return ts


def _num(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanError(f"{key}: must be a number (seconds), got {value!r}")
    if not math.isfinite(value):
        raise PlanError(f"{key}: must be finite, got {value!r}")
    return float(value)


def _int(data: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{key}: must be an integer, got {value!r}")
    return value


#: plan versions are stored as PostgreSQL bigint (``plans.version``): 0 <= version < 2**63
MAX_VERSION = wire.MAX_VERSION


def _version(data: Mapping[str, Any]) -> int:
    """The plan's version, bounded to what the store (bigint) and every comparison can hold."""
    value = _int(data, "version", 1)
    if not 0 <= value <= MAX_VERSION:
        shown = str(value) if len(str(value)) <= 25 else f"{str(value)[:20]}... ({len(str(value))} digits)"
        raise PlanError(f"version: must be between 0 and 2**63 - 1 (PostgreSQL bigint), got {shown}")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PlanError(f"{key}: must be a non-empty string, got {value!r}")
    return value


def _phase_from_dict(raw: Any, index: int) -> PhaseTiming:
    if not isinstance(raw, Mapping):
        raise PlanError(f"phases[{index}]: must be an object")
    greens = raw.get("greens")
    if not isinstance(greens, str) or not greens or set(greens) - SIGNAL_CHARS:
        raise PlanError(f"phases[{index}].greens: must be a string of G, g, r; got {greens!r}")
    try:
        return PhaseTiming(
            phase=_int(raw, "phase"),
            greens=greens,
            splitTime=_num(raw, "splitTime"),
            phaseMinimumGreen=_num(raw, "phaseMinimumGreen"),
            phaseMaximum1=_num(raw, "phaseMaximum1"),
            phasePassage=_num(raw, "phasePassage"),
            phaseYellowChange=_num(raw, "phaseYellowChange"),
            phaseRedClear=_num(raw, "phaseRedClear"),
            phaseWalk=_num(raw, "phaseWalk", 0.0),
            phasePedestrianClear=_num(raw, "phasePedestrianClear", 0.0),
        )
    except PlanError as exc:
        raise PlanError(f"phases[{index}].{exc}") from None
