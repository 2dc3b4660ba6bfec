"""In-process adapters of the central loop's ports: the benchmarks' transport and plan record.

Why in-process: the benchmarks run every scenario on several seeds in
parallel processes; a private broker and database per run would cost more
than the simulation and add nothing to what is measured (the decisions).
So the *transport* is :class:`InProcessBus`, which hands the field
emulators' MQTT payloads (counts, plan results, active plans, status) to the
centre and the centre's plan commands to the emulators' plan handler, as
bytes in the same wire format; the *record* is :class:`MemoryLedger`, the
same state machine as the PostgreSQL plan store
(:mod:`controller.lifecycle`) kept in dictionaries. What decides is
:class:`controller.service.CentralService`, unchanged.

The world is paused while the centre runs an epoch, so nothing can arrive
while the centre waits: :meth:`InProcessSender.await_applied` answers from
what is there (the next epoch's reconciliation picks up a later
``applied``, exactly as in production when the wait times out).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.demand import LIGHT_OCCUPANCY_PCT, DetectorTotals
from controller.lifecycle import Lock, PlanEvent, PlanRecord, PlanState, allowed_moves
from controller.safety import ensure_safe
from traffic import messages, topics
from traffic.errors import DispatchError, MessageError, PlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import TimingPlan, Violation
from traffic.topics import check_id

log = logging.getLogger(__name__)

__all__ = ["InProcessBus", "InProcessCounts", "InProcessSender", "MemoryLedger"]

PlanHandler = Callable[[bytes, str | None, bytes | None], None]
Clock = Callable[[], datetime]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class _Port:
    """The endpoint one emulator publishes through (the ``FieldGateway`` port interface)."""

    connected = True

    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: object = None) -> bool:
        self._bus.deliver(topic, payload)
        return True


class InProcessBus:
    """Stands in for the broker between emulators and the centre (same payloads, no sockets).

    Emulators register through the same interface as
    ``field_firmware_stubs.link.FieldGateway``. Counts are decoded with the
    ingest's strict decoder and summed per detector and interval; plan
    results are kept per plan id; ``plan/active`` and ``status`` per
    controller, as the retained messages a :class:`controller.dispatch.Dispatcher` keeps.
    """

    def __init__(self, site: str) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._handlers: dict[str, PlanHandler] = {}
        # (controller, interval start) -> detector -> (vehicles, motorcycles or None, interval_s)
        self.counts: dict[tuple[str, datetime], dict[str, tuple[int, int | None, int, float]]] = {}
        self.results: dict[str, list[messages.PlanResult]] = defaultdict(list)
        self.active: dict[str, TimingPlan] = {}
        self.status: dict[str, messages.StatusMessage] = {}
        self.bad_messages = 0

    # ---- the gateway interface the emulator uses -------------------------------------
    def register(self, controller_id: str, on_plan: PlanHandler, on_connect: Callable[[], None],
                 on_disconnect: Callable[[], None]) -> _Port:
        with self._lock:
            self._handlers[controller_id] = on_plan
        on_connect()
        return _Port(self)

    def unregister(self, controller_id: str) -> None:
        with self._lock:
            self._handlers.pop(controller_id, None)

    # ---- field -> centre ---------------------------------------------------------------
    def deliver(self, topic: str, payload: bytes) -> None:
        """Route one published message; a bad payload is counted, never raised into the emulator's tick."""
        try:
            parsed = topics.parse(topic)
            leaf = parsed.leaf
            if leaf == topics.COUNTS:
                report = messages.decode_counts(payload)
                with self._lock:
                    self.counts[(report.controller_id, report.interval_start)] = {
                        r.detector_id: (r.count, r.motorcycle_count, report.interval_s, r.occupancy_pct)
                        for r in report.records}
            elif leaf == topics.PLAN_RESULT:
                result = messages.decode_result(payload)
                with self._lock:
                    self.results[result.plan_id].append(result)
            elif leaf == topics.PLAN_ACTIVE:
                plan = TimingPlan.from_json(payload)
                with self._lock:
                    self.active[parsed.controller_id] = plan
            elif leaf == topics.STATUS:
                status = messages.decode_status(payload)
                with self._lock:
                    self.status[parsed.controller_id] = status
        except (MessageError, PlanError) as exc:
            log.warning("in-process bus: bad message on %s: %s", topic, exc)
            self.bad_messages += 1

    def totals(self, controller_id: str, start: datetime, end: datetime) -> dict[str, DetectorTotals]:
        """Per-detector totals over intervals starting in ``[start, end)``: exactly what ``demand``'s SQL sums.

        Occupancy is carried too, so a non-classifying loop's vehicles are
        estimated from its occupancy here as in production (``seen_vehicles``).
        """
        acc: dict[str, list[float]] = defaultdict(lambda: [0.0] * 7)
        with self._lock:
            items = [(k, v) for k, v in self.counts.items() if k[0] == controller_id and start <= k[1] < end]
        for _key, records in items:
            for det, (count, moto, interval_s, occupancy_pct) in records.items():
                a = acc[det]
                a[0] += interval_s
                if moto is None:
                    a[3] += count
                    occupied_s = occupancy_pct * interval_s / 100.0
                    a[4] += occupied_s
                    if occupancy_pct < LIGHT_OCCUPANCY_PCT:
                        a[5] += occupied_s
                        a[6] += count
                else:
                    a[1] += count
                    a[2] += moto
        return {d: DetectorTotals(*a) for d, a in acc.items()}

    # ---- centre -> field ---------------------------------------------------------------
    def send_plan(self, plan: TimingPlan) -> messages.PlanResult | None:
        """Hand ``plan`` to its controller's plan handler; return its answer to this send (None: nobody there)."""
        with self._lock:
            handler = self._handlers.get(plan.controller_id)
            earlier = len(self.results.get(plan.plan_id, ()))
        if handler is None:
            return None
        response = topics.topic(self.site, plan.controller_id, topics.PLAN_RESULT)
        handler(plan.to_json(), response, plan.plan_id.encode())
        with self._lock:
            answers = list(self.results.get(plan.plan_id, ()))[earlier:]
        return answers[0] if answers else None


