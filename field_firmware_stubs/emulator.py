"""One field controller: signal program + conflict monitor + MQTT + fallback.

The world (SUMO or synthetic) calls :meth:`FieldEmulator.tick` once per
simulation step with the detector readings of that step and drives the
returned state. Everything time-related uses *simulation* seconds; wall-clock
timestamps on messages are ``clock_origin + seconds`` so a simulated hour
carries consistent timestamps whatever the speed of the run.

Threads: plan commands arrive on the MQTT network thread, which decodes,
checks and answers them (ACCEPTED/REJECTED) at once, then hands an accepted
plan to the tick thread through a locked inbox. Only the tick thread touches
the signal program, so the program needs no locking and a slow broker can
never stall a step.

Plan acceptance, in order: decodes (else ``MALFORMED``), a valid Ed25519
signature by a trusted key when a verifier is configured (else
``SIGNATURE``), identity (``IDENTITY``), expiry
(``EXPIRED``, against the emulator's clock: a plan must carry an expiry, not
yet passed and at most ``max_plan_expiry_s`` ahead, so no plan, signed or
not, is valid for ever and a captured one dies within that bound), a re-send of the plan already
accepted is answered again (``applied`` once in force) and counts as the
centre's heartbeat, an older accepted plan sent again is refused
(``REPLAY``), version must exceed the last central plan's
(``STALE_VERSION``), then every safety rule of
:func:`plan_check.check_plan` (``IDENTITY`` ... ``SERVES_ALL``). A malformed
or unsafe command from the centre means the centre cannot be trusted: the
controller keeps the heads safe by going (or staying) on its local
time-of-day plan.

Answers go only to this controller's own ``plan/result`` topic: an MQTT 5
ResponseTopic is a request from whoever published the command, and obeying
it let a command steer the controller's answers into any topic its ACL may
write (its own counts, for one). The correlation data is echoed.

Telemetry (count reports, event batches) goes through an outbox
(:mod:`field_firmware_stubs.outbox`): a message leaves it only when the
broker's PUBACK says a subscriber took it (not ``0x10`` *No matching
subscribers*, which is what a restarted Mosquitto answers until the ingest
workers have subscribed again); the rest is sent again, kept across a clean
restart in ``state_dir``, bounded. The ingest stores by natural keys, so a
second copy is a harmless duplicate.

Replay memory (the last central version, recent plan ids, the plan that may
be taken back and the plan in force) is kept in a small JSON file in
``state_dir`` when one is given, written atomically (temporary file, fsync,
rename, fsync of the directory) *before* a plan is answered ``accepted``, so
a restarted controller still refuses a captured older plan (``REPLAY`` /
``STALE_VERSION``). Without ``state_dir`` it lives in memory only (tests,
load benchmarks): a restart forgets it, and only the expiry bound limits a
replay.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from field_firmware_stubs import events as ev
from field_firmware_stubs.approach_schedule import ApproachVehicle
from field_firmware_stubs.clearance_monitor import ClearanceMonitor
from field_firmware_stubs.conflict_monitor import ConflictMonitor
from field_firmware_stubs.durable import write_durably
from field_firmware_stubs.events import HiResEvent
from field_firmware_stubs.link import Endpoint, FieldGateway, MqttLink, publish_properties, response_fields
from field_firmware_stubs.outbox import DEFAULT_CAPACITY, Outbox, TrackedEndpoint
from field_firmware_stubs.plan_check import check_plan
from field_firmware_stubs.program import SignalProgram
from traffic import messages as msg
from traffic import topics
from traffic.config import FieldSettings, MqttSettings
from traffic.errors import ConfigError, PlanError, UnsafePlanError
from traffic.intersection import IntersectionSpec
from traffic.plan import TimingPlan
from traffic.security.signing import PlanSignatureError, PlanVerifier, parse_plan_json

__all__ = ["DetectorReading", "FieldEmulator", "FieldStats", "MALFORMED", "EXPIRED", "STALE_VERSION", "REPLAY",
           "SIGNATURE"]

log = logging.getLogger(__name__)

MALFORMED = "MALFORMED"
EXPIRED = "EXPIRED"
STALE_VERSION = "STALE_VERSION"
REPLAY = "REPLAY"          # a central plan accepted earlier and since replaced, sent again
SIGNATURE = "SIGNATURE"    # unsigned, unknown key, or the signature does not match the plan
_SEEN_MAX = 4096           # accepted plan ids remembered for the replay check
_SEEN_PERSISTED = 256      # of which the most recent are kept in the state file (older ones: STALE_VERSION)
STATE_SCHEMA = "field-state/1"
#: default bound on how far ahead a plan's expiry may lie (s); the centre's default expiry is 120 s
DEFAULT_MAX_PLAN_EXPIRY_S = 900.0
#: clock difference between centre and cabinet tolerated on top of the bound (s)
EXPIRY_SKEW_S = 5.0
_unsigned_warned = threading.Event()
_EPS = 1e-6


@dataclass(frozen=True)
class DetectorReading:
    """What one loop detector saw during one simulation step."""

    count: int = 0                  # vehicles whose front crossed the loop during the step
    occupancy_pct: float = 0.0      # share of the step the loop was occupied, 0..100
    presence: bool | None = None    # None: derived from count and occupancy
    motorcycles: int | None = None  # None when the detector cannot classify

    @property
    def occupied(self) -> bool:
        if self.presence is not None:
            return self.presence
        return self.count > 0 or self.occupancy_pct > 0.0


@dataclass
class FieldStats:
    """Counters for tests, the demo and load benchmarks."""

    counts_published: int = 0
    count_records: int = 0
    event_batches: int = 0
    events_published: int = 0
    status_published: int = 0
    plans_accepted: int = 0
    plans_rejected: int = 0
    plans_applied: int = 0
    fallbacks: int = 0
    publish_failures: int = 0
    rejected_rules: list[str] = field(default_factory=list)


class _NoLink:
    """Endpoint before start(): nothing is published (offline operation, load tests)."""

    connected = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: object = None) -> bool:
        return False

    def publish_tracked(self, topic: str, payload: bytes, *, qos: int = 1) -> int | None:
        return None

    def take_result(self, mid: int) -> int | None:
        return None


class FieldEmulator:
    """One intersection controller emulator. See the module docstring.

    ``spec`` is the intersection as its database knows it; ``tod_plan`` the
    local time-of-day plan (default ``spec.default_plan()``, checked here so
    an unsafe fallback is refused at construction); ``count_interval_s`` the
    detector count interval, aligned to ``clock_origin`` (tz-aware: the
    wall-clock time of simulation second 0); ``settings`` the fallback
    timeout and transition step. With ``gateway`` the emulator shares that
    connection instead of opening its own. ``expiry_clock`` overrides the
    clock used to judge plan expiry (default: the simulated clock).
    ``plan_verifier`` (``traffic.security.signing.PlanVerifier``) makes the
    emulator refuse every plan not signed by a trusted key (``SIGNATURE``);
    without one it accepts unsigned plans and warns once per process
    (development mode).
    ``max_plan_expiry_s`` bounds a plan's ``expires_at`` (at most that far
    ahead of the expiry clock, plus :data:`EXPIRY_SKEW_S`); a plan without
    an expiry or beyond the bound is refused ``EXPIRED``. ``state_dir``
    persists the replay memory across restarts (see the module docstring;
    one file per controller, so emulators may share the directory).
    ``startup_all_red_s`` is the start-up all-red shown from the first tick
    before the first green (default and floor: the longest red clearance of
    the design and of the TOD plan), so a controller that starts or takes
    over heads mid-interval never shows the tail of a yellow or of a green
    (which its own monitor would rightly judge a short yellow: issue 12) and
    the monitors judge every state it drives from its first tick on.
    Without :meth:`start` the emulator runs offline and publishes nothing.
    """

    def __init__(self, spec: IntersectionSpec, *, site: str, mqtt: MqttSettings,
                 tod_plan: TimingPlan | None = None, count_interval_s: int = 60,
                 clock_origin: datetime, settings: FieldSettings | None = None,
                 gateway: FieldGateway | None = None,
                 expiry_clock: Callable[[], datetime] | None = None,
                 plan_verifier: PlanVerifier | None = None,
                 startup_all_red_s: float | None = None,
                 max_plan_expiry_s: float | None = None,
                 state_dir: Path | str | None = None,
                 outbox_capacity: int = DEFAULT_CAPACITY) -> None:
        if clock_origin.tzinfo is None:
            raise ConfigError("clock_origin must carry a UTC offset")
        if not 1 <= count_interval_s <= 3600:
            raise ConfigError(f"count_interval_s must be 1..3600, got {count_interval_s}")
        self.spec = spec
        self.controller_id = topics.check_id(spec.controller_id, "controller id")
        self.site = topics.check_id(site, "site")
        self.settings = settings or FieldSettings()
        # explicit arguments win; otherwise the site's [field] settings (startup_all_red_s 0 = automatic)
        if startup_all_red_s is None and self.settings.startup_all_red_s > 0:
            startup_all_red_s = self.settings.startup_all_red_s
        if max_plan_expiry_s is None:
            max_plan_expiry_s = self.settings.max_plan_expiry_s or DEFAULT_MAX_PLAN_EXPIRY_S
        if state_dir is None and self.settings.state_dir:
            state_dir = self.settings.state_dir
        self.tod_plan = tod_plan or spec.default_plan()
        violations = check_plan(self.tod_plan, spec)
        if violations:
            raise UnsafePlanError(violations)
        longest_red = max([p.red_clear_s for p in spec.phases] + [p.phaseRedClear for p in self.tod_plan.phases])
        if startup_all_red_s is None:
            startup_all_red_s = math.ceil(longest_red * 10.0 - 1e-6) / 10.0
        if not (math.isfinite(startup_all_red_s) and startup_all_red_s >= longest_red - _EPS):
            raise ConfigError(f"startup_all_red_s must be at least the longest red clearance {longest_red} s, "
                              f"got {startup_all_red_s}")
        self.startup_all_red_s = float(startup_all_red_s)
        if not (math.isfinite(max_plan_expiry_s) and max_plan_expiry_s > 0):
            raise ConfigError(f"max_plan_expiry_s must be positive, got {max_plan_expiry_s}")
        self.max_plan_expiry_s = float(max_plan_expiry_s)
        self.count_interval_s = count_interval_s
        self.stats = FieldStats()
        #: the site's approach sensor sees part of some approach only (the SUMO world sets it where a lane is
        #: covered for less than its minimum): the schedule may then lengthen greens, never shorten them
        self.partial_approach_view = False
        self._mqtt = mqtt
        self._gateway = gateway
        self._origin = clock_origin
        self._expiry_clock = expiry_clock or (lambda: self.clock(self._now))
        self._topic = {leaf: topics.topic(self.site, self.controller_id, leaf) for leaf in
                       (topics.COUNTS, topics.EVENTS, topics.STATUS, topics.PLAN_SET, topics.PLAN_RESULT,
                        topics.PLAN_ACTIVE)}
        self._link: Endpoint = _NoLink()
        self._tracked: TrackedEndpoint | None = None  # the link, when it reports PUBACKs (outbox in use)
        self._mqtt_link: MqttLink | None = None
        self._verifier = plan_verifier

        self._monitor = ClearanceMonitor(spec)  # conflict monitor + red clearance
        self._program: SignalProgram | None = None
        self._now = 0.0
        self._prev_now: float | None = None

        # shared with the MQTT thread (guarded by _lock)
        self._lock = threading.Lock()
        self._inbox: list[tuple[TimingPlan, str | None, bytes | None]] = []
        self._central_version = 0
        self._accepted_id: str | None = None
        self._readmit_id: str | None = None  # central plan dropped by a fallback; a re-send restores it
        self._seen_ids: OrderedDict[str, None] = OrderedDict()  # central plans accepted (replay guard)
        self._applied_at: dict[str, float] = {}  # central plan in force -> boundary time (s)
        self._contact = False
        self._garbage = False
        self._link_lost = False
        self._status_key: tuple | None = None
        self._active_central: TimingPlan | None = None  # central plan in force (persisted with the memory)
        self._save_lock = threading.Lock()  # one writer of the state file at a time, snapshots in order
        self.state_file: Path | None = None
        if state_dir is not None:
            self.state_file = Path(state_dir) / f"field-{self.site}-{self.controller_id}.json"
            self._load_state()
        # count reports and event batches until a subscriber has them (tick thread only)
        self.outbox = Outbox(self.controller_id, capacity=outbox_capacity,
                             path=None if state_dir is None else
                             Path(state_dir) / f"outbox-{self.site}-{self.controller_id}.json")

        # tick-thread state
        self._central_in_charge = False
        self._last_contact: float | None = None
        self._mode = msg.MODE_TOD
        self._detail = "starting"
        self._replies: dict[str, tuple[str | None, bytes | None]] = {}
        self._events: list[HiResEvent] = []
        self._event_seq = 0
        self._count_seq = 0
        self._acc_k: int | None = None
        self._acc_complete = False
        self._det_ids = tuple(d.detector_id for d in spec.detectors)
        self._acc_count = dict.fromkeys(self._det_ids, 0)
        self._acc_moto: dict[str, int | None] = dict.fromkeys(self._det_ids, 0)
        self._acc_occ = dict.fromkeys(self._det_ids, 0.0)

    # ------------------------------------------------------------------ properties
    @property
    def plan(self) -> TimingPlan:
        """The plan in force (the TOD plan until the first tick)."""
        return self._program.plan if self._program is not None else self.tod_plan

    @property
    def mode(self) -> str:
        """``central``, ``tod`` or ``flash``."""
        return self._mode

    @property
    def program(self) -> SignalProgram | None:
        return self._program

    @property
    def monitor(self) -> ConflictMonitor:
        return self._monitor

    @property
    def connected(self) -> bool:
        return self._link.connected

    def clock(self, sim_s: float) -> datetime:
        """Wall-clock timestamp of simulation second ``sim_s``."""
        return self._origin + timedelta(seconds=round(sim_s, 1))

    def topic(self, leaf: str) -> str:
        """This controller's topic for ``leaf`` (a traffic.topics constant)."""
        return self._topic[leaf]

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect (own client, or through the gateway) and announce ``online``."""
        if self._gateway is not None:
            self._link = self._gateway.register(self.controller_id, self._on_plan_message,
                                                self._on_connect, self._on_disconnect)
            self._tracked = self._link if isinstance(self._link, TrackedEndpoint) else None
            return
        offline = msg.StatusMessage(self.controller_id, msg.OFFLINE, mode=self._mode,
                                    detail="connection lost").to_json()
        link = MqttLink(self._mqtt, client_id=f"field-{self.site}-{self.controller_id}",
                        subscriptions=(self._topic[topics.PLAN_SET],), on_message=self._on_raw_message,
                        on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                        will=(self._topic[topics.STATUS], offline))
        self._mqtt_link = link
        self._link = link
        self._tracked = link
        link.start(timeout_s)

    def stop(self, *, discard_session: bool = False) -> None:
        """Flush pending events, deliver the outbox (a few seconds at most), publish retained
        ``offline`` and disconnect cleanly; what is still unconfirmed is saved for the next run."""
        if self._events:
            self._flush_events()
        if self._tracked is not None and not self.outbox.drain(self._tracked, qos=self._mqtt.qos or 1):
            log.warning("%s: %d telemetry message(s) not confirmed before stopping; kept for the next run",
                        self.controller_id, len(self.outbox))
        self._publish(self._topic[topics.STATUS], msg.StatusMessage(
            self.controller_id, msg.OFFLINE, mode=self._mode, plan_id=self.plan.plan_id,
            plan_version=self.plan.version, at=self.clock(self._now), detail="stopped").to_json(), retain=True)
        if self._mqtt_link is not None:
            self._mqtt_link.stop(discard_session=discard_session)
            self._mqtt_link = None
        elif self._gateway is not None:
            self._gateway.unregister(self.controller_id)
        self._link = _NoLink()
        self._tracked = None
        self.outbox.save()

    def set_tod_plan(self, plan: TimingPlan) -> bool:
        """Make ``plan`` the local time-of-day plan (the day plan moved to its next period).

        Call from the tick thread (between ticks). The plan is checked like a
        central one (raises :class:`UnsafePlanError`, nothing changes). When
        the controller runs on its time-of-day plan it moves to the new one
        at the next cycle boundary; under central control only the fallback
        changes. Returns whether anything changed.
        """
        if plan.plan_id == self.tod_plan.plan_id:
            return False
        violations = check_plan(plan, self.spec)
        if violations:
            raise UnsafePlanError(violations)
        self.tod_plan = plan
        if self._program is not None and not self._central_in_charge:
            self._program.request_plan(plan)
        return True

    # ------------------------------------------------------------------ the step
    def tick(self, now_s: float, detector_readings: Mapping[str, DetectorReading],
             approach: Sequence[ApproachVehicle] | None = None) -> str:
        """Advance to simulation second ``now_s`` with this step's readings; return the state to drive.

        ``approach``: the vehicles the approach sensor sees now, when the
        site has one (see :mod:`field_firmware_stubs.approach_schedule`).
        """
        if self._program is None:
            self._program = SignalProgram(self.spec, self.tod_plan, start_time=now_s,
                                          transition_max_step_s=self.settings.transition_max_step_s,
                                          startup_all_red_s=self.startup_all_red_s)
            self._last_contact = now_s
            self._detail = "start-up all-red"
        self._now = now_s
        self._take_inbox(now_s)
        self._check_fallback(now_s)
        presence = {d: r.occupied for d, r in detector_readings.items()}
        state = (self._program.step(now_s, presence) if approach is None else
                 self._program.step(now_s, presence, approach, self.partial_approach_view))
        if self._detail == "start-up all-red" and not self._program.starting_up:
            self._detail = "local time-of-day plan"
        driven = self._monitor.observe(now_s, state)
        self._events.extend(self._program.drain_events())
        if self._monitor.tripped and self._mode != msg.MODE_FLASH:
            self._enter_flash(now_s)
        for at, plan in self._program.drain_applied():
            self._on_applied(at, plan)
        self._accumulate(now_s, detector_readings)
        if self._tracked is not None:
            self.outbox.pump(self._tracked, qos=self._mqtt.qos or 1)
        self._publish_status_if_changed()
        self._prev_now = now_s
        return driven

    # ------------------------------------------------------------------ plans (MQTT thread)
    def _on_raw_message(self, topic: str, payload: bytes, properties: object) -> None:
        response, correlation = response_fields(properties)  # type: ignore[arg-type]
        self._on_plan_message(payload, response, correlation)

    def _on_plan_message(self, payload: bytes, response_topic: str | None, correlation: bytes | None) -> None:
        """Judge one plan command and answer it; runs on the MQTT thread.

        With a verifier configured nothing unauthenticated may change what
        the controller does: a payload that is not a validly signed plan is
        refused (``MALFORMED`` or ``SIGNATURE``) *without* the fallback a bad
        central plan triggers, or anyone able to publish on the plan topic
        could push the junction off its plan. A signed plan that is malformed
        or unsafe does trigger it: then the centre itself is not to be trusted.
        """
        authenticated = self._verifier is not None
        if len(payload) > msg.MAX_PAYLOAD_BYTES:
            self._reject("?", MALFORMED, f"payload too large ({len(payload)} bytes)", response_topic, correlation,
                         garbage=not authenticated)
            return
        try:
            data = parse_plan_json(payload)  # strict: duplicate names refused (a signed object means one plan)
        except Exception as exc:  # noqa: BLE001 - any undecodable input is answered, never raised
            self._reject("?", MALFORMED, f"plan is not valid JSON: {exc}", response_topic, correlation,
                         garbage=not authenticated)
            return
        if not isinstance(data, dict):
            self._reject("?", MALFORMED, "plan must be a JSON object", response_topic, correlation,
                         garbage=not authenticated)
            return
        claimed = data.get("plan_id")
        claimed_id = claimed if isinstance(claimed, str) and claimed else "?"
        key = None
        if self._verifier is not None:
            try:
                key = self._verifier.verify_dict(data)
            except PlanSignatureError as exc:
                self._reject(claimed_id, SIGNATURE, str(exc), response_topic, correlation)
                return
        elif not _unsigned_warned.is_set():  # once per process: a load test runs hundreds of emulators
            _unsigned_warned.set()
            log.warning("%s: no plan verifier configured: accepting unsigned plans (development mode)",
                        self.controller_id)
        try:
            plan = TimingPlan.from_dict(data)
        except PlanError as exc:
            self._reject(claimed_id, MALFORMED, str(exc), response_topic, correlation, garbage=True)
            return
        except Exception as exc:  # noqa: BLE001 - any undecodable input is answered, never raised
            self._reject(claimed_id, MALFORMED, f"cannot decode plan: {exc}", response_topic, correlation,
                         garbage=True)
            return
        try:
            expiry_problem = self._expiry_problem(plan)
        except PlanError as exc:
            self._reject(plan.plan_id, MALFORMED, str(exc), response_topic, correlation, garbage=True)
            return
        if plan.controller_id != self.controller_id:
            # signed plans can be copied from another controller's topic by anyone who may publish:
            # with signatures on, a mis-addressed one says nothing against the centre
            self._reject(plan.plan_id, "IDENTITY", f"plan is for {plan.controller_id!r}, this is "
                         f"{self.controller_id!r}", response_topic, correlation, garbage=not authenticated)
            return
        if expiry_problem:
            self._reject(plan.plan_id, EXPIRED, expiry_problem, response_topic, correlation)
            return
        with self._lock:
            duplicate = plan.plan_id == self._accepted_id
            readmit = plan.plan_id == self._readmit_id
            replay = plan.plan_id in self._seen_ids and not duplicate and not readmit
            stale = plan.version <= self._central_version and not readmit
            current = self._central_version
        if duplicate:  # a re-send (the centre's heartbeat): answer what is true now, change nothing
            with self._lock:
                self._contact = True
                applied_at = self._applied_at.get(plan.plan_id)
            if applied_at is not None:
                self._answer(msg.PlanResult(self.controller_id, plan.plan_id, msg.APPLIED, reason="already in force",
                                            at=self.clock(applied_at)), response_topic, correlation)
            else:
                self._answer(msg.PlanResult(self.controller_id, plan.plan_id, msg.ACCEPTED,
                                            reason="already accepted"), response_topic, correlation)
            return
        if replay:
            self._reject(plan.plan_id, REPLAY, f"plan {plan.plan_id} v{plan.version} was accepted before and has "
                         f"been replaced; an old plan is never taken again", response_topic, correlation)
            return
        if stale:
            self._reject(plan.plan_id, STALE_VERSION, f"version {plan.version} is not newer than {current}",
                         response_topic, correlation)
            return
        violations = check_plan(plan, self.spec)
        if violations:
            reason = "; ".join(f"{v.rule}: {v.detail}" for v in violations)
            self._reject(plan.plan_id, violations[0].rule, reason, response_topic, correlation, garbage=True)
            return
        with self._lock:
            self._central_version = max(self._central_version, plan.version)
            self._accepted_id = plan.plan_id
            self._readmit_id = None
            self._seen_ids[plan.plan_id] = None
            while len(self._seen_ids) > _SEEN_MAX:
                self._seen_ids.popitem(last=False)
            self._inbox.append((plan, response_topic, correlation))
            self._contact = True
        self._save_state()  # before the answer: an accepted version must survive a restart
        self.stats.plans_accepted += 1
        signed = f"; signed by key {key}" if key else ""
        self._answer(msg.PlanResult(self.controller_id, plan.plan_id, msg.ACCEPTED,
                                    reason=f"valid{signed}; applies at the next cycle boundary"),
                     response_topic, correlation)

    def _reject(self, plan_id: str, rule: str, reason: str, response_topic: str | None,
                correlation: bytes | None, *, garbage: bool = False) -> None:
        log.warning("%s: rejected plan %s: %s %s", self.controller_id, plan_id, rule, reason)
        self.stats.plans_rejected += 1
        self.stats.rejected_rules.append(rule)
        if garbage:
            with self._lock:
                self._garbage = True
        self._answer(msg.PlanResult(self.controller_id, plan_id[:64] or "?", msg.REJECTED, rule=rule,
                                    reason=reason[:2000]), response_topic, correlation)

    def _answer(self, result: msg.PlanResult, response_topic: str | None, correlation: bytes | None) -> None:
        if result.at is None:
            result = msg.PlanResult(result.controller_id, result.plan_id, result.status, result.rule,
                                    result.reason, self.clock(self._now))
        self._publish(self._reply_topic(response_topic), result.to_json(),
                      properties=publish_properties(correlation))

    def _reply_topic(self, response_topic: str | None) -> str:
        """Always this controller's own plan/result topic, whatever the command's ResponseTopic says.

        The ResponseTopic comes from the publisher of the command; obeying it
        let a command make the controller write its answers into its own
        counts topic (or any other topic its ACL allows).
        """
        own = self._topic[topics.PLAN_RESULT]
        if response_topic and response_topic != own:
            log.warning("%s: ignoring ResponseTopic %r: answers go to %s only", self.controller_id,
                        response_topic[:120], own)
        return own

    def _expiry_problem(self, plan: TimingPlan) -> str:
        """Why ``plan``'s expiry is not acceptable ('' if it is): missing, passed, or beyond the bound.

        Raises PlanError when ``expires_at`` is not a time with a UTC offset.
        """
        if plan.expires_at is None:
            return "plan carries no expiry (expires_at); every plan must expire"
        now = self._expiry_clock()
        if plan.is_expired(now):
            return f"plan expired at {plan.expires_at}"
        ahead = (datetime.fromisoformat(plan.expires_at) - now).total_seconds()
        if ahead > self.max_plan_expiry_s + EXPIRY_SKEW_S:
            return (f"plan expires at {plan.expires_at}, {ahead:.0f} s ahead: more than the "
                    f"{self.max_plan_expiry_s:.0f} s this controller accepts")
        return ""

    # ------------------------------------------------------------------ plans (tick thread)
    def _take_inbox(self, now: float) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
            contact, self._contact = self._contact, False
            garbage, self._garbage = self._garbage, False
            link_lost, self._link_lost = self._link_lost, False
        if contact:
            self._last_contact = now
        if garbage and self._central_in_charge:
            self._fall_back(now, ev.SOURCE_TOD_REJECTED, "centre sent a malformed or unsafe plan")
        for plan, response, correlation in inbox:
            assert self._program is not None
            try:
                self._program.request_plan(plan)
            except UnsafePlanError as exc:  # cannot happen after check_plan; never let it reach the heads
                log.error("%s: program refused plan %s: %s", self.controller_id, plan.plan_id, exc)
                continue
            self._replies[plan.plan_id] = (response, correlation)
            self._central_in_charge = True
            self._last_contact = now
        if link_lost and self._central_in_charge:
            self._fall_back(now, ev.SOURCE_TOD_LINK_DOWN, "MQTT link lost")

    def _check_fallback(self, now: float) -> None:
        if (self._central_in_charge and self._last_contact is not None
                and now - self._last_contact > self.settings.central_silence_timeout_s):
            self._fall_back(now, ev.SOURCE_TOD_SILENCE,
                            f"centre silent for {now - self._last_contact:.0f} s")

    def _fall_back(self, now: float, source: int, why: str) -> None:
        assert self._program is not None
        log.warning("%s: falling back to the time-of-day plan: %s", self.controller_id, why)
        self._central_in_charge = False
        with self._lock:
            self._readmit_id, self._accepted_id = self._accepted_id, None
        self.stats.fallbacks += 1
        self._events.append(HiResEvent(round(now, 1), ev.CONTROL_SOURCE, source))
        if self._program.plan.plan_id != self.tod_plan.plan_id or self._program.pending_plan is not None:
            self._program.request_plan(self.tod_plan)
        if self._mode != msg.MODE_FLASH:
            self._mode = msg.MODE_TOD
        self._detail = f"time-of-day fallback: {why}"

    def _on_applied(self, at: float, plan: TimingPlan) -> None:
        self.stats.plans_applied += 1
        is_tod = plan.plan_id == self.tod_plan.plan_id
        with self._lock:
            self._applied_at = {} if is_tod else {plan.plan_id: at}
        self._active_central = None if is_tod else plan
        self._save_state()
        if not is_tod:
            response, correlation = self._replies.pop(plan.plan_id, (None, None))
            self._answer(msg.PlanResult(self.controller_id, plan.plan_id, msg.APPLIED,
                                        reason="in force from the cycle boundary", at=self.clock(at)),
                         response, correlation)
            self._events.append(HiResEvent(round(at, 1), ev.CONTROL_SOURCE, ev.SOURCE_CENTRAL))
        if self._mode != msg.MODE_FLASH:
            self._mode = msg.MODE_TOD if is_tod else msg.MODE_CENTRAL
            self._detail = "local time-of-day plan" if is_tod else f"central plan v{plan.version}"
        self._publish(self._topic[topics.PLAN_ACTIVE], plan.to_json(), retain=True)

    def _enter_flash(self, now: float) -> None:
        self._mode = msg.MODE_FLASH
        self._detail = f"conflict monitor: {self._monitor.reason}"
        self._events.append(HiResEvent(round(now, 1), ev.FLASH_STATUS, ev.FLASH_CONFLICT_MONITOR))
        self._flush_events()

    # ------------------------------------------------------------------ replay memory on disk
    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            seen = list(self._seen_ids)[-_SEEN_PERSISTED:]
            readmit = self._accepted_id or self._readmit_id
            version = self._central_version
        active = self._active_central
        return {"schema": STATE_SCHEMA, "site": self.site, "controller_id": self.controller_id,
                "central_version": version, "seen_plan_ids": seen, "readmit_plan_id": readmit,
                "active_plan": None if active is None else active.to_dict(),
                "saved_at": datetime.now(UTC).isoformat()}

    def _save_state(self) -> None:
        """Write the replay memory atomically (temp file + fsync + rename + directory fsync).

        A failure is logged, not raised: the plan was judged safe, and the
        expiry bound still limits how long a replay after a restart could
        work; stopping the controller over it would be worse.
        """
        if self.state_file is None:
            return
        path = self.state_file
        with self._save_lock:
            data = json.dumps(self._snapshot(), sort_keys=True).encode()
            try:
                write_durably(path, data)
            except OSError as exc:
                log.error("%s: cannot persist the replay memory to %s: %s", self.controller_id, path, exc)

    def _load_state(self) -> None:
        """Restore the replay memory of an earlier run; a corrupt file is a ConfigError (never ignored).

        The controller starts on its TOD plan (after the start-up all-red):
        the plan that was in force is only remembered as the one a re-send
        from the centre (fresh expiry, signed) may bring back.
        """
        assert self.state_file is not None
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read the field state {self.state_file}: {exc}") from exc
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
                raise ValueError(f"not a {STATE_SCHEMA} document")
            if data.get("controller_id") != self.controller_id or data.get("site") != self.site:
                raise ValueError(f"belongs to {data.get('site')}/{data.get('controller_id')}")
            version = data["central_version"]
            seen = data["seen_plan_ids"]
            readmit = data.get("readmit_plan_id")
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(f"central_version {version!r}")
            if not isinstance(seen, list) or not all(isinstance(x, str) for x in seen):
                raise ValueError("seen_plan_ids must be a list of strings")
            if readmit is not None and not isinstance(readmit, str):
                raise ValueError("readmit_plan_id must be a string")
            active = data.get("active_plan")
            active_plan = None if active is None else TimingPlan.from_dict(active)
        except (ValueError, KeyError, TypeError, PlanError) as exc:
            raise ConfigError(f"field state {self.state_file} is unreadable ({exc}); the replay memory "
                              f"must not be silently lost: repair or remove the file") from exc
        self._central_version = version
        self._seen_ids = OrderedDict.fromkeys(seen)
        self._readmit_id = readmit
        self._active_central = active_plan
        log.info("%s: replay memory restored from %s: central version %d, %d plan ids", self.controller_id,
                 self.state_file, version, len(seen))

    # ------------------------------------------------------------------ MQTT link events
    def _on_connect(self) -> None:
        with self._lock:
            self._status_key = None
        self._publish_status()

    def _on_disconnect(self) -> None:
        with self._lock:
            self._link_lost = True

    def _publish_status_if_changed(self) -> None:
        plan = self.plan
        key = (self._mode, plan.plan_id, self._detail)
        if key != self._status_key and self._link.connected:
            self._publish_status()

    def _publish_status(self) -> None:
        plan = self.plan
        with self._lock:
            self._status_key = (self._mode, plan.plan_id, self._detail)
        status = msg.StatusMessage(self.controller_id, msg.ONLINE, mode=self._mode, plan_id=plan.plan_id,
                                   plan_version=plan.version, at=self.clock(self._now), detail=self._detail)
        if self._publish(self._topic[topics.STATUS], status.to_json(), retain=True):
            self.stats.status_published += 1

    # ------------------------------------------------------------------ counts & events
    def _accumulate(self, now: float, readings: Mapping[str, DetectorReading]) -> None:
        if not self._det_ids:
            if self._events and self._crossed_interval(now):
                self._flush_events()
            return
        interval = self.count_interval_s
        k = int(math.floor((now - _EPS) / interval))
        if self._acc_k is None:
            previous = self._prev_now if self._prev_now is not None else now - 1.0
            self._acc_k, self._acc_complete = k, previous <= k * interval + _EPS
        elif k > self._acc_k:  # an interval ended between two ticks
            self._flush_counts()
            self._acc_k, self._acc_complete = k, True
        dt = now - self._prev_now if self._prev_now is not None else 1.0
        counts, occupancy, motos = self._acc_count, self._acc_occ, self._acc_moto
        for det, r in readings.items():
            if det not in counts:
                continue
            if r.count:
                counts[det] += r.count
                moto = motos[det]
                if moto is not None:  # an empty step says nothing about classification
                    motos[det] = None if r.motorcycles is None else moto + r.motorcycles
            if r.occupancy_pct:
                occupancy[det] += min(100.0, max(0.0, r.occupancy_pct)) * dt / 100.0
        if now >= (k + 1) * interval - _EPS:
            self._flush_counts()
            self._acc_k, self._acc_complete = k + 1, True

    def _crossed_interval(self, now: float) -> bool:
        previous = self._prev_now if self._prev_now is not None else now
        return math.floor((previous + _EPS) / self.count_interval_s) != math.floor((now + _EPS) / self.count_interval_s)

    def _flush_counts(self) -> None:
        assert self._acc_k is not None
        interval = self.count_interval_s
        if self._acc_complete:
            records = tuple(
                msg.CountRecord(det, min(self._acc_count[det], 10_000),
                                round(min(100.0, self._acc_occ[det] / interval * 100.0), 2),
                                None if self._acc_moto[det] is None else min(self._acc_moto[det], self._acc_count[det]))
                for det in self._det_ids)
            report = msg.CountReport(self.controller_id, self._count_seq, self.clock(self._acc_k * interval),
                                     interval, records)
            self._count_seq += 1
            if self._send_telemetry(f"counts/{report.interval_start.isoformat()}", self._topic[topics.COUNTS],
                                    report.to_json()):
                self.stats.counts_published += 1
                self.stats.count_records += len(records)
        for det in self._det_ids:
            self._acc_count[det] = 0
            self._acc_occ[det] = 0.0
            self._acc_moto[det] = 0
        self._flush_events()

    def _flush_events(self) -> None:
        pending, self._events = self._events, []
        for start in range(0, len(pending), msg.MAX_EVENTS):
            chunk = pending[start:start + msg.MAX_EVENTS]
            batch = msg.EventBatch(self.controller_id, self._event_seq,
                                   tuple((self.clock(e.time), e.code, e.param) for e in chunk))
            self._event_seq += 1
            key = f"events/{self.clock(chunk[0].time).isoformat()}#{batch.seq}"
            if self._send_telemetry(key, self._topic[topics.EVENTS], batch.to_json()):
                self.stats.event_batches += 1
                self.stats.events_published += len(chunk)

    def _send_telemetry(self, key: str, topic: str, payload: bytes) -> bool:
        """Hand a count report or event batch to the outbox and send it (False when offline: not started).

        An endpoint that cannot tell the PUBACK (no ``publish_tracked``: an
        in-process bus delivers at once) is published to directly.
        """
        if self._tracked is None:
            return self._publish(topic, payload)  # _NoLink: False (offline), nothing kept
        self.outbox.add(key, topic, payload)
        self.outbox.pump(self._tracked, qos=self._mqtt.qos or 1)
        return True

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False, properties: object = None) -> bool:
        ok = self._link.publish(topic, payload, qos=self._mqtt.qos or 1, retain=retain,
                                properties=properties)  # type: ignore[arg-type]
        if not ok and not isinstance(self._link, _NoLink):
            self.stats.publish_failures += 1
        return ok
