"""The MQTT ingest service: detector counts, events and status into PostgreSQL.

Delivery contract (what "no message lost" means here):

* MQTT 5, QoS 1, a persistent session (``clean_start=False`` plus a session
  expiry), and ``manual_ack``: the broker keeps a message until we
  acknowledge it, and we acknowledge only after the batch holding it is
  durable, in the database or in the local spool. A crash before that makes
  the broker redeliver; the store's natural keys make the redelivery a no-op.
* Anything malformed is stored in ``dead_letters`` (reason + raw bytes) and
  acknowledged; one bad message never stops the consumer (every callback is
  wrapped, decoding lives in :mod:`sensors.router`, which cannot raise). A
  message the database refuses is isolated by the store and dead-lettered
  too, live and on spool replay, and the batch around it is stored.
* Leaving: ``stop(handover=True)`` unsubscribes before disconnecting so the
  broker stops routing this instance's share of the shared subscription to
  its offline session; ``stop(retire=True)`` also ends the session.
* Database outage: the batch goes to the spool, the messages are acknowledged
  (so the broker's bounded queue never overflows and drops them) and a replay
  loop writes the spool back in order when the database returns. While the
  spool is non-empty new batches are spooled too, so order is kept.

Threads: paho's network loop runs the callbacks, which only decode and
enqueue; one writer thread batches, writes, spools, replays and acks.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from sensors.records import Batch
from sensors.router import route
from sensors.spool import Spool
from sensors.store import BatchResult, CountStore, is_transient
from traffic import topics
from traffic.config import Settings
from traffic.errors import StorageError, TransportError
from traffic.mqtt_client import disconnect, new_client

if TYPE_CHECKING:
    from sensors.monitor import Monitor

log = logging.getLogger(__name__)

DEFAULT_RECEIVE_MAXIMUM = 1000   # unacknowledged QoS 1 messages the broker may have in flight to us
DEFAULT_SESSION_EXPIRY_S = 24 * 3600
_TICK_S = 0.2                    # writer wake-up when idle (stop check, replay timer)
_IDLE_GAP_S = 0.05               # close a batch early when the stream pauses this long
_DISK_RETRY_S = 1.0
_HANDOVER_QUIET_S = 0.5          # after unsubscribing, the session is drained once nothing came for this long


@dataclass(frozen=True)
class IngestStats:
    """Counters since start. ``stored``/``duplicates`` count rows (counts + events);
    ``received``/``dead_lettered`` count messages; ``spooled``/``replayed`` count batches."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    statuses: int = 0
    spooled: int = 0
    replayed: int = 0
    batches: int = 0
    quarantined: int = 0
    refused: int = 0   # messages the database refused, kept as dead letters (also in dead_lettered)


@dataclass
class _Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: datetime
    batch: Batch
    seq: int


