"""The field's telemetry outbox: a count report or event batch leaves it only once a subscriber took it.

Why a broker PUBACK is not enough (issue 13): the ingest workers consume
``counts`` and ``events`` through an MQTT 5 *shared* subscription, and
Mosquitto (2.0.x, ``persist__subs_save`` writes ``node->subs`` only) does not
save shared subscriptions in its persistence file. After a broker restart the
workers' sessions come back without them until each worker reconnects and
subscribes again; a field that reconnects first has its queued reports
PUBACKed with reason code 0x10 *No matching subscribers*, and the broker
drops them. paho then forgets them too: measured in the end-to-end test as
two lost count reports of the controller whose link came back first.

So every report goes through this outbox:

* it is published QoS 1 and stays until its PUBACK says ``0x00 Success``
  (the broker routed it to a subscriber or queued it for a subscriber's
  offline session, which the broker keeps);
* ``0x10`` (nobody subscribed) or another refusal puts it back to wait;
  everything waiting is sent again as soon as a later message of this
  controller is accepted (subscribers are back); meanwhile each new report
  is a probe, and so is the oldest waiting one once per back-off period (1 s
  doubling to 60 s), so a long consumer outage costs no re-send storm;
* a report published while the link is down is queued by paho and sent on
  reconnect; one that hears nothing for ``resend_after_s`` is sent again;
* bounded: ``capacity`` messages (default a day of 60 s reports and their
  event batches); when full the oldest is dropped, counted and logged;
* kept across a clean restart of the agent: what is still unconfirmed on
  stop is written to ``<state_dir>/outbox-<site>-<controller>.json`` and
  sent again by the next run (also saved every ``save_every_s`` while an
  outage lasts, so a killed agent loses at most that much).

Re-sending is safe: the ingest stores counts and events by their natural
keys (controller, detector, interval start; device, time, code, parameter)
with ``ON CONFLICT DO NOTHING``, so a second copy is counted as a duplicate.

Limits: ``0x00`` means the broker has the message, not the database. A
broker that crashes (SIGKILL, power) loses what it accepted since its last
periodic save (``autosave_interval``; a SIGTERM always saves); closing that
window needs an acknowledgement from the ingest back to the field. A
SIGKILLed agent loses its unfinished interval and what changed in the outbox
since the last save.

Threads: everything here runs on the emulator's tick thread; PUBACK results
come from the link (:meth:`~field_firmware_stubs.link.MqttLink.take_result`),
which records them on the network thread.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from field_firmware_stubs.durable import write_durably

__all__ = ["Outbox", "TrackedEndpoint", "OutboxStats", "RC_SUCCESS", "RC_NO_MATCHING_SUBSCRIBERS",
           "DEFAULT_CAPACITY"]

log = logging.getLogger(__name__)

RC_SUCCESS = 0
RC_NO_MATCHING_SUBSCRIBERS = 0x10
DEFAULT_CAPACITY = 2 * 1440          # a day of 60 s count reports and their event batches
DEFAULT_RESEND_AFTER_S = 120.0       # in flight without any PUBACK this long: send again
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_SEND_PER_PUMP = 200              # spread a large backlog over several ticks
OUTBOX_SCHEMA = "traffic.field-outbox/1"


@runtime_checkable
class TrackedEndpoint(Protocol):
    """What the outbox needs from the link: a publish that tells the message id, and its PUBACK result."""

    @property
    def connected(self) -> bool: ...

    def publish_tracked(self, topic: str, payload: bytes, *, qos: int = 1) -> int | None: ...

    def take_result(self, mid: int) -> int | None: ...


@dataclass
class _Entry:
    key: str
    topic: str
    payload: bytes
    mid: int | None = None        # in flight: waiting for its PUBACK
    sent_at: float = 0.0
    due: bool = False             # waiting and to be sent again at the next pump
    attempts: int = 0


@dataclass
class OutboxStats:
    confirmed: int = 0            # PUBACK 0x00: a subscriber has it
    no_subscriber: int = 0        # PUBACK 0x10 (or another refusal): kept, sent again
    resent: int = 0
    dropped: int = 0              # the outbox was full: the oldest went


class Outbox:
    """Unconfirmed telemetry of one controller (see the module docstring)."""

    def __init__(self, name: str, *, capacity: int = DEFAULT_CAPACITY, path: Path | None = None,
                 resend_after_s: float = DEFAULT_RESEND_AFTER_S, save_every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.path = path
        self.resend_after_s = resend_after_s
        self.save_every_s = save_every_s
        self.stats = OutboxStats()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._dirty = False
        self._on_disk = False         # the file holds messages (removed once everything is confirmed)
        self._saved_at = clock()
        self._refusals = 0            # consecutive "no subscriber" answers (back-off of the probe)
        self._probe_at = 0.0
        if path is not None:
            self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The keys of the unconfirmed messages, oldest first."""
        return list(self._entries)

    @property
    def waiting(self) -> int:
        """Messages not in flight: never sent, or refused (no subscriber) and waiting to go again."""
        return sum(1 for e in self._entries.values() if e.mid is None)

    def add(self, key: str, topic: str, payload: bytes) -> None:
        """Take a message to deliver (``key`` is unique per message, e.g. ``counts/<interval start>``)."""
        if key in self._entries:  # the same interval again (cannot happen in order; keep the newer)
            del self._entries[key]
        while len(self._entries) >= self.capacity:
            old_key, _old = self._entries.popitem(last=False)
            self.stats.dropped += 1
            log.error("%s: telemetry outbox full (%d): dropping the oldest unconfirmed message %s",
                      self.name, self.capacity, old_key)
        self._entries[key] = _Entry(key, topic, payload)
        self._dirty = True

    def pump(self, link: TrackedEndpoint, *, qos: int = 1, flush: bool = False) -> None:
        """Collect PUBACK results, then (re)send what is due; call every tick (cheap when empty).

        Due: a message never sent; every waiting one once a subscriber took
        any message (or on ``flush``, before a stop); otherwise only the
        oldest waiting one, as a probe, once per back-off period (1 s
        doubling to 60 s while the broker keeps answering "no subscriber"),
        so a long outage of the consumers costs one probe a minute, not a
        re-send of the whole backlog.
        """
        if not self._entries and not self._on_disk:
            return
        now = self._clock()
        if self._entries:
            self._collect(link, now)
            if link.connected:
                self._send(link, now, qos=qos, flush=flush)
        # on disk only while something waits (an outage), not for every report in flight for milliseconds
        if (self._dirty and self.path is not None and (self._on_disk or self.waiting)
                and now - self._saved_at >= self.save_every_s):
            self.save()

    def _collect(self, link: TrackedEndpoint, now: float) -> None:
        """Take the PUBACK results of what is in flight."""
        refused: _Entry | None = None
        rc_refused = 0
        for entry in list(self._entries.values()):
            if entry.mid is None:
                continue
            rc = link.take_result(entry.mid)
            if rc is None:
                if now - entry.sent_at > self.resend_after_s:  # no answer at all: send it again
                    entry.mid, entry.due = None, True
                continue
            entry.mid = None
            if rc == RC_SUCCESS:
                del self._entries[entry.key]
                self.stats.confirmed += 1
                self._dirty = True
                if self._refusals:
                    log.info("%s: a subscriber took %s; re-sending %d waiting message(s)", self.name,
                             entry.key, self.waiting)
                self._refusals = 0
                self._probe_at = now
                for other in self._entries.values():
                    if other.mid is None:
                        other.due = True
                continue
            self.stats.no_subscriber += 1
            refused, rc_refused = entry, rc
        if refused is not None:  # one more round of "nobody there": the probe backs off
            if not self._refusals:
                log.warning("%s: broker answered %s for %s (%s): kept in the outbox, sent again once a "
                            "subscriber is back", self.name, hex(rc_refused), refused.key,
                            "no matching subscribers" if rc_refused == RC_NO_MATCHING_SUBSCRIBERS else "refused")
            self._refusals += 1
            self._probe_at = now + min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(self._refusals - 1, 10))

    def _send(self, link: TrackedEndpoint, now: float, *, qos: int, flush: bool) -> None:
        """Send what is due (see :meth:`pump`)."""
        probe = now >= self._probe_at
        sent = 0
        for entry in self._entries.values():
            if sent >= MAX_SEND_PER_PUMP:
                break
            if entry.mid is not None or not (flush or entry.due or entry.attempts == 0 or probe):
                continue
            mid = link.publish_tracked(entry.topic, entry.payload, qos=qos)
            if mid is None:  # refused locally (logged by the link): the probe tries again later
                self._probe_at = now + BACKOFF_MAX_S
                return
            if entry.attempts:
                self.stats.resent += 1
                if not (flush or entry.due):
                    probe = False  # one probe per period
            entry.mid, entry.sent_at, entry.due = mid, now, False
            entry.attempts += 1
            sent += 1

    def drain(self, link: TrackedEndpoint, *, qos: int = 1, timeout_s: float = 3.0) -> bool:
        """Before a stop: send everything waiting once and wait (``timeout_s`` at most) for the answers.

        Refused messages are not retried here (nobody subscribed a moment ago
        will rarely be back within seconds): :meth:`save` keeps them for the
        next run. True when the outbox is empty.
        """
        if not self._entries or not link.connected:
            return not self._entries
        deadline = self._clock() + timeout_s
        now = self._clock()
        self._collect(link, now)
        self._send(link, now, qos=qos, flush=True)
        while any(e.mid is not None for e in self._entries.values()) and self._clock() < deadline:
            time.sleep(0.02)
            self._collect(link, self._clock())
        return not self._entries

    # ------------------------------------------------------------------ persistence
    def save(self) -> None:
        """Write what is unconfirmed (atomically); an empty outbox removes the file. Errors are logged."""
        if self.path is None:
            return
        self._saved_at = self._clock()
        self._dirty = False
        path = self.path
        try:
            if not self._entries:
                path.unlink(missing_ok=True)
                self._on_disk = False
                return
            data = json.dumps({"schema": OUTBOX_SCHEMA, "messages": [
                {"key": e.key, "topic": e.topic, "payload": base64.b64encode(e.payload).decode("ascii")}
                for e in self._entries.values()]}).encode()
            write_durably(path, data)
            self._on_disk = True
        except OSError as exc:
            log.error("%s: cannot save the telemetry outbox to %s: %s", self.name, path, exc)

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("%s: cannot read the telemetry outbox %s: %s", self.name, self.path, exc)
            return
        try:
            data: Any = json.loads(raw)
            if not isinstance(data, dict) or data.get("schema") != OUTBOX_SCHEMA:
                raise ValueError(f"not a {OUTBOX_SCHEMA} document")
            messages = [(str(m["key"]), str(m["topic"]), base64.b64decode(m["payload"], validate=True))
                        for m in data["messages"]]
        except (ValueError, KeyError, TypeError) as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            log.error("%s: telemetry outbox %s is unreadable (%s); kept as %s", self.name, self.path, exc, bad)
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            return
        self._on_disk = True
        for key, topic, payload in messages[-self.capacity:]:
            self._entries[key] = _Entry(key, topic, payload)
        if messages:
            log.info("%s: %d unconfirmed message(s) from the last run will be sent again", self.name, len(messages))
