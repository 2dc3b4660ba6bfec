"""The central loop: demand -> optimise -> check -> simulate -> dispatch -> record.

One epoch (:meth:`CentralService.run_epoch`) walks every plan through its
life and records each step in the plan store, so the history always says who
did what, when, why and with which numbers:

1. reconcile late answers from the field (a plan applied after we stopped
   waiting becomes ``active``; an epoch that died half-way leaves ``failed``);
2. incumbent per controller: the store's active plan, else the plan the field
   reports on ``plan/active``, else ``spec.default_plan()`` (recorded as a
   bootstrap);
3. demand for the last window, Webster on a common corridor cycle;
4. the central safety check (``checked`` or ``rejected`` with the rules);
5. the simulation gate on the whole corridor (``simulated`` with the verdict
   numbers, or ``rejected``); no gate configured: straight to dispatch;
6. dispatch (``dispatched``), then ``accepted`` / ``active`` / ``rejected``
   from the field's answers; no answer: ``failed`` and the incumbent stays;
7. heartbeat: every controller that runs a plan this centre dispatched and got
   nothing new this epoch (locked, gate or safety rejection, field refusal)
   has its active plan re-sent (same ``plan_id``), or the newer plan of ours
   it accepted and had not applied when its link dropped (the only one a
   field back on its day plan takes again). The field treats a re-send
   as the centre's heartbeat and changes nothing; without it, it would fall
   back to its time-of-day plan after ``central_silence_timeout_s``. Recorded
   as a note on the plan (state unchanged, detail ``{"heartbeat": true}``).

A proposal that times a controller exactly as the plan this centre already
runs there (same mode, coordinated phase, offset, splits, maximum greens and
passage times) is not recorded or sent: outcome ``unchanged``, and the
heartbeat keeps the running plan alive. New versions of the same timing
would only churn the record and the field.

Locked controllers (engineer override) are skipped entirely. Any error in one
epoch is logged and reported; :meth:`serve` carries on with the next.

Everything outside the decision goes through ports (:mod:`controller.ports`):
counts, the field link, the plan record and the gate. Production passes the
PostgreSQL and MQTT adapters (:meth:`CentralService.on_postgres`); the SUMO
benchmarks pass in-process ones (``app.sim_adaptive``). It is the same loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from controller.bounds import Bounds
from controller.demand import PhaseDemand, estimate
from controller.lifecycle import Lock, PlanState
from controller.optimizer import optimize_corridor
from controller.ports import CountsReader, PlanBook, PlanLedger, PlanSender
from controller.safety import check_plan
from traffic import messages, topics
from traffic.config import Settings
from traffic.errors import DispatchError, PlanError, TrafficError, TransportError, UnsafePlanError
from traffic.intersection import Corridor, IntersectionSpec
from traffic.plan import TimingPlan

log = logging.getLogger(__name__)

ACTOR = "central"
BOOTSTRAP_ACTOR = "bootstrap"
STALE_STATES = (PlanState.PROPOSED, PlanState.CHECKED, PlanState.SIMULATED)
PENDING_STATES = (PlanState.DISPATCHED, PlanState.ACCEPTED, PlanState.FAILED)
#: outcome of a controller whose new plan would time it exactly as the plan it runs (nothing recorded or sent)
UNCHANGED = "unchanged"


class Verdict(Protocol):
    """What a gate returns (``simulation``'s verdict satisfies this)."""

    accepted: bool
    reason: str

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EpochContext:
    """Everything the gate may need to rebuild the epoch's demand in a simulation."""

    now: datetime
    window_s: int
    epoch: int
    corridor: Corridor
    demands: Mapping[str, PhaseDemand]
    explanations: Mapping[str, dict[str, Any]]
    settings: Settings

    @property
    def start(self) -> datetime:
        return self.now - timedelta(seconds=self.window_s)


Gate = Callable[[dict[str, TimingPlan], dict[str, TimingPlan], EpochContext], Verdict]


@dataclass
class EpochReport:
    """Counts and outcomes of one epoch (``outcome`` per controller: its plan's last state)."""

    now: datetime
    epoch: int
    proposed: int = 0
    checked: int = 0
    simulated: int = 0
    dispatched: int = 0
    acknowledged: int = 0
    applied: int = 0
    rejected: int = 0
    failed: int = 0
    heartbeats: int = 0
    unchanged: tuple[str, ...] = ()
    optimizer_s: float = 0.0
    locked: tuple[str, ...] = ()
    bootstrapped: tuple[str, ...] = ()
    plans: dict[str, TimingPlan] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(), "epoch": self.epoch, "proposed": self.proposed, "checked": self.checked,
            "simulated": self.simulated, "dispatched": self.dispatched, "acknowledged": self.acknowledged,
            "applied": self.applied, "rejected": self.rejected, "failed": self.failed, "heartbeats": self.heartbeats,
            "unchanged": list(self.unchanged), "optimizer_s": round(self.optimizer_s, 4), "locked": list(self.locked),
            "bootstrapped": list(self.bootstrapped), "plans": {c: p.plan_id for c, p in self.plans.items()},
            "outcome": {c: str(o) for c, o in self.outcome.items()},
            "verdict": self.verdict, "errors": list(self.errors), "duration_s": round(self.duration_s, 3),
        }