class InProcessCounts:
    """:class:`controller.ports.CountsReader` over an :class:`InProcessBus`."""

    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    def totals(self, controller_ids: Sequence[str], start: datetime,
               end: datetime) -> dict[str, dict[str, DetectorTotals]]:
        return {cid: self._bus.totals(cid, start, end) for cid in controller_ids}

    def failed(self, controller_ids: Sequence[str], end: datetime) -> dict[str, dict[str, str]]:
        """Detector health is judged by the ingest's monitor, which a SUMO run does not have: none failed."""
        return {}


class InProcessSender:
    """:class:`controller.ports.PlanSender` over an :class:`InProcessBus`.

    Like the MQTT dispatcher it checks the plan's safety once more and sets
    its expiry right before sending; ``clock`` is the field's clock (the
    simulated time in a SUMO run), against which the field judges expiry.
    """

    def __init__(self, bus: InProcessBus, clock: Clock = _wall_clock) -> None:
        self._bus = bus
        self._clock = clock
        self._sent: dict[str, TimingPlan] = {}

    @property
    def site(self) -> str:
        return self._bus.site

    def dispatch(self, plan: TimingPlan, spec: IntersectionSpec, *, expiry_s: float,
                 timeout_s: float) -> messages.PlanResult:
        ensure_safe(plan, spec)
        plan = replace(plan, expires_at=(self._clock() + timedelta(seconds=expiry_s)).isoformat(), signature=None)
        self._sent[plan.plan_id] = plan
        answer = self._bus.send_plan(plan)
        if answer is None:
            raise DispatchError(f"no answer from {plan.controller_id} to plan {plan.plan_id}")
        return answer

    def await_applied(self, plan_id: str, timeout_s: float) -> messages.PlanResult:
        for result in self._bus.results.get(plan_id, ()):
            if result.status in (messages.APPLIED, messages.REJECTED):
                return result
        raise DispatchError(f"plan {plan_id} not applied yet (the world is paused during the epoch)")

    def signed_plan(self, plan_id: str) -> TimingPlan | None:
        return self._sent.get(plan_id)

    def results(self, plan_id: str) -> list[messages.PlanResult]:
        return list(self._bus.results.get(plan_id, ()))

    def field_active(self, controller_id: str) -> TimingPlan | None:
        return self._bus.active.get(controller_id)

    def field_status(self, controller_id: str) -> messages.StatusMessage | None:
        return self._bus.status.get(controller_id)


@dataclass
class _Entry:
    plan: TimingPlan
    state: PlanState
    created_by: str
    reason: str
    created_at: datetime
    updated_at: datetime
    safety: list[dict[str, Any]] | None = None
    verdict: dict[str, Any] | None = None
    events: list[PlanEvent] = field(default_factory=list)

    def record(self, with_events: bool) -> PlanRecord:
        return PlanRecord(self.plan, self.state, self.created_by, self.reason, self.safety, self.verdict,
                          self.created_at, self.updated_at, tuple(self.events) if with_events else ())


