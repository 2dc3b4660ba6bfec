"""Deliver plans to the field over MQTT 5 and wait for its answer.

The dispatcher is the last gate before a controller: :meth:`Dispatcher.dispatch`
runs :func:`controller.safety.ensure_safe` *before* anything touches the
network, so an unsafe plan is never published, whatever the caller did before.

Request/response follows MQTT 5: the plan goes to the controller's
``plan/set`` topic (QoS 1) with ResponseTopic (its ``plan/result`` topic),
CorrelationData (the plan id) and MessageExpiryInterval, so a plan stuck in
the broker while a cabinet is offline dies instead of arriving stale. The
field answers on its own ``plan/result`` whatever the ResponseTopic says.

Every plan expires: the dispatcher sets ``expires_at`` to at most
``expiry_s`` from now and never beyond ``max_expiry_s`` (default
:data:`DEFAULT_MAX_EXPIRY_S`), clamping an expiry the caller put on the plan
(a plan signed with a year-2100 expiry could otherwise be replayed for ever);
the signature is made after that, so it covers the clamped expiry. The field
refuses a plan without an expiry or with one beyond its own bound. The
field answers ``accepted`` (valid, will apply at the next cycle boundary),
``rejected`` (rule + reason) and later ``applied``.

The dispatcher also follows ``plan/active`` (retained, the plan in force) and
``status`` (retained, online/offline) of the whole site, so the centre knows
what the field actually runs. Every callback is wrapped so one bad message
cannot stop paho's network loop.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from controller.safety import ensure_safe
from traffic import messages, topics
from traffic.config import MqttSettings
from traffic.errors import DispatchError, MessageError, PlanError, TransportError
from traffic.intersection import IntersectionSpec
from traffic.messages import PlanResult, StatusMessage
from traffic.mqtt_client import new_client
from traffic.plan import TimingPlan
from traffic.security.signing import PlanSigner

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DECISIONS = (messages.ACCEPTED, messages.REJECTED, messages.APPLIED)
FINAL = (messages.APPLIED, messages.REJECTED)
_SIGNED_KEEP = 10_000  # published plans remembered for signed_plan() (the audit reads them right away)
#: longest validity a dispatched plan may carry (s). The centre's default expiry
#: (``control.plan_expiry_s``) is 120 s; 900 s matches the field's default silence
#: timeout and its default ``max_plan_expiry_s``, so no plan outlives the window in
#: which the field would anyway give up on a silent centre.
DEFAULT_MAX_EXPIRY_S = 900.0


def _no_delay(client: paho.Client) -> None:
    """Disable Nagle's algorithm: paho does not, and a small plan/answer exchange
    otherwise waits on delayed ACKs (about 40 ms per hop on Linux)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # not TCP (unix socket, websockets proxy): nothing to tune
            log.debug("TCP_NODELAY not set: %s", exc)


def _guarded(handler: F) -> F:
    """Log and swallow any exception so paho's loop thread keeps running."""
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a callback must never kill the network loop
            log.exception("MQTT handler %s failed", handler.__name__)
            return None
    return wrapper  # type: ignore[return-value]