class CentralService:
    """Runs the closed loop for one corridor, through its ports (see the module docstring)."""

    def __init__(self, settings: Settings, corridor: Corridor, *, counts: CountsReader, sender: PlanSender,
                 ledger: PlanLedger, gate: Gate | None, apply_timeout_s: float | None = None,
                 actor: str = ACTOR) -> None:
        self.settings = settings
        self.corridor = corridor
        self.specs: dict[str, IntersectionSpec] = corridor.by_id()
        self._counts = counts
        self._ledger = ledger
        self._gate = gate
        self._sender = sender
        self._actor = actor
        # how long to wait for "applied" after "accepted": the field applies at a cycle boundary
        self._apply_timeout_s = (apply_timeout_s if apply_timeout_s is not None
                                 else settings.control.ack_timeout_s)
        self._previous: dict[str, PhaseDemand] = {}
        self._bounds: dict[str, Bounds] = {}
        self._registered = False
        self._epoch = 0

    @classmethod
    def on_postgres(cls, settings: Settings, corridor: Corridor, *, dsn: str, dispatcher: PlanSender,
                    gate: Gate | None, apply_timeout_s: float | None = None, actor: str = ACTOR) -> CentralService:
        """The production wiring: counts and the plan record in PostgreSQL at ``dsn``, plans over ``dispatcher``."""
        from controller.pg_adapters import PostgresCounts, PostgresLedger  # psycopg only where it is used

        return cls(settings, corridor, counts=PostgresCounts(dsn), sender=dispatcher, ledger=PostgresLedger(dsn),
                   gate=gate, apply_timeout_s=apply_timeout_s, actor=actor)

    @property
    def epochs_run(self) -> int:
        """How many epochs this service has started."""
        return self._epoch

    # ---- engineer overrides ------------------------------------------------
    def lock(self, controller_id: str, reason: str, actor: str) -> Lock:
        """Keep ``controller_id`` on its current plan: the optimizer skips it until unlocked."""
        self._known(controller_id)
        with self._ledger.session() as book:
            return book.lock(controller_id, reason, actor)

    def unlock(self, controller_id: str, actor: str, reason: str = "") -> bool:
        """Hand ``controller_id`` back to the optimizer; False if it was not locked."""
        self._known(controller_id)
        with self._ledger.session() as book:
            return book.unlock(controller_id, actor, reason)

    def set_bounds(self, controller_id: str, bounds: Bounds | None, actor: str) -> None:
        """Keep the optimizer inside ``bounds`` for ``controller_id`` (None removes them).

        Checked against the intersection at once (a contradictory box raises
        PlanError and changes nothing). Every plan proposed afterwards carries
        the bounds in its explanation, so the history says who boxed it in.
        Held by this service (not stored): a restarted service starts unbounded.
        """
        spec = self._known(controller_id)
        if bounds is None:
            self._bounds.pop(controller_id, None)
        else:
            self._bounds[controller_id] = bounds.check(spec)
        log.info("%s: bounds %s set by %s", controller_id, None if bounds is None else bounds.to_dict(), actor)

    def bounds(self, controller_id: str) -> Bounds | None:
        """The engineer's bounds in force for ``controller_id``, if any."""
        return self._bounds.get(controller_id)

    def override(self, plan: TimingPlan, actor: str, reason: str, *, lock: bool = True) -> EpochReport:
        """Send an engineer's plan: recorded, safety-checked, dispatched, and (by default) locked.

        The simulation gate is skipped (the engineer is the judge of intent) but
        the safety check is not: an unsafe plan is recorded as rejected and
        raises :class:`UnsafePlanError`. The version is raised to the next free
        one if needed. Locking keeps the optimizer from replacing the plan at
        the next epoch; :meth:`unlock` hands the controller back.
        """
        spec = self._known(plan.controller_id)
        cid = plan.controller_id
        report = EpochReport(now=datetime.now(UTC), epoch=self._epoch)
        with self._ledger.session() as book:
            if not self._registered:
                book.register_controller(spec)
            version = book.next_version(cid)
            if plan.version < version:
                plan = replace(plan, version=version)
            book.record_proposed(plan, actor, reason)
            report.proposed += 1
            report.plans[cid] = plan
            violations = check_plan(plan, spec)
            book.set_safety(plan.plan_id, violations)
            if violations:
                self._step(book, plan, PlanState.REJECTED, report, stage="safety",
                           rules=[v.rule for v in violations])
                raise UnsafePlanError(violations)
            self._step(book, plan, PlanState.CHECKED, report)
            report.checked += 1
            if lock:
                book.lock(cid, reason or "engineer plan", actor)
                report.locked = (cid,)
            self._dispatch(book, {cid: plan}, report)
        return report

    # ---- the loop --------------------------------------------------------------
    def serve(self, stop_event: threading.Event) -> None:
        """Run an epoch every ``settings.control.epoch_s`` on the wall clock until ``stop_event`` is set.

        Epochs end on multiples of ``count_interval_s`` so the demand window
        holds whole count intervals. An epoch that raises is logged; the loop goes on.
        """
        epoch_s = self.settings.control.epoch_s
        interval = max(1, self.settings.control.count_interval_s)
        while not stop_event.is_set():
            started = time.monotonic()
            now = datetime.now(UTC)
            now = now - timedelta(seconds=now.timestamp() % interval)
            try:
                report = self.run_epoch(now, epoch_s)
                log.info("epoch %d: %s", report.epoch, report.to_dict())
            except Exception:  # noqa: BLE001 - one bad epoch must not stop the service
                log.exception("epoch failed")
            stop_event.wait(max(0.0, epoch_s - (time.monotonic() - started)))

    def reconcile(self) -> None:
        """Record field answers that arrived after the last epoch stopped waiting (e.g. at shutdown)."""
        with self._ledger.session() as book:
            self._reconcile(book)

    def run_epoch(self, now: datetime, window_s: int) -> EpochReport:
        """One pass of the loop over the corridor; see the module docstring."""
        if now.tzinfo is None:
            raise TrafficError("epoch time must carry a UTC offset")
        started = time.monotonic()
        self._epoch += 1
        report = EpochReport(now=now, epoch=self._epoch)
        with self._ledger.session() as book:
            try:
                self._run(book, now, window_s, report)
            except TrafficError as exc:
                log.exception("epoch %d stopped", self._epoch)
                report.errors.append(f"{type(exc).__name__}: {exc}")
            try:  # also after a failed epoch: that is when the field most needs to hear from us
                self._heartbeat(book, report)
            except TrafficError as exc:
                log.exception("epoch %d: heartbeat failed", self._epoch)
                report.errors.append(f"heartbeat: {type(exc).__name__}: {exc}")
        report.duration_s = time.monotonic() - started
        return report

    def _run(self, book: PlanBook, now: datetime, window_s: int, report: EpochReport) -> None:
        if window_s <= 0:
            raise TrafficError(f"empty demand window of {window_s} s")
        if not self._registered:
            for spec in self.specs.values():
                book.register_controller(spec)
            self._registered = True
        self._reconcile(book)
        report.locked = tuple(sorted(set(book.locked()) & set(self.specs)))
        free = [c for c in self.specs if c not in report.locked]
        for cid in report.locked:
            report.outcome[cid] = "locked"
        if not free:
            return
        incumbents: dict[str, TimingPlan] = {}
        for cid in free:
            incumbents[cid], bootstrapped = self._incumbent(book, self.specs[cid])
            if bootstrapped:
                report.bootstrapped += (cid,)
        for cid in report.locked:  # not re-planned, but their offsets anchor the corridor's bandwidth offsets
            locked_plan = book.active_plan(cid)
            if locked_plan is not None:
                incumbents[cid] = locked_plan
        # demand from at least demand_window_min_s of counts, however short the epoch (one minute is noise)
        start = now - timedelta(seconds=max(window_s, self.settings.control.demand_window_min_s))
        totals = self._counts.totals(free, start, now)
        failed = self._counts.failed(free, now)
        demands = {cid: estimate(self.specs[cid], totals.get(cid, {}), self.settings.optimizer,
                                 previous=self._previous.get(cid), start=start, end=now, failed=failed.get(cid))
                   for cid in free}
        self._previous.update(demands)
        versions = {cid: book.next_version(cid) for cid in free}
        started = time.perf_counter()
        proposals = optimize_corridor(self.corridor, demands, incumbents, self.settings.optimizer, versions,
                                      exclude=report.locked, bounds=self._bounds)
        report.optimizer_s += time.perf_counter() - started

        candidates: dict[str, TimingPlan] = {}
        for cid, proposal in proposals.items():
            plan = proposal.plan
            if _same_timing(plan, incumbents[cid]) and self._ours(book, incumbents[cid]):
                report.unchanged += (cid,)
                report.outcome[cid] = UNCHANGED
                continue
            report.plans[cid] = plan
            book.record_proposed(plan, "optimizer", plan.reason, detail={"explanation": proposal.explanation})
            report.proposed += 1
            violations = check_plan(plan, self.specs[cid])
            book.set_safety(plan.plan_id, violations)
            if violations:
                self._step(book, plan, PlanState.REJECTED, report, stage="safety",
                           rules=[v.rule for v in violations], violations=[v.to_dict() for v in violations])
                continue
            self._step(book, plan, PlanState.CHECKED, report)
            report.checked += 1
            candidates[cid] = plan
        if not candidates:
            return
        context = EpochContext(now, window_s, self._epoch, self.corridor, demands,
                               {c: p.explanation for c, p in proposals.items()}, self.settings)
        if not self._simulate(book, candidates, incumbents, context, report):
            return
        self._dispatch(book, candidates, report)

    # ---- steps -------------------------------------------------------------------
    def _simulate(self, book: PlanBook, candidates: dict[str, TimingPlan],
                  incumbents: dict[str, TimingPlan], context: EpochContext, report: EpochReport) -> bool:
        if self._gate is None:
            return True
        try:
            verdict = self._gate(dict(candidates), {c: incumbents[c] for c in candidates}, context)
            numbers = _json_safe(dict(verdict.to_dict()))
        except Exception as exc:  # noqa: BLE001 - a crashed gate is a failed step, never a pass
            log.exception("validation gate failed")
            report.errors.append(f"gate: {type(exc).__name__}: {exc}")
            for plan in candidates.values():
                book.set_verdict(plan.plan_id, {"accepted": False, "error": str(exc)})
                self._step(book, plan, PlanState.FAILED, report, stage="gate", error=str(exc))
            return False
        report.verdict = numbers
        for plan in candidates.values():
            book.set_verdict(plan.plan_id, numbers)
        if not verdict.accepted:
            for plan in candidates.values():
                self._step(book, plan, PlanState.REJECTED, report, stage="gate", reason=verdict.reason,
                           verdict=numbers)
            return False
        for plan in candidates.values():
            self._step(book, plan, PlanState.SIMULATED, report, verdict=numbers)
            report.simulated += 1
        return True

    def _dispatch(self, book: PlanBook, candidates: dict[str, TimingPlan], report: EpochReport) -> None:
        control = self.settings.control
        for cid, plan in candidates.items():
            self._step(book, plan, PlanState.DISPATCHED, report, expiry_s=control.plan_expiry_s,
                       topic=topics.topic(self._sender.site, cid, topics.PLAN_SET))
            report.dispatched += 1

        answers = self._send_all(candidates, skip_offline=True)
        waiting: list[TimingPlan] = []
        for cid, answer in answers.items():
            plan = candidates[cid]
            self._record_signature(book, plan.plan_id)
            if isinstance(answer, Exception):
                state = PlanState.REJECTED if isinstance(answer, UnsafePlanError) else PlanState.FAILED
                self._step(book, plan, state, report, stage="dispatch", error=str(answer))
                continue
            if answer.status == messages.REJECTED:
                self._step(book, plan, PlanState.REJECTED, report, stage="field", rule=answer.rule,
                           reason=answer.reason)
                continue
            report.acknowledged += 1
            if answer.status == messages.APPLIED:
                self._step(book, plan, PlanState.ACTIVE, report, at=_iso(answer.at))
                report.applied += 1
            else:
                self._step(book, plan, PlanState.ACCEPTED, report)
                waiting.append(plan)
        deadline = time.monotonic() + self._apply_timeout_s
        for plan in waiting:
            try:
                result = self._sender.await_applied(plan.plan_id, max(0.0, deadline - time.monotonic()))
            except DispatchError:
                log.info("plan %s accepted, not applied yet; the next epoch reconciles it", plan.plan_id)
                continue
            if result.status == messages.APPLIED:
                self._step(book, plan, PlanState.ACTIVE, report, at=_iso(result.at), reason=result.reason)
                report.applied += 1
            else:
                self._step(book, plan, PlanState.REJECTED, report, stage="field", rule=result.rule,
                           reason=result.reason)

    def _send_all(self, plans: dict[str, TimingPlan], *, skip_offline: bool
                  ) -> dict[str, messages.PlanResult | Exception]:
        """Dispatch to every controller at once (they answer independently); errors come back as values
        so the caller records each outcome in its own thread."""
        control = self.settings.control

        def send(cid: str) -> messages.PlanResult | Exception:
            if skip_offline:
                status = self._sender.field_status(cid)
                if status is not None and status.state == messages.OFFLINE:
                    return DispatchError(f"{cid} is offline")
            try:
                return self._sender.dispatch(plans[cid], self.specs[cid], expiry_s=control.plan_expiry_s,
                                                 timeout_s=control.ack_timeout_s)
            except (DispatchError, TransportError, UnsafePlanError) as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(16, len(plans))) as pool:
            return dict(zip(plans, pool.map(send, plans), strict=False))

    def _record_signature(self, book: PlanBook, plan_id: str) -> None:
        """Audit: keep the signature of exactly what was published (nothing when unsigned or unpublished)."""
        signed = self._sender.signed_plan(plan_id)
        if signed is None:
            return
        try:
            book.record_signature(signed)
        except TrafficError:
            log.exception("could not record the signature of plan %s", plan_id)

    def _heartbeat(self, book: PlanBook, report: EpochReport) -> None:
        """Re-send the active plan to controllers that got nothing new this epoch (see module docstring).

        Only plans this centre dispatched are re-sent (a bootstrap or the
        field's own time-of-day plan is not ours to keep alive), and never to a
        controller whose new plan is still in flight (dispatched, accepted,
        failed): the field would refuse the older version as stale.
        """
        if not self._registered:
            return
        in_flight = (PlanState.DISPATCHED, PlanState.ACCEPTED, PlanState.ACTIVE, PlanState.FAILED)
        due: dict[str, TimingPlan] = {}
        for cid in self.specs:
            if report.outcome.get(cid) in in_flight:
                continue
            plan = self._heartbeat_plan(book, cid)
            if plan is None:
                continue
            status = self._sender.field_status(cid)
            if status is not None and status.state == messages.OFFLINE:
                continue
            due[cid] = plan
        if not due:
            return
        answers = self._send_all(due, skip_offline=False)
        for cid, answer in answers.items():
            detail: dict[str, Any] = {"heartbeat": True}
            if isinstance(answer, Exception):
                detail["error"] = str(answer)
                log.warning("%s: heartbeat re-send of %s got no answer: %s", cid, due[cid].plan_id, answer)
            else:
                detail.update(answer=answer.status, rule=answer.rule, reason=answer.reason)
                if answer.status != messages.REJECTED:
                    report.heartbeats += 1
            book.record_note(due[cid].plan_id, self._actor, detail)

    def _heartbeat_plan(self, book: PlanBook, cid: str) -> TimingPlan | None:
        """The plan to re-send to ``cid``: the newest of ours the field accepted, else our active one.

        A plan the field accepted but had not applied when its link dropped
        stays ``accepted`` here while the store's active plan is the older
        one; the field, back on its day plan, readmits only the plan it
        accepted last, and refuses the older one as a replay for ever
        (``REPLAY``: an old plan is never taken again).
        """
        active = book.active_plan(cid)
        newer = [r.plan for r in book.plans_in_state(cid, (PlanState.ACCEPTED,))
                 if active is None or r.version > active.version]
        for plan in sorted(newer, key=lambda p: p.version, reverse=True):
            if self._ours(book, plan):
                return plan
        return active if active is not None and self._ours(book, active) else None

    @staticmethod
    def _ours(book: PlanBook, plan: TimingPlan) -> bool:
        """Whether this centre dispatched ``plan`` (a bootstrap or the field's own plan is not ours to keep)."""
        record = book.get_plan(plan.plan_id)
        return record is not None and any(e.state == PlanState.DISPATCHED for e in record.events)

    def _step(self, book: PlanBook, plan: TimingPlan, state: PlanState, report: EpochReport,
              **detail: Any) -> None:
        book.record_state(plan.plan_id, state, self._actor, detail)
        report.outcome[plan.controller_id] = state
        if state == PlanState.REJECTED:
            report.rejected += 1
        elif state == PlanState.FAILED:
            report.failed += 1

    # ---- incumbents and reconciliation -----------------------------------------------
    def _incumbent(self, book: PlanBook, spec: IntersectionSpec) -> tuple[TimingPlan, bool]:
        """(plan in force, whether it had to be bootstrapped into the store)."""
        cid = spec.controller_id
        stored = book.active_plan(cid)
        reported = self._sender.field_active(cid)
        if reported is not None and reported.controller_id != cid:
            log.warning("%s: plan/active carries a plan for %s; ignored", cid, reported.controller_id)
            reported = None
        if reported is not None and (stored is None or reported.plan_id != stored.plan_id):
            record = book.get_plan(reported.plan_id, with_events=False)
            if record is None:
                adopted = reported if reported.version >= book.next_version(cid) \
                    else replace(reported, version=book.next_version(cid))
                book.record_proposed(adopted, BOOTSTRAP_ACTOR, "plan the field reports on plan/active")
                book.record_state(adopted.plan_id, PlanState.ACTIVE, BOOTSTRAP_ACTOR,
                                   {"bootstrap": True, "source": "field plan/active"})
                return adopted, True
            try:
                book.record_state(record.plan_id, PlanState.ACTIVE, self._actor, {"source": "field plan/active"})
            except PlanError as exc:
                log.warning("%s: field runs plan %s but the store cannot follow (%s)", cid, record.plan_id, exc)
            return record.plan, False
        if stored is not None:
            return stored, False
        default = spec.default_plan(version=book.next_version(cid), created_by=BOOTSTRAP_ACTOR)
        book.record_proposed(default, BOOTSTRAP_ACTOR, "no plan known: the spec's default plan")
        book.record_state(default.plan_id, PlanState.ACTIVE, BOOTSTRAP_ACTOR,
                           {"bootstrap": True, "source": "spec.default_plan"})
        return default, True

    def _reconcile(self, book: PlanBook) -> None:
        """Follow answers that arrived after an epoch stopped waiting; close plans an epoch left behind."""
        for cid in self.specs:
            for record in book.plans_in_state(cid, STALE_STATES):
                if record.created_by == "optimizer":
                    book.record_state(record.plan_id, PlanState.FAILED, self._actor,
                                       {"stage": "reconcile", "error": "epoch ended before this plan was dispatched"})
            active = self._sender.field_active(cid)
            # oldest first, so that when several were applied late the newest ends up active
            for record in reversed(book.plans_in_state(cid, PENDING_STATES)):
                results = self._sender.results(record.plan_id)
                if any(r.status == messages.APPLIED for r in results) or (active and active.plan_id == record.plan_id):
                    book.record_state(record.plan_id, PlanState.ACTIVE, self._actor, {"source": "late answer"})
                elif record.state != PlanState.FAILED and any(r.status == messages.REJECTED for r in results):
                    book.record_state(record.plan_id, PlanState.REJECTED, self._actor, {"source": "late answer"})
            current = book.active_plan(cid)
            for record in book.plans_in_state(cid, (PlanState.ACCEPTED,)):
                if current is not None and record.version < current.version:
                    book.record_state(record.plan_id, PlanState.FAILED, self._actor,
                                       {"stage": "reconcile", "error": f"never applied; plan v{current.version} "
                                                                        "is in force"})

    def _known(self, controller_id: str) -> IntersectionSpec:
        spec = self.specs.get(controller_id)
        if spec is None:
            raise PlanError(f"{controller_id!r} is not in corridor {self.corridor.name}")
        return spec


def _same_timing(a: TimingPlan, b: TimingPlan) -> bool:
    """Whether two plans time the junction identically (then the running plan is kept and re-sent)."""
    return (a.mode == b.mode and a.splitCoordPhase == b.splitCoordPhase
            and abs(a.patternOffsetTime - b.patternOffsetTime) < 0.05
            and [(p.phase, p.splitTime, p.phaseMaximum1, p.phasePassage) for p in a.phases]
            == [(p.phase, p.splitTime, p.phaseMaximum1, p.phasePassage) for p in b.phases])


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (which PostgreSQL's jsonb refuses) with None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None