class MemoryLedger:
    """:class:`controller.ports.PlanLedger` and :class:`~controller.ports.PlanBook` in memory.

    The same moves are allowed and refused as in :mod:`controller.plan_store`
    (:func:`controller.lifecycle.allowed_moves`), versions must increase per
    controller, and going ``active`` supersedes the controller's previous
    active plan. ``clock`` stamps the events (the simulated time in a SUMO run).
    """

    def __init__(self, clock: Clock = _wall_clock) -> None:
        self._clock = clock
        self._guard = threading.RLock()
        self.controllers: dict[str, IntersectionSpec] = {}
        self.plans: dict[str, _Entry] = {}
        self.locks: dict[str, Lock] = {}
        self.signatures: list[TimingPlan] = []

    @contextmanager
    def session(self) -> Iterator[MemoryLedger]:
        yield self

    def register_controller(self, spec: IntersectionSpec) -> None:
        with self._guard:
            self.controllers[spec.controller_id] = spec

    def _of(self, controller_id: str) -> list[_Entry]:
        return [e for e in self.plans.values() if e.plan.controller_id == controller_id]

    def next_version(self, controller_id: str) -> int:
        with self._guard:
            return max((e.plan.version for e in self._of(controller_id)), default=0) + 1

    def _entry(self, plan_id: str) -> _Entry:
        entry = self.plans.get(plan_id)
        if entry is None:
            raise PlanError(f"no stored plan {plan_id!r}")
        return entry

    def _event(self, entry: _Entry, state: PlanState, actor: str, detail: Mapping[str, Any], at: datetime) -> None:
        entry.events.append(PlanEvent(at, state, actor, dict(detail)))
        log.debug("plan %s (%s): %s by %s", entry.plan.plan_id, entry.plan.controller_id, state, actor)

    def record_proposed(self, plan: TimingPlan, actor: str, reason: str, *,
                        detail: Mapping[str, Any] | None = None) -> None:
        with self._guard:
            highest = self.next_version(plan.controller_id) - 1
            if plan.version <= highest:
                raise PlanError(f"plan {plan.plan_id} for {plan.controller_id} has version {plan.version}; "
                                f"versions must increase (highest stored: {highest})")
            if plan.plan_id in self.plans:
                raise PlanError(f"plan {plan.plan_id} is already stored")
            now = self._clock()
            entry = _Entry(plan, PlanState.PROPOSED, actor, reason or plan.reason, now, now)
            self.plans[plan.plan_id] = entry
            self._event(entry, PlanState.PROPOSED, actor,
                        {"reason": reason or plan.reason, "version": plan.version, **dict(detail or {})}, now)

    def record_state(self, plan_id: str, state: PlanState, actor: str,
                     detail: Mapping[str, Any] | None = None) -> PlanState:
        try:
            target = PlanState(state)
        except ValueError:
            raise PlanError(f"unknown plan state {state!r} (known: {', '.join(PlanState)})") from None
        with self._guard:
            entry = self._entry(plan_id)
            current = entry.state
            allowed = allowed_moves(current, bootstrap=bool(detail and detail.get("bootstrap")))
            if target not in allowed:
                raise PlanError(f"plan {plan_id} cannot go from {current} to {target} "
                                f"(allowed: {', '.join(sorted(allowed)) or 'none, final state'})")
            now = self._clock()
            if target == PlanState.ACTIVE:
                for other in self._of(entry.plan.controller_id):
                    if other is not entry and other.state == PlanState.ACTIVE:
                        other.state, other.updated_at = PlanState.SUPERSEDED, now
                        self._event(other, PlanState.SUPERSEDED, actor, {"by": plan_id}, now)
            entry.state, entry.updated_at = target, now
            self._event(entry, target, actor, dict(detail or {}), now)
            return current

    def record_note(self, plan_id: str, actor: str, detail: Mapping[str, Any]) -> PlanState:
        with self._guard:
            entry = self._entry(plan_id)
            self._event(entry, entry.state, actor, detail, self._clock())
            return entry.state

    def set_safety(self, plan_id: str, violations: Sequence[Violation]) -> None:
        with self._guard:
            self._entry(plan_id).safety = [v.to_dict() for v in violations]

    def set_verdict(self, plan_id: str, verdict: Mapping[str, Any]) -> None:
        with self._guard:
            self._entry(plan_id).verdict = dict(verdict)

    def active_plan(self, controller_id: str) -> TimingPlan | None:
        with self._guard:
            active = [e.plan for e in self._of(controller_id) if e.state == PlanState.ACTIVE]
        return max(active, key=lambda p: p.version) if active else None

    def get_plan(self, plan_id: str, *, with_events: bool = True) -> PlanRecord | None:
        with self._guard:
            entry = self.plans.get(plan_id)
            return entry.record(with_events) if entry is not None else None

    def plans_in_state(self, controller_id: str, states: Sequence[PlanState]) -> list[PlanRecord]:
        with self._guard:
            found = [e for e in self._of(controller_id) if e.state in states]
            return [e.record(False) for e in sorted(found, key=lambda e: e.plan.version, reverse=True)]

    def history(self, controller_id: str) -> list[PlanRecord]:
        """The controller's plans, newest first, with their events (what ``plan_store.history`` returns)."""
        with self._guard:
            return [e.record(True) for e in sorted(self._of(controller_id), key=lambda e: e.plan.version,
                                                    reverse=True)]

    def locked(self) -> Mapping[str, Lock]:
        with self._guard:
            return dict(self.locks)

    def lock(self, controller_id: str, reason: str, actor: str) -> Lock:
        check_id(controller_id, "controller id")
        if not reason.strip() or not actor.strip():
            raise PlanError("a lock needs an actor and a reason")
        with self._guard:
            self.locks[controller_id] = Lock(controller_id, actor, reason, self._clock())
            return self.locks[controller_id]

    def unlock(self, controller_id: str, actor: str, reason: str = "") -> bool:
        with self._guard:
            return self.locks.pop(controller_id, None) is not None

    def record_signature(self, plan: TimingPlan) -> None:
        if plan.signature is not None:
            with self._guard:
                self.signatures.append(plan)