class Dispatcher:
    """Publishes plans to one site's controllers and tracks their answers and state.

    Use as a context manager (or call :meth:`connect` / :meth:`close`).
    With ``plan_signer`` (``traffic.security.signing.PlanSigner``) every plan
    is signed right before it is published, after the safety check and after
    its expiry is set (so the signature covers the expiry too);
    :meth:`signed_plan` returns exactly what went on the wire, for the audit.
    ``max_expiry_s`` bounds every plan's validity (see the module docstring).
    """

    def __init__(self, mqtt: MqttSettings, site: str, *, client_id: str,
                 connect_timeout_s: float = 10.0, plan_signer: PlanSigner | None = None,
                 max_expiry_s: float = DEFAULT_MAX_EXPIRY_S) -> None:
        if not max_expiry_s > 0:
            raise PlanError(f"max_expiry_s must be positive, got {max_expiry_s}")
        self.max_expiry_s = float(max_expiry_s)
        self._settings = mqtt
        self._signer = plan_signer
        self._signed: OrderedDict[str, TimingPlan] = OrderedDict()
        self.site = topics.check_id(site, "site")
        self._connect_timeout_s = connect_timeout_s
        self._cond = threading.Condition()
        self._results: dict[str, list[PlanResult]] = {}
        self._active: dict[str, TimingPlan] = {}
        self._status: dict[str, StatusMessage] = {}
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._connect_error: str | None = None
        self.bad_messages = 0
        self._client = new_client(mqtt, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---- lifecycle ---------------------------------------------------
    def connect(self) -> Dispatcher:
        """Connect, subscribe to results, active plans and status; raise TransportError on failure."""
        try:
            self._client.connect(self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to MQTT broker {self._settings.host}:{self._settings.port}: "
                                 f"{exc}") from exc
        self._client.loop_start()
        deadline = time.monotonic() + self._connect_timeout_s
        with self._cond:
            while not self._subscribed and self._connect_error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            error, ready = self._connect_error, self._subscribed
        if not ready:
            self.close()
            raise TransportError(f"MQTT broker {self._settings.host}:{self._settings.port} "
                                 f"{error or 'did not confirm connection and subscriptions in time'}")
        return self

    def close(self) -> None:
        """Disconnect and stop the network loop (safe to call twice)."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> Dispatcher:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the public operations -----------------------------------------
    def dispatch(self, plan: TimingPlan, spec: IntersectionSpec, *, expiry_s: float,
                 timeout_s: float) -> PlanResult:
        """Check, publish and wait for the field's first answer (accepted, rejected or applied).

        The plan goes out with ``expires_at`` = now + ``expiry_s`` (clamped to
        ``max_expiry_s``), or the caller's earlier expiry if it has one; a
        later caller expiry is clamped (logged), an already passed one is a
        PlanError (nothing published).

        Raises UnsafePlanError (nothing published), TransportError (broker did
        not take it) or DispatchError (no answer within ``timeout_s``).
        """
        ensure_safe(plan, spec)
        plan, expiry_s = self._bounded_expiry(plan, expiry_s)
        if self._signer is not None:
            plan = self._signer.sign(plan)
        with self._cond:
            self._signed[plan.plan_id] = plan
            while len(self._signed) > _SIGNED_KEEP:
                self._signed.popitem(last=False)
        cid = plan.controller_id
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.topic(self.site, cid, topics.PLAN_RESULT)
        props.CorrelationData = plan.plan_id.encode()
        props.MessageExpiryInterval = max(1, int(math.ceil(expiry_s)))
        with self._cond:
            # before publishing: the answer may beat us back. Answers to an earlier send of the same plan
            # (a re-send after a fallback) are history, not this send's answer.
            earlier = len(self._results.setdefault(plan.plan_id, []))
        deadline = time.monotonic() + timeout_s
        try:
            info = self._client.publish(topics.topic(self.site, cid, topics.PLAN_SET), plan.to_json(),
                                        qos=1, retain=False, properties=props)  # plans are always QoS 1
            info.wait_for_publish(timeout_s)
        except (ValueError, RuntimeError) as exc:
            raise TransportError(f"cannot publish plan {plan.plan_id} to {cid}: {exc}") from exc
        if not info.is_published():
            raise TransportError(f"broker did not acknowledge plan {plan.plan_id} for {cid} within {timeout_s} s")
        log.info("plan %s v%d published to %s", plan.plan_id, plan.version, cid)
        result = self._wait(plan.plan_id, DECISIONS, deadline, skip=earlier, from_active=False)
        if result is None:
            raise DispatchError(f"no answer from {cid} to plan {plan.plan_id} within {timeout_s} s")
        return result

    def _bounded_expiry(self, plan: TimingPlan, expiry_s: float) -> tuple[TimingPlan, float]:
        """``plan`` with an expiry no later than now + min(expiry_s, max_expiry_s), and its remaining seconds."""
        if not (isinstance(expiry_s, (int, float)) and math.isfinite(expiry_s) and expiry_s > 0):
            raise PlanError(f"expiry must be positive, got {expiry_s}")
        if expiry_s > self.max_expiry_s:
            log.warning("plan %s: expiry %.0f s clamped to the %.0f s maximum", plan.plan_id, expiry_s,
                        self.max_expiry_s)
            expiry_s = self.max_expiry_s
        now = datetime.now(UTC)
        bound = now + timedelta(seconds=expiry_s)
        expires = bound
        if plan.expires_at is not None:
            try:
                given = datetime.fromisoformat(plan.expires_at)
            except ValueError as exc:
                raise PlanError(f"expires_at: not an ISO-8601 time: {plan.expires_at!r}") from exc
            if given.tzinfo is None:
                raise PlanError("expires_at: must carry a UTC offset")
            if given <= now:
                raise PlanError(f"plan {plan.plan_id} expired at {plan.expires_at}; not sent")
            if given > bound:
                log.warning("plan %s: expiry %s clamped to %s (at most %.0f s ahead)", plan.plan_id,
                            plan.expires_at, bound.isoformat(), expiry_s)
            else:
                expires = given
        if plan.expires_at is None or expires != datetime.fromisoformat(plan.expires_at):
            # a signature made over the old expiry no longer holds: the signer re-signs below
            plan = replace(plan, expires_at=expires.isoformat(), signature=None)
        return plan, (expires - now).total_seconds()

    def await_applied(self, plan_id: str, timeout_s: float) -> PlanResult:
        """Wait until the field reports the plan in force (``applied``) or refuses it (``rejected``).

        A retained ``plan/active`` carrying the plan id counts as applied (the
        field's result may have been lost while we were disconnected).
        """
        result = self._wait(plan_id, FINAL, time.monotonic() + timeout_s)
        if result is None:
            raise DispatchError(f"plan {plan_id} not applied within {timeout_s} s")
        return result

    def signed_plan(self, plan_id: str) -> TimingPlan | None:
        """The plan exactly as last published for ``plan_id`` (with expiry and, if signing, signature)."""
        with self._cond:
            return self._signed.get(plan_id)

    def results(self, plan_id: str) -> list[PlanResult]:
        """Every answer received for ``plan_id`` so far, in arrival order."""
        with self._cond:
            return list(self._results.get(plan_id, ()))

    def field_active(self, controller_id: str) -> TimingPlan | None:
        """The plan the field last reported in force (retained ``plan/active``)."""
        with self._cond:
            return self._active.get(controller_id)

    def field_status(self, controller_id: str) -> StatusMessage | None:
        """The controller's last retained status (online/offline, mode, plan)."""
        with self._cond:
            return self._status.get(controller_id)

    @property
    def connected(self) -> bool:
        return self._connected

    # ---- internals -------------------------------------------------------
    def _wait(self, plan_id: str, wanted: tuple[str, ...], deadline: float, *, skip: int = 0,
              from_active: bool = True) -> PlanResult | None:
        """The first answer for ``plan_id`` with a status in ``wanted``, ignoring the first ``skip`` answers.

        With ``from_active`` a retained plan/active showing the plan counts as
        "applied" (its result message may have been lost); a send waits for
        the field's own answer to it instead, because a field that has just
        fallen back still shows the dropped plan until its cycle ends.
        """
        with self._cond:
            while True:
                for r in self._results.get(plan_id, [])[skip:]:
                    if r.status in wanted:
                        return r
                if from_active and messages.APPLIED in wanted:
                    active = next((p for p in self._active.values() if p.plan_id == plan_id), None)
                    if active is not None:
                        return PlanResult(active.controller_id, plan_id, messages.APPLIED,
                                          reason="reported on plan/active")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    @_guarded
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            with self._cond:
                self._connect_error = f"refused the connection: {reason_code}"
                self._cond.notify_all()
            return
        self._connected = True
        _no_delay(client)
        options = SubscribeOptions(qos=1)
        result, mid = client.subscribe([
            (topics.wildcard(self.site, topics.PLAN_RESULT), options),
            (topics.wildcard(self.site, topics.PLAN_ACTIVE), options),
            (topics.wildcard(self.site, topics.STATUS), options),
        ])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._cond:
                self._connect_error = f"refused subscriptions: {paho.error_string(result)}"
                self._cond.notify_all()
            return
        with self._cond:
            self._sub_mid = mid

    @_guarded
    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        with self._cond:
            if mid != self._sub_mid:
                return
            failed = [str(rc) for rc in reason_codes if rc.is_failure]
            if failed:
                self._connect_error = f"refused subscriptions: {', '.join(failed)}"
            else:
                self._subscribed = True
            self._cond.notify_all()

    @_guarded
    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self._connected = False
        if reason_code.is_failure:
            log.warning("MQTT connection lost (%s); paho reconnects", reason_code)

    @_guarded
    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            parsed = topics.parse(msg.topic)
        except MessageError as exc:
            self._bad(msg.topic, exc)
            return
        if parsed.leaf == topics.PLAN_RESULT:
            self._on_result(msg, parsed.controller_id)
        elif parsed.leaf == topics.PLAN_ACTIVE:
            self._on_active(msg, parsed.controller_id)
        elif parsed.leaf == topics.STATUS:
            self._on_status(msg, parsed.controller_id)

    def _on_result(self, msg: paho.MQTTMessage, controller_id: str) -> None:
        try:
            result = messages.decode_result(msg.payload)
        except MessageError as exc:
            self._bad(msg.topic, exc)
            return
        correlation = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        plan_id = result.plan_id
        if correlation:
            corr = bytes(correlation).decode("utf-8", "replace")
            if corr != plan_id:
                log.warning("result on %s: correlation %s differs from plan_id %s; using correlation",
                            msg.topic, corr, plan_id)
                plan_id = corr
        if result.controller_id != controller_id:
            log.warning("result on %s names controller %s", msg.topic, result.controller_id)
        with self._cond:
            self._results.setdefault(plan_id, []).append(replace(result, plan_id=plan_id))
            self._cond.notify_all()
        log.info("plan %s: %s from %s %s", plan_id, result.status, controller_id,
                 f"({result.rule}: {result.reason})" if result.status == messages.REJECTED else "")

    def _on_active(self, msg: paho.MQTTMessage, controller_id: str) -> None:
        if not msg.payload:  # retained message cleared
            with self._cond:
                self._active.pop(controller_id, None)
            return
        try:
            plan = TimingPlan.from_json(msg.payload)
        except PlanError as exc:
            self._bad(msg.topic, exc)
            return
        with self._cond:
            self._active[controller_id] = plan
            self._cond.notify_all()

    def _on_status(self, msg: paho.MQTTMessage, controller_id: str) -> None:
        if not msg.payload:
            with self._cond:
                self._status.pop(controller_id, None)
            return
        try:
            status = messages.decode_status(msg.payload)
        except MessageError as exc:
            self._bad(msg.topic, exc)
            return
        with self._cond:
            self._status[controller_id] = status

    def _bad(self, topic_name: str, exc: Exception) -> None:
        self.bad_messages += 1
        log.warning("ignoring bad message on %s: %s", topic_name, exc)