class IngestService:
    """Consume ``counts``, ``events`` and ``status`` of every controller of one site.

    ``site`` defaults to ``settings.site.site``. ``client_id`` names the
    persistent session: keep it stable across restarts of the same instance
    (the default is derived from site, share group and host name) and distinct
    between instances that share the load.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        site: str | None = None,
        client_id: str | None = None,
        receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        db_timeout_s: float = 3.0,
        replay_interval_s: float = 1.0,
        connect_timeout_s: float = 10.0,
        monitor: Monitor | None = None,
    ) -> None:
        self._settings = settings
        self._monitor = monitor   # scheduled detector health + ATSPM aggregation (sensors.monitor), optional
        self._dsn = dsn
        self._site = topics.check_id(site or settings.site.site, "site")
        self._group = settings.ingest.share_group
        self._client_id = client_id or f"ingest-{self._site}-{self._group}-{socket.gethostname()}"[:128]
        self._receive_maximum = max(1, min(receive_maximum, 65535))
        self._session_expiry_s = session_expiry_s
        self._db_timeout_s = db_timeout_s
        self._replay_interval_s = replay_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._batch_max_rows = max(1, settings.ingest.batch_max_rows)
        self._batch_max_delay_s = max(0.0, settings.ingest.batch_max_delay_s)
        spool_dir = settings.ingest.spool_dir or str(Path(settings.state_dir) / "spool")
        self._spool = Spool(spool_dir)

        # SimpleQueue: C-implemented, measurably cheaper per message than Queue.
        self._queue: queue.SimpleQueue[_Inbound] = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._counters = dict.fromkeys(IngestStats.__dataclass_fields__, 0)
        self._received_seq = 0
        self._durable_seq = 0
        self._last_arrival = time.monotonic()
        self._spool_pending = bool(self._spool.pending())
        self._flush_now = threading.Event()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._unsubscribed = threading.Event()
        self._leaving = threading.Event()   # set by a handover: do not subscribe again on a reconnect
        self._connect_error: str | None = None
        self._store: CountStore | None = None
        self._client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None

    # ---- public API -------------------------------------------------------
    @property
    def site(self) -> str:
        return self._site

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    @property
    def stats(self) -> IngestStats:
        with self._cv:
            return IngestStats(**self._counters)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def subscriptions(self) -> list[str]:
        """Topic filters this service subscribes to.

        Counts and events use a shared subscription so instances split the
        load. Status does not: MQTT 5 never sends retained messages to a
        shared subscription (spec 4.8.2), and status is retained, so a shared
        subscriber would not learn the state of controllers that went quiet
        before it started. Status writes are idempotent, so every instance
        storing them is harmless.
        """
        return [
            topics.shared(self._group, topics.wildcard(self._site, topics.COUNTS)),
            topics.shared(self._group, topics.wildcard(self._site, topics.EVENTS)),
            topics.wildcard(self._site, topics.STATUS),
        ]

    def start(self) -> None:
        """Open the store, start the writer, connect and subscribe (TransportError if that fails)."""
        if self._writer is not None:
            return
        self._stopping.clear()
        self._leaving.clear()
        self._store = CountStore(self._dsn, min_size=self._settings.database.pool_min,
                                 max_size=self._settings.database.pool_max, timeout=self._db_timeout_s)
        self._writer = threading.Thread(target=self._run_writer, name=f"ingest-writer-{self._site}", daemon=True)
        self._writer.start()
        self._client = self._make_client()
        try:
            self._connect()
        except TransportError:
            self.stop(timeout=1.0)
            raise
        if self._monitor is not None:
            self._monitor.start()

    def stop(self, timeout: float = 10.0, *, handover: bool = False, retire: bool = False,
             end_session: bool = False) -> bool:
        """Make what was received durable (bounded by ``timeout``), then disconnect and close.

        Three ways to stop, because the broker treats a stopped member of a
        shared subscription as still there: Mosquitto keeps routing its share
        of the traffic to the session while it is offline (measured: 5 of 10
        messages), and discards that queue if the session expires.

        * default (``handover=False``): the session and its subscriptions
          stay; the broker queues this instance's share for it and a restart
          under the same client id takes it. Right for a restart of a single
          instance (with no other member, unsubscribing would make the broker
          drop what is published meanwhile). Messages not yet durable stay
          unacknowledged and are redelivered on the next start.
        * ``handover=True``: unsubscribe first, so the broker routes
          everything to the other instances from now on, then keep consuming
          until nothing has arrived for a moment (the session's queued and
          in-flight messages still come through after the unsubscribe) and
          all of it is durable. The session stays for a restart, with nothing
          routed to it. What ``python -m sensors.worker`` does on SIGTERM.
        * ``retire=True`` (``end_session=True`` is the older name): a
          handover, then, if everything was drained, disconnect with session
          expiry 0 so the broker discards the session. For an instance that
          is leaving for good. If the drain did not finish in ``timeout``
          the session is kept (ending it would discard what it still
          holds) and False is returned.

        Returns True when everything received was made durable (and, for
        ``retire``, the session was ended).
        """
        if self._monitor is not None:
            self._monitor.stop()
        if self._writer is None:
            return True
        retire = retire or end_session
        handover = handover or retire
        deadline = time.monotonic() + timeout
        ok = True
        if self._client is not None and self._client.is_connected():
            if handover:
                ok = self._hand_over(deadline)
            else:
                ok = self.flush(timeout=max(0.0, deadline - time.monotonic()))
        elif retire:
            ok = False   # not connected: cannot know the session is empty
        if retire and self._spool_pending and not self.wait_replayed(max(0.0, deadline - time.monotonic())):
            log.warning("retiring with %d spooled batch(es) not yet in the database in %s: run a worker with "
                        "this spool folder to replay them", len(self._spool.pending()), self._spool.directory)
        end = retire and ok
        if retire and not ok:
            log.error("could not drain the session of %s within %.1f s; keeping it (ending it would discard "
                      "what it still holds): retire again", self._client_id, timeout)
        if self._client is not None:
            disconnect(self._client, end_session=end)
        self._stopping.set()
        self._writer.join(max(0.1, deadline - time.monotonic()))
        if self._writer.is_alive():
            log.warning("ingest writer did not finish within %.1f s", timeout)
            ok = False
        if self._store is not None:
            self._store.close()
        self._writer = None
        self._client = None
        self._store = None
        if end:
            log.info("ingest %s retired: session ended", self._client_id)
        return ok

    def _hand_over(self, deadline: float) -> bool:
        """Unsubscribe (so the broker stops routing to us), then drain what the session still delivers."""
        assert self._client is not None
        self._leaving.set()
        self._unsubscribed.clear()
        result, _mid = self._client.unsubscribe(self.subscriptions())
        if result != mqtt.MQTT_ERR_SUCCESS:
            log.error("unsubscribe failed (%s); the session keeps its share", mqtt.error_string(result))
            self.flush(max(0.0, deadline - time.monotonic()))
            return False
        if not self._unsubscribed.wait(max(0.0, deadline - time.monotonic())):
            log.error("no UNSUBACK from the broker; the session may keep its share")
            self.flush(max(0.0, deadline - time.monotonic()))
            return False
        log.info("ingest %s unsubscribed; draining what its session still holds", self._client_id)
        with self._cv:
            # Count the quiet period from the UNSUBACK: queued messages may follow it.
            self._last_arrival = time.monotonic()
        return self.drain(max(0.0, deadline - time.monotonic()), quiet_s=_HANDOVER_QUIET_S)

    def __enter__(self) -> IngestService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once everything received so far is durable (database or spool).

        "Received" means delivered to this process: a publisher's PUBACK
        comes from the broker, so a message just published may still be on
        its way here. Use :meth:`drain` to also wait for the stream to pause.
        """
        with self._cv:
            target = self._received_seq
            return self._cv.wait_for(lambda: self._durable_seq >= target, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Write the current batch now instead of waiting for it to fill, then :meth:`wait_idle`."""
        self._flush_now.set()
        return self.wait_idle(timeout)

    def drain(self, timeout: float | None = None, quiet_s: float = 0.3) -> bool:
        """True once nothing has arrived for ``quiet_s`` and everything received is durable.

        For the end of a run: the publishers have stopped, but their last
        messages may still be in the broker when this is called.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.flush(remaining):
                return False
            with self._cv:
                quiet_for = time.monotonic() - self._last_arrival
                settled = self._durable_seq >= self._received_seq
            if settled and quiet_for >= quiet_s:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(max(0.01, min(quiet_s - quiet_for, quiet_s)))

    def wait_replayed(self, timeout: float | None = None) -> bool:
        """True once the spool is empty (everything spooled is in the database)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._spool_pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(remaining if remaining is not None else _TICK_S)
            return True

    # ---- MQTT ---------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        mq = self._settings.mqtt
        client = new_client(mq, self._client_id, manual_ack=True, max_reconnect_delay_s=30)
        client.on_connect = self._guard(self._on_connect)
        client.on_subscribe = self._guard(self._on_subscribe)
        client.on_unsubscribe = self._guard(self._on_unsubscribe)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_message = self._guard(self._on_message)
        return client

    def _connect(self) -> None:
        assert self._client is not None
        mq = self._settings.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        self._subscribed.clear()
        self._connect_error = None
        try:
            self._client.connect_async(mq.host, mq.port, keepalive=mq.keepalive_s,
                                       clean_start=False, properties=props)
            self._client.loop_start()
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to MQTT broker {mq.host}:{mq.port}: {exc}") from exc
        if not self._subscribed.wait(self._connect_timeout_s):
            raise TransportError(
                f"not subscribed to {mq.host}:{mq.port} within {self._connect_timeout_s} s"
                + (f": {self._connect_error}" if self._connect_error else "")
            )
        log.info("ingest for site %s subscribed as %s", self._site, self._client_id)

    @staticmethod
    def _guard(handler: Any) -> Any:
        """Wrap a callback so one exception cannot stop paho's network loop."""
        def wrapped(*args: Any) -> None:
            try:
                handler(*args)
            except Exception:  # noqa: BLE001 - logged; the loop must go on
                log.exception("ingest callback %s failed", getattr(handler, "__name__", handler))
        return wrapped

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._connect_error = f"connect refused: {reason_code}"
            log.error("MQTT %s", self._connect_error)
            return
        if self._leaving.is_set():
            return  # reconnected during a handover: the session's queue still comes, no new share
        qos = max(1, min(self._settings.mqtt.qos, 2))
        # retainHandling=1: retained status only for a new subscription, not on every reconnect.
        opts = SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        result, _mid = client.subscribe([(f, opts) for f in self.subscriptions()])
        if result != mqtt.MQTT_ERR_SUCCESS:
            self._connect_error = f"subscribe failed: {mqtt.error_string(result)}"
            log.error("MQTT %s", self._connect_error)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._connect_error = f"subscription refused: {', '.join(failed)}"
            log.error("MQTT %s", self._connect_error)
            return
        self._subscribed.set()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                        properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.warning("MQTT unsubscribe answered %s", ", ".join(failed))
        self._unsubscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Any) -> None:
        if not self._stopping.is_set() and reason_code.is_failure:
            log.warning("MQTT disconnected (%s); paho reconnects to the persistent session", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received_at = datetime.now(UTC)
        topic = _topic_of(msg)
        payload = bytes(msg.payload)
        batch = route(topic, payload, received_at, site=self._site)
        with self._cv:
            self._received_seq += 1
            self._last_arrival = time.monotonic()
            self._counters["received"] += 1
            self._queue.put(_Inbound(msg.mid, msg.qos, topic, payload, received_at, batch, self._received_seq))

    # ---- writer thread ------------------------------------------------------
    def _run_writer(self) -> None:
        next_replay = 0.0
        while True:
            try:
                items = self._gather()
                if items:
                    self._persist(items)
                if self._spool_pending and time.monotonic() >= next_replay:
                    if not self._replay():
                        next_replay = time.monotonic() + self._replay_interval_s
                if self._stopping.is_set() and self._queue.empty():
                    return
            except Exception:  # noqa: BLE001 - the writer must survive anything; messages stay unacked
                log.exception("ingest writer iteration failed")
                time.sleep(_TICK_S)

    def _gather(self) -> list[_Inbound]:
        try:
            first = self._queue.get(timeout=_TICK_S)
        except queue.Empty:
            return []
        items = [first]
        rows = len(first.batch)
        deadline = time.monotonic() + self._batch_max_delay_s
        while rows < self._batch_max_rows and len(items) < self._receive_maximum:
            if self._flush_now.is_set() or self._stopping.is_set():
                # Take what is already queued, then write.
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=min(remaining, _IDLE_GAP_S))
                except queue.Empty:
                    break
            items.append(item)
            rows += len(item.batch)
        if self._queue.empty():
            self._flush_now.clear()
        return items

    def _persist(self, items: list[_Inbound]) -> None:
        """Make ``items`` durable (database, else spool), then acknowledge them.

        The store isolates what the database refuses (dead letters) and
        stores the rest, so the only failure that reaches here is the
        database being away (spool, replay later) or, in theory, something
        unforeseen: that batch is spooled too and the replay sets it aside
        (``*.bad``) if it fails again, so no batch can stop the stream.
        """
        batch = Batch()
        for item in items:
            batch.add_message(item.topic, item.payload, item.received_at, item.batch)
        if not self._spool_pending:
            try:
                result = self._store_or_raise().write_batch(batch)
            except StorageError as exc:
                if is_transient(exc):
                    log.warning("database unavailable, spooling batch of %d rows: %s", len(batch), exc)
                else:
                    log.error("database refused a batch even message by message (%s); spooling it, the "
                              "replay sets it aside if it fails again", exc)
            except Exception:  # noqa: BLE001 - a bug must not stop the stream: keep the data on disk
                log.exception("unexpected error writing a batch of %d rows; spooling it", len(batch))
            else:
                self._count(result, batches=1)
                self._finish(items)
                return
        if self._spool_batch(batch):
            self._finish(items)

    def _spool_batch(self, batch: Batch) -> bool:
        while True:
            try:
                self._spool.append(batch)
            except StorageError as exc:
                # Disk trouble: keep the messages unacknowledged and keep trying;
                # on stop the broker keeps them for the next session.
                log.error("cannot spool batch: %s", exc)
                if self._stopping.wait(_DISK_RETRY_S):
                    return False
                continue
            with self._cv:
                self._spool_pending = True
                self._counters["spooled"] += 1
                self._counters["dead_lettered"] += len(batch.dead_letters)
            return True

    def _finish(self, items: list[_Inbound]) -> None:
        client = self._client
        if client is not None:
            for item in items:
                if item.qos > 0:
                    client.ack(item.mid, item.qos)
        with self._cv:
            self._durable_seq = max(self._durable_seq, items[-1].seq)
            self._cv.notify_all()

    def _replay(self) -> bool:
        """Write spooled batches back in order; False if the database is still away."""
        store = self._store_or_raise()
        for path in self._spool.pending():
            try:
                batch = self._spool.load(path)
            except StorageError as exc:
                log.error("%s", exc)
                self._spool.quarantine(path)
                self._count(BatchResult(), quarantined=1)
                continue
            try:
                result = store.write_batch(batch)
            except StorageError as exc:
                if is_transient(exc):
                    return False
                log.error("database refused spooled batch %s even message by message: %s", path.name, exc)
                self._spool.quarantine(path)
                self._count(BatchResult(), quarantined=1)
                continue
            except Exception:  # noqa: BLE001 - one unreadable batch must not block the spool behind it
                log.exception("unexpected error replaying spooled batch %s", path.name)
                self._spool.quarantine(path)
                self._count(BatchResult(), quarantined=1)
                continue
            self._spool.remove(path)
            # Dead letters the batch carried were counted when it was spooled;
            # messages the database refused now are new dead letters.
            self._count(BatchResult(result.counts_stored, result.counts_duplicate, result.events_stored,
                                    result.events_duplicate, result.refused, result.statuses, result.refused),
                        replayed=1)
            if result.refused:
                log.warning("spooled batch %s: %d message(s) refused by the database, kept as dead letters",
                            path.name, result.refused)
            log.info("replayed spooled batch %s (%d rows)", path.name, len(batch))
        with self._cv:
            self._spool_pending = bool(self._spool.pending())
            self._cv.notify_all()
            return not self._spool_pending

    def _count(self, result: BatchResult, **extra: int) -> None:
        with self._cv:
            c = self._counters
            c["stored"] += result.counts_stored + result.events_stored
            c["duplicates"] += result.counts_duplicate + result.events_duplicate
            c["dead_lettered"] += result.dead_letters
            c["refused"] += result.refused
            c["statuses"] += result.statuses
            for key, value in extra.items():
                c[key] += value

    def _store_or_raise(self) -> CountStore:
        if self._store is None:
            raise StorageError("ingest service is not started")
        return self._store


def _topic_of(msg: mqtt.MQTTMessage) -> str:
    """The message topic; a non-UTF-8 topic (broker bug) still reaches the dead letters."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        return bytes(msg._topic).decode("utf-8", "replace")  # noqa: SLF001 - paho exposes no raw accessor
